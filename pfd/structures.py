"""Turn the config's named structures into Atoms, failing with the field that is wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers
from ase.io import read

if TYPE_CHECKING:
    from pfd.config import BuildSpec, PFDConfig


def build_structure(spec: BuildSpec) -> Atoms:
    if spec.element not in atomic_numbers:
        raise ValueError(f"unknown element {spec.element!r}")
    atoms = bulk(spec.element, spec.crystal, a=spec.a_A, cubic=spec.cubic)
    atoms = atoms.repeat(spec.supercell)
    if spec.vacancies >= len(atoms):
        raise ValueError(f"vacancies={spec.vacancies} leaves no atoms in a {len(atoms)}-atom cell")
    # Remove the last atoms: deterministic, and any site is equivalent in a perfect crystal.
    if spec.vacancies:
        del atoms[-spec.vacancies:]
    return atoms


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
        for a in frames:
            if not all(a.pbc):
                raise ConfigError(f"{where}: structures must be periodic in 3D (pbc all True)")
            a.info["structure"] = name
        out[name] = [Atoms(a.get_chemical_symbols(), positions=a.positions, cell=a.cell,
                           pbc=True, info=dict(a.info)) for a in frames]
    return out
