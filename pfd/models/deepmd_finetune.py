"""Fine-tune a user's DPA-2/DPA-3 checkpoint (deepmd-kit PyTorch backend).

The PFD "fine-tune" step with a DeePMD foundation model: ``dp --pt train input.json
--finetune CKPT --use-pretrain-script [--model-branch HEAD]``. What deepmd does with
these flags (deepmd-kit 3.2, ``deepmd/utils/finetune.py``):

* ``--use-pretrain-script`` takes the descriptor (and, unless the head is re-initialised,
  the fitting net) configuration from the checkpoint, so the weights fit the network.
* The new ``type_map`` may be any subset of the checkpoint's: the type embedding is
  sliced to it. Elements the checkpoint never saw would start from random embeddings,
  which defeats fine-tuning, so :func:`finetune` refuses them with the list.
* Heads: a single-task checkpoint keeps its fitting net unless ``RANDOM`` is asked for;
  a multi-task checkpoint (``model_dict``) needs ``--model-branch`` to pick a head, and
  without one deepmd silently re-initialises the fitting net. Here ``head=None`` on a
  multi-task checkpoint is an error listing the heads, so that choice is explicit.

No DPA checkpoint can be downloaded where pfd is developed; the tests pre-train a tiny
DPA-3 themselves, which exercises exactly this code path.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd import frames as fr
from pfd.config import DPScheduleSpec, FinetuneSpec, file_digest
from pfd.models.deepmd import (
    MODEL_FILE,
    _check_type_map,
    _deepmd_version,
    freeze,
    fresh_model_dir,
    schedule_sections,
    write_model_meta,
    write_training_data,
)
from pfd.models.deepmd_run import Progress, dp_command, run_training

#: ``head`` value that re-initialises the fitting net (deepmd's own keyword).
RANDOM_HEAD = "RANDOM"
#: the branch name deepmd gives a single-task model.
DEFAULT_BRANCH = "Default"


@dataclass(frozen=True)
class CheckpointInfo:
    """What pfd needs to know about a DeePMD training checkpoint before using it."""

    path: Path
    heads: list[str] | None  # None: single-task
    type_maps: dict[str, list[str]]  # per head (``Default`` for single-task)
    descriptors: dict[str, str]  # descriptor type per head
    params: dict[str, Any]  # the model params stored in the checkpoint

    @property
    def multitask(self) -> bool:
        return self.heads is not None

    def branch_params(self, head: str | None) -> dict[str, Any]:
        """Model params of the head that will be fine-tuned from."""
        if not self.multitask:
            return self.params
        key = head if head not in (None, RANDOM_HEAD) else self.heads[0]  # type: ignore[index]
        return self.params["model_dict"][key]


def read_checkpoint(path: Path | str) -> CheckpointInfo:
    """Read heads, type maps and descriptor types from a ``.pt`` training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"finetune.checkpoint: {path} does not exist")
    if path.suffix == ".pth":
        raise ValueError(
            f"finetune.checkpoint: {path} is a frozen (TorchScript) model; fine-tuning needs "
            "the training checkpoint (model.ckpt-*.pt) that it was frozen from")
    if path.suffix != ".pt":
        raise ValueError(f"finetune.checkpoint: {path} is not a deepmd PyTorch checkpoint "
                         "(expected a .pt file such as DPA-3's model.ckpt-*.pt)")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"finetune.checkpoint: {path} could not be read as a torch "
                         f"checkpoint: {exc}") from exc
    model = state.get("model", state) if isinstance(state, dict) else None
    try:
        params = model["_extra_state"]["model_params"]  # type: ignore[index]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"finetune.checkpoint: {path} holds no deepmd model parameters "
                         "(_extra_state.model_params); is it a deepmd-kit v3 checkpoint?"
                         ) from exc
    if "model_dict" in params:
        heads = list(params["model_dict"])
        branches = params["model_dict"]
    else:
        heads = None
        branches = {DEFAULT_BRANCH: params}
    return CheckpointInfo(
        path=path.resolve(),
        heads=heads,
        type_maps={k: list(v["type_map"]) for k, v in branches.items()},
        descriptors={k: str(v.get("descriptor", {}).get("type", "?")) for k, v in
                     branches.items()},
        params=params,
    )


def resolve_head(info: CheckpointInfo, head: str | None) -> list[str]:
    """The ``--model-branch`` arguments for ``head``, or a clear error.

    Returns ``[]`` (keep the single-task fitting net) or ``["--model-branch", X]``.
    """
    if not info.multitask:
        if head in (None, DEFAULT_BRANCH):
            return []
        if head == RANDOM_HEAD:
            return ["--model-branch", RANDOM_HEAD]
        raise ValueError(
            f"finetune.model_branch: {head!r} does not exist; {info.path.name} is a "
            f"single-task checkpoint (allowed: {DEFAULT_BRANCH!r} or omitted to keep its "
            f"fitting net, {RANDOM_HEAD!r} to re-initialise it)")
    assert info.heads is not None
    if head is None:
        raise ValueError(
            f"finetune.model_branch: {info.path.name} is a multi-task checkpoint with heads "
            f"{info.heads}; choose the head closest to your data (e.g. the one trained on "
            f"the same DFT settings), or {RANDOM_HEAD!r} to re-initialise the fitting net")
    if head == RANDOM_HEAD or head in info.heads:
        return ["--model-branch", head]
    aliases = {a for p in info.params["model_dict"].values()
               for a in p.get("model_branch_alias", [])}
    if head in aliases:
        return ["--model-branch", head]
    raise ValueError(f"finetune.model_branch: no head {head!r} in {info.path.name} "
                     f"(heads: {info.heads}, or {RANDOM_HEAD!r})")


