"""A student trains, freezes, compresses, matches ``dp test`` and runs stable MD in ASE."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from pfd import frames as fr
from pfd.config import StudentSpec
from pfd.explore.md import TrajectorySpec, run_md
from pfd.models import registry
from pfd.models.deepmd import load_calculator, train_student
from pfd.models.deepmd_metrics import dp_test
from pfd.models.deepmd_run import dp_command, thread_env

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md
TINY = dict(descriptor_neuron=[8, 16], axis_neuron=4, fitting_neuron=[16, 16], batch_size=1,
            start_lr=2e-3, stop_lr=1e-4, compress=True,
            # DeePMD's stock loss prefactors, which this test was written with
            start_pref_e=0.02, limit_pref_e=1.0, start_pref_f=1000.0, limit_pref_f=1.0,
            start_pref_v=0.0, limit_pref_v=0.0)


def _frames() -> tuple[list[Atoms], list[Atoms]]:
    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    idx = np.random.default_rng(11).permutation(len(pool))
    return [pool[i] for i in idx[:40]], [pool[i] for i in idx[40:48]]


def _dp_test_cli(model: Path, systems: Path, workdir: Path) -> dict[str, float]:
    """The figures deepmd's own ``dp --pt test`` prints (weighted over systems)."""
    out = subprocess.run([*dp_command(), "--pt", "test", "-m", str(model), "-s", str(systems),
                          "-n", "100000"], cwd=workdir, capture_output=True, text=True,
                         env={**os.environ, **thread_env(1)}, check=True)
    text = out.stdout + out.stderr
    text = text[text.rfind("weighted average"):] if "weighted average" in text else text
    found = {}
    for key, label in (("e_atom", r"Energy RMSE/Natoms"), ("e", r"Energy RMSE\s"),
                       ("f", r"Force\s+RMSE\s")):
        m = re.findall(label + r"\s*:\s*([0-9.eE+-]+)", text)
        assert m, f"no {label} in dp test output:\n{text[-2000:]}"
        found[key] = float(m[-1])
    return found


def _min_distance(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(d[np.triu_indices(len(atoms), 1)].min())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_student_trains_compresses_and_runs_stable_md(tmp_path: Path) -> None:
    train, valid = _frames()
    settings = StudentSpec(steps=300, disp_freq=30, save_freq=150, **TINY)
    model_dir = train_student(train, valid, tmp_path / "student", settings)

    meta = json.loads((model_dir / "pfd_model.json").read_text())
    assert meta["compressed"] is True
    assert meta["model_file"] == "frozen_model_compressed.pth"
    assert (model_dir / "frozen_model.pth").is_file()

    # compression tabulates the embedding net: the same model to within table accuracy
    plain = load_calculator(model_dir / "frozen_model.pth")
    packed = registry.load_calculator(model_dir)  # what MD and the workflow load
    for frame in valid[:4]:
        a, b = frame.copy(), frame.copy()
        a.calc, b.calc = plain, packed
        assert abs(a.get_potential_energy() - b.get_potential_energy()) / len(a) < 1e-4
        assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-3

    # pfd's dp-test figures are deepmd's own
    ours = dp_test(plain, valid)
    theirs = _dp_test_cli(model_dir / "frozen_model.pth", tmp_path / "student" / "data" / "valid",
                          tmp_path)
    assert ours.energy_rmse_per_atom_eV == pytest.approx(theirs["e_atom"], rel=1e-3)
    assert ours.energy_rmse_eV == pytest.approx(theirs["e"], rel=1e-3)
    assert ours.force_rmse_eV_A == pytest.approx(theirs["f"], rel=1e-3)
    force_rms = float(np.sqrt(np.mean(np.concatenate([fr.forces(f).ravel() for f in valid]) ** 2)))
    assert ours.force_rmse_eV_A < force_rms  # it learned something

    # 100 steps of NVT (Langevin, 300 K) on a 64-atom diamond cell with the compressed model
    atoms = bulk("Si", "diamond", a=5.444, cubic=True).repeat(2)
    spec = TrajectorySpec(traj_id="t", structure="si64", temperature_K=300.0, ensemble="nvt",
                          steps=100, timestep_fs=1.0, sample_every=10, seed=3)
    res = run_md(atoms, packed, spec)
    assert res.stopped is None and res.steps_done == 100, res.stopped
    temps = [f.info["md_temperature_K"] for f in res.frames]
    assert len(temps) == 10 and all(30.0 < t < 1000.0 for t in temps), temps
    assert min(_min_distance(f) for f in res.frames) > 2.0  # Si–Si bond 2.35 Å

    # the same model conserves energy without a thermostat (NVE, 0.5 fs)
    nve = res.frames[-1].copy()
    nve.calc = packed
    MaxwellBoltzmannDistribution(nve, temperature_K=300.0, rng=np.random.default_rng(0))
    Stationary(nve)
    dyn = VelocityVerlet(nve, timestep=0.5 * units.fs)
    totals: list[float] = []
    kinetic: list[float] = []

    def record() -> None:
        totals.append(nve.get_total_energy() / len(nve))
        kinetic.append(nve.get_kinetic_energy() / len(nve))

    dyn.attach(record, interval=5)
    dyn.run(100)
    drift, exchange = float(np.ptp(totals)), float(np.ptp(kinetic))
    print(f"NVT T {np.mean(temps):.0f} K; NVE total-energy spread {1e6 * drift:.1f} µeV/atom "
          f"while kinetic energy swings {1e3 * exchange:.1f} meV/atom; "
          f"valid force RMSE {ours.force_rmse_eV_A:.3f} eV/Å")
    assert exchange > 2e-3  # the atoms really moved: energy flowed between KE and PE
    assert drift < 0.05 * exchange and drift < 1e-3  # eV/atom over 50 fs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_se_atten_v2_student_without_attention_compresses(tmp_path: Path) -> None:
    train, valid = _frames()
    settings = StudentSpec(descriptor="se_atten_v2", steps=60, disp_freq=30, **TINY)
    model_dir = train_student(train[:10], valid[:2], tmp_path / "student", settings)
    desc = json.loads((model_dir / "input.json").read_text())["model"]["descriptor"]
    assert desc["type"] == "se_atten_v2" and desc["attn_layer"] == 0
    plain = load_calculator(model_dir / "frozen_model.pth")
    packed = registry.load_calculator(model_dir)
    frame = valid[0].copy()
    frame.calc = plain
    e0, f0 = frame.get_potential_energy(), frame.get_forces()
    frame.calc = packed
    assert abs(frame.get_potential_energy() - e0) / len(frame) < 1e-4
    assert np.abs(frame.get_forces() - f0).max() < 1e-3
