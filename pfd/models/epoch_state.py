"""Resumable epoch-loop training state, shared by the in-process backends (sevennet, chgnet).

After every epoch a backend saves its whole training state (weights, optimiser,
scheduler, shuffling generator, early-stopping record) atomically; a run killed at any
point continues after its last finished epoch, on the same batches, when called again
with the same frames and settings. The fingerprint is what a saved state belongs to,
so a state of other data or settings is never resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from pfd import frames as fr

if TYPE_CHECKING:
    from pfd.config import FinetuneSpec

log = logging.getLogger(__name__)

#: the file in a fine-tune work directory holding the state after the last epoch
RESUME_FILE = "resume.pth"


def fingerprint(train: Sequence[Atoms], valid: Sequence[Atoms], identity: dict[str, Any]) -> str:
    """A digest of the frames (positions, cell, labels) and of ``identity`` (starting
    weights, settings, library version)."""
    h = hashlib.sha256()
    h.update(json.dumps(identity, sort_keys=True).encode())
    for part in (train, valid):
        h.update(str(len(part)).encode())
        for a in part:
            stress = fr.stress(a)
            for arr in (a.numbers, a.positions, a.cell.array, fr.forces(a),
                        [fr.energy(a)], stress if stress is not None else []):
                h.update(np.ascontiguousarray(arr, dtype=float).tobytes())
    return h.hexdigest()


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through the store's atomic write: a kill mid-write leaves the old file."""
    import torch

    from pfd.store import atomic_write

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: Path, expected: str, who: str) -> dict[str, Any] | None:
    """The saved state at ``path`` if it belongs to fingerprint ``expected``, else None."""
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - an unreadable state only costs the epochs
        log.warning("%s: ignoring unreadable resume state %s (%s)", who, path, exc)
        return None
    if state.get("fingerprint") != expected:
        log.info("%s: resume state %s belongs to other data/settings", who, path)
        return None
    return state


@dataclass
class EpochRun:
    """What an epoch loop did: its history (row 0 = the start), best epoch, resume point."""

    history: list[dict[str, Any]]
    best_epoch: int
    resumed_after_epoch: int | None


@dataclass
class Trainee:
    """The backend-specific pieces of one epoch loop.

    ``train``/``validate`` run one pass and return ``loss``, ``energy_rmse`` and
    ``force_rmse``; ``lr`` is the rate of the coming epoch and ``scheduler_step`` ends an
    epoch; ``weights``/``restore`` save and load the model, optimiser and scheduler
    states; ``save_best(epoch)`` writes the model a run keeps.
    """

    train: Callable[[], dict[str, float]]
    validate: Callable[[], dict[str, float]]
    lr: Callable[[], float]
    scheduler_step: Callable[[], None]
    weights: Callable[[], dict[str, Any]]
    restore: Callable[[dict[str, Any]], None]
    save_best: Callable[[int], None]


