"""The selection benchmarks' --quick modes run in CI, so their scripts can never rot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from procs import load_module

ROOT = Path(__file__).resolve().parents[1]
SI_DATA = ROOT / "tests/data/si_paper/train.extxyz"  # the benchmarks' default data


def _run(script: str, out: Path, timeout: int) -> None:
    res = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", "--out-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_selection_speed_quick(tmp_path: Path) -> None:
    _run("selection_speed.py", tmp_path, timeout=300)
    res = json.loads((tmp_path / "benchmarks/results/selection_speed_quick.json").read_text())
    for precision in ("float32", "float64"):
        t = res["wall_s"][precision]
        assert t["total"] > 0 and t["total"] >= t["descriptors"] + t["reference"] - 0.05
    # the two precisions rank these frames identically
    assert res["float32_vs_float64_same_picks"] == 1.0
    assert res["quests_kernel_sum"]["ns_per_pair"] > 0
    assert res["machine"] and res["date"] and "selection_speed.py --quick" in res["command"]
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- selection_speed_quick:start -->" in md and "| float32 (default) |" in md


@pytest.mark.slow
def test_p6_selection_quick(tmp_path: Path) -> None:
    _run("p6_selection.py", tmp_path, timeout=900)
    res = json.loads((tmp_path / "benchmarks/results/p6_selection_quick.json").read_text())
    assert res["complete"] is True
    assert "ruoyuwang1995nya/pfd-paper" in res["data"]
    ent, rnd = res["curves"]["entropy"], list(res["curves"]["random"].values())
    assert len(rnd) == 1
    # both methods share the first model and then grow by the same number of frames
    assert ent[0] == rnd[0][0] and [p["n_train"] for p in ent] == [8, 16][: len(ent)]
    for p in ent + rnd[0]:
        assert 0 < p["force_rmse_eV_A"] < 1.0 and math.isfinite(p["energy_rmse_meV_atom"])
    # the test split is held out: the same frames are never also in the pool
    assert res["split"]["test"] + res["split"]["valid"] + res["split"]["pool"] == 515
    assert "entropy_over_random_frames" in res and "meets_target" in res
    assert (tmp_path / res["plot"]).stat().st_size > 10_000
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- p6_selection_quick:start -->" in md and "entropy_over_random_frames" in md


def _p6_module() -> ModuleType:
    return load_module(ROOT / "benchmarks/p6_selection.py")


def test_p6_split_is_disjoint_and_stratified() -> None:
    p6 = _p6_module()
    frames = p6.fr.read_frames(SI_DATA)
    test, valid, pool = p6.stratified_split(frames, 5, 40)
    assert not (set(test) & set(valid)) and not (set(test) | set(valid)) & set(pool)
    assert len(test) + len(valid) + len(pool) == len(frames)
    assert 95 <= len(test) <= 110
    # every cell size with at least 5 frames is represented in the test split
    sizes = {len(a) for a in frames if sum(len(b) == len(a) for b in frames) >= 5}
    assert sizes <= {len(frames[i]) for i in test}


def test_p6_ratio_and_bounds() -> None:
    p6 = _p6_module()
    assert p6.compare(40, [80, 120], 200)["entropy_over_random_frames"] == 0.4
    # random never got there: only an upper bound on the ratio is known
    out = p6.compare(60, [None], 200)
    assert out["entropy_over_random_frames"] is None and out["bound"].startswith("<= 0.29")
    out = p6.compare(None, [100], 200)
    assert out["bound"].startswith(">= 2.01")
    assert p6.compare(None, [None], 200) == {"entropy_over_random_frames": None, "bound": None}
    curve = [{"n_train": 20, "force_rmse_eV_A": 0.12}, {"n_train": 40, "force_rmse_eV_A": 0.09}]
    assert p6.frames_needed(curve, 0.10) == 40 and p6.frames_needed(curve, 0.05) is None
