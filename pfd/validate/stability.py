"""Stability of a model's own MD: NVE at a temperature above its training, for long.

A student can match its teacher on every test frame and still fall apart when it drives
MD itself, for longer and hotter than the trajectories it learnt from: it finds a hole
in its energy surface (atoms collapse onto each other), or its forces are not quite the
gradient of its energy (the total energy drifts). A thermostat hides the second and
delays the first, so this runs NVE (velocity Verlet): velocities from a Maxwell–Boltzmann
distribution at 2 × T with zero total momentum (equipartition splits the kinetic energy
with the potential, so the run settles near T), then ``time_ps`` without a thermostat.

What counts as a blow-up (the MD stops there, and what it measured until then is kept):
a non-finite energy or force, a force above :data:`MAX_FORCE_EV_A`, the calculator
failing mid-run, or two atoms closer than :data:`MIN_DISTANCE_FRACTION` × the starting
structure's shortest distance. :func:`problems` turns the result into the report's
checks: the blow-up and its time, an energy drift above :data:`MAX_DRIFT_MEV_ATOM_PS`, a
total energy wandering further than :data:`MAX_ENERGY_EXCURSION_MEV_ATOM`, and a mean
temperature far from the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from pfd.explore.blowup import min_distance
from pfd.validate._plot import png, pyplot
from pfd.validate.record import Record

#: samples of energy, temperature and distance over a run (the drift fit and the plot)
N_SAMPLES = 100
#: the shortest distance is checked at least this often (steps): an O(N²) search, while
#: the energy and force checks are free (the integrator has just computed them)
DISTANCE_CHECK_EVERY = 10
#: two atoms closer than this fraction of the starting structure's shortest distance:
#: the model let them fall into each other (no real solid or liquid does that)
MIN_DISTANCE_FRACTION = 0.5
#: a force this large (eV/Å) is a model outside its data, not thermal motion
MAX_FORCE_EV_A = 50.0
#: |slope| of the total energy (meV/atom/ps) beyond which the run does not conserve it:
#: forces not the gradient of the energy (a non-smooth cutoff), or a too-long timestep
MAX_DRIFT_MEV_ATOM_PS = 1.0
#: max |E − E0| (meV/atom): velocity Verlet's total energy fluctuates at O(dt²), far
#: below this at MD timesteps; more means the integration is not following the surface
MAX_ENERGY_EXCURSION_MEV_ATOM = 10.0
#: the mean temperature may miss the target by this fraction: without a thermostat the
#: split 2T → T is only equipartition, which anharmonicity shifts by a few per cent
MAX_TEMPERATURE_MISS = 0.2
#: the first part of the run, while equipartition brings 2T to T, is left out of the
#: mean temperature
EQUIPARTITION_FRACTION = 0.2


@dataclass(frozen=True)
class StabilityRun(Record):
    """One NVE run of one model in one structure (energies per atom, relative to t = 0)."""

    structure: str
    temperature_K: float  # the target; velocities start at twice this
    timestep_fs: float
    n_atoms: int
    n_steps: int  # asked for
    steps_done: int
    blew_up: bool
    blow_up_ps: float | None  # when (None: it did not)
    blow_up_reason: str | None
    drift_meV_atom_ps: float  # slope of a line through the total energy
    drift_err_meV_atom_ps: float  # its least-squares standard error (nan: < 4 samples)
    max_energy_dev_meV_atom: float  # max |E − E0|
    mean_temperature_K: float  # after the equipartition part
    min_distance_start_A: float
    min_distance_A: float  # over the run, the blow-up configuration included
    max_force_eV_A: float
    time_ps: list[float]  # the samples
    energy_meV_atom: list[float]  # total energy − E0
    temperatures_K: list[float]
    min_distances_A: list[float]

    @property
    def time_done_ps(self) -> float:
        return self.steps_done * self.timestep_fs / 1000


#: the per-sample arrays: in the stored result and the plot, not in ``validation.json``
SERIES = ("time_ps", "energy_meV_atom", "temperatures_K", "min_distances_A")


def _total_energy_eV(atoms: Atoms) -> float:
    return float(atoms.get_potential_energy() + atoms.get_kinetic_energy())


def _step_reason(atoms: Atoms) -> tuple[str | None, float]:
    """(why this configuration is a blow-up, or None; its largest force). Reads only what
    the integrator has just computed, so it costs nothing to check every step."""
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    if not (math.isfinite(e) and np.all(np.isfinite(f))):
        return "non-finite energy or forces", math.nan
    fmax = float(np.linalg.norm(f, axis=1).max())
    if fmax > MAX_FORCE_EV_A:
        return f"force {fmax:.0f} eV/Å > {MAX_FORCE_EV_A:g} eV/Å", fmax
    return None, fmax


def drift(time_ps: np.ndarray, energy: np.ndarray) -> tuple[float, float]:
    """Slope of a least-squares line through ``energy`` (per ps) and its standard error
    (nan with fewer than 4 points; samples are correlated, so it is a lower bound)."""
    if len(time_ps) < 2:
        return math.nan, math.nan
    if len(time_ps) < 4:
        return float(np.polyfit(time_ps, energy, 1)[0]), math.nan
    coef, cov = np.polyfit(time_ps, energy, 1, cov=True)
    return float(coef[0]), float(math.sqrt(cov[0, 0]))


def nve_stability(atoms: Atoms, calc: Calculator, structure: str, temperature_K: float,
                  time_ps: float, timestep_fs: float = 1.0, seed: int = 1,
                  n_samples: int = N_SAMPLES) -> StabilityRun:
    """NVE velocity Verlet from Maxwell–Boltzmann velocities at 2 × ``temperature_K``
    (exactly that temperature, zero total momentum, seeded) for ``time_ps``; stops at the
    first blow-up (module doc). A failure before the first step (the model cannot
    compute the structure at all) raises: that is an error, not an instability."""
    if len(atoms) < 2:
        raise ValueError(f"{structure}: NVE stability needs at least 2 atoms (a lone atom "
                         "without total momentum does not move); use a supercell")
    a = atoms.copy()
    a.calc = calc
    thermalize_momenta(a, 2 * temperature_K, exact_temperature=True,
                       rng=np.random.default_rng(seed))
    Stationary(a)  # keeps the temperature (ASE rescales), removes the drift of the cell
    dyn = VelocityVerlet(a, timestep=timestep_fs * units.fs)
    n = len(a)
    n_steps = max(1, round(time_ps * 1000 / timestep_fs))
    every = max(1, n_steps // n_samples)
    check_every = min(every, DISTANCE_CHECK_EVERY)
    d0 = min_distance(a)
    e0 = _total_energy_eV(a)
    reason, fmax = _step_reason(a)
    series: dict[str, list[float]] = {k: [] for k in SERIES}
    d_min = d0

    def sample(step: int, d: float) -> None:
        series["time_ps"].append(step * timestep_fs / 1000)
        series["energy_meV_atom"].append(1000 * (_total_energy_eV(a) - e0) / n)
        series["temperatures_K"].append(float(a.get_temperature()))
        series["min_distances_A"].append(d)

    sample(0, d0)
    step = 0  # steps integrated
    blow_step = 0 if reason is not None else None  # the step whose configuration failed
    while blow_step is None and step < n_steps:
        try:
            dyn.run(1)
        except Exception as err:  # noqa: BLE001 - a model that fails mid-run blew up
            reason = f"the calculator failed: {type(err).__name__}: {err}"[:300]
            blow_step = step + 1
            break
        step += 1
        reason, f = _step_reason(a)
        fmax = max(fmax, f) if math.isfinite(f) else fmax
        due = step % every == 0 or step == n_steps
        if reason is None and not due and step % check_every:
            continue
        d = min_distance(a)
        d_min = min(d_min, d) if math.isfinite(d) else d_min
        if reason is None and d < MIN_DISTANCE_FRACTION * d0:
            reason = (f"atoms {d:.2f} Å apart < {MIN_DISTANCE_FRACTION:g} × the starting "
                      f"{d0:.2f} Å")
        if reason is not None:
            blow_step = step
        elif due:
            sample(step, d)
    t = np.asarray(series["time_ps"])
    e = np.asarray(series["energy_meV_atom"])
    slope, slope_err = drift(t, e)
    # the start alone (a blow-up before the first sample) is 2T: no mean temperature
    temps = (np.asarray(series["temperatures_K"])[t >= EQUIPARTITION_FRACTION * t.max()]
             if t.size > 1 else np.zeros(0))
    return StabilityRun(
        structure=structure, temperature_K=float(temperature_K),
        timestep_fs=float(timestep_fs), n_atoms=n, n_steps=n_steps,
        steps_done=step, blew_up=blow_step is not None,
        blow_up_ps=None if blow_step is None else blow_step * timestep_fs / 1000,
        blow_up_reason=reason,
        drift_meV_atom_ps=slope, drift_err_meV_atom_ps=slope_err,
        max_energy_dev_meV_atom=float(np.abs(e).max()),
        mean_temperature_K=float(temps.mean()) if temps.size else math.nan,
        min_distance_start_A=d0, min_distance_A=d_min,
        max_force_eV_A=fmax if math.isfinite(fmax) else math.nan, **series)


def problems(r: StabilityRun) -> list[str]:
    """Why this run says the model is not stable at T; empty if it is. A blow-up is the
    only reason given for a run that had one: drift and mean temperature over the part
    before it describe a truncated run, mostly its equipartition transient."""
    if r.blew_up:
        return [f"blew up at {r.blow_up_ps:.2f} ps of {r.n_steps * r.timestep_fs / 1000:g} "
                f"ps: {r.blow_up_reason}"]
    out = []
    if math.isfinite(r.drift_meV_atom_ps) and abs(r.drift_meV_atom_ps) > MAX_DRIFT_MEV_ATOM_PS:
        out.append(f"energy drift {r.drift_meV_atom_ps:+.2f} meV/atom/ps, more than "
                   f"±{MAX_DRIFT_MEV_ATOM_PS:g} (forces not the gradient of the energy, or "
                   "the timestep too long)")
    if r.max_energy_dev_meV_atom > MAX_ENERGY_EXCURSION_MEV_ATOM:
        out.append(f"total energy strayed {r.max_energy_dev_meV_atom:.1f} meV/atom from its "
                   f"start (> {MAX_ENERGY_EXCURSION_MEV_ATOM:g}): NVE is not conserving it")
    t, tm = r.temperature_K, r.mean_temperature_K
    if math.isfinite(tm) and abs(tm - t) > MAX_TEMPERATURE_MISS * t:
        out.append(f"mean T {tm:.0f} K far from the target {t:g} K (> "
                   f"{100 * MAX_TEMPERATURE_MISS:g} %): the energy did not settle as "
                   "equipartition says")
    return out


def verdict(r: StabilityRun) -> str:
    """The summary table's cell: ``stable``, ``blew up at 3.20 ps``, ``stable ⚠``."""
    if r.blew_up:
        return f"blew up at {r.blow_up_ps:.2f} ps"
    return "stable ⚠" if problems(r) else "stable"


def plot(runs: Mapping[str, StabilityRun], title: str) -> bytes:
    """Total energy drift, temperature and shortest distance against time, per structure."""
    plt = pyplot()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110)
    for st, r in runs.items():
        line, = a1.plot(r.time_ps, r.energy_meV_atom, "-", lw=1, label=st)
        c = line.get_color()
        a2.plot(r.time_ps, r.temperatures_K, "-", lw=0.8, color=c, label=st)
        a2.axhline(r.temperature_K, color=c, ls=":", lw=0.8)
        a3.plot(r.time_ps, r.min_distances_A, "-", lw=0.8, color=c, label=st)
        a3.axhline(MIN_DISTANCE_FRACTION * r.min_distance_start_A, color=c, ls=":", lw=0.8)
        if r.blow_up_ps is not None:
            for ax in (a1, a2, a3):
                ax.axvline(r.blow_up_ps, color=c, ls="--", lw=0.8)
    a1.set_ylabel("E − E0 (meV/atom)")
    a2.set_ylabel("T (K)")
    a3.set_ylabel("shortest distance (Å)")
    for ax in (a1, a2, a3):
        ax.set_xlabel("t (ps)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return png(fig)
