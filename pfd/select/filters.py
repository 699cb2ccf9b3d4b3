"""Pre-label filters: never pay DFT for a frame no physical system would visit.

Each rejected frame is counted by reason so the iteration record says *why* the
explored pool shrank (a model that keeps making overlapping atoms is not ready).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from pfd.config import FilterSpec
from pfd.frames import forces, has_labels


def _too_close(atoms: Atoms, scale: float) -> str | None:
    n = len(atoms)
    if n < 2:
        return None
    d = atoms.get_all_distances(mic=True)
    r = covalent_radii[atoms.numbers]
    limit = scale * (r[:, None] + r[None, :])
    iu = np.triu_indices(n, 1)
    bad = d[iu] < limit[iu]
    if not bad.any():
        return None
    sym = atoms.get_chemical_symbols()
    i, j = iu[0][bad][0], iu[1][bad][0]
    pair = "-".join(sorted((sym[i], sym[j])))
    return f"min_distance:{pair}"


def _bad_cell(atoms: Atoms, s: FilterSpec) -> str | None:
    lengths = atoms.cell.lengths()
    if lengths.max() / lengths.min() > s.max_cell_length_ratio:
        return "cell_length_ratio"
    # skew: how far each cell angle strays from the nearest of 60/90/120° families
    angles = atoms.cell.angles()
    dev = np.min(np.abs(angles[:, None] - np.array([60.0, 90.0, 120.0])[None, :]), axis=1)
    if dev.max() > s.max_skew_deg:
        return "cell_skew"
    return None


def rejection_reason(atoms: Atoms, s: FilterSpec) -> str | None:
    reason = _too_close(atoms, s.min_distance_scale) or _bad_cell(atoms, s)
    if reason is None and has_labels(atoms):
        fmax = float(np.linalg.norm(forces(atoms), axis=1).max())
        if not np.isfinite(fmax) or fmax > s.max_force_eV_A:
            reason = "max_force"
    return reason


def apply_filters(frames: list[Atoms], s: FilterSpec) -> tuple[list[Atoms], dict[str, int]]:
    kept: list[Atoms] = []
    rejected: Counter[str] = Counter()
    for a in frames:
        reason = rejection_reason(a, s)
        if reason is None:
            kept.append(a)
        else:
            rejected[reason] += 1
    return kept, dict(rejected)
