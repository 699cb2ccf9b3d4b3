"""The student's first training set: teacher MD plus the run's DFT configurations.

Every frame carries ``info["distill_kind"]`` so the record (and the report) can say how
many frames of each kind the student saw:

* ``teacher_md``: frames the teacher's own MD sampled (already teacher-labelled);
* ``dft_relabel``: every configuration the run paid DFT for, relabelled by the teacher —
  where a user checks the student, and where the teacher is most accurate;
* ``dft_perturbed``: perturbed copies of those (small displacements and strains), so the
  student learns the neighbourhood of each DFT configuration, not a point.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ase import Atoms

from pfd import run_store as rs
from pfd.distill.teacher import relabel
from pfd.perturb import perturb
from pfd.run_store import RunContext
from pfd.select.filters import apply_filters
from pfd.steps import MapFn, load_datasets, serial_map, split_by_hash

__all__ = ["KIND", "build_synthetic", "dft_configurations", "kind_counts", "subsample"]

#: the ``Atoms.info`` key naming where a distillation frame came from
KIND = "distill_kind"


def subsample(frames: list[Atoms], n: int) -> list[Atoms]:
    """At most ``n`` frames, evenly spread over the list (trajectories in time order)."""
    if len(frames) <= n:
        return frames
    step = len(frames) / n
    return [frames[int(i * step)] for i in range(n)]


def kind_counts(frames: list[Atoms]) -> dict[str, int]:
    return dict(sorted(Counter(str(a.info.get(KIND, "unknown")) for a in frames).items()))


def dft_configurations(ctx: RunContext) -> list[Atoms]:
    """Every DFT-labelled frame of the run (init and each iteration's D_i)."""
    return load_datasets(ctx.store, rs.all_dft_keys(ctx.store, ctx.run_id))


def _tagged(frames: list[Atoms], kind: str | None = None) -> list[Atoms]:
    """Mark frames as teacher-labelled (and of ``kind``, unless they carry one)."""
    for a in frames:
        if kind is not None:
            a.info[KIND] = kind
        a.info["labeller"] = "teacher"
    return frames


def build_synthetic(ctx: RunContext, explored_keys: list[str], teacher_key: str,
                    map_fn: MapFn = serial_map) -> dict[str, Any]:
    """Teacher-labelled frames of every kind, split into train and test by frame hash.

    ``distill.max_frames`` caps the teacher-MD kind only (subsampled evenly in time):
    the DFT-derived kinds are few and each one is a configuration the run paid for.
    """
    store, rec_key = ctx.store, ctx.key("distill", "synthetic.json")
    if store.exists(rec_key):
        return store.get_json(rec_key)
    d = ctx.cfg.distill
    assert d is not None
    md = load_datasets(store, explored_keys)
    kept, rejected = apply_filters(md, ctx.cfg.filters)
    frames = _tagged(subsample(kept, d.max_frames), "teacher_md")
    failed = 0
    dft = dft_configurations(ctx) if (d.data.dft_relabel or d.data.dft_copies) else []
    extra: list[Atoms] = []
    if d.data.dft_relabel:
        extra += [a.copy() for a in dft]
        for a in extra:
            a.info[KIND] = "dft_relabel"
    if d.data.dft_copies:
        copies = perturb(dft, d.data.dft_copies, d.data.atom_displacement_A,
                         d.data.cell_strain, seed=d.data.seed, include_unperturbed=False)
        for a in copies:
            a.info[KIND] = "dft_perturbed"
        extra += copies
    if extra:
        labelled, failed = relabel(ctx, teacher_key, extra, map_fn)
        rs.record_force_calls(ctx, "distill-teacher-labels", ctx.key("distill", "synthetic"),
                              {"force_calls": len(extra),
                               "atom_steps": sum(len(a) for a in extra)})
        frames += _tagged(labelled)  # label_frames keeps each input's info: its kind
    train, test = split_by_hash(frames, d.test_fraction)
    store.put_frames(ctx.key("distill", "synthetic.extxyz"), train)
    store.put_frames(ctx.key("distill", "synthetic_test.extxyz"), test)
    record = {"explored": len(md), "filtered": sum(rejected.values()),
              "rejected_by_reason": rejected, "kinds": kind_counts(frames),
              "teacher_failed": failed, "teacher_calls": len(extra),
              "train": ctx.key("distill", "synthetic.extxyz"), "n_train": len(train),
              "test": ctx.key("distill", "synthetic_test.extxyz"), "n_test": len(test)}
    store.put_json(rec_key, record)
    return record
