"""Training the student of one round, and publishing the final one.

Round 0 trains from scratch on the teacher's data; each refinement round starts from
the previous round's weights (its ``checkpoint.pt``) on the grown set. Every round's
model stays in the store (``distill/round-RR/student``) so a killed run resumes at the
round it was in; the final one is copied to ``distill/student``, where users, validation
and ``pfd fetch`` find it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pfd import run_store as rs
from pfd.model_cache import fetch_model, model_ready, upload_model
from pfd.models.meta import MODEL_JSON
from pfd.run_store import RunContext
from pfd.steps import load_datasets

__all__ = ["publish_final", "train_round", "training_summary"]


def train_round(ctx: RunContext, round_idx: int, train_keys: list[str], valid_key: str,
                init_from: str | None = None, steps: int | None = None,
                progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or reuse) the student of ``round_idx`` on ``train_keys``."""
    from pfd.models import deepmd
    from pfd.models.deepmd import CHECKPOINT_FILE

    store = ctx.store
    d = ctx.cfg.distill
    assert d is not None
    key = f"{rs.distill_round_prefix(ctx.run_id, round_idx)}/student"
    if model_ready(store, key):
        return {"model": key, "reused": True,
                "training": training_summary(round_idx, store.get_json(f"{key}/{MODEL_JSON}"))}
    train = load_datasets(store, train_keys)
    valid = store.get_frames(valid_key)
    s = d.student if steps is None else d.student.model_copy(update={"steps": int(steps)})
    workdir = ctx.workdir / "student" / f"round-{round_idx:02d}"
    if s.export_lammps:
        from pfd.models import deepmd_export

        # the TensorFlow student has no init-from-checkpoint path here: each round
        # trains from scratch on the grown set
        model_dir = deepmd_export.export_lammps(train, valid, workdir, s, progress=progress)
    else:
        init = None
        if init_from is not None:
            init = fetch_model(ctx.store_url, init_from, ctx.workdir) / CHECKPOINT_FILE
            if not init.is_file():
                init = None  # a student from before checkpoints were kept: from scratch
        model_dir = deepmd.train_student(train, valid, workdir, s, progress=progress,
                                         init_checkpoint=init)
    upload_model(store, key, model_dir)
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    return {"model": key, "reused": False, "n_train": len(train), "steps": s.steps,
            "init_from": init_from, "training": training_summary(round_idx, meta)}


def training_summary(round_idx: int, meta: dict[str, Any]) -> dict[str, Any]:
    """How one round's training went, from its ``pfd_model.json``: steps trained of the
    ceiling, why it ended early (a plateau, a wall budget) and its wall time."""
    ceiling = int(meta["settings"]["steps"])
    final = (meta.get("lcurve") or {}).get("final") or {}
    return {"round": round_idx, "steps_ceiling": ceiling,
            "steps_trained": int(meta.get("steps_trained") or final.get("step") or ceiling),
            "stopped_early": meta.get("stopped_early"),
            "train_seconds": meta.get("train_seconds"),
            "n_train_frames": meta.get("n_train_frames")}


def publish_final(ctx: RunContext, round_key: str) -> str:
    """Copy the chosen round's student to ``distill/student`` (marker last)."""
    final = rs.student_key(ctx.run_id)
    if not model_ready(ctx.store, final):
        upload_model(ctx.store, final, fetch_model(ctx.store_url, round_key, ctx.workdir))
    return final
