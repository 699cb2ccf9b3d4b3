"""NVE stability (``validation.stability``): a stable EMT crystal passes with a tiny drift
at the target temperature; an absurd timestep, a potential that collapses the atoms and
forces that are not the gradient of the energy are each caught, with the time and the
reason; the config refuses bad settings naming the field; the report and
``validation.json`` carry the result. Fast: EMT and toy calculators, a few seconds."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from configs import base

from pfd.config import ConfigError, ValidationSpec, parse_config
from pfd.store import LocalStore
from pfd.validate import stability as stab
from pfd.validate.report import blocks, numbers, to_markdown
from pfd.validate.run import (
    Model,
    ResultCache,
    run_validation,
    stability_structures,
    stability_temperature,
)

CU = bulk("Cu", "fcc", a=3.61, cubic=True)
AL = bulk("Al", "fcc", a=4.05, cubic=True)
NN_CU = 3.61 / math.sqrt(2)


class CollapseToCentre(Calculator):
    """Every atom on a spring to the cell's centre (k = m ω², period 0.4 ps for Cu): a
    conservative, finite potential with a hole the atoms fall into together, so the
    shortest distance is what catches it (at ~1/6 of the period, when the lattice has
    shrunk to half its size)."""

    implemented_properties = ("energy", "forces")

    def __init__(self, period_ps: float = 0.4) -> None:
        super().__init__()
        omega = 2 * math.pi / (period_ps * 1000 * units.fs)
        self.k = 63.546 * omega**2  # amu/t² = eV/Å² in ASE units (Cu's mass)

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        x = self.atoms.positions - self.atoms.cell.array.sum(axis=0) / 2
        self.results = {"energy": 0.5 * self.k * float(np.sum(x**2)), "forces": -self.k * x}


class AntiFriction(EMT):
    """EMT plus a force along each atom's momentum (negative friction, rate ``gamma`` per
    ps): no energy function has it as gradient, so NVE heats up steadily."""

    def __init__(self, gamma_per_ps: float) -> None:
        super().__init__()
        self.gamma = gamma_per_ps / (1000 * units.fs)

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None and atoms is not None
        self.results["forces"] = self.results["forces"] + self.gamma * atoms.get_momenta()


# --------------------------------------------------------------------------- physics
def test_stable_crystal_conserves_energy_and_settles_at_the_target() -> None:
    """EMT Cu, 32 atoms, 1 ps at 2 fs: started at 2 × 300 K, it settles near 300 K (not
    600 K: the velocities really start at twice the target), conserves the total energy
    far inside the checks, and the atoms vibrate without coming close."""
    r = stab.nve_stability(CU.repeat((2, 2, 2)), EMT(), "fcc", 300.0, 1.0, 2.0)
    assert not r.blew_up and r.blow_up_ps is None and r.blow_up_reason is None
    assert r.steps_done == r.n_steps == 500 and r.time_done_ps == pytest.approx(1.0)
    assert r.temperatures_K[0] == pytest.approx(600.0, rel=1e-6)
    assert 255 < r.mean_temperature_K < 345
    assert abs(r.drift_meV_atom_ps) < 0.1 and r.max_energy_dev_meV_atom < 1.0
    assert r.drift_err_meV_atom_ps < 0.1
    assert r.min_distance_start_A == pytest.approx(NN_CU, abs=1e-6)
    assert 0.7 * NN_CU < r.min_distance_A < NN_CU  # vibrating: closer than the lattice
    assert min(r.min_distances_A) == pytest.approx(r.min_distance_A)
    assert len(r.time_ps) == stab.N_SAMPLES + 1 and r.time_ps[-1] == pytest.approx(1.0)
    assert 0 < r.max_force_eV_A < 10
    assert stab.problems(r) == [] and stab.verdict(r) == "stable"


def test_an_absurd_timestep_blows_up_and_says_when() -> None:
    """EMT Al at 20 fs: velocity Verlet cannot follow the vibration; the run stops at the
    first step whose force exceeds the limit and keeps what it measured before."""
    r = stab.nve_stability(AL.repeat((2, 2, 2)), EMT(), "al", 1500.0, 2.0, 20.0)
    assert r.blew_up and r.blow_up_reason is not None
    assert r.blow_up_ps is not None and 0 < r.blow_up_ps < 2.0
    assert r.steps_done < r.n_steps
    assert r.blow_up_ps == pytest.approx(r.steps_done * 20.0 / 1000)
    assert max(r.time_ps) < r.blow_up_ps  # no sample from past the blow-up
    why = stab.problems(r)
    assert len(why) == 1 and why[0].startswith(f"blew up at {r.blow_up_ps:.2f} ps")
    assert r.max_energy_dev_meV_atom > stab.MAX_ENERGY_EXCURSION_MEV_ATOM  # but not listed
    assert stab.verdict(r) == f"blew up at {r.blow_up_ps:.2f} ps"


def test_atoms_falling_together_are_caught_by_the_shortest_distance() -> None:
    """A smooth potential with a hole: forces stay moderate, energy is conserved, and only
    the distance check sees the lattice shrink below half its neighbour distance."""
    r = stab.nve_stability(CU.repeat((2, 2, 2)), CollapseToCentre(), "fcc", 300.0, 1.0, 1.0)
    assert r.blew_up and r.blow_up_reason is not None and "apart" in r.blow_up_reason
    assert r.blow_up_ps is not None and 0.04 < r.blow_up_ps < 0.1  # ~0.4 ps / 6
    assert r.min_distance_A < stab.MIN_DISTANCE_FRACTION * r.min_distance_start_A
    assert r.max_force_eV_A < stab.MAX_FORCE_EV_A
    assert stab.problems(r) == [f"blew up at {r.blow_up_ps:.2f} ps of 1 ps: {r.blow_up_reason}"]


def test_forces_that_are_not_a_gradient_drift_without_blowing_up() -> None:
    r = stab.nve_stability(CU.repeat((2, 2, 2)), AntiFriction(0.1), "fcc", 300.0, 1.0, 2.0)
    assert not r.blew_up
    assert r.drift_meV_atom_ps > stab.MAX_DRIFT_MEV_ATOM_PS
    assert any(p.startswith("energy drift +") for p in stab.problems(r))
    assert stab.verdict(r) == "stable ⚠"


def test_each_check_fires_on_its_own_case() -> None:
    """A short stable run, then one field at a time moved past its check's bound."""
    r = stab.nve_stability(CU, EMT(), "fcc", 300.0, 0.1, 2.0)
    assert stab.problems(r) == []
    hot = replace(r, mean_temperature_K=1.3 * r.temperature_K)
    assert [p.split(" K far")[0] for p in stab.problems(hot)] == ["mean T 390"]
    assert stab.problems(replace(r, mean_temperature_K=1.1 * r.temperature_K)) == []
    assert stab.problems(replace(r, drift_meV_atom_ps=-1.5))[0].startswith("energy drift -1.50")
    assert stab.problems(replace(r, drift_meV_atom_ps=0.9)) == []
    strayed = stab.problems(replace(r, max_energy_dev_meV_atom=12.0))
    assert len(strayed) == 1 and strayed[0].startswith("total energy strayed 12.0")


