"""Molecular dynamics on any ASE calculator, sampling frames and stopping on blow-ups.

A trajectory is the unit of parallel work: independent, seeded, and reporting *why*
it stopped early, because an exploding trajectory is information about the model
(it has not seen that region), not an error to hide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from pfd.frames import attach_labels

GPA_TO_EV_A3 = units.GPa


@dataclass(frozen=True)
class TrajectorySpec:
    traj_id: str
    structure: str
    temperature_K: float
    pressure_GPa: float | None = None
    ensemble: Literal["nvt", "npt"] = "nvt"
    steps: int = 200
    timestep_fs: float = 1.0
    sample_every: int = 10
    friction_per_fs: float = 0.01
    seed: int = 1
    # blow-up limits
    max_temperature_factor: float = 5.0
    min_distance_A: float = 0.5
    max_volume_ratio: float = 2.0


@dataclass
class TrajectoryResult:
    traj_id: str
    frames: list[Atoms] = field(default_factory=list)
    steps_done: int = 0
    stopped: str | None = None
    wall_s: float = 0.0

    def record(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("frames")
        d["n_frames"] = len(self.frames)
        return d


def blowup_reason(atoms: Atoms, spec: TrajectorySpec, volume0: float) -> str | None:
    """Why this configuration is unphysical, or None. Checked at every sample."""
    forces = atoms.get_forces()
    if not np.all(np.isfinite(forces)):
        return "non-finite forces"
    t = atoms.get_temperature()
    t_max = spec.max_temperature_factor * spec.temperature_K + 500.0
    if t > t_max:
        return f"temperature runaway ({t:.0f} K > {t_max:.0f} K)"
    if len(atoms) > 1:
        d = atoms.get_all_distances(mic=True)
        dmin = float(d[np.triu_indices(len(atoms), 1)].min())
        if dmin < spec.min_distance_A:
            return f"atoms too close ({dmin:.2f} Å < {spec.min_distance_A} Å)"
    ratio = atoms.get_volume() / volume0
    if not (1 / spec.max_volume_ratio < ratio < spec.max_volume_ratio):
        return f"cell volume changed by factor {ratio:.2f}"
    return None


def _integrator(atoms: Atoms, spec: TrajectorySpec, rng: np.random.Generator):  # noqa: ANN202
    dt = spec.timestep_fs * units.fs
    if spec.ensemble == "nvt":
        return Langevin(atoms, dt, temperature_K=spec.temperature_K,
                        friction=spec.friction_per_fs / units.fs, rng=rng, fixcm=False)
    assert spec.pressure_GPa is not None
    return IsotropicMTKNPT(atoms, dt, temperature_K=spec.temperature_K,
                           pressure_au=spec.pressure_GPa * GPA_TO_EV_A3,
                           tdamp=100 * dt, pdamp=1000 * dt)


def run_md(atoms: Atoms, calc: Calculator, spec: TrajectorySpec,
           on_sample: Callable[[Atoms], None] | None = None) -> TrajectoryResult:
    """Run one trajectory; sampled frames carry the model's energy/forces/stress as labels.

    Those labels are what the teacher "labels" during distillation, and what the
    max-force pre-label filter reads, so no second model evaluation is needed.
    """
    t0 = time.perf_counter()
    work = atoms.copy()
    work.calc = calc
    rng = np.random.default_rng(spec.seed)
    thermalize_momenta(work, temperature_K=spec.temperature_K, rng=rng)
    Stationary(work)
    dyn = _integrator(work, spec, rng)
    volume0 = work.get_volume()
    result = TrajectoryResult(traj_id=spec.traj_id)
    for step in range(spec.sample_every, spec.steps + 1, spec.sample_every):
        try:
            dyn.run(spec.sample_every)
        except Exception as err:  # a calculator crash mid-trajectory ends only this trajectory
            result.stopped = f"calculator error: {type(err).__name__}: {err}"
            break
        result.steps_done = step
        reason = blowup_reason(work, spec, volume0)
        if reason is not None:
            result.stopped = f"{reason} at step {step}"
            break
        frame = attach_labels(work, work.get_potential_energy(), work.get_forces(),
                              work.get_stress())
        frame.info.update(structure=spec.structure, traj_id=spec.traj_id, step=step,
                          temperature_K=spec.temperature_K, md_temperature_K=round(
                              float(work.get_temperature()), 1))
        if spec.pressure_GPa is not None:
            frame.info["pressure_GPa"] = spec.pressure_GPa
        result.frames.append(frame)
        if on_sample is not None:
            on_sample(frame)
    result.wall_s = round(time.perf_counter() - t0, 2)
    return result
