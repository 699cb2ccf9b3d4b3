"""The model benchmarks (P1 learning curves, P2 MD speed, P3 distillation fidelity).

Their --quick modes run here so the scripts cannot rot; the helpers that decide the
figures of merit are tested on numbers whose answer is known.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from procs import load_module

from pfd.models.deepmd_export import default_env_dir

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str) -> ModuleType:
    return load_module(ROOT / "benchmarks" / f"{name}.py")


def _run(script: str, out: Path, timeout: int = 600, *extra: str, name: str = "") -> dict:
    res = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--quick", "--out-dir",
                          str(out), *extra], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    name = name or f"{script}_quick"
    data = json.loads((out / f"benchmarks/results/{name}.json").read_text())
    assert data["machine"] and data["date"] and f"{script}.py --quick" in data["command"]
    md = (out / "docs/benchmarks.md").read_text()
    assert f"<!-- {name}:start -->" in md and f"<!-- {name}:end -->" in md
    return data


# ----------------------------------------------------------------------- quick modes


@pytest.mark.slow
def test_p1_quick(tmp_path: Path) -> None:
    res = _run("p1_learning_curve", tmp_path)
    assert res["complete"] is True
    assert set(res["curves"]) == {"finetuned", "chgnet_finetuned", "sevennet_scratch",
                                  "deepmd_scratch"}
    for arm, curve in res["curves"].items():
        (p,) = curve
        assert p["n_train"] == 4, arm
        assert 0 < p["force_rmse_eV_A"] < 5 and math.isfinite(p["energy_rmse_meV_atom"])
        assert (tmp_path / p["model"]).is_dir()
    # the foundation knows Si forces already; random weights after one epoch do not
    ft, scratch = res["curves"]["finetuned"][0], res["curves"]["sevennet_scratch"][0]
    assert ft["force_rmse_eV_A"] < scratch["force_rmse_eV_A"]
    assert res["curves"]["chgnet_finetuned"][0]["force_rmse_eV_A"] < scratch["force_rmse_eV_A"]
    assert "frames_ratio_at_F0.10" in res and res["frames_needed"]["max_tested"] == 4
    assert (tmp_path / res["plot"]).stat().st_size > 10_000


@pytest.mark.slow
def test_finetune_speed_quick(tmp_path: Path) -> None:
    res = _run("finetune_speed", tmp_path)
    assert {r["backend"] for r in res["rows"]} == {"sevennet", "chgnet", "mace"}
    for r in res["rows"]:
        assert r["natoms"] == 8 and r["train_frames"] == 4
        assert r["s_per_epoch"] > 0 and r["startup_s"] > 0
        assert r["s_per_epoch_per_100_frames"] == pytest.approx(25 * r["s_per_epoch"], abs=0.2)


@pytest.mark.slow
def test_graph_build_quick(tmp_path: Path) -> None:
    res = _run("graph_build", tmp_path, 300)
    assert {r["backend"] for r in res["rows"]} == {"sevennet", "chgnet"}
    for r in res["rows"]:
        assert r["frames"] == 20 and r["atoms"] >= 8 * 20
        assert r["graph_s"] > 0
        assert r["graph_ms_per_frame"] == pytest.approx(1000 * r["graph_s"] / 20, abs=0.1)
        if r["epoch_s_at_8_atom_rate"] is not None:  # the recorded fine-tune speeds
            assert r["share_of_one_epoch"] == pytest.approx(
                r["graph_s"] / r["epoch_s_at_8_atom_rate"], rel=0.1)


@pytest.mark.slow
def test_warm_start_quick(tmp_path: Path) -> None:
    # chgnet: the same code path as the demo's sevennet (backends.finetune), in a third of
    # the time
    res = _run("warm_start", tmp_path, 600, "--backend", "chgnet",
               name="warm_start_chgnet_quick")
    assert res["complete"] is True and res["sizes"] == [4, 6]
    assert res["settings"]["backend"] == "chgnet"
    assert [(r["arm"], r["n_train"]) for r in res["rows"]] == [
        ("cold", 4), ("cold", 6), ("warm", 6)]
    cold6, warm6 = res["rows"][1], res["rows"][2]
    # the warm start is M(4 frames): it knows the validation frames better than CHGNet
    assert warm6["start_valid_force_rmse"] < cold6["start_valid_force_rmse"]
    assert set(res["last_force_rmse_eV_A"]) == {"cold", "warm"}
    assert isinstance(res["warm_is_better"], bool)


@pytest.mark.slow
def test_p2_quick(tmp_path: Path) -> None:
    res = _run("p2_md_speed", tmp_path)
    assert res["complete"] is True
    for model in ("teacher", "student", "student_compressed"):
        (case,) = res["cases"][model]
        assert case["status"] == "ok" and case["natoms"] == 64, case
        assert case["ms_per_atom_step"] > 0 and case["steps"] >= 2 and case["peak_rss_gib"] > 0
    for key, suffix in (("cpu_ms_per_atom_step", ""), ("ms_per_atom_step", "_wall")):
        t = res["cases"]["teacher"][0][key]
        s = res["cases"]["student_compressed"][0][key]
        assert res[f"student_over_teacher_speedup_64{suffix}"] == pytest.approx(t / s, rel=0.02)
    assert res["student_over_teacher_speedup_64"] > 2  # SevenNet-0 is far costlier
    assert res["complete"] is True and len(res["runs"]) == 1

    # the LAMMPS column: the compressed TF twin of the student in `lmp`, when the env exists
    (lmp,) = res["cases"]["student_lammps"]
    if not (default_env_dir() / "bin" / "lmp").exists():  # $PFD_LAMMPS_VENV or .venv-lammps
        assert res["lammps"]["status"].startswith("skipped") and "install-lammps-env" in \
            res["lammps"]["status"]
        assert lmp["status"].startswith("skipped (") and lmp["natoms"] == 64
        return
    assert res["lammps"]["status"] == "run", res["lammps"]
    assert lmp["status"] == "ok" and lmp["natoms"] == 64 and lmp["engine"] == "LAMMPS", lmp
    assert lmp["steps"] >= 2 and lmp["cpu_ms_per_atom_step"] > 0 and lmp["ms_per_atom_step"] > 0
    assert 0 < lmp["peak_rss_gib"] <= lmp["tree_peak_rss_gib"] + 0.05
    assert 20 < lmp["temperature_K_end"] < 1000  # MD happened; nothing blew up
    timed = _module("p2_md_speed").parse_lammps_log(Path(lmp["log"]).read_text())
    assert timed["steps"] == lmp["steps"] and timed["loop_s"] == pytest.approx(lmp["timed_s"],
                                                                               abs=1e-3)
    ase_cpu = res["cases"]["student_compressed"][0]["cpu_ms_per_atom_step"]
    assert res["lammps_over_ase_compressed_student_speedup"]["64"]["cpu"] == pytest.approx(
        ase_cpu / lmp["cpu_ms_per_atom_step"], rel=0.02)
    # same network as the ASE student: only the number of training steps differs
    lmp_dir = Path(lmp["log"]).parents[2]
    ase_dir = tmp_path / res["models"]["student_path"]
    assert json.loads((lmp_dir / "model/input.json").read_text())["model"] == json.loads(
        (ase_dir / "input.json").read_text())["model"]
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "LAMMPS vs ASE for the student" in md

    # rerun one model and merge it: the others' cases stay, provenance records both runs
    res2 = subprocess.run([sys.executable, "benchmarks/p2_md_speed.py", "--quick", "--out-dir",
                           str(tmp_path), "--models", "student_lammps", "--merge"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert res2.returncode == 0, res2.stdout[-2000:] + res2.stderr[-3000:]
    merged = json.loads((tmp_path / "benchmarks/results/p2_md_speed_quick.json").read_text())
    for model in ("teacher", "student", "student_compressed"):
        assert merged["cases"][model] == res["cases"][model]
    assert merged["cases"]["student_lammps"][0]["status"] == "ok"
    # the first run no longer produced the LAMMPS cases: it says so
    assert [r["models"] for r in merged["runs"]] == [["teacher", "student", "student_compressed"],
                                                     ["student_lammps"]]
    assert merged["runs"][0]["superseded_models"] == ["student_lammps"]
    assert "--merge" in merged["runs"][1]["command"] and " ; " in merged["command"]
    assert merged["complete"] is True


@pytest.mark.slow
def test_p3_quick(tmp_path: Path) -> None:
    res = _run("p3_distill_fidelity", tmp_path)
    t = res["teacher"]["test_vs_dft"]["force_rmse_eV_A"]
    s = res["student"]["test_vs_dft"]["force_rmse_eV_A"]
    assert 0 < t < 1 and 0 < s < 5
    assert res["student_over_teacher_force_rmse"] == pytest.approx(s / t, abs=2e-3)
    assert res["meets_target"] == (res["student_over_teacher_force_rmse"] <= 1.3)
    assert res["synthetic_frames"]["frames"] == 4 and res["synthetic_frames"]["atoms"] > 0


# ----------------------------------------------------------------------- helpers


def test_p1_ratio_and_bound() -> None:
    p1 = _module("p1_learning_curve")

    def c(*pts: tuple[int, float]) -> list[dict]:
        return [{"n_train": n, "force_rmse_eV_A": f} for n, f in pts]

    curves = {"finetuned": c((10, 0.12), (25, 0.09)),
              "sevennet_scratch": c((100, 0.2), (400, 0.08)),
              "deepmd_scratch": c((100, 0.15), (200, 0.095), (400, 0.07))}
    out = p1.frames_ratio(curves, 0.10)
    assert out["frames_ratio_at_F0.10"] == 8.0 and out["best_scratch_arm"] == "deepmd_scratch"
    # no from-scratch arm reached the target: only a lower bound, set by the arm that
    # was tried on the fewest frames (100 / 25)
    curves["deepmd_scratch"] = c((400, 0.2))
    curves["sevennet_scratch"] = c((100, 0.3))
    out = p1.frames_ratio(curves, 0.10)
    assert out["frames_ratio_at_F0.10"] is None and out["frames_ratio_lower_bound"] == 4.0
    assert out["frames_ratio_lower_bound_by_arm"] == {"sevennet_scratch": 4.0,
                                                      "deepmd_scratch": 16.0}
    # the fine-tuned model never got there: nothing to divide by
    curves["finetuned"] = c((400, 0.11))
    assert p1.frames_ratio(curves, 0.10)["frames_ratio_lower_bound"] is None


def test_p1_keeps_other_arms_of_the_same_budget(tmp_path: Path) -> None:
    p1 = _module("p1_learning_curve")
    split = {"how": "x", "test": 100}
    old = {"command": "python benchmarks/p1_learning_curve.py", "date": "2026-11-30T00:00:00Z",
           "protocol": {"sevennet_frame_visits": 600, "deepmd_steps": 40000}, "split": split,
           "curves": {"finetuned": [{"n_train": 10}], "deepmd_scratch": [{"n_train": 25}],
                      "chgnet_finetuned": [{"n_train": 4}]}}
    path = tmp_path / "p1.json"
    path.write_text(json.dumps(old))
    kept, merged = p1.merged_curves(path, ["chgnet_finetuned"], 600, 40000, split)
    assert set(kept) == {"finetuned", "deepmd_scratch"}  # the arm being run is not kept
    assert merged["finetuned"] == "python benchmarks/p1_learning_curve.py (2026-11-30)"
    assert p1.merged_curves(path, ["chgnet_finetuned"], 150, 40000, split) == ({}, {})
    assert p1.merged_curves(path, ["chgnet_finetuned"], 600, 40000, {"how": "y"}) == ({}, {})


def test_p1_power_law_extrapolation() -> None:
    p1 = _module("p1_learning_curve")
    curve = [{"n_train": n, "force_rmse_eV_A": 0.8 * n ** -0.5} for n in (25, 100, 400)]
    assert p1.extrapolated_frames(curve, 0.10) == pytest.approx(64.0, rel=1e-3)
    flat = [{"n_train": n, "force_rmse_eV_A": 0.3} for n in (25, 100, 400)]
    assert p1.extrapolated_frames(flat, 0.10) is None


def test_split_nested_and_held_out() -> None:
    sd = _module("_si_data")
    split = sd.load_split()
    small, big = split.train(10), split.train(400)
    assert big[:10] == small  # nested training sets
    assert not set(big) & (set(split.test) | set(split.valid))
    assert 95 <= len(split.test) <= 110
    with pytest.raises(ValueError, match="training size"):
        split.train(len(split.pool) + 1)


def test_offset_refit_removes_only_a_constant() -> None:
    from ase.build import bulk

    from pfd.frames import attach_labels

    sd = _module("_si_data")
    ref, shifted, noisy = [], [], []
    rng = np.random.default_rng(0)
    for k in range(5):
        a = bulk("Si", "diamond", a=5.43).repeat((1, 1, k + 1))
        e = -5.4 * len(a) + 0.01 * k
        f = np.zeros((len(a), 3))
        ref.append(attach_labels(a, e, f))
        shifted.append(attach_labels(a, e + 3.0 * len(a), f))  # another energy reference
        noisy.append(attach_labels(a, e + len(a) * rng.normal(0, 0.02), f))
    assert sd.offset_refit_energy_rmse(ref, shifted) == pytest.approx(0.0, abs=1e-9)
    assert sd.offset_refit_energy_rmse(ref, noisy) > 1.0  # meV/atom: real errors stay


def test_p2_kills_a_case_above_the_memory_cap() -> None:
    p2 = _module("p2_md_speed")
    args = argparse.Namespace(timed_s=1.0, max_steps=2, mem_cap_gib=0.05, case_timeout_s=120)
    rec = p2.measure("teacher", "7net-0", 64, args)
    assert rec["status"] == "exceeded cap" and rec["peak_rss_gib"] > 0.05


def test_p2_lammps_log_timing_is_the_timed_run_and_completeness() -> None:
    p2 = _module("p2_md_speed")
    log = "\n".join([
        "Loop time of 0.0123 on 1 procs for 1 steps with 256 atoms",  # warm-up
        "98.0% CPU use with 1 MPI tasks x 1 OpenMP threads",
        "Fix halt condition for fix-id stop met on step 401 with value 10.01",
        "Loop time of 10.0125 on 1 procs for 400 steps with 256 atoms",  # timed
        "96.5% CPU use with 1 MPI tasks x 1 OpenMP threads",
        "Loop time of 9.6e-07 on 1 procs for 0 steps with 256 atoms",  # run 0
        "PFD_TEMPERATURE 181.25"])
    out = p2.parse_lammps_log(log)
    assert out == {"loop_s": 10.0125, "steps": 400, "natoms": 256, "cpu_use_pct": 96.5,
                   "temperature_K_end": 181.25}
    with pytest.raises(RuntimeError, match="not 1 x 1"):
        p2.parse_lammps_log(log.replace("1 MPI tasks x 1", "2 MPI tasks x 1"))
    with pytest.raises(RuntimeError, match="Loop time"):
        p2.parse_lammps_log(log.split("Fix halt")[0])
    cases = {m: [{"natoms": 64, "status": "ok"}] for m in p2.MODELS}
    assert p2.is_complete(cases, [64])
    assert not p2.is_complete(cases, [64, 256])
    del cases["student_lammps"]
    assert not p2.is_complete(cases, [64])


@pytest.mark.slow
def test_sevennet_random_init_is_finite_and_not_the_foundation(tmp_path: Path) -> None:
    from ase.build import bulk

    from pfd.config import FinetuneSpec
    from pfd.frames import attach_labels
    from pfd.models import sevennet

    a = bulk("Si", "diamond", a=5.43, cubic=True)
    a.rattle(0.05, seed=1)
    frames = [attach_labels(a, -43.0, np.zeros((8, 3)))]
    st = FinetuneSpec(epochs=0, random_init=True)
    model = sevennet.finetune(frames, [], tmp_path, st)
    rnd = a.copy()
    rnd.calc = sevennet.load_calculator(model)
    found = a.copy()
    found.calc = sevennet.foundation_calculator()
    f_rnd, f_found = rnd.get_forces(), found.get_forces()
    assert np.isfinite(f_rnd).all() and np.isfinite(rnd.get_potential_energy())
    assert np.abs(f_rnd - f_found).max() > 1e-3


def test_p1_keeps_curves_of_earlier_budgets(tmp_path: Path) -> None:
    """A rerun with a larger budget keeps the smaller budget's curves (dashed in the plot)."""
    p1 = _module("p1_learning_curve")
    path = tmp_path / "p1.json"
    point = {"n_train": 10, "force_rmse_eV_A": 0.11, "energy_rmse_meV_atom": 27.0, "x": 1}
    old = {"complete": True, "command": "python p1 --old", "date": "2026-01-01",
           "protocol": {"sevennet_frame_visits": 150, "deepmd_steps": 1000},
           "curves": {"finetuned": [point], "deepmd_scratch": []},
           "earlier_protocols": [{"sevennet_frame_visits": 50, "deepmd_steps": 500,
                                  "curves": {}, "command": "older", "date": "2025"}]}
    path.write_text(json.dumps(old))
    kept = p1.earlier_protocols(path, 600, 40000)
    assert [(r["sevennet_frame_visits"], r["deepmd_steps"]) for r in kept] == [(50, 500),
                                                                                (150, 1000)]
    assert kept[1]["curves"] == {"finetuned": [{k: point[k] for k in (
        "n_train", "force_rmse_eV_A", "energy_rmse_meV_atom")}]}  # empty arms dropped
    # rerunning the same budget replaces it rather than listing it twice
    assert [r["deepmd_steps"] for r in p1.earlier_protocols(path, 150, 1000)] == [500]
    # an unfinished run is not an earlier protocol
    path.write_text(json.dumps({**old, "complete": False}))
    assert [r["deepmd_steps"] for r in p1.earlier_protocols(path, 600, 40000)] == [500]
    assert p1.earlier_protocols(tmp_path / "none.json", 600, 40000) == []


