"""Phonon dispersion and DOS by finite displacements (phonopy), on any ASE calculator.

The band path comes from ASE's Brillouin-zone tables for the primitive cell phonopy
finds (seekpath is not needed), or from a given special-point string. Frequencies are
exact at q-points commensurate with the displacement supercell; that is what makes the
DFT comparison affordable: displacing atoms in the structure's own cell (one to a few
DFT runs) gives exact frequencies at Γ and at every special point commensurate with
that cell (X for the conventional cubic cell), to compare with the models' values there.

Force constants are fitted twice, at ``displacement_A`` and at twice it: anharmonic terms
grow with the displacement and force noise shrinks with it, so the largest change of a
frequency between the two is its reported uncertainty (``*_err_THz``; it costs a second
set of displaced cells, one more DFT run for diamond Si). :func:`problems` names a
result that is not a harmonic spectrum of a stable structure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd.validate._plot import colour, png, pyplot
from pfd.validate.record import Record

LabelFn = Callable[[list[Atoms]], list[np.ndarray]]  # displaced cells -> forces


@dataclass(frozen=True)
class PhononResult(Record):
    structure: str
    a_A: float
    supercell: list[int]
    n_displacements: int
    # band structure: one list per segment
    segments_distance: list[list[float]]
    segments_THz: list[list[list[float]]]  # [segment][q][band]
    tick_positions: list[float]
    tick_labels: list[str]
    dos_frequency_THz: list[float]
    dos: list[float]
    min_frequency_THz: float
    imaginary_modes: bool
    special_THz: dict[str, list[float]]  # frequencies at commensurate special points
    gamma_optical_THz: float
    gamma_optical_err_THz: float = float("nan")  # see the module docstring
    special_err_THz: dict[str, float] = field(default_factory=dict)  # largest per point


@dataclass(frozen=True)
class PointPhonons(Record):
    """Frequencies at the special points commensurate with the structure's own cell."""

    structure: str
    a_A: float
    n_displacements: int
    special_THz: dict[str, list[float]]
    gamma_optical_THz: float
    gamma_optical_err_THz: float = float("nan")
    special_err_THz: dict[str, float] = field(default_factory=dict)


#: a frequency that moves more than this between displacements u and 2u is set by
#: anharmonicity or force noise, not by the harmonic force constants
MAX_SIGN_SPREAD_THZ = 0.2


def problems(r: PhononResult | PointPhonons) -> list[str]:
    """Why this phonon result is not a meaningful harmonic spectrum; empty if none."""
    out = []
    if isinstance(r, PhononResult) and r.imaginary_modes:
        out.append(f"imaginary modes (down to {r.min_frequency_THz:.2f} THz): the structure "
                   "is not a minimum of this model (dynamically unstable)")
    spread = max([r.gamma_optical_err_THz, *r.special_err_THz.values()], default=float("nan"))
    if np.isfinite(spread) and spread > MAX_SIGN_SPREAD_THZ:
        out.append(f"frequencies change by up to {spread:.2f} THz between displacements "
                   "u and 2u: anharmonic or noisy forces (change displacement_A or "
                   "tighten the SCF)")
    return out


def _phonopy(atoms: Atoms, supercell: Sequence[int], displacement_A: float) -> Any:
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    with warnings.catch_warnings():  # "auto" is meant: the band path needs the primitive
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        ph = Phonopy(unit, supercell_matrix=np.diag(list(supercell)), primitive_matrix="auto")
    ph.generate_displacements(distance=displacement_A)
    return ph


def _forces_with(calc: Calculator) -> LabelFn:
    def forces(cells: list[Atoms]) -> list[np.ndarray]:
        out = []
        for c in cells:
            c.calc = calc
            out.append(np.array(c.get_forces()))
        return out

    return forces


