"""The k-point mesh every DFT labeller builds from a k-spacing (one rule for all engines)."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def kpoint_mesh(atoms: Atoms, kspacing_invA: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh for a k-spacing in Å⁻¹ including 2π, VASP's KSPACING rule:
    ``n_i = max(1, ceil(|b_i| 2π / spacing))``; a direction that is not periodic
    (``atoms.pbc[i]`` false: vacuum, a slab's normal) gets a single k-point.

    Used by QE and CP2K; VASP is handed ``KSPACING`` and builds the mesh itself.
    """
    rec = atoms.cell.reciprocal() * 2 * np.pi
    pbc = atoms.pbc
    n = [max(1, int(np.ceil(np.linalg.norm(rec[i]) / kspacing_invA))) if pbc[i] else 1
         for i in range(3)]
    return (n[0], n[1], n[2])
