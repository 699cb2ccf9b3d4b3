"""Molecular dynamics on any ASE calculator, sampling frames and stopping on blow-ups.

A trajectory is the unit of parallel work: independent, seeded, and reporting *why*
it stopped early, because an exploding trajectory is information about the model
(it has not seen that region), not an error to hide. Sampled frames leave in parts
together with a checkpoint (``on_part``), so a trajectory killed with its worker can
be continued exactly from its last part (``resume``); see ``pfd.explore.stream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from pydantic import model_validator

from pfd.config import NPT_ENSEMBLES, MDSettings, PositiveFloat
from pfd.explore.blowup import BlowupLimits, blowup_reason
from pfd.explore.integrators import (
    integrator_state,
    make_integrator,
    restore_integrator_state,
)
from pfd.frames import attach_labels

__all__ = ["MDState", "TrajectoryResult", "TrajectorySpec", "blowup_reason", "run_md"]


class TrajectorySpec(MDSettings):
    """One planned trajectory: the group's :class:`~pfd.config.MDSettings` (integrator,
    length, sampling: defined and checked once there) plus where it starts, its
    thermodynamic point, its seed and the blow-up limits (see pfd.explore.blowup)."""

    traj_id: str
    structure: str
    temperature_K: PositiveFloat
    pressure_GPa: float | None = None
    seed: int = 1
    max_temperature_factor: PositiveFloat = 5.0
    min_distance_A: PositiveFloat = 0.5
    max_volume_ratio: PositiveFloat = 2.0
    max_cell_length_ratio: PositiveFloat = 1.5
    max_cell_angle_change_deg: PositiveFloat = 25.0

    @model_validator(mode="after")
    def _pressure_matches_ensemble(self) -> TrajectorySpec:
        if (self.ensemble in NPT_ENSEMBLES) != (self.pressure_GPa is not None):
            raise ValueError(f"pressure_GPa: required for {' and '.join(NPT_ENSEMBLES)}, not "
                             f"allowed for {self.ensemble!r} (got {self.pressure_GPa!r})")
        return self

    def limits(self) -> BlowupLimits:
        return BlowupLimits(
            temperature_K=self.temperature_K, max_temperature_factor=self.max_temperature_factor,
            min_distance_A=self.min_distance_A, max_volume_ratio=self.max_volume_ratio,
            max_cell_length_ratio=self.max_cell_length_ratio,
            max_cell_angle_change_deg=self.max_cell_angle_change_deg)


@dataclass
class MDState:
    """Everything needed to continue a trajectory exactly after ``step`` (JSON-ready)."""

    step: int
    n_frames: int  # frames sampled up to and including ``step``
    positions: list[list[float]]
    momenta: list[list[float]]
    cell: list[list[float]]
    integrator: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MDState:
        return cls(**d)


@dataclass
class TrajectoryResult:
    traj_id: str
    frames: list[Atoms] = field(default_factory=list)  # sampled by this call
    steps_done: int = 0
    stopped: str | None = None
    wall_s: float = 0.0
    resumed_from_step: int = 0
    frames_before: int = 0  # sampled before the resume point

    def record(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("frames")
        d.pop("frames_before")
        d["n_frames"] = self.frames_before + len(self.frames)
        return d


PartFn = Callable[[list[Atoms], MDState], None]


def _start(atoms: Atoms, calc: Calculator, spec: TrajectorySpec,
           resume: MDState | None) -> tuple[Atoms, Any]:
    work = atoms.copy()
    work.calc = calc
    rng = np.random.default_rng(spec.seed)
    if resume is None:
        thermalize_momenta(work, temperature_K=spec.temperature_K, rng=rng)
        Stationary(work)
    else:
        work.set_cell(np.array(resume.cell), scale_atoms=False)
        work.positions = np.array(resume.positions)
        work.set_momenta(np.array(resume.momenta))
    dyn = make_integrator(work, spec.ensemble, temperature_K=spec.temperature_K,
                          timestep_fs=spec.timestep_fs, rng=rng, pressure_GPa=spec.pressure_GPa,
                          friction_per_fs=spec.friction_per_fs,
                          thermostat_damping_fs=spec.thermostat_damping_fs,
                          barostat_damping_fs=spec.barostat_damping_fs)
    if resume is not None:
        restore_integrator_state(dyn, spec.ensemble, resume.integrator)
        dyn.nsteps = resume.step
    return work, dyn


def run_md(atoms: Atoms, calc: Calculator, spec: TrajectorySpec,
           on_sample: Callable[[Atoms], None] | None = None,
           on_part: PartFn | None = None, resume: MDState | None = None) -> TrajectoryResult:
    """Run (or continue from ``resume``) one trajectory of ``atoms``.

    Sampled frames carry the model's energy/forces/stress as labels: that is what the
    teacher "labels" during distillation, and what the max-force pre-label filter reads,
    so no second model evaluation is needed. ``on_part(frames, state)`` receives every
    ``samples_per_part`` frames and the state after the last of them, and the remainder
    at the end. Blow-up limits compare with ``atoms``' cell, also when resuming.
    """
    if resume is not None and (resume.step % spec.sample_every or resume.step > spec.steps):
        raise ValueError(f"resume.step {resume.step} is not a sampling step of this spec "
                         f"(every {spec.sample_every} up to {spec.steps})")
    t0 = time.perf_counter()
    work, dyn = _start(atoms, calc, spec, resume)
    limits, cell0 = spec.limits(), atoms.cell.array.copy()
    first = resume.step if resume is not None else 0
    result = TrajectoryResult(traj_id=spec.traj_id, steps_done=first, resumed_from_step=first,
                              frames_before=resume.n_frames if resume is not None else 0)
    part: list[Atoms] = []

    def flush() -> None:
        if on_part is not None and part:
            state = MDState(step=result.steps_done,
                            n_frames=result.frames_before + len(result.frames),
                            positions=work.positions.tolist(),
                            momenta=work.get_momenta().tolist(), cell=work.cell.array.tolist(),
                            integrator=integrator_state(dyn, spec.ensemble))
            on_part(list(part), state)
        part.clear()

    for step in range(first + spec.sample_every, spec.steps + 1, spec.sample_every):
        try:
            dyn.run(spec.sample_every)
        except Exception as err:  # a calculator crash mid-trajectory ends only this trajectory
            result.stopped = f"calculator error: {type(err).__name__}: {err}"
            break
        result.steps_done = step
        reason = blowup_reason(work, limits, cell0)
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
        part.append(frame)
        if on_sample is not None:
            on_sample(frame)
        if len(part) >= spec.samples_per_part:
            flush()
    flush()
    result.wall_s = round(time.perf_counter() - t0, 2)
    return result
