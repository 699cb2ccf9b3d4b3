"""Fine-tune the SevenNet foundation potential on a few DFT frames (the "F" of PFD).

Training runs in-process through sevenn's own pieces (``SevenNetCheckpoint``,
``SevenNetGraphDataset``, ``Trainer``, its loss classes) rather than the ``sevenn`` CLI,
because the CLI cannot stop early (it only keeps a best checkpoint) and would need a
yaml file per run. The defaults follow sevenn's ``presets/fine_tune.yaml``
(Huber loss, delta 0.01; force weight 1; stress weight 0.01 in kbar; Adam with an
exponential decay of 0.99 per epoch), except the learning rate. On 8 Si frames the
preset's 4e-3 made the validation loss worse than the untouched foundation for three
epochs running, 1e-4 barely moved it, and 1e-3 cut the force RMSE from 0.18 to 0.11 eV/Å.

Energy reference: the network trains on energies shifted to its own reference and its
calculator adds the shift back (:mod:`pfd.models.energy_shift`).

A model directory holds ``pfd_model.json`` plus, for fine-tuned models, the sevenn
checkpoint it names; a "foundation" directory only points at a pretrained name.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd import frames as fr
from pfd.config import FinetuneSpec, looks_like_path
from pfd.device import torch_device
from pfd.models import epoch_state
from pfd.models.energy_shift import ShiftedCalculator, fit_energy_shift, shifted_frames
from pfd.models.meta import read_model_json as meta_json
from pfd.models.meta import write_model_json
from pfd.threads import pin_threads

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_best.pth"
BACKEND = "sevennet"
# sevenn's fine_tune preset decays the learning rate by this factor every epoch.
_LR_GAMMA = 0.99


# ---------------------------------------------------------------------------------------
# loading models


@contextlib.contextmanager
def _quiet_sevenn() -> Iterator[None]:
    """Silence sevenn's per-load 'no tensor product accelerator' warning (we run plain e3nn)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No tensor product accelerator")
        yield


def checkpoint_path(name_or_path: str) -> str:
    """Resolve a checkpoint file or pretrained name to the checkpoint on disk, refusing
    any download.

    sevenn fetches some pretrained weights from the internet when they are missing; a
    workflow step must never do that, so the download hook is replaced by an error.
    An argument that looks like a file path (:func:`pfd.config.looks_like_path`) but
    names no file raises :class:`FileNotFoundError` here, rather than sevenn's
    "not a valid pretrained model name".
    """
    path = Path(name_or_path)
    if path.is_file():
        return str(path.resolve())
    if looks_like_path(str(name_or_path)):
        raise FileNotFoundError(
            f"sevennet checkpoint file not found: looked for {path.resolve()} ({name_or_path!r}"
            " is a file path, not a pretrained model name); check the path (finetune."
            "foundation in the config, or the model directory's checkpoint) or give a "
            "pretrained name such as '7net-0'")
    from unittest import mock

    import sevenn.util

    def _refuse(path: str, url: str) -> str:
        raise FileNotFoundError(
            f"sevenn weights {name_or_path!r} are not installed ({path}); pfd never "
            f"downloads weights at run time"
        )

    with mock.patch.object(sevenn.util, "download_checkpoint", _refuse):
        try:
            return sevenn.util.pretrained_name_to_path(name_or_path)
        except ValueError:
            raise ValueError(
                f"{name_or_path!r} is not a SevenNet pretrained model name nor a checkpoint "
                f"file; names sevenn {sevenn.__version__} knows: "
                f"{', '.join(PRETRAINED_NAMES)} (installed offline: {', '.join(installed())}); "
                "or give the path of a .pth checkpoint") from None


#: the pretrained names sevenn resolves (``sevenn.util.pretrained_name_to_path``)
PRETRAINED_NAMES = ("7net-0", "7net-0_22May2024", "7net-l3i5", "7net-mf-0", "7net-mf-ompa",
                    "7net-omat", "7net-omni", "7net-omni-i8", "7net-omni-i12")


def installed() -> list[str]:
    """The pretrained names whose weights are on this machine (no download needed)."""
    out = []
    for name in PRETRAINED_NAMES:
        try:
            checkpoint_path(name)
        except FileNotFoundError:
            continue
        out.append(name)
    return out


def _raw_calculator(checkpoint: str, threads: int) -> Calculator:
    pin_threads(threads, torch=True)
    from sevenn.calculator import SevenNetCalculator

    with _quiet_sevenn():
        return SevenNetCalculator(model=checkpoint_path(checkpoint), device=torch_device())


def foundation_calculator(name: str = "7net-0", threads: int = 1) -> Calculator:
    """The pretrained model in its own energy reference (no shift)."""
    return _raw_calculator(name, threads)


def read_model_json(model_dir: Path) -> dict[str, Any]:
    return meta_json(model_dir, BACKEND)


