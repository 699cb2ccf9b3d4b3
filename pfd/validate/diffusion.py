"""RDF, mean-squared displacement and diffusion from MD, and the Arrhenius fit over T.

D per species comes from the slope of the MSD (averaged over time origins, centre-of-
mass drift removed: a Langevin thermostat without ``fixcm`` lets the whole cell random-
walk, which is not diffusion). Its uncertainty is the spread of the per-atom slopes
(standard error over atoms), so a cell where one vacancy carries every hop reports a
large error instead of a false precision. The Arrhenius fit is a weighted least-squares
line of ln D against 1/(k_B T); with per-point errors its uncertainty follows from them,
without them from the residuals.

Each D also gets a block error (the trajectory cut in blocks, D per block, standard
error over blocks: correlated time origins make the per-atom error alone too small), and
the larger of the two is the one reported and fitted. Three checks decide whether a D is
a diffusion coefficient at all (:func:`run_problems`): the MSD grows linearly in time (its
log-log slope, the exponent, near 1; caged vibration gives ~0), atoms moved further than
one neighbour distance, and the cell neither melted nor transformed (the mean
coordination in the first shell of the starting structure stays within 15 %). Only
temperatures that pass enter the Arrhenius fit, and :func:`fit_problems` flags a fit with
a non-positive Ea or a poor R².
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
    d_block_err_A2_ps: dict[str, float] = field(default_factory=dict)
    msd_exponent: dict[str, float] = field(default_factory=dict)  # log-log slope of MSD
    nn_distance_A: float = math.nan  # of the starting structure
    coordination_start: float = math.nan  # mean neighbours within the first shell
    coordination_md: float = math.nan  # the same, averaged over the sampled frames
    shell_cutoff_A: float = math.nan


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
    r2: float = math.nan  # weighted R² of ln D against 1/T (nan with two points)


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


#: MSD exponents (d ln MSD / d ln t) below this are sub-diffusive: vibration or caging
MIN_MSD_EXPONENT = 0.8
#: the mean first-shell coordination may change this much (fraction) before the cell
#: counts as melted or transformed
MAX_COORDINATION_CHANGE = 0.15
#: the mean temperature may miss the target by this fraction before the run is suspect
MAX_TEMPERATURE_MISS = 0.1
#: an Arrhenius line explaining less than this of the variance of ln D is not a line
MIN_ARRHENIUS_R2 = 0.9
N_BLOCKS = 4


def msd_exponent(time_ps: np.ndarray, msd: np.ndarray, fit_from: float = 0.2) -> float:
    """Slope of ln MSD against ln t over the fitted lags (1 = diffusive, 0 = caged)."""
    start = int(len(time_ps) * fit_from)
    t, m = np.asarray(time_ps[start:], float), np.asarray(msd[start:], float)
    ok = (t > 0) & (m > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(t[ok]), np.log(m[ok]), 1)[0])


def block_error(traj: np.ndarray, symbols: Sequence[str], dt_ps: float,
                n_blocks: int = N_BLOCKS) -> dict[str, float]:
    """Standard error of D over ``n_blocks`` consecutive blocks of the trajectory."""
    n = traj.shape[0] // n_blocks
    if n < 6:  # too short a block for a slope after its ballistic start
        return {}
    per: dict[str, list[float]] = {}
    for b in range(n_blocks):
        lags, by = msd_by_species(traj[b * n:(b + 1) * n], symbols)
        for s, m in by.items():
            per.setdefault(s, []).append(diffusion_coefficient(lags * dt_ps, m)[0])
    return {s: float(np.std(v, ddof=1) / math.sqrt(len(v))) for s, v in per.items()}


def shell_cutoff(atoms: Atoms, rmax_A: float = 6.0) -> tuple[float, float]:
    """(nearest-neighbour distance, a cutoff between the first and second shells)."""
    d = np.sort(neighbor_list("d", atoms, rmax_A))
    if d.size == 0:
        return math.nan, math.nan
    d1 = float(d[0])
    beyond = d[d > 1.15 * d1]
    d2 = float(beyond[0]) if beyond.size else 1.3 * d1
    return d1, 0.5 * (d1 + d2)


def coordination(frames: Sequence[Atoms], cutoff_A: float) -> float:
    if not frames or not math.isfinite(cutoff_A):
        return math.nan
    return float(np.mean([len(neighbor_list("i", a, cutoff_A)) / len(a) for a in frames]))


def run_problems(r: TemperatureRun, species: str) -> list[str]:
    """Why ``r``'s D of ``species`` is not a diffusion coefficient; empty if it is."""
    out = []
    t = r.temperature_K
    if abs(r.mean_temperature_K - t) > MAX_TEMPERATURE_MISS * t:
        out.append(f"{t:g} K: mean temperature {r.mean_temperature_K:.0f} K misses the "
                   "target: the thermostat did not hold the run")
    c0, c1 = r.coordination_start, r.coordination_md
    if math.isfinite(c0) and c0 > 0 and abs(c1 - c0) > MAX_COORDINATION_CHANGE * c0:
        out.append(f"{t:g} K: first-shell coordination went {c0:.2f} → {c1:.2f}: the cell "
                   "melted or transformed, so D is not the diffusion of this phase")
    expo = r.msd_exponent.get(species, math.nan)
    if math.isfinite(expo) and expo < MIN_MSD_EXPONENT:
        out.append(f"{t:g} K: MSD grows as t^{expo:.2f}, not t^1: not in its diffusive "
                   "regime (run longer or hotter)")
    msd = r.msd_A2.get(species) or []
    if msd and math.isfinite(r.nn_distance_A) and max(msd) < r.nn_distance_A ** 2:
        out.append(f"{t:g} K: atoms moved {math.sqrt(max(msd)):.2f} Å (rms), less than one "
                   f"neighbour distance ({r.nn_distance_A:.2f} Å): vibration, not hops")
    return out