@pytest.mark.slow
def test_student_speed_quick(tmp_path: Path) -> None:
    res = _run("student_speed", tmp_path)
    (point,) = res["grid"]
    assert point["threads"] == 1 and point["steps"] == 20
    assert 0 < point["train_s"] and point["steps_per_s"] == pytest.approx(
        20 / point["train_s"], rel=0.05)


@pytest.mark.slow
def test_student_budget_quick(tmp_path: Path) -> None:
    """The budget benchmark's machinery: a full schedule and a plateau-stopped ceiling,
    each tested against its teacher and DFT on held-out frames."""
    res = _run("student_budget", tmp_path)
    rows = {r["arm"]: r for r in res["rows"]}
    n = res["student_settings"]["steps"]
    full, plateau = rows[f"full-{n}"], rows[f"plateau-{2 * n}"]
    assert full["steps_trained"] == n and full["stopped_early"] is None
    assert plateau["steps_ceiling"] == 2 * n
    # whether this tiny curve flattens before a poll sees it is timing; the stop itself
    # is tested in test_train_stop.py and test_deepmd_student.py
    assert plateau["steps_trained"] <= 2 * n
    if plateau["stopped_early"]:
        assert plateau["steps_trained"] < 2 * n and "plateau" in plateau["stopped_early"]
    t_f = res["teacher"]["test_vs_dft_F_eV_A"]
    assert 0 < t_f < 1
    for r in rows.values():
        assert r["student_over_teacher_F"] == pytest.approx(r["vs_dft_F_eV_A"] / t_f, rel=1e-2)
