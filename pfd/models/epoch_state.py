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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pfd import frames as fr

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
