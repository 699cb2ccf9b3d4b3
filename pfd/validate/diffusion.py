"""RDF, mean-squared displacement and diffusion from MD, and the Arrhenius fit over T.

D per species comes from the slope of the MSD (averaged over time origins, centre-of-
mass drift removed: a Langevin thermostat without ``fixcm`` lets the whole cell random-
walk, which is not diffusion). Its uncertainty is the spread of the per-atom slopes
(standard error over atoms), so a cell where one vacancy carries every hop reports a
large error instead of a false precision. The Arrhenius fit is a weighted least-squares
line of ln D against 1/(k_B T); with per-point errors its uncertainty follows from them,
without them from the residuals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.neighborlist import neighbor_list

from pfd.explore.integrators import make_integrator
from pfd.validate._plot import png, pyplot
from pfd.validate.record import Record

KB_EV_K = units.kB
A2_PS_TO_CM2_S = 1e-4  # 1 Å²/ps = 1e-16 cm² / 1e-12 s


@dataclass(frozen=True)
class TemperatureRun(Record):
    temperature_K: float
    mean_temperature_K: float
    n_atoms: int
    time_ps: list[float]  # MSD lag times
    msd_A2: dict[str, list[float]]  # species -> MSD(lag)
    d_A2_ps: dict[str, float]
    d_err_A2_ps: dict[str, float]
    rdf_r_A: list[float]
    rdf: dict[str, list[float]]  # "A-B" -> g(r)


@dataclass(frozen=True)
class ArrheniusFit(Record):
    ea_eV: float
    ea_err_eV: float
    d0_cm2_s: float
    ln_d0_err: float
    temperatures_K: list[float]
    d_cm2_s: list[float]
    d_err_cm2_s: list[float] | None = None
    note: str | None = None


@dataclass(frozen=True)
class DiffusionResult(Record):
    structure: str
    runs: list[TemperatureRun]
    arrhenius: dict[str, ArrheniusFit | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # species -> why no fit


# --------------------------------------------------------------------------- analysis
def unwrap(positions: Sequence[np.ndarray], cell: np.ndarray) -> np.ndarray:
    """Continuous trajectories from possibly wrapped ones (minimum-image steps)."""
    pos = np.asarray(positions, float)
    inv = np.linalg.inv(cell)
    out = [pos[0]]
    for p in pos[1:]:
        d = (p - out[-1]) @ inv
        d -= np.round(d)
        out.append(out[-1] + d @ cell)
    return np.array(out)


def msd_by_species(positions: np.ndarray, symbols: Sequence[str],
                   max_lag: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-atom MSD(lag) averaged over time origins, with the centre-of-mass drift removed.

    Returns lags (in samples) and, per species, an (n_atoms_of_species, n_lags) array.
    """
    pos = positions - positions.mean(axis=1, keepdims=True)  # equal masses per species:
    # removing the mean of all atoms removes the cell's drift for one-element systems and
    # to within mass weighting for others (this is a diagnostic, not a transport code)
    n = pos.shape[0]
    max_lag = max_lag or max(1, n // 2)
    lags = np.arange(1, max_lag + 1)
    per_atom = np.array([np.mean(np.sum((pos[lag:] - pos[:-lag]) ** 2, axis=2), axis=0)
                         for lag in lags]).T  # (atoms, lags)
    sym = np.asarray(symbols)
    return lags, {s: per_atom[sym == s] for s in sorted(set(symbols))}


def diffusion_coefficient(time_ps: np.ndarray, msd_atoms: np.ndarray,
                          fit_from: float = 0.2) -> tuple[float, float]:
    """D (Å²/ps) = slope/6 of the MSD over lags after the first ``fit_from`` (ballistic)
    part; error = standard error over the atoms' own slopes."""
    start = int(len(time_ps) * fit_from)
    t = time_ps[start:]
    if t.size < 2:
        raise ValueError("too few MSD lags to fit a slope")
    slopes = np.array([np.polyfit(t, m[start:], 1)[0] for m in msd_atoms]) / 6
    d = float(np.polyfit(t, msd_atoms.mean(axis=0)[start:], 1)[0] / 6)
    err = float(slopes.std(ddof=1) / math.sqrt(len(slopes))) if len(slopes) > 1 else math.nan
    return d, err


def rdf(frames: Sequence[Atoms], rmax_A: float, n_bins: int) -> tuple[np.ndarray,
                                                                      dict[str, np.ndarray]]:
    """g(r) per species pair, averaged over frames; periodic images included, so the
    cell may be smaller than 2·rmax."""
    edges = np.linspace(0, rmax_A, n_bins + 1)
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    species = sorted(set(frames[0].get_chemical_symbols()))
    pairs = [(a, b) for i, a in enumerate(species) for b in species[i:]]
    acc = {f"{a}-{b}": np.zeros(n_bins) for a, b in pairs}
    for at in frames:
        sym = np.asarray(at.get_chemical_symbols())
        i, j, d = neighbor_list("ijd", at, rmax_A)
        vol = at.get_volume()
        for a, b in pairs:
            sel = (sym[i] == a) & (sym[j] == b)
            hist, _ = np.histogram(d[sel], bins=edges)
            na, nb = int((sym == a).sum()), int((sym == b).sum())
            pairs_density = na * nb / vol  # periodic images: each atom sees N_b / V
            if pairs_density > 0:
                acc[f"{a}-{b}"] += hist / (shell * pairs_density)
    return r, {k: v / len(frames) for k, v in acc.items()}


def min_width(cell: np.ndarray) -> float:
    """Smallest distance between opposite faces of the cell."""
    vol = abs(float(np.linalg.det(cell)))
    return min(vol / float(np.linalg.norm(np.cross(cell[i], cell[j])))
               for i, j in ((1, 2), (2, 0), (0, 1)))


# --------------------------------------------------------------------------- MD
def md_at_temperature(atoms: Atoms, calc: Calculator, temperature_K: float, steps: int,
                      timestep_fs: float = 2.0, sample_every: int = 10,
                      equilibration_steps: int = 200, rdf_rmax_A: float = 6.0,
                      rdf_bins: int = 120, seed: int = 1) -> TemperatureRun:
    """Langevin NVT at ``temperature_K``: equilibrate, then sample every ``sample_every``."""
    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(a, temperature_K, rng=rng)
    Stationary(a)
    dyn = make_integrator(a, "nvt", temperature_K=temperature_K, timestep_fs=timestep_fs,
                          rng=rng)
    if equilibration_steps:
        dyn.run(equilibration_steps)
    positions, snaps, temps = [a.positions.copy()], [a.copy()], [a.get_temperature()]
    for _ in range(steps // sample_every):
        dyn.run(sample_every)
        if not np.all(np.isfinite(a.positions)):
            raise RuntimeError(f"MD at {temperature_K:g} K produced non-finite positions")
        positions.append(a.positions.copy())
        snaps.append(a.copy())
        temps.append(a.get_temperature())
    traj = unwrap(positions, a.cell.array)
    lags, per_species = msd_by_species(traj, a.get_chemical_symbols())
    t_ps = lags * sample_every * timestep_fs / 1000
    d, derr, msd = {}, {}, {}
    for s, m in per_species.items():
        d[s], derr[s] = diffusion_coefficient(t_ps, m)
        msd[s] = m.mean(axis=0).tolist()
    # beyond half the cell's width an atom meets its own periodic image, which moves with
    # it and shows as a spike at the cell length, not as structure: stop there
    r, g = rdf(snaps[len(snaps) // 5:], min(rdf_rmax_A, 0.5 * min_width(a.cell.array)),
               rdf_bins)
    return TemperatureRun(
        temperature_K=float(temperature_K), mean_temperature_K=float(np.mean(temps[1:])),
        n_atoms=len(a), time_ps=t_ps.tolist(), msd_A2=msd, d_A2_ps=d, d_err_A2_ps=derr,
        rdf_r_A=r.tolist(), rdf={k: v.tolist() for k, v in g.items()})


# --------------------------------------------------------------------------- Arrhenius
def arrhenius_fit(temperatures_K: Sequence[float], d: Sequence[float],
                  d_err: Sequence[float] | None = None) -> ArrheniusFit:
    """Fit D = D0 exp(−Ea / k_B T). ``d`` in cm²/s (any unit: D0 comes back in it).

    With ``d_err`` the errors are taken as absolute (σ_lnD = σ_D / D); without, they are
    estimated from the residuals, which needs at least three temperatures.
    """
    t = np.asarray(temperatures_K, float)
    y = np.asarray(d, float)
    if t.size != y.size or t.size < 2:
        raise ValueError(f"need >= 2 (T, D) pairs of equal length, got {t.size} and {y.size}")
    if np.any(y <= 0) or np.any(t <= 0):
        raise ValueError("Arrhenius fit needs positive temperatures and diffusion coefficients")
    x = 1 / (KB_EV_K * t)
    ln = np.log(y)
    design = np.column_stack([np.ones_like(x), -x])  # ln D = ln D0 − Ea x
    if d_err is not None:
        sig = np.asarray(d_err, float) / y
        if np.any(~np.isfinite(sig)) or np.any(sig <= 0):
            raise ValueError("d_err must be positive and finite")
        w = 1 / sig**2
    else:
        w = np.ones_like(x)
    a = design.T @ (design * w[:, None])
    coef = np.linalg.solve(a, design.T @ (w * ln))
    cov = np.linalg.inv(a)
    note = None
    if d_err is None:
        dof = t.size - 2
        if dof > 0:
            resid = ln - design @ coef
            cov = cov * float(resid @ resid) / dof
        else:
            cov = cov * math.nan
            note = "two temperatures: no uncertainty without per-point errors"
    return ArrheniusFit(
        ea_eV=float(coef[1]), ea_err_eV=float(math.sqrt(cov[1, 1])),
        d0_cm2_s=float(math.exp(coef[0])), ln_d0_err=float(math.sqrt(cov[0, 0])),
        temperatures_K=t.tolist(), d_cm2_s=y.tolist(),
        d_err_cm2_s=None if d_err is None else [float(v) for v in d_err], note=note)


def arrhenius_by_species(runs: Sequence[TemperatureRun], species: Sequence[str] | None = None,
                         ) -> tuple[dict[str, ArrheniusFit | None], dict[str, str]]:
    """An Arrhenius fit per species over the temperatures where diffusion is detected
    (D more than two standard errors above zero); a species without two such
    temperatures gets a note saying so instead of a fit through noise."""
    all_species = sorted({s for r in runs for s in r.d_A2_ps})
    fits: dict[str, ArrheniusFit | None] = {}
    notes: dict[str, str] = {}
    for s in species or all_species:
        pts = [(r.temperature_K, r.d_A2_ps[s], r.d_err_A2_ps[s]) for r in runs
               if s in r.d_A2_ps]
        ok = [(t, d, e) for t, d, e in pts if d > 0 and (not math.isfinite(e) or d > 2 * e)]
        if len(ok) < 2:
            fits[s] = None
            notes[s] = (f"diffusion detected at {len(ok)} of {len(pts)} temperatures "
                        "(D > 2σ); no Arrhenius fit")
            continue
        errs = [e for _, _, e in ok]
        use_err = all(math.isfinite(e) and e > 0 for e in errs)
        fits[s] = arrhenius_fit([t for t, _, _ in ok], [d * A2_PS_TO_CM2_S for _, d, _ in ok],
                                [e * A2_PS_TO_CM2_S for e in errs] if use_err else None)
    return fits, notes


# --------------------------------------------------------------------------- plots
def plot(result: DiffusionResult, title: str) -> bytes:
    """MSD(t), g(r) per temperature, and ln D against 1000/T with the fit."""
    plt = pyplot()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3.8), dpi=110)
    cmap = plt.get_cmap("plasma")
    n = max(1, len(result.runs) - 1)
    for k, r in enumerate(result.runs):
        c = cmap(0.85 * k / n)
        for s, m in r.msd_A2.items():
            a1.plot(r.time_ps, m, "-", color=c, label=f"{s} {r.temperature_K:g} K")
        for pair, g in r.rdf.items():
            a2.plot(r.rdf_r_A, g, "-", color=c, lw=0.9, label=f"{pair} {r.temperature_K:g} K")
    a1.set_xlabel("lag (ps)")
    a1.set_ylabel("MSD (Å²)")
    a1.legend(fontsize=7)
    a2.set_xlabel("r (Å)")
    a2.set_ylabel("g(r)")
    a2.legend(fontsize=7)
    for s, fit in result.arrhenius.items():
        pts = [(r.temperature_K, r.d_A2_ps[s] * A2_PS_TO_CM2_S,
                r.d_err_A2_ps[s] * A2_PS_TO_CM2_S) for r in result.runs]
        shown = [(1000 / t, d, e) for t, d, e in pts if d > 0]
        if shown:
            xs, ds, es = zip(*shown, strict=True)
            a3.errorbar(xs, ds, yerr=[e if math.isfinite(e) else 0 for e in es], fmt="o",
                        label=s)
        if fit is not None:
            grid = np.linspace(min(fit.temperatures_K), max(fit.temperatures_K), 50)
            a3.plot(1000 / grid, fit.d0_cm2_s * np.exp(-fit.ea_eV / (KB_EV_K * grid)), "-",
                    label=f"{s}: Ea {fit.ea_eV:.2f} ± {fit.ea_err_eV:.2f} eV")
    a3.set_yscale("log")
    a3.set_xlabel("1000 / T (1/K)")
    a3.set_ylabel("D (cm²/s)")
    a3.legend(fontsize=7)
    fig.suptitle(title)
    return png(fig)
