"""A DFT audit of the final student where it will actually run: its own MD.

Every other student figure compares against the teacher, or against DFT frames the run
chose for the teacher. Here a few frames of the final student's own trajectories are
labelled by the run's labeller (through the label cache, like every DFT frame) and both
student and teacher are tested on them: the one number that says whether the student
can be trusted in the simulations it is made for. The labelled frames are stored as
``distill/audit/dft.extxyz``: deliberately not a ``labelled.extxyz``, so they never join
the run's training data and stay an independent test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pfd import run_store as rs
from pfd.frames import strip_labels
from pfd.metrics import evaluate
from pfd.model_cache import cached_calculator
from pfd.run_store import RunContext
from pfd.select.filters import apply_filters
from pfd.steps import MapFn, label_and_store, load_datasets, serial_map

__all__ = ["audit"]


def audit(ctx: RunContext, student_key: str, teacher_key: str, explored_keys: list[str],
          map_fn: MapFn = serial_map, seed: int = 0) -> dict[str, Any]:
    """Label ``distill.audit_frames`` frames of the student's MD (``explored_keys``) with
    DFT and test student and teacher on them; stored as ``distill/audit/record.json``."""
    d = ctx.cfg.distill
    assert d is not None
    store, prefix = ctx.store, rs.distill_audit_prefix(ctx.run_id)
    rec_key = f"{prefix}/record.json"
    if store.exists(rec_key):
        return store.get_json(rec_key)
    frames, _ = apply_filters(load_datasets(store, explored_keys), ctx.cfg.filters)
    n = min(d.audit_frames, len(frames))
    pick = np.sort(np.random.default_rng(seed).choice(len(frames), n, replace=False))
    chosen = [strip_labels(frames[i]) for i in pick]
    res, counts = label_and_store(ctx, chosen, prefix, map_fn, data_name="dft.extxyz")
    record: dict[str, Any] = {"data": counts["dataset"], "n_frames": counts["labelled"],
                              "failed": counts["failed"], "dft_computed": counts["dft_computed"],
                              "dft_cached": counts["dft_cached"], "trajectories": sorted(
                                  {str(a.info.get("traj_id", "")) for a in chosen})}
    for name, key in (("student", student_key), ("teacher", teacher_key)):
        if res.labelled:
            m, _ = evaluate(cached_calculator(ctx.store_url, key, str(ctx.workdir), 1),
                            res.labelled)
            record[name] = m.summary() | {"model": key}
    store.put_json(rec_key, record)
    return record
