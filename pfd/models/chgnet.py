"""Fine-tune CHGNet (a foundation whose weights ship in the ``chgnet`` wheel) on DFT frames.

Training runs in-process through chgnet's own pieces (``CHGNet``, its graph converter,
``collate_graphs`` and ``CombinedLoss``) in an epoch loop of ours rather than its
``Trainer.train``, for the same reasons as the sevennet backend: ``Trainer.train`` keeps
only best-MAE checkpoints, cannot stop early on a validation loss and cannot resume a
killed run on the same batches. The loop is the one every in-process backend shares
(:mod:`pfd.models.epoch_state`): the starting weights are epoch 0 of early stopping, the
whole state is saved after every epoch, a rerun continues after the last one.

Units at this boundary: CHGNet predicts intensive energies (eV/atom), forces (eV/Å)
and stresses in GPa with ASE's sign (its calculator multiplies by ``ase.units.GPa``).
Our frames carry ASE stresses in eV/Å³, so a label is ``stress / units.GPa``. (chgnet's
own ``StructureData`` expects VASP's kbar with the opposite sign and flips it; we build
the targets ourselves and never pass through it.)

Energy reference: as for every backend (:mod:`pfd.models.energy_shift`), a per-element
shift to the labeller is fitted against the starting model and the network trains on
shifted energies; CHGNet's own ``AtomRef`` stays frozen at its MPtrj fit.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.stress import voigt_6_to_full_3x3_stress

from pfd import frames as fr
from pfd.config import FinetuneSpec, looks_like_path
from pfd.device import torch_device
from pfd.models import epoch_state
from pfd.models.energy_shift import ShiftedCalculator, fit_energy_shift, shifted_frames
from pfd.models.meta import MODEL_JSON
from pfd.threads import pin_threads

log = logging.getLogger(__name__)

BACKEND = "chgnet"
CHECKPOINT = "chgnet_best.pth.tar"
#: the pretrained models whose weights ship inside the chgnet wheel (``CHGNet.load``)
PRETRAINED_NAMES = ("0.3.0", "0.2.0", "r2scan")
#: atomic numbers CHGNet embeds (its ``atom_embedding`` has one row per element 1..94)
MAX_Z = 94
# per-epoch learning-rate decay, as in the sevennet backend (sevenn's fine-tune preset)
_LR_GAMMA = 0.99


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """chgnet prints on every load and every calculator ("CHGNet will run on cpu")."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_model(name_or_path: str) -> Any:
    """A CHGNet from a pretrained name or a saved file, refusing any download."""
    from chgnet.model import CHGNet

    path = Path(name_or_path)
    if path.is_file():
        with _quiet():
            return CHGNet.from_file(str(path))
    if looks_like_path(str(name_or_path)):
        raise FileNotFoundError(
            f"chgnet model file not found: looked for {path.resolve()} ({name_or_path!r} is "
            "a file path, not a pretrained name); check finetune.foundation or give a "
            f"pretrained name ({', '.join(PRETRAINED_NAMES)})")
    if name_or_path not in PRETRAINED_NAMES:
        raise ValueError(f"{name_or_path!r} is not a CHGNet pretrained model name nor a model "
                         f"file; names the chgnet wheel ships: {', '.join(PRETRAINED_NAMES)}")
    with _quiet():
        return CHGNet.load(model_name=name_or_path, use_device="cpu", verbose=False)


def _raw_calculator(model: Any, threads: int) -> Calculator:
    pin_threads(threads, torch=True)
    from chgnet.model.dynamics import CHGNetCalculator

    with _quiet():
        return CHGNetCalculator(model=model, use_device=torch_device())


def foundation_calculator(name: str = "0.3.0", threads: int = 1) -> Calculator:
    """The pretrained model in its own energy reference (no shift)."""
    pin_threads(threads, torch=True)
    return _raw_calculator(load_model(name), threads)


def foundation_elements(name: str) -> list[str]:
    """The elements a CHGNet model embeds: Z = 1..94 for the shipped models and for a
    saved one (``pfd check`` asks; a pretrained name costs no model load)."""
    from ase.data import chemical_symbols

    if name not in PRETRAINED_NAMES:
        load_model(name)  # a missing or unreadable file fails here, with its message
    return sorted(chemical_symbols[1:MAX_Z + 1])


def read_model_json(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"not a pfd model directory (no {MODEL_JSON}): {model_dir}")
    meta = json.loads(path.read_text())
    if meta.get("backend") != BACKEND:
        raise ValueError(f"{path} is a {meta.get('backend')!r} model, not {BACKEND!r}")
    return meta