def save_foundation(model_dir: Path, name: str = "7net-0",
                    energy_shift: dict[str, float] | None = None,
                    type_map: Sequence[str] | None = None) -> Path:
    """Make the pretrained model usable wherever a model directory is expected (M_0).

    ``energy_shift`` (from ``fit_energy_shift``) lets even the untouched foundation speak
    the DFT labeller's energy reference.
    """
    checkpoint_path(name)  # fail now, not in a worker, when the weights are missing
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    shift = {k: float(v) for k, v in (energy_shift or {}).items()}
    write_model_json(model_dir, {
        "backend": BACKEND,
        "kind": "foundation",
        "foundation": name,
        "energy_shift_eV": shift,
        "type_map": sorted(type_map) if type_map is not None else sorted(shift),
    })
    return model_dir


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    """A calculator for a pfd sevennet model directory, in the DFT energy reference."""
    meta = read_model_json(Path(model_dir))
    if meta["kind"] == "foundation":
        inner = foundation_calculator(meta["foundation"], threads)
    elif meta["kind"] == "finetuned":
        inner = _raw_calculator(str(Path(model_dir) / meta["checkpoint"]), threads)
    else:
        raise ValueError(f"unknown sevennet model kind {meta['kind']!r} in {model_dir}")
    return ShiftedCalculator(inner, meta.get("energy_shift_eV"))


# ---------------------------------------------------------------------------------------
# fine-tuning


def _graph_dataset(frames: Sequence[Atoms], root: Path, name: str, cutoff: float) -> Any:
    """Graphs built by sevenn's own extxyz reader, so labels go through its unit handling.

    (It reads ASE-convention stress from the calculator and flips it to its internal
    sign/order; the loss converts eV/Å³ to kbar.)
    """
    import torch
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.graph_dataset import SevenNetGraphDataset

    # sevenn registers this only when torch.__version__ >= '2.4.0' *as a string*, which
    # '2.13.0' is not; without it PyG falls back to an unsafe load and warns.
    torch.serialization.add_safe_globals([AtomGraphData])
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.extxyz"
    fr.write_frames(path, frames)
    return SevenNetGraphDataset(cutoff=cutoff, root=str(root), files=[str(path)],
                                processed_name=f"{name}.pt", force_reload=True, log=False)


def _loss_functions(settings: FinetuneSpec, use_stress: bool) -> list[tuple[Any, float]]:
    import torch
    from sevenn.train.loss import ForceLoss, PerAtomEnergyLoss, StressLoss

    def crit() -> torch.nn.Module:
        return torch.nn.HuberLoss(delta=settings.huber_delta)

    losses: list[tuple[Any, float]] = [
        (PerAtomEnergyLoss(criterion=crit()), settings.energy_weight),
        (ForceLoss(criterion=crit()), settings.force_weight),
    ]
    if use_stress:
        losses.append((StressLoss(criterion=crit()), settings.stress_weight))
    return losses


def _recorder(loss_functions: list[tuple[Any, float]]) -> Any:
    """Energy RMSE (eV/atom), component-wise force RMSE (eV/Å) and the weighted loss."""
    import sevenn._keys as KEY
    from sevenn.error_recorder import (
        CombinedError,
        ComponentRMSError,
        ErrorRecorder,
        LossError,
        RMSError,
        get_err_type,
    )

    parts = [(LossError(loss_def=lf, **get_err_type(lf.name)), w) for lf, w in loss_functions]
    return ErrorRecorder([
        RMSError(**get_err_type("Energy")),
        ComponentRMSError(name="Force", ref_key=KEY.FORCE, pred_key=KEY.PRED_FORCE,
                          unit="eV/Å"),
        CombinedError(parts, name="TotalLoss", unit=None, ref_key=None, pred_key=None),
    ])


def _read_recorder(recorder: Any) -> dict[str, float]:
    values = {m.name: float(m.get()) for m in recorder.metrics}
    recorder.epoch_forward()  # resets for the next epoch
    return {"loss": values["TotalLoss"], "energy_rmse": values["Energy"],
            "force_rmse": values["Force"]}


def _reinitialised(model: Any, config: dict[str, Any]) -> Any:
    """A freshly initialised model of the same architecture (seeded by the caller).

    Only trainable weights start random. Everything else is copied from the pretrained
    model: the per-element energy shift/scale and the convolution denominators (average
    neighbour count) are dataset statistics sevenn computes before training, and the
    checkpoint's config does not hold them (a denominator of 0 there gives NaN).
    """
    from sevenn.model_build import build_E3_equivariant_model

    fresh = build_E3_equivariant_model(config)
    trainable = {k for k, p in fresh.named_parameters() if p.requires_grad}
    keep = {k: v for k, v in model.state_dict().items() if k not in trainable}
    fresh.load_state_dict(keep, strict=False)
    return fresh


