"""Random atom displacements and cell strains around the input structures.

Semantics follow dpdata's ``perturb``: the cell is deformed by a random symmetric
strain (each component within ``±cell_strain``) with fractional coordinates kept, then
each atom (or a random ``atom_fraction`` of them) is displaced. A seed makes the initial
set reproducible, so a rerun asks the label cache for exactly the same frames; the default
options draw exactly the random numbers they always drew, so existing runs keep their frames.
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
                cell_strain: float, style: Style = "uniform",
                atom_fraction: float = 1.0) -> Atoms:
    if not 0 < atom_fraction <= 1:
        raise ValueError(f"atom_fraction must be in (0, 1], got {atom_fraction}")
    strain = rng.uniform(-cell_strain, cell_strain, size=(3, 3))
    strain = (strain + strain.T) / 2
    deform = np.eye(3) + strain
    out = atoms.copy()
    out.calc = None
    out.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    n = len(out)
    if atom_fraction < 1:
        # at least one atom moves: a copy identical to the strained cell teaches little
        chosen = rng.choice(n, size=max(1, round(atom_fraction * n)), replace=False)
        disp = np.zeros((n, 3))
        disp[np.sort(chosen)] = _displacement(rng, len(chosen), atom_displacement_A, style)
    else:  # no extra draw: the random stream stays what it was before atom_fraction existed
        disp = _displacement(rng, n, atom_displacement_A, style)
    out.positions = out.positions + disp
    out.wrap()
    return out


def perturb(structures: Sequence[Atoms], n_per_structure: int, atom_displacement_A: float,
            cell_strain: float, style: Style = "uniform", seed: int = 1,
            include_unperturbed: bool = True, *, atom_fraction: float = 1.0,
            supercell: tuple[int, int, int] = (1, 1, 1)) -> list[Atoms]:
    """``n_per_structure`` perturbed copies of each structure (plus the original if asked).

    With a ``supercell`` the structure is repeated before perturbing, so the unperturbed
    reference and every copy share the repeated cell.
    """
    if len(supercell) != 3 or any(int(k) != k or k < 1 for k in supercell):
        raise ValueError(f"supercell must be three positive integers, got {supercell!r}")
    reps = tuple(int(k) for k in supercell)
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for s_idx, given in enumerate(structures):
        atoms = given.repeat(reps) if reps != (1, 1, 1) else given
        if include_unperturbed:
            ref = atoms.copy()
            ref.calc = None
            ref.info.update(source="init", perturb_index=-1, structure_index=s_idx)
            out.append(ref)
        for k in range(n_per_structure):
            p = perturb_one(atoms, rng, atom_displacement_A, cell_strain, style,
                            atom_fraction)
            p.info.update(source="init", perturb_index=k, structure_index=s_idx)
            out.append(p)
    return out


def strained_copies(structures: Sequence[Atoms], volume_ratios: Sequence[float],
                    rattle_A: float, seed: int = 1) -> list[Atoms]:
    """Each structure scaled isotropically to each of ``volume_ratios`` × its volume
    (fractional coordinates fixed), every atom then displaced by a normal ``rattle_A``:
    the volumes a set of one-volume MD frames never shows a model."""
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for s_idx, atoms in enumerate(structures):
        for r in volume_ratios:
            a = atoms.copy()
            a.calc = None
            a.set_cell(atoms.cell.array * float(r) ** (1 / 3), scale_atoms=True)
            a.positions += rng.normal(0, rattle_A, a.positions.shape)
            a.info.update(source="init", volume_ratio=float(r), structure_index=s_idx)
            out.append(a)
    return out