def _with_forces(atoms: Atoms, supercell: Sequence[int], displacement_A: float,
                 forces: LabelFn) -> tuple[Any, Any, int]:
    """Phonopy objects fitted at ``displacement_A`` and at twice it (one labelling batch)."""
    phs = [_phonopy(atoms, supercell, k * displacement_A) for k in (1, 2)]
    sets = [[Atoms(sc.symbols, cell=sc.cell, positions=sc.positions, pbc=True)
             for sc in ph.supercells_with_displacements] for ph in phs]
    f = np.array(forces(sets[0] + sets[1]))
    f -= f.mean(axis=1, keepdims=True)  # drift from a finite basis/cutoff is not physics
    for ph, part in zip(phs, (f[:len(sets[0])], f[len(sets[0]):]), strict=True):
        ph.forces = part
        ph.produce_force_constants()
        ph.symmetrize_force_constants()
    return phs[0], phs[1], len(sets[0]) + len(sets[1])


def _spread(double: Any, q: Sequence[float], full: np.ndarray) -> float:
    """Largest change of any frequency at ``q`` between displacement u and 2u."""
    return float(np.max(np.abs(np.sort(_frequencies(double, q)) - np.sort(full))))


def _primitive_atoms(ph: Any) -> Atoms:
    p = ph.primitive
    return Atoms(p.symbols, cell=p.cell, scaled_positions=p.scaled_positions, pbc=True)


def _band_path(prim: Atoms, band_path: str | None) -> tuple[list[list[str]], dict[str,
                                                                                np.ndarray]]:
    from ase.dft.kpoints import parse_path_string

    bp = prim.cell.bandpath(npoints=0)
    special = {k: np.asarray(v, float) for k, v in bp.special_points.items()}
    path = band_path or bp.path
    labels = parse_path_string(path)
    unknown = sorted({x for seg in labels for x in seg} - set(special))
    if unknown:
        raise ValueError(f"phonons.band_path: unknown special points {unknown} for this "
                         f"lattice (known: {sorted(special)})")
    return labels, special


def _commensurate(prim: Atoms, cell: np.ndarray, special: dict[str, np.ndarray]) -> dict[
        str, np.ndarray]:
    """Special points whose phase is 1 on every lattice vector of ``cell``."""
    rec = prim.cell.reciprocal()  # rows b_i with a_i . b_j = delta_ij (no 2 pi)
    out = {}
    for name, q in special.items():
        x = cell @ (q @ rec)
        if np.allclose(x, np.round(x), atol=1e-6):
            out[name] = q
    return out


