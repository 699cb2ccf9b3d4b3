"""Is this MD configuration still physical? Checked at every sample.

An exploding trajectory is information about the model (it has not seen that region),
so the reason is recorded; but frames past that point would only waste DFT, so the
trajectory stops there. Cell checks compare with the structure the trajectory started
from: a barostat driven by a poor model can collapse or stretch one axis, or shear the
cell flat, long before the volume alone looks wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class BlowupLimits:
    temperature_K: float                 # the thermostat's target
    max_temperature_factor: float = 5.0  # runaway above factor × target + 500 K
    min_distance_A: float = 0.5
    max_volume_ratio: float = 2.0
    max_cell_length_ratio: float = 1.5   # any of a, b, c vs the start
    max_cell_angle_change_deg: float = 25.0  # any of α, β, γ vs the start


def blowup_reason(atoms: Atoms, limits: BlowupLimits, cell0: np.ndarray) -> str | None:
    """Why this configuration is unphysical, or None. ``cell0`` is the starting cell."""
    forces = atoms.get_forces()
    if not np.all(np.isfinite(forces)):
        return "non-finite forces"
    t = atoms.get_temperature()
    t_max = limits.max_temperature_factor * limits.temperature_K + 500.0
    if not t <= t_max:  # also catches NaN
        return f"temperature runaway ({t:.0f} K > {t_max:.0f} K)"
    dmin = min_distance(atoms)
    if dmin < limits.min_distance_A:
        return f"atoms too close ({dmin:.2f} Å < {limits.min_distance_A} Å)"
    return cell_reason(np.asarray(atoms.cell.array), np.asarray(cell0), limits)


def min_distance(atoms: Atoms) -> float:
    """Shortest distance between two atoms, periodic images included (inf for a lone
    atom without periodic images).

    Distinct atoms by the minimum-image convention (ASE's, exact for any cell shape); an
    atom and its own image by the shortest lattice vector (the first vector of the
    Minkowski-reduced cell), which is the closest pair in a one- or two-atom cell.
    """
    n = len(atoms)
    out = math.inf
    if n > 1:
        out = float(atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)].min())
    if n and atoms.pbc.all():
        reduced, _ = atoms.cell.minkowski_reduce()
        out = min(out, float(np.linalg.norm(reduced, axis=1).min()))
    return out


def cell_reason(cell: np.ndarray, cell0: np.ndarray, limits: BlowupLimits) -> str | None:
    from ase.geometry import cell_to_cellpar

    vol, vol0 = abs(np.linalg.det(cell)), abs(np.linalg.det(cell0))
    ratio = vol / vol0
    if not (1 / limits.max_volume_ratio < ratio < limits.max_volume_ratio):
        kind = "collapse" if ratio < 1 else "explosion"
        return f"cell {kind}: volume changed by factor {ratio:.2f}"
    par, par0 = cell_to_cellpar(cell), cell_to_cellpar(cell0)
    for i, axis in enumerate("abc"):
        r = par[i] / par0[i]
        if not (1 / limits.max_cell_length_ratio < r < limits.max_cell_length_ratio):
            kind = "collapse" if r < 1 else "explosion"
            return f"cell {kind}: length {axis} changed by factor {r:.2f}"
    for i, angle in enumerate(("alpha", "beta", "gamma")):
        change = abs(par[3 + i] - par0[3 + i])
        if change > limits.max_cell_angle_change_deg:
            return (f"cell shear: angle {angle} changed by {change:.1f}° "
                    f"(> {limits.max_cell_angle_change_deg}°)")
    return None
