"""DeePMD student backend: conversion conventions (fast) and a real tiny training (slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from pfd import frames as fr
from pfd.config import StudentSpec
from pfd.models.deepmd import (
    build_input,
    compute_sel,
    frames_to_deepmd,
    load_calculator,
    read_deepmd_system,
    read_lcurve,
    train_student,
)

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md


def _labelled(atoms: Atoms, rng: np.random.Generator, with_stress: bool = True) -> Atoms:
    return fr.attach_labels(
        atoms,
        energy=float(rng.normal(-100.0, 1.0)),
        forces=rng.normal(size=(len(atoms), 3)),
        stress=rng.normal(scale=0.01, size=6) if with_stress else None,
    )


def _sic_frame(rng: np.random.Generator) -> Atoms:
    """A two-element periodic cell with interleaved species, so sorting is exercised."""
    atoms = bulk("SiC", "zincblende", a=4.36).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=int(rng.integers(1000)))
    atoms.cell[0, 1] += 0.3  # non-orthogonal, so the volume is not a trivial product
    assert atoms.get_chemical_symbols()[:2] == ["Si", "C"]
    return atoms


def _voigt_matrix(s: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_frames_to_deepmd_conventions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    type_map = ["C", "Si"]
    stressed = [_labelled(_sic_frame(rng), rng) for _ in range(3)]
    partial = [_labelled(bulk("Si", "diamond", a=5.43), rng, with_stress=s) for s in (True, False)]
    molecule = _labelled(Atoms("CSi", positions=[[0, 0, 0], [0, 0, 1.8]]), rng, with_stress=False)

    systems = frames_to_deepmd(stressed + partial + [molecule], tmp_path, type_map)
    by_name = {p.name: p for p in systems}
    assert set(by_name) == {"C2Si2", "Si2", "C1Si1_nopbc"}

    sic = by_name["C2Si2"]
    assert (sic / "type_map.raw").read_text().split() == type_map
    types = np.loadtxt(sic / "type.raw", dtype=int)
    np.testing.assert_array_equal(types, [0, 0, 1, 1])
    s0 = sic / "set.000"
    coord = np.load(s0 / "coord.npy").reshape(3, 4, 3)
    force = np.load(s0 / "force.npy").reshape(3, 4, 3)
    energy = np.load(s0 / "energy.npy")
    box = np.load(s0 / "box.npy").reshape(3, 3, 3)
    virial = np.load(s0 / "virial.npy").reshape(3, 3, 3)
    for k, atoms in enumerate(stressed):
        order = np.argsort([type_map.index(s) for s in atoms.get_chemical_symbols()], kind="stable")
        np.testing.assert_allclose(coord[k], atoms.positions[order])
        np.testing.assert_allclose(force[k], fr.forces(atoms)[order])
        assert energy[k] == pytest.approx(fr.energy(atoms))
        np.testing.assert_allclose(box[k], atoms.cell.array)
        # deepmd virial (eV) = -stress (eV/Å^3, ASE sign: tensile positive) * volume
        expected = -_voigt_matrix(fr.stress(atoms)) * atoms.get_volume()
        np.testing.assert_allclose(virial[k], expected)
        np.testing.assert_allclose(virial[k], virial[k].T)
        # and back: deepmd.calculator.DP's stress = -virial / volume reproduces ASE's stress
        back = -virial[k] / atoms.get_volume()
        np.testing.assert_allclose(back.flat[[0, 4, 8, 5, 2, 1]], fr.stress(atoms))

    # one frame of the Si2 system lacks stress -> no virial for the whole system
    assert not (by_name["Si2"] / "set.000" / "virial.npy").exists()
    assert np.load(by_name["Si2"] / "set.000" / "energy.npy").shape == (2,)

    mol = by_name["C1Si1_nopbc"]
    assert (mol / "nopbc").exists()
    assert not (mol / "set.000" / "box.npy").exists()

    # what deepmd sees round-trips to the same structures
    back_frames = read_deepmd_system(sic)
    assert back_frames[0].get_chemical_formula() == stressed[0].get_chemical_formula()
    assert back_frames[0].get_volume() == pytest.approx(stressed[0].get_volume())


def test_frames_to_deepmd_rewrites_stale_system(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [_labelled(bulk("Si", "diamond", a=5.43), rng) for _ in range(3)]
    frames_to_deepmd(frames, tmp_path, ["Si"])
    (system,) = frames_to_deepmd(frames[:1], tmp_path, ["Si"])
    assert np.load(system / "set.000" / "energy.npy").shape == (1,)


def test_missing_element_in_type_map_is_a_clear_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frames = [_labelled(_sic_frame(rng), rng)]
    with pytest.raises(ValueError, match=r"lacks element\(s\) \['C'\]"):
        frames_to_deepmd(frames, tmp_path / "data", ["Si"])
    with pytest.raises(ValueError, match=r"lacks element\(s\) \['C'\]"):
        train_student(frames, [], tmp_path / "run", StudentSpec(compress=False, steps=1),
                      type_map=["Si"])
    # nothing was trained
    assert not (tmp_path / "run" / "model" / "frozen_model.pth").exists()


def test_unlabelled_frames_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no energy/forces"):
        frames_to_deepmd([bulk("Si", "diamond", a=5.43)], tmp_path, ["Si"])


def test_compute_sel_counts_diamond_shells() -> None:
    # Diamond Si within 5 Å: 4 + 12 + 12 = 28 neighbours; *1.2 -> 33.6 -> 34 -> 36 (x4)
    atoms = bulk("Si", "diamond", a=5.43)
    assert compute_sel([atoms], ["Si"], 5.0) == [36]
    # a type that never appears as neighbour still gets a non-empty sel
    assert compute_sel([atoms], ["C", "Si"], 5.0) == [4, 36]


def _stress_systems(tmp_path: Path, with_stress: bool) -> list[Path]:
    rng = np.random.default_rng(3)
    frames = [_labelled(_sic_frame(rng), rng, with_stress=with_stress) for _ in range(2)]
    return frames_to_deepmd(frames, tmp_path, ["C", "Si"])


def test_build_input_se_atten_v2_has_no_attention(tmp_path: Path) -> None:
    from deepmd.utils.argcheck import normalize

    systems = _stress_systems(tmp_path, with_stress=True)
    settings = StudentSpec(compress=False, descriptor="se_atten_v2", start_pref_v=0.02,
                           limit_pref_v=1.0)
    config = build_input(systems, systems, ["C", "Si"], settings)
    desc = config["model"]["descriptor"]
    assert desc["type"] == "se_atten_v2"
    assert desc["attn_layer"] == 0
    assert isinstance(desc["sel"], int)  # se_atten counts neighbours of all types together
    assert config["loss"]["start_pref_v"] == 0.02  # all frames have stress -> virial used
    assert config["model"]["type_map"] == ["C", "Si"]
    normalize(json.loads(json.dumps(config)))  # deepmd's own schema accepts it


def test_build_input_se_e2_a_defaults(tmp_path: Path) -> None:
    from deepmd.utils.argcheck import normalize

    systems = _stress_systems(tmp_path, with_stress=False)
    settings = StudentSpec(compress=False, start_pref_v=0.02, limit_pref_v=1.0)
    config = build_input(systems, [], ["C", "Si"], settings)
    desc = config["model"]["descriptor"]
    assert desc["type"] == "se_e2_a"
    assert isinstance(desc["sel"], list) and len(desc["sel"]) == 2
    assert all(s % 4 == 0 and s > 0 for s in desc["sel"])
    # frames without stress: virial weights are forced off whatever the settings say
    assert config["loss"]["start_pref_v"] == 0.0 and config["loss"]["limit_pref_v"] == 0.0
    assert "validation_data" not in config["training"]
    assert config["training"]["numb_steps"] == 20000
    assert config["learning_rate"]["decay_steps"] == 100
    normalize(json.loads(json.dumps(config)))

    explicit = build_input(systems, [], ["C", "Si"], StudentSpec(compress=False, sel=[10, 20]))
    assert explicit["model"]["descriptor"]["sel"] == [10, 20]


def test_read_lcurve(tmp_path: Path) -> None:
    path = tmp_path / "lcurve.out"
    header = "rmse_val rmse_trn rmse_e_val rmse_e_trn rmse_f_val rmse_f_trn".split()
    path.write_text(
        "# " + "  ".join(["step", *header, "lr"]) + "\n"
        "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
        "      1   2.10e+01 5.61e-01 1.61e+00 1.40e+00 6.64e-01 1.06e-01   1.0e-03\n"
        "    100   2.46e+00 1.04e+00 4.36e-01 4.81e-02 5.51e-02 2.88e-01   1.1e-05\n"
        "    200   2.46e+00\n"  # a line still being written
    )
    rows = read_lcurve(path)
    assert [r["step"] for r in rows] == [1, 100]
    assert isinstance(rows[0]["step"], int)
    assert rows[1]["rmse_f_trn"] == pytest.approx(0.288)
    assert rows[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dp_failure_raises_with_log_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frames = [_labelled(bulk("Si", "diamond", a=5.43), rng, with_stress=False)]
    with pytest.raises(RuntimeError, match="dp --pt train") as info:
        train_student(frames, [], tmp_path, StudentSpec.model_construct(
            **{**StudentSpec(compress=False).model_dump(), "steps": 2, "start_lr": -1.0}))
    assert "start_lr" in str(info.value)  # deepmd's own message reaches the caller
    assert (tmp_path / "train.log").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_tiny_si_student(tmp_path: Path) -> None:
    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(pool))
    train = [pool[i] for i in idx[:40]]
    held_out = [pool[i] for i in idx[40:50]]

    settings = StudentSpec(compress=False,
        descriptor_neuron=[8, 16],
        axis_neuron=4,
        fitting_neuron=[32, 32],
        steps=600,
        start_lr=2e-3,
        stop_lr=5e-5,
        disp_freq=25,  # each display also runs validation batches; keep the test quick
        )
    t0 = time.perf_counter()
    model_dir = train_student(train, held_out, tmp_path / "run", settings)
    elapsed = time.perf_counter() - t0
    print(f"train+freeze took {elapsed:.1f} s")

    assert model_dir == tmp_path.resolve() / "run" / "model"
    assert (model_dir / "frozen_model.pth").stat().st_size > 0
    meta = json.loads((model_dir / "pfd_model.json").read_text())
    assert meta["backend"] == "deepmd"
    assert meta["kind"] == "student"
    assert meta["type_map"] == ["Si"]
    assert meta["descriptor"] == "se_e2_a"
    assert meta["settings"]["steps"] == 600
    assert meta["settings"]["fitting_neuron"] == [32, 32]
    assert meta["n_train_frames"] == 40
    assert meta["uses_virial"] is False
    assert meta["lcurve"]["path"] == "lcurve.out"

    rows = read_lcurve(model_dir / "lcurve.out")
    assert rows[0]["step"] == 1 and rows[-1]["step"] == 600
    assert meta["lcurve"]["final"] == rows[-1]
    # Row 0 is a single batch (possibly a relaxed crystal with ~zero forces); row 1 is
    # the first display-interval average, the first value that says something.
    assert rows[-1]["rmse_f_trn"] < rows[1]["rmse_f_trn"]
    assert np.isfinite(rows[-1]["rmse_f_val"])

    calc = load_calculator(model_dir, threads=1)
    errors, refs = [], []
    for frame in held_out:
        atoms = frame.copy()
        atoms.calc = calc
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        assert np.isfinite(e)
        assert f.shape == (len(frame), 3) and np.all(np.isfinite(f))
        errors.append(f - fr.forces(frame))
        refs.append(fr.forces(frame))
    rmse = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    rms_ref = float(np.sqrt(np.mean(np.concatenate(refs) ** 2)))
    print(f"held-out force RMSE {rmse:.3f} eV/Å vs DFT force RMS {rms_ref:.3f} eV/Å")
    assert rmse < rms_ref


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_student_starts_from_a_previous_students_weights(tmp_path: Path) -> None:
    """A refinement round (``init_checkpoint``) starts where the previous student ended:
    its first learning-curve row is far below a from-scratch start on the same data."""
    from pfd.models.deepmd import CHECKPOINT_FILE

    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    train, more = pool[:30], pool[30:40]
    settings = StudentSpec(compress=False, descriptor_neuron=[8, 16], axis_neuron=4,
                           fitting_neuron=[32, 32], steps=400, start_lr=2e-3, stop_lr=5e-5,
                           disp_freq=20)
    first = train_student(train, [], tmp_path / "r0", settings)
    assert (first / CHECKPOINT_FILE).stat().st_size > 0
    short = settings.model_copy(update={"steps": 40})
    warm = train_student(train + more, [], tmp_path / "r1", short,
                         init_checkpoint=first / CHECKPOINT_FILE)
    cold = train_student(train + more, [], tmp_path / "c1", short)
    warm_rows = read_lcurve(warm / "lcurve.out")
    cold_rows = read_lcurve(cold / "lcurve.out")
    assert warm_rows[-1]["step"] == 40
    # at its first step the warm student already has the first one's fit: an energy
    # error a small fraction of a fresh net's (measured 0.027 vs 1.68 eV/atom), and a
    # smaller force error
    w, c = warm_rows[0], cold_rows[0]
    assert w["rmse_e_trn"] < 0.1 * c["rmse_e_trn"], (w, c)
    assert w["rmse_f_trn"] < c["rmse_f_trn"], (w, c)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_stops_on_a_flat_validation_curve(tmp_path: Path) -> None:
    """A real dp training with a plateau rule leaves its schedule before its ceiling,
    anneals to stop_lr over 15 % of the steps (300) from that checkpoint, freezes and
    predicts, and says why in pfd_model.json."""
    from pfd.config import PlateauSpec

    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    settings = StudentSpec(compress=False, descriptor_neuron=[8, 16], axis_neuron=4,
                           fitting_neuron=[32, 32], steps=2000, start_lr=2e-3, stop_lr=1e-4,
                           disp_freq=20,
                           plateau=PlateauSpec(min_fraction=0.2, window_fraction=0.1))
    model = train_student(pool[:30], pool[30:36], tmp_path / "s", settings)
    meta = json.loads((model / "pfd_model.json").read_text())
    step = meta["stopped_at_step"]
    assert "validation plateau" in meta["stopped_early"], meta
    assert 400 <= step < 1600 and step % settings.resolved_save_freq() == 0, meta
    assert meta["steps_trained"] == step + 300 == meta["lcurve"]["final"]["step"], meta
    # the shortened schedule reached deepmd's stop_lr (it was far above it at the stop)
    assert meta["lcurve"]["final"]["lr"] == pytest.approx(settings.stop_lr, rel=0.2)
    rows = read_lcurve(model / "lcurve.out")
    # the last row of the full schedule, before the anneal took over from the checkpoint
    before = [r for r in rows if r["step"] < step][-1]
    assert before["lr"] > 1.5 * settings.stop_lr, before
    calc = load_calculator(model)
    atoms = pool[40].copy()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