def _write_model_json(model_dir: Path, meta: dict[str, Any]) -> None:
    tmp = model_dir / (MODEL_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(model_dir / MODEL_JSON)


def save_foundation(model_dir: Path, name: str = "0.3.0",
                    energy_shift: dict[str, float] | None = None) -> Path:
    """The pretrained model as a pfd model directory (M_0), optionally in the labeller's
    energy reference."""
    load_model(name)  # fail here, not in a worker
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    shift = {k: float(v) for k, v in (energy_shift or {}).items()}
    _write_model_json(model_dir, {"backend": BACKEND, "kind": "foundation", "foundation": name,
                                  "energy_shift_eV": shift, "type_map": sorted(shift)})
    return model_dir


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    """A calculator for a pfd chgnet model directory, in the DFT energy reference."""
    meta = read_model_json(Path(model_dir))
    if meta["kind"] == "foundation":
        model = load_model(meta["foundation"])
    elif meta["kind"] == "finetuned":
        model = load_model(str(Path(model_dir) / meta["checkpoint"]))
    else:
        raise ValueError(f"unknown chgnet model kind {meta['kind']!r} in {model_dir}")
    return ShiftedCalculator(_raw_calculator(model, threads), meta.get("energy_shift_eV"))


# ---------------------------------------------------------------------------------------
# fine-tuning


def _starting_point(base_model_dir: Path | None, settings: FinetuneSpec) -> tuple[str, str]:
    """(model to start from, foundation name recorded in the new model)."""
    if base_model_dir is None:
        return settings.foundation, settings.foundation
    meta = read_model_json(Path(base_model_dir))
    if meta["kind"] == "foundation":
        return meta["foundation"], meta["foundation"]
    return str(Path(base_model_dir) / meta["checkpoint"]), meta["foundation"]


def _graphs(model: Any, frames: Sequence[Atoms], with_stress: bool) -> list[tuple[Any, dict]]:
    """(graph, targets) pairs, built once: chgnet's ``StructureData`` rebuilds every graph
    in every epoch."""
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    out = []
    for i, atoms in enumerate(frames):
        graph = model.graph_converter(AseAtomsAdaptor.get_structure(atoms), graph_id=str(i))
        targets = {"e": torch.tensor(fr.energy(atoms) / len(atoms), dtype=torch.float32),
                   "f": torch.tensor(fr.forces(atoms), dtype=torch.float32)}
        if with_stress:
            sigma = np.asarray(fr.stress(atoms), dtype=float)
            full = (voigt_6_to_full_3x3_stress(sigma) if sigma.shape == (6,)
                    else sigma.reshape(3, 3)) / units.GPa
            targets["s"] = torch.tensor(full, dtype=torch.float32)
        out.append((graph, targets))
    return out


def _run_epoch(model: Any, loader: Any, criterion: Any, task: str,
               optimizer: Any | None) -> dict[str, float]:
    """One pass; trains when ``optimizer`` is given. Loss is the frame-weighted mean of the
    batch losses, RMSEs are over all energies (eV/atom) and force components (eV/Å)."""
    import torch

    model.train(optimizer is not None)
    loss_sum, n_frames, e_sq, f_sq, n_f = 0.0, 0, 0.0, 0.0, 0
    for graphs, targets in loader:
        for g in graphs:
            g.atom_frac_coord.requires_grad = True
            g.atom_frac_coord.grad = None
        pred = model(graphs, task=task)
        out = criterion(targets, pred)
        if optimizer is not None:
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
        with torch.no_grad():
            loss_sum += float(out["loss"]) * len(graphs)
            n_frames += len(graphs)
            e_sq += float(((pred["e"].reshape(-1) - targets["e"]) ** 2).sum())
            df = torch.cat([p.detach() for p in pred["f"]]) - torch.cat(targets["f"])
            f_sq += float((df ** 2).sum())
            n_f += df.numel()
    return {"loss": loss_sum / n_frames, "energy_rmse": math.sqrt(e_sq / n_frames),
            "force_rmse": math.sqrt(f_sq / n_f)}


def finetune(train: list[Atoms], valid: list[Atoms], workdir: Path,
             settings: FinetuneSpec, base_model_dir: Path | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             threads: int = 1) -> Path:
    """Fine-tune from the foundation (or a previous pfd chgnet model); return the model dir.

    Same contract as :func:`pfd.models.sevennet.finetune`: ``settings`` is the run's
    ``finetune`` block, the starting weights are epoch 0 of early stopping (the result is
    never worse on the validation loss than its start), the state after every epoch is in
    ``workdir/resume.pth`` and a rerun with the same frames and settings continues there,
    on the same batches; ``progress`` gets one row per epoch (``step`` = epoch).
    """
    if not train:
        raise ValueError("finetune needs at least one training frame")
    import chgnet
    import torch
    from chgnet.data.dataset import collate_graphs
    from chgnet.trainer.trainer import CombinedLoss
    from torch.utils.data import DataLoader

    workdir = Path(workdir)
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    pin_threads(threads, torch=True)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    start, foundation = _starting_point(base_model_dir, settings)
    resume_path = workdir / epoch_state.RESUME_FILE
    best_path = model_dir / CHECKPOINT
    fingerprint = epoch_state.fingerprint(train, valid, {
        "start": start, "settings": settings.backend_dump(), "chgnet": chgnet.__version__})
    state = (epoch_state.load_state(resume_path, fingerprint, "chgnet finetune")
             if best_path.is_file() else None)
    model = load_model(start)
    shift = (state["shift"] if state is not None
             else fit_energy_shift(train, _raw_calculator(model, threads)))
    use_stress = all(fr.stress(a) is not None for a in train + valid)
    task = "efs" if use_stress else "ef"
    device = torch_device()
    model.to(device)
    for p in model.composition_model.parameters():  # AtomRef: the shift does its job
        p.requires_grad = False

    train_set = _graphs(model, shifted_frames(train, shift, use_stress), use_stress)
    valid_set = (_graphs(model, shifted_frames(valid, shift, use_stress), use_stress)
                 if valid else train_set)
    gen = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=True,
                              generator=gen, collate_fn=collate_graphs)
    valid_loader = DataLoader(valid_set, batch_size=settings.batch_size, shuffle=False,
                              collate_fn=collate_graphs)
    criterion = CombinedLoss(target_str=task, criterion="Huber", delta=settings.huber_delta,
                             energy_loss_ratio=settings.energy_weight,
                             force_loss_ratio=settings.force_weight,
                             stress_loss_ratio=settings.stress_weight)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=_LR_GAMMA)

    def save_best(epoch: int) -> None:
        epoch_state.save_atomic({"model": model.as_dict(), "epoch": epoch}, best_path)

    def save_state(epoch: int, stopped: bool) -> None:
        # the best checkpoint is written first, so a state never names unsaved weights
        epoch_state.save_atomic({
            "fingerprint": fingerprint, "epoch": epoch, "stopped": stopped, "shift": shift,
            "best_loss": best_loss, "best_epoch": best_epoch, "history": history,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}, resume_path)

    resumed_from: int | None = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history: list[dict[str, Any]] = state["history"]
        best_loss, best_epoch = state["best_loss"], state["best_epoch"]
        first, stopped = state["epoch"] + 1, state["stopped"]
        resumed_from = state["epoch"]
        log.info("chgnet finetune: resuming after epoch %d (best epoch %d)",
                 resumed_from, best_epoch)
    else:
        v = _run_epoch(model, valid_loader, criterion, task, None)
        history = [{"epoch": 0, "train_loss": None, "valid_loss": v["loss"],
                    "valid_energy_rmse": v["energy_rmse"], "valid_force_rmse": v["force_rmse"]}]
        best_loss, best_epoch, first, stopped = v["loss"], 0, 1, False
        save_best(0)
        save_state(0, False)
    for epoch in range(first, settings.epochs + 1):
        if stopped:
            break
        lr = float(scheduler.get_last_lr()[0])
        t = _run_epoch(model, train_loader, criterion, task, optimizer)
        v = _run_epoch(model, valid_loader, criterion, task, None)
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": t["loss"],
               "train_force_rmse": t["force_rmse"], "valid_loss": v["loss"],
               "valid_energy_rmse": v["energy_rmse"], "valid_force_rmse": v["force_rmse"]}
        history.append(row)
        log.info("chgnet finetune epoch %d: train %.4g valid %.4g (F rmse %.4f)",
                 epoch, t["loss"], v["loss"], v["force_rmse"])
        if not math.isfinite(t["loss"]):
            raise FloatingPointError(f"chgnet fine-tuning diverged at epoch {epoch}")
        if v["loss"] < best_loss:
            best_loss, best_epoch = v["loss"], epoch
            save_best(epoch)
        stopped = epoch - best_epoch >= settings.patience_epochs
        save_state(epoch, stopped)
        if progress is not None:
            progress({"step": epoch, **{k: float(x) for k, x in row.items()
                                        if k != "epoch" and x is not None}})

    _write_model_json(model_dir, {
        "backend": BACKEND,
        "kind": "finetuned",
        "foundation": foundation,
        "base_model": str(base_model_dir) if base_model_dir is not None else None,
        "checkpoint": CHECKPOINT,
        "energy_shift_eV": shift,
        "type_map": fr.species(train),
        "stress_trained": use_stress,
        "epochs_run": len(history) - 1,
        "best_epoch": best_epoch,
        "resumed_after_epoch": resumed_from,
        "history": history,
        "settings": settings.backend_dump(),
    })
    return model_dir
