"""Turn the config's named structures into Atoms, failing with the field that is wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.io import read
from ase.neighborlist import neighbor_list

from pfd.crystals import build_crystal

if TYPE_CHECKING:
    from pfd.config import BuildSpec, PFDConfig


def build_structure(spec: BuildSpec) -> Atoms:
    if spec.element not in atomic_numbers:
        raise ValueError(f"unknown element {spec.element!r}")
    atoms = build_crystal(spec.element, spec.crystal, spec.a_A, spec.c_A, spec.internal,
                          conventional=spec.cubic)
    atoms = atoms.repeat(spec.supercell)
    if spec.vacancies >= len(atoms):
        raise ValueError(f"vacancies={spec.vacancies} leaves no atoms in a {len(atoms)}-atom cell")
    # Remove the last atoms: deterministic, and any site is equivalent in a perfect crystal.
    if spec.vacancies:
        del atoms[-spec.vacancies:]
    return atoms


# Atoms closer than this fraction of their covalent radii sum are an input error, not a
# distorted structure: DFT on them costs hours and returns garbage (H-H 0.31, Si-Si 1.11 Å).
MIN_DISTANCE_SCALE = 0.5


def structure_problem(atoms: Atoms) -> str | None:
    """What makes ``atoms`` unusable as a start structure, or None.

    ASE reads NaN/inf coordinates and wrong-shaped per-atom arrays without complaint, and
    an MD or DFT engine fed one fails much later, far from the file that caused it.
    """
    if not np.all(np.isfinite(atoms.positions)):
        bad = int(np.argwhere(~np.isfinite(atoms.positions))[0][0])
        return f"atom {bad} has a non-finite position {atoms.positions[bad].tolist()}"
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        return f"the cell has non-finite entries {cell.tolist()}"
    if abs(np.linalg.det(cell)) < 1e-6:
        return "the cell has zero volume (give a full 3x3 Lattice)"
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    n = len(atoms)
    for name in ("forces",):
        if name in results or name in atoms.arrays:
            arr = np.asarray(results.get(name, atoms.arrays.get(name)))
            if arr.shape != (n, 3):
                return (f"'{name}' has shape {tuple(arr.shape)}, expected ({n}, 3) "
                        "(one x, y, z row per atom)")
            if not np.all(np.isfinite(arr)):
                return f"'{name}' has non-finite values"
    if "energy" in results and not np.isfinite(float(results["energy"])):
        return "'energy' is not finite"
    return _overlap(atoms)


def _overlap(atoms: Atoms) -> str | None:
    if len(atoms) < 2:
        return None
    radii = covalent_radii[atoms.numbers]
    cutoff = MIN_DISTANCE_SCALE * 2 * float(radii.max())
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    limit = MIN_DISTANCE_SCALE * (radii[i] + radii[j])
    bad = np.flatnonzero((d < limit) & (i < j))
    if not bad.size:
        return None
    k = bad[np.argmin(d[bad])]
    sym = atoms.get_chemical_symbols()
    return (f"atoms {i[k]} ({sym[i[k]]}) and {j[k]} ({sym[j[k]]}) overlap: {d[k]:.3f} Å apart, "
            f"less than {MIN_DISTANCE_SCALE} x their covalent radii sum ({limit[k]:.2f} Å)")


def load_structures(cfg: PFDConfig) -> dict[str, list[Atoms]]:
    from pfd.config import ConfigError

    out: dict[str, list[Atoms]] = {}
    for name, spec in cfg.structures.items():
        where = f"structures.{name}"
        if spec.file is not None:
            if not spec.file.is_file():
                raise ConfigError(f"{where}.file: file not found: {spec.file}")
            try:
                frames = read(spec.file, index=":")
            except Exception as err:  # ASE raises many types for unreadable files
                raise ConfigError(f"{where}.file: cannot read {spec.file}: {err}") from None
            frames = frames if isinstance(frames, list) else [frames]
            if not frames:
                raise ConfigError(f"{where}.file: no structures in {spec.file}")
        else:
            assert spec.build is not None
            try:
                frames = [build_structure(spec.build)]
            except ValueError as err:
                raise ConfigError(f"{where}.build: {err}") from None
        for i, a in enumerate(frames):
            if not all(a.pbc):
                raise ConfigError(f"{where}: structures must be periodic in 3D (pbc all True)")
            problem = structure_problem(a)
            if problem is not None:
                src = f"{where}.file: {spec.file} frame {i}" if spec.file else f"{where}.build"
                raise ConfigError(f"{src}: {problem}")
            a.info["structure"] = name
        out[name] = [Atoms(a.get_chemical_symbols(), positions=a.positions, cell=a.cell,
                           pbc=True, info=dict(a.info)) for a in frames]
    return out


def config_elements(cfg: PFDConfig) -> list[str]:
    """Every element of every structure the config defines, sorted."""
    return sorted({el for frames in load_structures(cfg).values() for a in frames
                   for el in a.get_chemical_symbols()})
