"""Random atom displacements and cell strains around the input structures.

Semantics follow dpdata's ``perturb``: the cell is deformed by a random symmetric
strain (each component within ``±cell_strain``) with fractional coordinates kept, then
each atom is displaced. A seed makes the initial set reproducible, so a rerun asks the
label cache for exactly the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from ase import Atoms

Style = Literal["normal", "uniform", "const"]


def _displacement(rng: np.random.Generator, n: int, magnitude: float, style: Style) -> np.ndarray:
    if magnitude == 0:
        return np.zeros((n, 3))
    if style == "normal":
        # per-component σ so that the RMS displacement length equals ``magnitude``
        return rng.normal(scale=magnitude / np.sqrt(3), size=(n, 3))
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    if style == "const":
        return direction * magnitude
    # uniform in the ball: radius ∝ u^(1/3)
    radius = magnitude * rng.random(n) ** (1 / 3)
    return direction * radius[:, None]


def perturb_one(atoms: Atoms, rng: np.random.Generator, atom_displacement_A: float,
                cell_strain: float, style: Style = "uniform") -> Atoms:
    strain = rng.uniform(-cell_strain, cell_strain, size=(3, 3))
    strain = (strain + strain.T) / 2
    deform = np.eye(3) + strain
    out = atoms.copy()
    out.calc = None
    out.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    out.positions = out.positions + _displacement(rng, len(out), atom_displacement_A, style)
    out.wrap()
    return out


def perturb(structures: Sequence[Atoms], n_per_structure: int, atom_displacement_A: float,
            cell_strain: float, style: Style = "uniform", seed: int = 1,
            include_unperturbed: bool = True) -> list[Atoms]:
    """``n_per_structure`` perturbed copies of each structure (plus the original if asked)."""
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for s_idx, atoms in enumerate(structures):
        if include_unperturbed:
            ref = atoms.copy()
            ref.calc = None
            ref.info.update(source="init", perturb_index=-1, structure_index=s_idx)
            out.append(ref)
        for k in range(n_per_structure):
            p = perturb_one(atoms, rng, atom_displacement_A, cell_strain, style)
            p.info.update(source="init", perturb_index=k, structure_index=s_idx)
            out.append(p)
    return out