def check_elements(info: CheckpointInfo, frames: list[Atoms], head: str | None) -> list[str]:
    """The fine-tuned model's type map: the checkpoint's order, restricted to the data.

    Raises when the data has elements the checkpoint's type map lacks.
    """
    branch = head if info.multitask and head not in (None, RANDOM_HEAD) else (
        info.heads[0] if info.multitask else DEFAULT_BRANCH)  # type: ignore[index]
    tmap = info.type_maps.get(branch) or next(iter(info.type_maps.values()))
    present = set(fr.species(frames))
    missing = sorted(present - set(tmap))
    if missing:
        raise ValueError(
            f"finetune: element(s) {missing} of the training data are not in the type_map "
            f"of {info.path.name} ({len(tmap)} elements: {tmap}); a DPA model can only be "
            "fine-tuned on elements it was pre-trained on. Use a checkpoint that covers "
            "them or remove those structures")
    return [el for el in tmap if el in present]


def build_finetune_input(
    info: CheckpointInfo,
    train_systems: list[Path],
    valid_systems: list[Path],
    type_map: list[str],
    settings: DPScheduleSpec,
    head: str | None = None,
) -> dict[str, Any]:
    """A dp input whose model section is the checkpoint's own head, with a new type map.

    ``--use-pretrain-script`` would substitute the same sections; writing them here makes
    input.json say what is trained, and lets a killed fine-tune restart from it.
    """
    branch = info.branch_params(head)
    model: dict[str, Any] = {
        "type_map": list(type_map),
        "descriptor": json.loads(json.dumps(branch["descriptor"])),
        "fitting_net": json.loads(json.dumps(branch["fitting_net"])),
    }
    return {"model": model, **schedule_sections(train_systems, valid_systems, settings)}


def finetune_checkpoint(
    checkpoint: Path | str,
    train: list[Atoms],
    valid: list[Atoms],
    workdir: Path,
    settings: DPScheduleSpec,
    head: str | None = None,
    progress: Progress | None = None,
    threads: int = 1,
) -> Path:
    """Fine-tune a DPA checkpoint on labelled frames and freeze it; returns the model dir.

    ``settings`` is the schedule (the workflow's ``FinetuneSpec.dp_schedule()``); ``head``
    the branch of a multi-task checkpoint, or ``RANDOM`` to re-initialise the fitting net.
    Re-running after a kill continues from the newest checkpoint of this fine-tune (same
    frames, settings and base checkpoint); ``progress`` receives learning-curve rows.
    """
    if not train:
        raise ValueError("finetune: no training frames")
    info = read_checkpoint(checkpoint)
    head_args = resolve_head(info, head)
    type_map = check_elements(info, list(train) + list(valid), head)
    _check_type_map(list(train) + list(valid), type_map)

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    train_systems, valid_systems = write_training_data(train, valid, workdir, type_map)
    config = build_finetune_input(info, train_systems, valid_systems, type_map, settings, head)
    base_sha = file_digest(info.path).removeprefix("sha256:")
    init_args = ["--finetune", str(info.path), *head_args, "--use-pretrain-script"]
    run = run_training(workdir, config, [workdir / "data"], dp=dp_command(), backend="pt",
                       threads=threads, init_args=init_args,
                       identity={"base_sha256": base_sha}, progress=progress)

    model_dir = fresh_model_dir(workdir)
    freeze(workdir, model_dir / MODEL_FILE, threads)
    shutil.copy2(workdir / "input.json", model_dir / "input.json")
    branch = info.branch_params(head)
    meta = {
        "backend": "deepmd",
        "kind": "finetuned",
        "model_file": MODEL_FILE,
        "type_map": type_map,
        "descriptor": branch["descriptor"].get("type"),
        "base": {"checkpoint": str(info.path), "sha256": base_sha,
                 "multitask": info.multitask, "heads": info.heads,
                 "type_map": info.type_maps, "head": head},
        "deepmd_version": _deepmd_version(),
    }
    write_model_meta(model_dir, workdir, meta, settings, train, valid, run)
    return model_dir


# ---------------------------------------------------------------------------------------
# the backend contract (pfd.models.backends)

BACKEND = "deepmd"


def finetune(train: list[Atoms], valid: list[Atoms], workdir: Path, settings: FinetuneSpec,
             base_model_dir: Path | None = None, progress: Progress | None = None,
             threads: int = 1) -> Path:
    """The run's ``finetune`` block applied to :func:`finetune_checkpoint`."""
    if base_model_dir is not None:
        raise ValueError("the deepmd backend fine-tunes from finetune.checkpoint only "
                         f"(asked to start from {base_model_dir})")
    return finetune_checkpoint(str(settings.checkpoint), train, valid, workdir,
                               settings.dp_schedule(), head=settings.model_branch,
                               progress=progress, threads=threads)


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    from pfd.models import deepmd

    return deepmd.load_calculator(model_dir, threads=threads)


def foundation_calculator(name: str, threads: int = 1) -> Calculator:
    raise ValueError(f"a DPA training checkpoint ({name}) is not a calculator as given: only "
                     "the sevennet and chgnet foundations can be validated unchanged")


def foundation_elements(name: str) -> list[str] | None:
    """None: the elements depend on the head (``pfd.preflight`` checks them with it)."""
    return None
