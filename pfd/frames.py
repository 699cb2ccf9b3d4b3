"""The one data type of pfd: ``list[ase.Atoms]`` carrying labels in a SinglePointCalculator.

Every step reads and writes extxyz; DeePMD's format appears only at the training
boundary (``pfd.models.deepmd``). Keeping one representation means a frame labelled
by DFT, by the teacher or replayed from a user's file is handled identically.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

Frames = list[Atoms]

# Rounding applied before hashing: positions/cell to 1e-6 Å so that an extxyz round
# trip (which prints ~8 significant digits) yields the same hash.
_HASH_DECIMALS = 6


def frame_hash(atoms: Atoms) -> str:
    """Content hash of a structure (species, positions, cell, pbc), independent of labels.

    It keys the label cache: the same geometry is never sent to DFT twice.
    """
    h = hashlib.sha256()
    h.update(",".join(atoms.get_chemical_symbols()).encode())
    pos = np.round(np.asarray(atoms.positions, dtype=float), _HASH_DECIMALS) + 0.0
    cell = np.round(np.asarray(atoms.cell.array, dtype=float), _HASH_DECIMALS) + 0.0
    h.update(pos.astype("<f8").tobytes())
    h.update(cell.astype("<f8").tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return h.hexdigest()[:32]


def attach_labels(
    atoms: Atoms,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray | None = None,
) -> Atoms:
    """Return a copy of ``atoms`` whose labels are frozen in a SinglePointCalculator.

    ``stress`` is ASE's convention: eV/Å³, Voigt order xx yy zz yz xz xy, positive = tensile.
    """
    out = Atoms(
        symbols=atoms.get_chemical_symbols(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
    )
    for key, val in atoms.info.items():
        if key not in ("energy", "stress", "free_energy"):
            out.info[key] = val
    results: dict[str, object] = {
        "energy": float(energy),
        "forces": np.asarray(forces, dtype=float).reshape(len(atoms), 3),
    }
    if stress is not None:
        s = np.asarray(stress, dtype=float)
        if s.shape == (3, 3):
            s = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        results["stress"] = s.reshape(6)
    out.calc = SinglePointCalculator(out, **results)
    return out


def has_labels(atoms: Atoms) -> bool:
    calc = atoms.calc
    return calc is not None and "energy" in calc.results and "forces" in calc.results


def energy(atoms: Atoms) -> float:
    return float(atoms.calc.results["energy"])  # type: ignore[union-attr]


def forces(atoms: Atoms) -> np.ndarray:
    return np.asarray(atoms.calc.results["forces"])  # type: ignore[union-attr]


def stress(atoms: Atoms) -> np.ndarray | None:
    s = atoms.calc.results.get("stress") if atoms.calc is not None else None  # type: ignore[union-attr]
    return None if s is None else np.asarray(s)


def strip_labels(atoms: Atoms) -> Atoms:
    """A label-free copy: what is sent to a labeller."""
    out = Atoms(
        symbols=atoms.get_chemical_symbols(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
    )
    out.info.update({k: v for k, v in atoms.info.items() if k not in ("energy", "stress")})
    return out


def to_extxyz(frames: Sequence[Atoms]) -> bytes:
    buf = io.StringIO()
    if frames:
        write(buf, list(frames), format="extxyz")
    return buf.getvalue().encode()


def from_extxyz(data: bytes | str) -> Frames:
    text = data.decode() if isinstance(data, bytes) else data
    if not text.strip():
        return []
    return list(read(io.StringIO(text), index=":", format="extxyz"))


def write_frames(path: str | Path, frames: Sequence[Atoms]) -> None:
    Path(path).write_bytes(to_extxyz(frames))


def read_frames(path: str | Path) -> Frames:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"frames file not found: {p}")
    return from_extxyz(p.read_bytes())


def species(frames: Iterable[Atoms]) -> list[str]:
    """Sorted unique chemical symbols across frames: the type map of a dataset."""
    seen: set[str] = set()
    for a in frames:
        seen.update(a.get_chemical_symbols())
    return sorted(seen)
