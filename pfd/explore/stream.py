"""One trajectory streamed to the artifact store, resumable after its worker dies.

Layout under ``prefix`` for trajectory ``T``::

    T.part-0000.extxyz, T.part-0001.extxyz, ...   sampled frames, in order
    T.checkpoint.json    parts written so far + the exact MD state after the last one
    T.json               the record; written last, it marks the trajectory finished

A part is written before the checkpoint that counts it, so the checkpoint never names a
part that is not there. A rerun with a checkpoint *continues* the trajectory from that
state rather than restarting it: foundation-model MD costs milliseconds per atom-step
(DESIGN.md), a long trajectory can outlive a batch job's walltime, and a restart-only
policy would redo it forever. The continuation restores the integrator's full state,
so the frames are the ones an uninterrupted run gives (to floating-point round-off).
A checkpoint written for a different trajectory (changed spec, structure or model) is
discarded and the trajectory restarts from step 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd.explore.md import MDState, TrajectorySpec, run_md
from pfd.frames import frame_hash
from pfd.store import ArtifactStore


def record_key(prefix: str, traj_id: str) -> str:
    return f"{prefix}/{traj_id}.json"


def checkpoint_key(prefix: str, traj_id: str) -> str:
    return f"{prefix}/{traj_id}.checkpoint.json"


def part_key(prefix: str, traj_id: str, index: int) -> str:
    return f"{prefix}/{traj_id}.part-{index:04d}.extxyz"


def frame_keys(record: dict[str, Any], prefix: str) -> list[str]:
    """The extxyz keys holding a finished trajectory's frames, in sampling order."""
    if "parts" in record:
        return list(record["parts"])
    return [f"{prefix}/{record['traj_id']}.extxyz"]  # records written before streaming


def trajectory_identity(spec: TrajectorySpec, atoms: Atoms, context: str = "") -> str:
    """What a checkpoint must match to be continued: spec, start structure, model."""
    blob = json.dumps({"spec": spec.model_dump(mode="json"), "structure": frame_hash(atoms),
                       "context": context}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _stale_parts(store: ArtifactStore, prefix: str, traj_id: str,
                 keep: list[str]) -> list[str]:
    return [k for k in store.list(f"{prefix}/{traj_id}.part-") if k not in keep]


def run_streamed(store: ArtifactStore, prefix: str, atoms: Atoms, calc: Calculator,
                 spec: TrajectorySpec, context: str = "",
                 on_sample: Callable[[Atoms], None] | None = None) -> dict[str, Any]:
    """Run, continue, or (when finished) just return the record of one trajectory.

    ``context`` names what else determines the trajectory (the model key), so a
    checkpoint left by another model is never continued with this one.
    """
    rec_key, ck_key = record_key(prefix, spec.traj_id), checkpoint_key(prefix, spec.traj_id)
    if store.exists(rec_key):
        return store.get_json(rec_key)
    identity = trajectory_identity(spec, atoms, context)
    resume: MDState | None = None
    parts: list[str] = []
    if store.exists(ck_key):
        ck = store.get_json(ck_key)
        if ck.get("identity") == identity:
            resume, parts = MDState.from_dict(ck["state"]), list(ck["parts"])
        else:
            store.delete(ck_key)
    if resume is None:  # a fresh start owns no earlier part
        for k in _stale_parts(store, prefix, spec.traj_id, keep=[]):
            store.delete(k)

    def on_part(frames: list[Atoms], state: MDState) -> None:
        key = part_key(prefix, spec.traj_id, len(parts))
        store.put_frames(key, frames)
        parts.append(key)
        store.put_json(ck_key, {"identity": identity, "parts": parts,
                                "state": state.to_dict()})

    result = run_md(atoms, calc, spec, on_sample=on_sample, on_part=on_part, resume=resume)
    record = result.record() | {"parts": list(parts)}
    store.put_json(rec_key, record)
    # tidy-up only: the record lists the parts, so leftovers would be ignored anyway
    for k in _stale_parts(store, prefix, spec.traj_id, keep=parts):
        store.delete(k)
    store.delete(ck_key)
    return record