def finetune(train: list[Atoms], valid: list[Atoms], workdir: Path,
             settings: FinetuneSpec, base_model_dir: Path | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             threads: int = 1) -> Path:
    """Fine-tune from the foundation (or a previous pfd sevennet model) and return model dir.

    ``settings`` is the run's ``finetune`` block (the fields of backend ``sevennet``);
    ``threads`` is this process's share of the machine, not a setting of the model.

    The starting weights count as epoch 0 of early stopping, so the returned model is
    never worse on the validation loss than the model it started from. With no
    validation frames the training frames stand in (no real early stopping then).

    After every epoch the whole training state (weights, optimiser, scheduler, shuffling
    generator, early-stopping record) is saved atomically to ``workdir/resume.pth``; a
    run killed at any point continues after its last finished epoch, on the same
    batches, when called again with the same frames and settings. ``progress`` receives
    one row per epoch (``step`` = epoch).
    """
    if not train:
        raise ValueError("finetune needs at least one training frame")
    import sevenn
    import sevenn._keys as KEY
    import torch
    from sevenn.train.trainer import Trainer
    from sevenn.util import load_checkpoint
    from torch_geometric.loader import DataLoader

    workdir = Path(workdir)
    begun = epoch_state.begin(BACKEND, workdir, train, valid, settings, base_model_dir,
                              CHECKPOINT, ("sevenn", sevenn.__version__), threads)
    model_dir, best_path, resume_path = begun.model_dir, begun.best_path, begun.resume_path
    start, foundation, fingerprint, state = (begun.start, begun.foundation, begun.fingerprint,
                                             begun.state)
    shift = (state["shift"] if state is not None
             else fit_energy_shift(train, _raw_calculator(start, threads)))
    use_stress = all(fr.stress(a) is not None for a in train)

    with _quiet_sevenn():
        cp = load_checkpoint(checkpoint_path(start))
        model = cp.build_model()
    if settings.random_init:
        model = _reinitialised(model, cp.config)
    config = cp.config
    cutoff = float(config[KEY.CUTOFF])
    data_root = workdir / "sevenn"
    train_ds = _graph_dataset(shifted_frames(train, shift, use_stress), data_root, "train", cutoff)
    valid_ds = (_graph_dataset(shifted_frames(valid, shift, use_stress), data_root, "valid", cutoff)
                if valid else train_ds)
    gen = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(train_ds, batch_size=settings.batch_size, shuffle=True,
                              generator=gen)
    valid_loader = DataLoader(valid_ds, batch_size=settings.batch_size, shuffle=False)

    losses = _loss_functions(settings, use_stress)
    trainer = Trainer(model, losses, device=torch_device(), optimizer_cls=torch.optim.Adam,
                      optimizer_args={"lr": settings.learning_rate},
                      scheduler_cls=torch.optim.lr_scheduler.ExponentialLR,
                      scheduler_args={"gamma": _LR_GAMMA})
    train_rec, valid_rec = _recorder(losses), _recorder(losses)

    # The saved config must carry this sevenn's version: build_model() already upgraded
    # the state dict of an old checkpoint (7net-0 is 0.9.x), and an old version tag
    # would make sevenn "upgrade" it a second time when loading.
    config.update({
        "version": sevenn.__version__, KEY.LOSS: "huber",
        KEY.LOSS_PARAM: {"delta": settings.huber_delta}, KEY.OPTIMIZER: "adam",
        KEY.OPTIM_PARAM: {"lr": settings.learning_rate}, KEY.SCHEDULER: "exponentiallr",
        KEY.SCHEDULER_PARAM: {"gamma": _LR_GAMMA}, KEY.FORCE_WEIGHT: settings.force_weight,
        KEY.STRESS_WEIGHT: settings.stress_weight, KEY.IS_TRAIN_STRESS: use_stress,
        KEY.BATCH_SIZE: settings.batch_size, KEY.EPOCH: settings.epochs,
    })

    def validate() -> dict[str, float]:
        trainer.run_one_epoch(valid_loader, is_train=False, error_recorder=valid_rec)
        return _read_recorder(valid_rec)

    def train_epoch() -> dict[str, float]:
        trainer.run_one_epoch(train_loader, is_train=True, error_recorder=train_rec)
        return _read_recorder(train_rec)

    def restore(saved: dict[str, Any]) -> None:
        trainer.load_state_dicts(saved["model_state_dict"], saved["optimizer_state_dict"],
                                 saved["scheduler_state_dict"])

    run = epoch_state.run_epochs(
        "sevennet finetune", epoch_state.Trainee(
            train=train_epoch, validate=validate, lr=trainer.get_lr,
            scheduler_step=trainer.scheduler_step, weights=trainer.get_checkpoint_dict,
            restore=restore, save_best=lambda epoch: epoch_state.save_atomic(
                {**trainer.get_checkpoint_dict(), "config": config, "epoch": epoch},
                best_path)),
        state=state, fingerprint=fingerprint, shift=shift, generator=gen,
        epochs=settings.epochs, patience=settings.patience_epochs, resume_path=resume_path,
        progress=progress)
    write_model_json(model_dir, epoch_state.finetuned_meta(
        BACKEND, foundation, base_model_dir, CHECKPOINT, shift, train, use_stress, run,
        settings.backend_dump()))
    return model_dir
