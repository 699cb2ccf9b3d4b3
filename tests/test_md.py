"""MD exploration on a real (cheap) ASE calculator: sampling, labels, blow-up detection."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.lj import LennardJones

from pfd import frames as fr
from pfd.explore.md import TrajectorySpec, blowup_reason, run_md


def _argon():
    a = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    return a, LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0, smooth=True)


def test_nvt_samples_labelled_frames() -> None:
    atoms, calc = _argon()
    spec = TrajectorySpec(traj_id="t", structure="ar", temperature_K=60, steps=60,
                          sample_every=20, timestep_fs=2.0, seed=4)
    res = run_md(atoms, calc, spec)
    assert res.stopped is None and res.steps_done == 60
    assert len(res.frames) == 3
    for f in res.frames:
        assert fr.has_labels(f) and fr.stress(f) is not None
        assert f.info["traj_id"] == "t" and f.info["temperature_K"] == 60
    assert [f.info["step"] for f in res.frames] == [20, 40, 60]
    # frames differ: dynamics really moved atoms
    assert not np.allclose(res.frames[0].positions, res.frames[-1].positions)
    # the stored labels are the calculator's values at that geometry
    check = res.frames[1].copy()
    check.calc = calc
    np.testing.assert_allclose(check.get_forces(), fr.forces(res.frames[1]), atol=1e-10)
    # same seed, same trajectory
    again = run_md(atoms, calc, spec)
    np.testing.assert_allclose(again.frames[-1].positions, res.frames[-1].positions)


def test_npt_changes_volume() -> None:
    atoms, calc = _argon()
    spec = TrajectorySpec(traj_id="p", structure="ar", temperature_K=60, pressure_GPa=1.0,
                          ensemble="npt", steps=200, sample_every=50, timestep_fs=2.0)
    res = run_md(atoms, calc, spec)
    assert res.stopped is None
    assert res.frames[-1].get_volume() < atoms.get_volume() * 0.99  # 1 GPa compresses Ar


def test_blowup_detected_and_reported() -> None:
    atoms, calc = _argon()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0, 0]
    atoms.calc = calc
    spec = TrajectorySpec(traj_id="b", structure="ar", temperature_K=60)
    reason = blowup_reason(atoms, spec.limits(), atoms.cell.array)
    assert reason is not None and reason.startswith("atoms too close (0.30 Å")
    res = run_md(atoms, calc, TrajectorySpec(traj_id="b", structure="ar", temperature_K=60,
                                             steps=50, sample_every=5))
    assert res.stopped is not None and "at step" in res.stopped
    assert res.steps_done < 50
