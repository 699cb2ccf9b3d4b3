"""Quick modes of the orchestration benchmarks (P4, Dask fan-out) run in CI so they never rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path) -> dict:  # type: ignore[type-arg]
    res = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--quick", "--out-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads((out / f"benchmarks/results/{script}_quick.json").read_text())


@pytest.mark.slow
def test_dask_runner_overhead_quick(tmp_path: Path) -> None:
    res = _run("dask_runner_overhead", tmp_path)
    modes = res["modes"]
    assert len(modes) == 3
    for m in modes.values():
        # nothing finishes faster than the sleeps themselves
        assert m["map_s"] >= res["ideal_map_s"] * 0.95
    assert res["machine"] and res["date"] and "--quick" in res["command"]
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- dask_runner_overhead_quick:start -->" in md


@pytest.mark.slow
def test_p4_quick(tmp_path: Path) -> None:
    res = _run("p4_overhead", tmp_path)
    assert res["explore"]["1"]["frames"] == res["explore"]["2"]["frames"] > 0
    assert res["dask_speedup_2w"] == pytest.approx(
        res["explore"]["1"]["wall_s"] / res["explore"]["2"]["wall_s"], rel=0.01)
    assert "<!-- p4_overhead_quick:start -->" in (tmp_path / "docs/benchmarks.md").read_text()