def _special_frequencies(ph: Any, points: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {("Γ" if k == "G" else k): sorted(float(f) for f in _frequencies(ph, q))
            for k, q in sorted(points.items())}


def _frequencies(ph: Any, q: Sequence[float]) -> np.ndarray:
    return np.asarray(ph.run_qpoints([list(q)]).frequencies[0])


def phonon_bands(atoms: Atoms, calc: Calculator | None, structure: str,
                 supercell: Sequence[int] = (2, 2, 2), displacement_A: float = 0.01,
                 band_path: str | None = None, band_points: int = 150,
                 dos_mesh: Sequence[int] = (16, 16, 16), imaginary_tolerance_THz: float = 0.1,
                 forces: LabelFn | None = None) -> PhononResult:
    """Dispersion along the path, total DOS, and whether any mode is imaginary (phonopy
    reports those as negative frequencies; below −tolerance counts, since acoustic
    branches near Γ dip slightly negative from finite-difference noise)."""
    if forces is None:
        if calc is None:
            raise ValueError("give a calculator or a forces function")
        forces = _forces_with(calc)
    ph, double, n_disp = _with_forces(atoms, supercell, displacement_A, forces)
    prim = _primitive_atoms(ph)
    labels, special = _band_path(prim, band_path)
    pairs = [(s[i], s[i + 1]) for s in labels for i in range(len(s) - 1)]
    n_seg = max(5, band_points // max(1, len(pairs)))
    paths = [np.linspace(special[p], special[q], n_seg) for p, q in pairs]
    ph.run_band_structure(paths)
    bands = ph.band_structure
    dist = [list(map(float, d)) for d in bands.distances]
    freqs = [np.asarray(f).tolist() for f in bands.frequencies]
    ticks, tick_labels = [dist[0][0]], [pairs[0][0]]
    for k, (_, q) in enumerate(pairs):
        end = dist[k][-1]
        nxt = pairs[k + 1][0] if k + 1 < len(pairs) else None
        ticks.append(end)
        tick_labels.append(q if nxt is None or nxt == q else f"{q}|{nxt}")
    ph.run_mesh(list(dos_mesh), is_gamma_center=True)
    ph.run_total_dos()
    dos = ph.total_dos
    mesh_min = float(np.min(ph.mesh.frequencies))
    fmin = min(mesh_min, float(min(np.min(f) for f in freqs)))
    commensurate = _commensurate(prim, atoms.cell.array, special)
    pts = _special_frequencies(ph, commensurate)
    gamma = _frequencies(ph, [0, 0, 0])
    return PhononResult(
        structure=structure, a_A=float(np.linalg.norm(atoms.cell[0])),
        supercell=list(supercell), n_displacements=n_disp, segments_distance=dist,
        segments_THz=freqs, tick_positions=ticks,
        tick_labels=["Γ" if t == "G" else t.replace("G", "Γ") for t in tick_labels],
        dos_frequency_THz=[float(x) for x in dos.frequency_points],
        dos=[float(x) for x in dos.dos], min_frequency_THz=fmin,
        imaginary_modes=fmin < -imaginary_tolerance_THz, special_THz=pts,
        gamma_optical_THz=float(np.max(gamma)),
        gamma_optical_err_THz=_spread(double, [0, 0, 0], gamma),
        special_err_THz=_special_spread(ph, double, commensurate))


def _special_spread(ph: Any, double: Any, points: dict[str, np.ndarray]) -> dict[
        str, float]:
    return {("Γ" if k == "G" else k): _spread(double, q, _frequencies(ph, q))
            for k, q in sorted(points.items())}


def point_phonons(atoms: Atoms, calc: Calculator | None, structure: str,
                  displacement_A: float = 0.01, forces: LabelFn | None = None) -> PointPhonons:
    """Exact frequencies at Γ and the commensurate special points, displacing atoms in the
    structure's own cell: few calculations, so affordable with DFT."""
    if forces is None:
        if calc is None:
            raise ValueError("give a calculator or a forces function")
        forces = _forces_with(calc)
    ph, double, n_disp = _with_forces(atoms, (1, 1, 1), displacement_A, forces)
    prim = _primitive_atoms(ph)
    _, special = _band_path(prim, None)
    commensurate = _commensurate(prim, atoms.cell.array, special)
    pts = _special_frequencies(ph, commensurate)
    gamma = _frequencies(ph, [0, 0, 0])
    return PointPhonons(structure=structure, a_A=float(np.linalg.norm(atoms.cell[0])),
                        n_displacements=n_disp, special_THz=pts,
                        gamma_optical_THz=float(np.max(gamma)),
                        gamma_optical_err_THz=_spread(double, [0, 0, 0], gamma),
                        special_err_THz=_special_spread(ph, double, commensurate))


def plot(bands: dict[str, PhononResult], points: dict[str, PointPhonons], title: str) -> bytes:
    """Dispersion (lines per model, DFT as markers at its exact points) and DOS."""
    plt = pyplot()
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(8, 4), dpi=110, sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1]})
    ref: PhononResult | None = next(iter(bands.values()), None)
    for name, r in bands.items():
        for d, f in zip(r.segments_distance, r.segments_THz, strict=True):
            ax.plot(d, f, "-", color=colour(name), lw=0.9)
        ax.plot([], [], "-", color=colour(name), label=name)
        axd.plot(r.dos, r.dos_frequency_THz, "-", color=colour(name), lw=0.9)
    if ref is not None:
        for x in ref.tick_positions:
            ax.axvline(x, color="grey", lw=0.5)
        ax.set_xticks(ref.tick_positions, ref.tick_labels)
        ax.set_xlim(ref.tick_positions[0], ref.tick_positions[-1])
        where = {lab: x for x, lab in zip(ref.tick_positions, ref.tick_labels, strict=True)}
        for name, p in points.items():
            for lab, fs in p.special_THz.items():
                if lab in where:
                    ax.plot([where[lab]] * len(fs), fs, "o", mfc="none", ms=6,
                            color=colour(name))
            ax.plot([], [], "o", mfc="none", color=colour(name), label=f"{name} (exact points)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("frequency (THz)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    axd.set_xlabel("DOS")
    return png(fig)