def test_drift_fit_recovers_a_known_slope() -> None:
    t = np.linspace(0, 20, 101)
    e = 0.5 * t + np.random.default_rng(1).normal(0, 0.2, t.size)
    slope, err = stab.drift(t, e)
    assert abs(slope - 0.5) < 3 * err and 0 < err < 0.05
    assert math.isnan(stab.drift(t[:3], e[:3])[1]) and math.isnan(stab.drift(t[:1], e[:1])[0])


# --------------------------------------------------------------------------- config
def _raw(**stability: Any) -> dict[str, Any]:
    raw = base()
    raw["distill"] = {"groups": [{"structures": ["d"], "temperatures_K": [500, 1000]}]}
    raw["validation"] = {"stability": stability}
    return raw


def test_config_temperature_and_structures_follow_the_runs_md() -> None:
    cfg = parse_config(_raw())
    assert cfg.validation.stability.time_ps >= 20 and cfg.validation.stability.enabled
    assert stability_temperature(cfg) == pytest.approx(1200.0)
    assert stability_structures(cfg) == ["d"]
    raw = _raw(temperature_factor=1.5)
    raw["structures"]["e"] = raw["structures"]["d"]
    raw["distill"]["groups"].append({"structures": ["e", "d"], "temperatures_K": [1400]})
    cfg = parse_config(raw)
    assert stability_temperature(cfg) == pytest.approx(2100.0)
    assert stability_structures(cfg) == ["d", "e"]
    raw = _raw()
    del raw["distill"]  # no distillation: the stages' MD
    raw["stages"][0]["groups"][0]["temperatures_K"] = [300, 900]
    assert stability_temperature(parse_config(raw)) == pytest.approx(1080.0)


