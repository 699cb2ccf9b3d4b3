"""The benchmarks' --quick modes run in CI, so their scripts can never rot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from requires import needs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@needs(shutil.which("pw.x") is not None, "pw.x not installed")
def test_e2e_demo_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/e2e_demo.py", "--quick", "--skip-install",
                          "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "benchmarks/results/e2e_demo_quick.json").read_text())
    for k in ("total", "install", "run", "dft", "finetune", "explore", "distill"):
        assert res["wall_s"][k] >= 0, k
    assert res["wall_s"]["run"] > 0
    assert res["dft_frames"] >= 4
    assert res["teacher"]["force_rmse_eV_A"] > 0 and res["student"]["force_rmse_eV_A"] > 0
    assert res["machine"] and res["date"] and "e2e_demo.py --quick" in res["command"]
    orch = res["orchestration"]  # P4's overhead share, from this run's own task times
    assert 0 < orch["compute_s"] < orch["wall_s"] == res["wall_s"]["run"]
    assert 0 < orch["overhead_share"] < 1 and orch["task_runs"] >= 8
    assert orch["fan_out"]["items"] >= res["dft_frames"]
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- e2e_demo_quick:start -->" in md and "| dft |" in md
