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
import logging
import math
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
from pfd.models.meta import read_model_json as meta_json
from pfd.models.meta import write_model_json
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
    return meta_json(model_dir, BACKEND)


def save_foundation(model_dir: Path, name: str = "0.3.0",
                    energy_shift: dict[str, float] | None = None) -> Path:
    """The pretrained model as a pfd model directory (M_0), optionally in the labeller's
    energy reference."""
    load_model(name)  # fail here, not in a worker
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    shift = {k: float(v) for k, v in (energy_shift or {}).items()}
    write_model_json(model_dir, {"backend": BACKEND, "kind": "foundation", "foundation": name,
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
    begun = epoch_state.begin(BACKEND, workdir, train, valid, settings, base_model_dir,
                              CHECKPOINT, ("chgnet", chgnet.__version__), threads)
    model_dir, best_path, resume_path = begun.model_dir, begun.best_path, begun.resume_path
    start, foundation, fingerprint, state = (begun.start, begun.foundation, begun.fingerprint,
                                             begun.state)
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

    def weights() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}

    def restore(saved: dict[str, Any]) -> None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])

    run = epoch_state.run_epochs(
        "chgnet finetune", epoch_state.Trainee(
            train=lambda: _run_epoch(model, train_loader, criterion, task, optimizer),
            validate=lambda: _run_epoch(model, valid_loader, criterion, task, None),
            lr=lambda: float(scheduler.get_last_lr()[0]), scheduler_step=scheduler.step,
            weights=weights, restore=restore, save_best=lambda epoch: epoch_state.save_atomic(
                {"model": model.as_dict(), "epoch": epoch}, best_path)),
        state=state, fingerprint=fingerprint, shift=shift, generator=gen,
        epochs=settings.epochs, patience=settings.patience_epochs, resume_path=resume_path,
        progress=progress)
    write_model_json(model_dir, epoch_state.finetuned_meta(
        BACKEND, foundation, base_model_dir, CHECKPOINT, shift, train, use_stress, run,
        settings.backend_dump()))
    return model_dir
