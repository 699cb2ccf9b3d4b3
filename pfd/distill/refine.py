"""Student-driven refinement: run the student, let the teacher judge where it goes.

A student trained on the teacher's trajectories is only checked there; when it drives
MD itself it visits configurations of its own, and where it is wrong those are exactly
the ones it drifts into. One round (:func:`measure_round`) runs the student's MD at the
distillation conditions plus a hotter temperature (where it breaks first), labels the
sampled frames with the teacher (one call per frame: the student's MD is ~100× cheaper
per step than the teacher's), and measures the student–teacher disagreement frame by
frame. The frames where it is largest join the training set for the next student.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

from pfd import run_store as rs
from pfd.config import DistillSpec, MDGroup
from pfd.distill.data import KIND, subsample
from pfd.distill.teacher import relabel
from pfd.frames import frame_hash
from pfd.metrics import compare
from pfd.run_store import RunContext
from pfd.select.filters import apply_filters
from pfd.steps import MapFn, explore, load_datasets, serial_map

__all__ = ["default_bound", "measure_round", "refine_groups", "worst_frames"]

#: student–teacher force disagreement bound, as a multiple of the teacher's own F RMSE
#: vs DFT: independent errors add in quadrature, so √(1 + 0.75²) = 1.25× the teacher
BOUND_FACTOR = 0.75


def default_bound(d: DistillSpec, teacher_force_rmse_eV_A: float) -> float:
    """The configured bound, or :data:`BOUND_FACTOR` × the teacher's error vs DFT."""
    if d.refine.bound_force_eV_A is not None:
        return float(d.refine.bound_force_eV_A)
    return BOUND_FACTOR * float(teacher_force_rmse_eV_A)


def refine_groups(d: DistillSpec) -> list[MDGroup]:
    """The distillation's MD groups, each with one hotter temperature added."""
    out = []
    for g in d.groups:
        hot = round(max(g.temperatures_K) * d.refine.hot_factor, 1)
        temps = sorted({*g.temperatures_K, hot})
        out.append(g.model_copy(update={"temperatures_K": temps}))
    return out


def worst_frames(teacher: list[Atoms], per_frame: list[dict[str, float]], n: int
                 ) -> list[Atoms]:
    """The ``n`` teacher-labelled frames with the largest student force error."""
    order = np.argsort([-f["force_rmse_eV_A"] for f in per_frame], kind="stable")
    return [teacher[i] for i in order[:n]]


def measure_round(ctx: RunContext, round_idx: int, student_key: str, teacher_key: str,
                  bound_eV_A: float, map_fn: MapFn = serial_map) -> dict[str, Any]:
    """Student MD → teacher labels → disagreement; the worst frames stored for training.

    Stored as ``distill/round-RR/record.json`` (returned as is on a rerun). The MD frames
    carry the student's own labels (the model that ran them), so the disagreement needs
    only the teacher's calls.
    """
    d = ctx.cfg.distill
    assert d is not None
    store, prefix = ctx.store, rs.distill_round_prefix(ctx.run_id, round_idx)
    rec_key = f"{prefix}/record.json"
    if store.exists(rec_key):
        return store.get_json(rec_key)
    ex = explore(ctx, student_key, refine_groups(d), f"{prefix}/explore", map_fn)
    rs.record_force_calls(ctx, "distill-student", f"{prefix}/explore", ex)
    kept, rejected = apply_filters(load_datasets(store, ex["keys"]), ctx.cfg.filters)
    sampled = subsample(kept, d.refine.max_label_frames)
    teacher, failed = relabel(ctx, teacher_key, sampled, map_fn)
    rs.record_force_calls(ctx, "distill-teacher-labels", f"{prefix}/labels",
                          {"force_calls": len(sampled),
                           "atom_steps": sum(len(a) for a in sampled)})
    by_hash = {frame_hash(a): a for a in sampled}
    student = [by_hash[frame_hash(a)] for a in teacher]
    m, _ = compare(teacher, student)
    worst = worst_frames(teacher, m.per_frame, d.refine.frames_per_round)
    for a in worst:
        a.info[KIND] = "student_md"
        a.info["labeller"] = "teacher"
    added_key = f"{prefix}/added.extxyz"
    store.put_frames(added_key, worst)
    f_frames = [f["force_rmse_eV_A"] for f in m.per_frame]
    record = {
        "round": round_idx, "student": student_key, "trajectories": ex["trajectories"],
        "stopped_early": ex["stopped_early"], "md_frames": len(kept) + sum(rejected.values()),
        "rejected_by_reason": rejected, "teacher_failed": failed,
        "teacher_calls": len(sampled), "frames": m.n_frames,
        "force_rmse_eV_A": m.force_rmse_eV_A, "energy_rmse_meV_atom": m.energy_rmse_meV_atom,
        "force_rmse_max_frame_eV_A": float(max(f_frames)) if f_frames else None,
        "bound_force_eV_A": bound_eV_A,
        "converged": bool(m.n_frames and m.force_rmse_eV_A <= bound_eV_A
                          and not ex["stopped_early"]),
        "added": added_key, "n_added": len(worst),
        "explored_keys": ex["keys"],
    }
    store.put_json(rec_key, record)
    return record
