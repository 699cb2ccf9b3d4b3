"""Energy-volume curves and their Birch-Murnaghan fit (V0, E0, B0, B0'), with the fit's
standard errors and the checks that say when a fit is not meaningful.

The cell is scaled isotropically with fractional coordinates fixed: for the cubic
phases validated here (diamond, fcc, bcc) that is the equilibrium path; a phase with
free internal coordinates would need a relaxation per volume, which this does not do.

Uncertainties are the least-squares standard errors (``curve_fit``'s covariance scaled
by the residuals): they say how well the points determine each parameter, which is what
limits a 5-point DFT curve. :func:`problems` names a fit that is not meaningful: B0'
outside what real solids show, a minimum within half a step of the edge of the sampled
window (V0 and B0 then rest on extrapolation), or points too noisy or too few for B0'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.units import GPa

from pfd.validate._plot import colour, png, pyplot
from pfd.validate.record import Record


@dataclass(frozen=True)
class EOSFit:
    v0_A3_atom: float
    e0_eV_atom: float
    b0_GPa: float
    b0_prime: float
    a0_A: float  # first cell vector's length at V0 (the lattice constant of a cubic cell)
    rms_residual_meV_atom: float
    # standard errors of the fit (nan: too few points for an estimate)
    v0_err_A3_atom: float = math.nan
    e0_err_eV_atom: float = math.nan
    b0_err_GPa: float = math.nan
    b0_prime_err: float = math.nan
    a0_err_A: float = math.nan


@dataclass(frozen=True)
class EOSResult(Record):
    structure: str
    n_atoms: int
    volumes_A3_atom: list[float]
    energies_eV_atom: list[float]
    fit: EOSFit | None
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EOSResult:
        fit = EOSFit(**d["fit"]) if d.get("fit") else None
        return cls(**{**d, "fit": fit})


#: B0' of real solids lies between about 2 and 8 (near 4 for most, Birch 1978; rare-gas
#: solids reach ~8): outside that the third-order fit is describing noise or a broken
#: curve, not a material.
B0_PRIME_RANGE = (2.0, 8.0)
#: B0' is a third derivative: with a standard error above this it is not determined.
MAX_B0_PRIME_ERR = 1.0
#: fit residuals above this fraction of the curve's own energy span: the points do not
#: lie on one smooth E(V) (a noisy model, an SCF that landed in another state)
MAX_RESIDUAL_FRACTION = 0.02


def problems(r: EOSResult) -> list[str]:
    """Why this E(V) result is not meaningful; empty when nothing is wrong with it."""
    if r.fit is None:
        return [f"no fit: {r.error}"] if r.error else ["no fit"]
    f, out = r.fit, []
    lo, hi = B0_PRIME_RANGE
    if not lo <= f.b0_prime <= hi:
        out.append(f"B0' = {f.b0_prime:.2f} lies outside {lo:g}-{hi:g}, the range of real "
                   "solids: the curve's shape is not physical (B0 and V0 are suspect too)")
    elif math.isfinite(f.b0_prime_err) and f.b0_prime_err > MAX_B0_PRIME_ERR:
        out.append(f"B0' = {f.b0_prime:.2f} ± {f.b0_prime_err:.2f} is not determined by "
                   f"{len(r.volumes_A3_atom)} points: add points or widen the window")
    v = sorted(r.volumes_A3_atom)
    half = 0.5 * (v[-1] - v[0]) / max(1, len(v) - 1)
    if len(v) >= 2 and not v[0] + half <= f.v0_A3_atom <= v[-1] - half:
        out.append(f"the minimum (V0 = {f.v0_A3_atom:.3f} Å³/atom) lies within half a step "
                   f"of the edge of the sampled {v[0]:.3f}-{v[-1]:.3f}: one side of the curve "
                   "is missing, V0 and B0 rest on extrapolation; centre the window on the "
                   "minimum or widen volume_strain")
    if f.b0_GPa <= 0:
        out.append(f"B0 = {f.b0_GPa:.1f} GPa is not positive: the cell is mechanically "
                   "unstable under this model")
    span = 1000 * (max(r.energies_eV_atom) - min(r.energies_eV_atom))
    if span > 0 and f.rms_residual_meV_atom > MAX_RESIDUAL_FRACTION * span:
        out.append(f"fit residual {f.rms_residual_meV_atom:.2f} meV/atom is "
                   f"{100 * f.rms_residual_meV_atom / span:.0f} % of the curve's span: the "
                   "points do not lie on one smooth E(V)")
    return out


def scaled(atoms: Atoms, volume_ratio: float) -> Atoms:
    """``atoms`` with its cell scaled to ``volume_ratio`` × its volume, fractions fixed."""
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell,
                pbc=True, info=dict(atoms.info))
    out.set_cell(atoms.cell.array * volume_ratio ** (1 / 3), scale_atoms=True)
    return out


def volume_ratios(volume_strain: float, n_points: int) -> list[float]:
    if not 0 < volume_strain < 1 or n_points < 5:
        raise ValueError(f"volume_strain must be in (0, 1) and n_points >= 5, got "
                         f"{volume_strain}, {n_points}")
    return [float(x) for x in np.linspace(1 - volume_strain, 1 + volume_strain, n_points)]


def eos_frames(atoms: Atoms, volume_strain: float, n_points: int) -> list[Atoms]:
    return [scaled(atoms, r) for r in volume_ratios(volume_strain, n_points)]


def birch_murnaghan(v: np.ndarray, e0: float, b0: float, bp: float, v0: float) -> np.ndarray:
    eta = (v0 / v) ** (2 / 3)
    return e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))


def fit_birch_murnaghan(volumes: Sequence[float], energies: Sequence[float],
                        a_ref_A: float | None = None, v_ref: float | None = None) -> EOSFit:
    """Least-squares third-order Birch-Murnaghan fit, per atom.

    Raises ValueError when the minimum is not bracketed: a V0 extrapolated outside the
    sampled range is a guess, not a result.
    """
    from scipy.optimize import curve_fit

    v, e = np.asarray(volumes, float), np.asarray(energies, float)
    if v.size < 5:
        raise ValueError(f"a Birch-Murnaghan fit needs >= 5 points, got {v.size}")
    c = np.polyfit(v, e, 2)
    if c[0] <= 0:
        raise ValueError("E(V) is not convex over the sampled volumes: no minimum to fit")
    v_guess = -c[1] / (2 * c[0])
    b_guess = 2 * c[0] * v_guess
    p0 = (float(np.polyval(c, v_guess)), b_guess, 4.0, v_guess)
    popt, pcov = curve_fit(birch_murnaghan, v, e, p0=p0, maxfev=20000)
    e0, b0, bp, v0 = (float(x) for x in popt)
    # with 4 parameters and 5 points the residual-scaled covariance has one degree of
    # freedom: an estimate, but the only one the points give; inf/nan when it has none
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) \
        else np.full(4, math.nan)
    if not v.min() <= v0 <= v.max():
        raise ValueError(f"fitted V0 = {v0:.3f} Å³/atom lies outside the sampled "
                         f"{v.min():.3f}-{v.max():.3f}: widen volume_strain")
    resid = e - birch_murnaghan(v, *popt)
    a0 = a0_err = float("nan")
    if a_ref_A is not None and v_ref is not None:
        a0 = a_ref_A * (v0 / v_ref) ** (1 / 3)
        a0_err = a0 * float(err[3]) / (3 * v0)
    return EOSFit(v0_A3_atom=v0, e0_eV_atom=e0, b0_GPa=b0 / GPa, b0_prime=bp, a0_A=a0,
                  rms_residual_meV_atom=float(1000 * np.sqrt(np.mean(resid**2))),
                  v0_err_A3_atom=float(err[3]), e0_err_eV_atom=float(err[0]),
                  b0_err_GPa=float(err[1]) / GPa, b0_prime_err=float(err[2]), a0_err_A=a0_err)


def energy_volume(atoms: Atoms, calc: Calculator, structure: str, volume_strain: float,
                  n_points: int) -> EOSResult:
    """E(V) of ``atoms`` under ``calc`` and its fit; a failed fit is kept as ``error``."""
    frames = eos_frames(atoms, volume_strain, n_points)
    n = len(atoms)
    vols, ens = [], []
    for a in frames:
        a.calc = calc
        ens.append(float(a.get_potential_energy()) / n)
        vols.append(float(a.get_volume()) / n)
    return _result(atoms, structure, vols, ens)


def _result(atoms: Atoms, structure: str, vols: list[float], ens: list[float]) -> EOSResult:
    n = len(atoms)
    try:
        fit = fit_birch_murnaghan(vols, ens, float(np.linalg.norm(atoms.cell[0])),
                                  float(atoms.get_volume()) / n)
    except (ValueError, RuntimeError) as err:  # RuntimeError: curve_fit did not converge
        return EOSResult(structure, n, vols, ens, None, str(err))
    return EOSResult(structure, n, vols, ens, fit)


def from_labelled(atoms: Atoms, structure: str, labelled: Sequence[Atoms]) -> EOSResult:
    """The E(V) result of frames labelled elsewhere (the DFT points, via the label cache)."""
    n = len(atoms)
    vols = [float(a.get_volume()) / n for a in labelled]
    ens = [float(a.get_potential_energy()) / n for a in labelled]
    return _result(atoms, structure, vols, ens)


def plot(results: dict[str, EOSResult], title: str) -> bytes:
    """One panel: points and fitted curve per model, energies relative to each E0 so
    curves with different absolute references (model vs DFT) overlay."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    for name, r in results.items():
        v, e = np.asarray(r.volumes_A3_atom), np.asarray(r.energies_eV_atom)
        ref = r.fit.e0_eV_atom if r.fit else float(e.min())
        ax.plot(v, 1000 * (e - ref), "o", color=colour(name), ms=4)
        label = name
        if r.fit:
            grid = np.linspace(v.min(), v.max(), 200)
            f = r.fit
            ax.plot(grid, 1000 * (birch_murnaghan(grid, f.e0_eV_atom, f.b0_GPa * GPa,
                                                  f.b0_prime, f.v0_A3_atom) - ref),
                    "-", color=colour(name), lw=1)
            label = f"{name}: V0 {f.v0_A3_atom:.2f} Å³, B0 {f.b0_GPa:.0f} GPa"
        ax.plot([], [], "o-", color=colour(name), label=label)
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("E − E0 (meV/atom)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return png(fig)
