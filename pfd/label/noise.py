"""The labeller's own error: how far its discretisation moves a frame's labels.

A stage's criterion (``converge.force_rmse_eV_A``) can only be met if the labels are
converged to well below it: an unconverged k-point mesh adds a non-local error that no
model with a finite cutoff can fit. In the demo, QE at a 3×3×3 mesh differed from 5×5×5 by
up to 0.11 eV/Å on 8-atom-cell vacancy frames at 1000 K (diamond frames: 0.02) — as large
as the 0.10 eV/Å criterion the stage never reached. These functions compare two labellings
of the same frames so that floor is measured, not guessed (benchmarks/label_kpoints.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from pfd.config import LabellerSpec
from pfd.metrics import compare


@dataclass(frozen=True)
class LabelDifference:
    """One frame labelled twice. ``energy_meV_atom`` is after removing the mean per-atom
    shift of the whole set: a constant shift is absorbed by any model's reference energies,
    what matters is how relative energies move."""

    n_atoms: int
    energy_meV_atom: float
    force_rmse_eV_A: float
    force_max_eV_A: float


def label_differences(coarse: Sequence[Atoms], fine: Sequence[Atoms]) -> list[LabelDifference]:
    """Per-frame differences of ``coarse`` labels from ``fine`` ones (same frames, same order).

    Per-frame errors are :func:`pfd.metrics.compare`'s; a single frame keeps its absolute
    energy difference (there is no set to take a mean shift from).
    """
    if len(coarse) != len(fine):
        raise ValueError(f"label_differences: {len(coarse)} coarse frames, {len(fine)} fine")
    for i, (a, b) in enumerate(zip(coarse, fine, strict=True)):
        if len(a) != len(b) or not np.allclose(a.positions, b.positions, atol=1e-6):
            raise ValueError(f"label_differences: frame {i} is not the same configuration")
    per_frame = compare(list(fine), list(coarse))[0].per_frame
    de = np.array([p["energy_err_meV_atom"] for p in per_frame])
    if len(de) > 1:
        de -= de.mean()
    return [LabelDifference(n_atoms=len(a), energy_meV_atom=float(e),
                            force_rmse_eV_A=p["force_rmse_eV_A"],
                            force_max_eV_A=float(np.abs(a.get_forces() - b.get_forces()).max()))
            for a, b, e, p in zip(coarse, fine, de, per_frame, strict=True)]


def summary(diffs: Sequence[LabelDifference]) -> dict[str, float]:
    """The set's floor: RMS over frames of the force and relative-energy differences."""
    f = np.array([d.force_rmse_eV_A for d in diffs])
    e = np.array([d.energy_meV_atom for d in diffs])
    return {"n_frames": float(len(diffs)),
            "force_rmse_eV_A": float(np.sqrt((f ** 2).mean())),
            "force_rmse_max_eV_A": float(f.max()),
            "energy_rmse_meV_atom": float(np.sqrt((e ** 2).mean())),
            "energy_max_meV_atom": float(np.abs(e).max())}


def with_kspacing(spec: LabellerSpec, kspacing_invA: float) -> LabellerSpec:
    """The same labeller at another k-spacing (every engine's k-spacing field)."""
    engine = spec.engine
    sub = getattr(spec, engine)
    if not hasattr(sub, "kspacing_invA"):
        raise ValueError(f"labeller.{engine} has no kspacing_invA to change")
    return spec.model_copy(update={engine: sub.model_copy(update={"kspacing_invA":
                                                                   kspacing_invA})})
