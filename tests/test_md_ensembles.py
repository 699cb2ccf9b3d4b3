"""MD physics on ASE's EMT copper: temperature, ensembles, cell dynamics, blow-ups."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from pfd import frames as fr
from pfd.explore.blowup import BlowupLimits, blowup_reason, cell_reason
from pfd.explore.md import TrajectorySpec, run_md


def _cu() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 32 atoms


def _spread_A2(frames: list[Atoms], ideal: Atoms) -> float:
    """Mean squared displacement from the lattice sites, drift removed."""
    out = []
    for f in frames:
        d = f.positions - ideal.positions
        frac = np.linalg.solve(ideal.cell.array.T, d.T).T
        d = (frac - np.round(frac)) @ ideal.cell.array
        d -= d.mean(axis=0)
        out.append(float((d**2).sum(axis=1).mean()))
    return float(np.mean(out))


@pytest.mark.slow
def test_positional_spread_grows_with_temperature() -> None:
    cu = _cu()
    spreads, temps = {}, {}
    for t in (100.0, 800.0):
        spec = TrajectorySpec(traj_id=f"t{t:g}", structure="cu", temperature_K=t, steps=300,
                              sample_every=20, timestep_fs=2.0, seed=3)
        res = run_md(cu, EMT(), spec)
        assert res.stopped is None and len(res.frames) == 15
        late = res.frames[3:]  # after the first thermostat time (100 fs)
        spreads[t] = _spread_A2(late, cu)
        temps[t] = np.mean([f.info["md_temperature_K"] for f in late])
    # harmonic crystal: <u²> ∝ T, so 8× in T gives several × in spread
    assert spreads[800.0] > 4 * spreads[100.0]
    assert 0.6 * 800 < temps[800.0] < 1.4 * 800 and 0.6 * 100 < temps[100.0] < 1.4 * 100


@pytest.mark.parametrize("ensemble, pressure", [("nvt", None), ("nvt-nhc", None),
                                                ("npt", 0.0), ("npt-aniso", 0.0)])
def test_every_ensemble_runs_and_labels_frames(ensemble: str, pressure: float | None) -> None:
    cu = _cu()
    spec = TrajectorySpec(traj_id="e", structure="cu", temperature_K=500, pressure_GPa=pressure,
                          ensemble=ensemble, steps=100, sample_every=20, timestep_fs=2.0,
                          thermostat_damping_fs=None if ensemble == "nvt" else 50.0,
                          barostat_damping_fs=100.0 if pressure is not None else None, seed=5)
    res = run_md(cu, EMT(), spec)
    assert res.stopped is None and res.steps_done == 100 and len(res.frames) == 5
    for f in res.frames:
        assert fr.has_labels(f) and fr.stress(f) is not None
    # a perfect lattice trades kinetic for potential energy first: judge the mean, loosely
    assert 150 < np.mean([f.info["md_temperature_K"] for f in res.frames]) < 900
    assert not np.allclose(res.frames[0].positions, res.frames[-1].positions)
    cells = [f.cell.array for f in res.frames]
    if pressure is None:
        assert all(np.array_equal(c, cu.cell.array) for c in cells)
    else:
        assert res.frames[-1].info["pressure_GPa"] == 0.0
        assert not np.allclose(cells[-1], cu.cell.array)


@pytest.mark.slow
def test_aniso_barostat_changes_cell_shape_isotropic_does_not() -> None:
    """A tetragonally stretched fcc cell at P = 0: only the free-shape barostat can undo c/a."""
    cu = _cu()
    cell = cu.cell.array.copy()
    cell[2, 2] *= 1.04
    cu.set_cell(cell, scale_atoms=True)
    ratios = {}
    for ens in ("npt", "npt-aniso"):
        spec = TrajectorySpec(traj_id=ens, structure="cu", temperature_K=300, pressure_GPa=0.0,
                              ensemble=ens, steps=120, sample_every=40, timestep_fs=2.0,
                              barostat_damping_fs=100.0, seed=3)
        res = run_md(cu, EMT(), spec)
        assert res.stopped is None
        ratios[ens] = [f.cell.lengths()[2] / f.cell.lengths()[0] for f in res.frames]
        assert not np.allclose(res.frames[-1].cell.array, cu.cell.array)  # both moved
    np.testing.assert_allclose(ratios["npt"], 1.04, rtol=1e-9)  # shape frozen
    assert min(ratios["npt-aniso"]) < 1.03  # relaxes toward the cubic ground state


def test_exploding_cell_cuts_trajectory_and_records_why() -> None:
    cu = _cu()
    spec = TrajectorySpec(traj_id="x", structure="cu", temperature_K=300, pressure_GPa=-20.0,
                          ensemble="npt", steps=200, sample_every=2, timestep_fs=2.0,
                          barostat_damping_fs=100.0, seed=3)
    res = run_md(cu, EMT(), spec)
    assert res.stopped is not None and res.stopped.startswith("cell explosion: volume")
    assert res.stopped.endswith(f"at step {res.steps_done}")
    assert 0 < len(res.frames) == res.steps_done // 2 - 1 and res.steps_done < 200
    # every kept frame is before the blow-up and within the limits
    assert all(f.get_volume() < 2 * cu.get_volume() for f in res.frames)
    assert res.record()["stopped"] == res.stopped


def test_cell_reasons_lengths_angles_volume() -> None:
    lim = BlowupLimits(temperature_K=300)
    cell0 = np.eye(3) * 10.0
    assert cell_reason(cell0, cell0, lim) is None
    stretched = np.diag([16.0, 8.5, 8.5])  # volume 1.16×, but a 1.6× longer
    assert cell_reason(stretched, cell0, lim) == "cell explosion: length a changed by factor 1.60"
    squashed = np.diag([10.0, 10.0, 6.0])
    assert cell_reason(squashed, cell0, lim).startswith("cell collapse: length c")  # type: ignore[union-attr]
    sheared = np.array([[10.0, 0, 0], [6.0, 8.0, 0], [0, 0, 10.0]])  # γ 90° → 53°
    reason = cell_reason(sheared, cell0, lim)
    assert reason is not None and reason.startswith("cell shear: angle gamma changed by 36.9°")
    assert cell_reason(cell0 * 0.7, cell0, lim) == "cell collapse: volume changed by factor 0.34"
    # just inside every limit
    ok = np.diag([14.9, 10.0, 10.0])
    assert cell_reason(ok, cell0, BlowupLimits(temperature_K=300, max_volume_ratio=1.5)) is None


class _NaNForces(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.full((len(self.atoms), 3), np.nan)}


def test_temperature_runaway_and_nan_forces() -> None:
    cu = _cu()
    lim = BlowupLimits(temperature_K=300)  # runaway above 5 × 300 + 500 = 2000 K
    cu.calc = EMT()
    rng = np.random.default_rng(0)
    cu.set_momenta(rng.normal(size=(len(cu), 3)) * 5.0)  # ≈ 4500 K for Cu
    assert cu.get_temperature() > 3000
    reason = blowup_reason(cu, lim, cu.cell.array)
    assert reason is not None and reason.startswith("temperature runaway (")
    cu.set_momenta(np.zeros((len(cu), 3)))
    assert blowup_reason(cu, lim, cu.cell.array) is None
    cu.calc = _NaNForces()
    assert blowup_reason(cu, lim, cu.cell.array) == "non-finite forces"
    res = run_md(_cu(), _NaNForces(), TrajectorySpec(traj_id="n", structure="cu",
                                                     temperature_K=300, steps=20,
                                                     sample_every=10))
    assert res.frames == [] and res.stopped is not None
    assert res.stopped.startswith(("non-finite forces", "calculator error"))