@pytest.mark.parametrize("field,value,message", [
    ("temperature_factor", 0, "validation.stability.temperature_factor"),
    ("temperature_factor", -1.2, "validation.stability.temperature_factor"),
    ("timestep_fs", 50, "validation.stability.timestep_fs"),
    ("time_ps", 0.005, "at least 10"),
    ("structures", ["nope"], r"validation.stability.structures\[0\].*'nope'"),
    ("models", ["dft"], "validation.stability.models"),
])
def test_config_refuses_bad_settings_naming_the_field(field: str, value: Any,
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**{field: value}))


# --------------------------------------------------------------------------- wiring
def _spec(**stability: Any) -> ValidationSpec:
    return ValidationSpec(eos={"enabled": False}, vacancy={"enabled": False},
                          phonons={"enabled": False}, diffusion={"enabled": False},
                          parity={"enabled": False}, stability=stability)


def test_validation_runs_stores_and_reports_each_model(tmp_path: Path) -> None:
    """The student (EMT) is stable, the teacher (a collapsing toy) blows up: the summary
    row, the stability table's check column and validation.json say so; a rerun reads
    both back from the store."""
    spec = _spec(time_ps=0.3, timestep_fs=2.0, models=["student", "teacher"],
                 supercell=[2, 2, 2])
    models = {"student": Model(EMT, "emt"), "teacher": Model(CollapseToCentre, "collapse")}
    cache = ResultCache(LocalStore(tmp_path), "v")
    res = run_validation(spec, {"fcc": CU}, models, cache=cache, stability_temperature_K=360.0,
                         log=lambda _: None)
    assert res.errors == {}
    student, teacher = res.stability["student"]["fcc"], res.stability["teacher"]["fcc"]
    assert student.n_atoms == 32 and student.temperature_K == 360.0 and not student.blew_up
    assert teacher.blew_up
    bl, pngs = blocks(res, "r", {})
    md = to_markdown(bl, "img")
    summary = next(ln for ln in md.splitlines() if ln.startswith("| NVE fcc"))
    assert summary.startswith("| NVE fcc (360 K, 0.3 ps) | blew up at ")  # teacher first
    assert summary.endswith(" ps | stable |")
    rows = [ln for ln in md.splitlines() if ln.startswith("| fcc | ")]
    header = next(ln for ln in md.splitlines() if ln.startswith("| structure | model | atoms"))
    assert all(ln.count("|") == header.count("|") for ln in rows)  # no stray pipe in a cell
    assert len(rows) == 2 and rows[0].startswith("| fcc | teacher") and "blew up at" in rows[0]
    assert rows[1].startswith("| fcc | student") and rows[1].endswith("| ok |")
    assert set(pngs) == {"stability-student.png", "stability-teacher.png"}
    nums = numbers(res, "r", {}, {})
    s = nums["stability"]["student"]["fcc"]
    assert s["blew_up"] is False and s["problems"] == [] and "time_ps" not in s
    assert nums["stability"]["teacher"]["fcc"]["problems"][0].startswith("blew up at")
    again = run_validation(spec, {"fcc": CU}, models, cache=ResultCache(LocalStore(tmp_path),
                                                                         "v"),
                           stability_temperature_K=360.0, log=lambda _: None)
    assert set(again.reused) == {"stability/student/fcc", "stability/teacher/fcc"}
    assert again.stability["student"]["fcc"] == student


def test_validation_without_a_temperature_records_an_error() -> None:
    """Only models named in ``models`` run (the default: the student); without the run's
    temperature the result is an error saying so, not a run at a made-up T."""
    res = run_validation(_spec(), {"fcc": CU}, {"student": Model(EMT, "emt"),
                                                "teacher": Model(EMT, "emt2")},
                         log=lambda _: None)
    assert res.stability == {}
    assert list(res.errors) == ["stability/student/fcc"]
    assert "no temperature" in res.errors["stability/student/fcc"]