def run_epochs(who: str, trainee: Trainee, *, state: dict[str, Any] | None, fingerprint: str,
               shift: dict[str, float], generator: Any, epochs: int, patience: int,
               resume_path: Path, progress: Callable[[dict[str, Any]], None] | None
               ) -> EpochRun:
    """Early-stopped epochs with the state saved after each; ``state`` resumes one.

    The start counts as epoch 0, so the kept model is never worse on the validation loss
    than the weights it started from. The best checkpoint is always written before the
    state that names it.
    """
    import torch

    def save_state(epoch: int, stopped: bool) -> None:
        save_atomic({"fingerprint": fingerprint, "epoch": epoch, "stopped": stopped,
                     "shift": shift, "best_loss": best_loss, "best_epoch": best_epoch,
                     "history": history, "generator": generator.get_state(),
                     "torch_rng": torch.get_rng_state(), **trainee.weights()}, resume_path)

    resumed_from: int | None = None
    if state is not None:
        trainee.restore(state)
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history: list[dict[str, Any]] = state["history"]
        best_loss, best_epoch = state["best_loss"], state["best_epoch"]
        first, stopped = state["epoch"] + 1, state["stopped"]
        resumed_from = state["epoch"]
        log.info("%s: resuming after epoch %d (best epoch %d)", who, resumed_from, best_epoch)
    else:
        v = trainee.validate()
        history = [{"epoch": 0, "train_loss": None, "valid_loss": v["loss"],
                    "valid_energy_rmse": v["energy_rmse"], "valid_force_rmse": v["force_rmse"]}]
        best_loss, best_epoch, first, stopped = v["loss"], 0, 1, False
        trainee.save_best(0)
        save_state(0, False)
    for epoch in range(first, epochs + 1):
        if stopped:
            break
        lr = trainee.lr()
        t = trainee.train()
        v = trainee.validate()
        trainee.scheduler_step()
        row = {"epoch": epoch, "lr": lr, "train_loss": t["loss"],
               "train_force_rmse": t["force_rmse"], "valid_loss": v["loss"],
               "valid_energy_rmse": v["energy_rmse"], "valid_force_rmse": v["force_rmse"]}
        history.append(row)
        log.info("%s epoch %d: train %.4g valid %.4g (F rmse %.4f)", who, epoch, t["loss"],
                 v["loss"], v["force_rmse"])
        if not math.isfinite(t["loss"]):
            raise FloatingPointError(f"{who} diverged at epoch {epoch}")
        if v["loss"] < best_loss:
            best_loss, best_epoch = v["loss"], epoch
            trainee.save_best(epoch)
        stopped = epoch - best_epoch >= patience
        save_state(epoch, stopped)
        if progress is not None:
            progress({"step": epoch, **{k: float(x) for k, x in row.items()
                                        if k != "epoch" and x is not None}})
    return EpochRun(history, best_epoch, resumed_from)


def finetuned_meta(backend: str, foundation: str, base_model_dir: Path | None,
                   checkpoint: str, shift: dict[str, float], train: Sequence[Atoms],
                   use_stress: bool, run: EpochRun, settings_dump: dict[str, Any]
                   ) -> dict[str, Any]:
    """The ``pfd_model.json`` of a model an epoch loop fine-tuned."""
    return {"backend": backend, "kind": "finetuned", "foundation": foundation,
            "base_model": str(base_model_dir) if base_model_dir is not None else None,
            "checkpoint": checkpoint, "energy_shift_eV": shift, "type_map": fr.species(train),
            "stress_trained": use_stress, "epochs_run": len(run.history) - 1,
            "best_epoch": run.best_epoch, "resumed_after_epoch": run.resumed_after_epoch,
            "history": run.history, "settings": settings_dump}


@dataclass(frozen=True)
class Start:
    """Where a fine-tune starts: its directories, starting weights and any saved state."""

    model_dir: Path
    best_path: Path
    resume_path: Path
    start: str          # a pretrained name or a checkpoint file
    foundation: str     # recorded in the new model
    fingerprint: str
    state: dict[str, Any] | None


def begin(backend: str, workdir: Path, train: Sequence[Atoms], valid: Sequence[Atoms],
          settings: FinetuneSpec, base_model_dir: Path | None, checkpoint: str,
          library: tuple[str, str], threads: int) -> Start:
    """The common start of an in-process fine-tune: model dir, thread pin, seeds, the
    starting weights (foundation or ``base_model_dir``) and the state to resume, if any
    belongs to these frames, this start, these settings and ``library`` (name, version)."""
    import random

    import torch

    from pfd.models.meta import starting_point
    from pfd.threads import pin_threads

    model_dir = Path(workdir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    pin_threads(threads, torch=True)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    start, foundation = starting_point(base_model_dir, settings.foundation, backend)
    resume_path, best_path = Path(workdir) / RESUME_FILE, model_dir / checkpoint
    fp = fingerprint(train, valid, {"start": start, "settings": settings.backend_dump(),
                                    library[0]: library[1]})
    state = load_state(resume_path, fp, f"{backend} finetune") if best_path.is_file() else None
    return Start(model_dir, best_path, resume_path, start, foundation, fp, state)