def fit_problems(fit: ArrheniusFit) -> list[str]:
    """Why this Arrhenius fit is not a physical activation energy; empty if it is."""
    out = []
    if fit.ea_eV <= 0:
        out.append(f"Ea = {fit.ea_eV:.2f} eV is not positive: D does not rise with "
                   "temperature, so this is not thermally activated diffusion")
    if math.isfinite(fit.r2) and fit.r2 < MIN_ARRHENIUS_R2:
        out.append(f"R² = {fit.r2:.2f}: ln D is not linear in 1/T")
    return out


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
    dt_ps = sample_every * timestep_fs / 1000
    t_ps = lags * dt_ps
    blocks = block_error(traj, a.get_chemical_symbols(), dt_ps)
    d, derr, msd, expo = {}, {}, {}, {}
    for s, m in per_species.items():
        d[s], e_atoms = diffusion_coefficient(t_ps, m)
        derr[s] = float(np.nanmax([e_atoms, blocks.get(s, math.nan)]))
        msd[s] = m.mean(axis=0).tolist()
        expo[s] = msd_exponent(t_ps, m.mean(axis=0))
    nn, cut = shell_cutoff(atoms)
    # beyond half the cell's width an atom meets its own periodic image, which moves with
    # it and shows as a spike at the cell length, not as structure: stop there
    r, g = rdf(snaps[len(snaps) // 5:], min(rdf_rmax_A, 0.5 * min_width(a.cell.array)),
               rdf_bins)
    return TemperatureRun(
        temperature_K=float(temperature_K), mean_temperature_K=float(np.mean(temps[1:])),
        n_atoms=len(a), time_ps=t_ps.tolist(), msd_A2=msd, d_A2_ps=d, d_err_A2_ps=derr,
        rdf_r_A=r.tolist(), rdf={k: v.tolist() for k, v in g.items()},
        d_block_err_A2_ps=blocks, msd_exponent=expo, nn_distance_A=nn,
        coordination_start=coordination([atoms], cut),
        coordination_md=coordination(snaps[len(snaps) // 5:], cut), shell_cutoff_A=cut)


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
    resid = ln - design @ coef
    mean = float(np.sum(w * ln) / np.sum(w))
    ss_tot = float(np.sum(w * (ln - mean) ** 2))
    r2 = 1 - float(np.sum(w * resid**2)) / ss_tot if t.size > 2 and ss_tot > 0 else math.nan
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
        d_err_cm2_s=None if d_err is None else [float(v) for v in d_err], note=note, r2=r2)


def arrhenius_by_species(runs: Sequence[TemperatureRun], species: Sequence[str] | None = None,
                         ) -> tuple[dict[str, ArrheniusFit | None], dict[str, str]]:
    """An Arrhenius fit per species over the temperatures where diffusion is detected
    (D more than two standard errors above zero) and real (:func:`run_problems` finds
    nothing); a species without two such temperatures gets a note saying why instead of
    a fit through noise."""
    all_species = sorted({s for r in runs for s in r.d_A2_ps})
    fits: dict[str, ArrheniusFit | None] = {}
    notes: dict[str, str] = {}
    for s in species or all_species:
        have = [r for r in runs if s in r.d_A2_ps]
        pts = [(r.temperature_K, r.d_A2_ps[s], r.d_err_A2_ps[s]) for r in have]
        detected = [d > 0 and (not math.isfinite(e) or d > 2 * e) for _, d, e in pts]
        why = [run_problems(r, s) for r in have]
        ok = [p for p, det, w in zip(pts, detected, why, strict=True) if det and not w]
        if len(ok) < 2:
            fits[s] = None
            reasons = [w[0] for w in why if w]
            notes[s] = (f"diffusion detected and valid at {len(ok)} of {len(pts)} "
                        "temperatures (D > 2σ, diffusive MSD, phase kept); no Arrhenius fit"
                        + ("; " + "; ".join(reasons) if reasons else ""))
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
