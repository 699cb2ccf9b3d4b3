"""The labelling-throughput benchmark's --quick mode runs in CI, so the script cannot rot."""

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
@needs(shutil.which("pw.x") is not None and shutil.which("cp2k.psmp") is not None,
       "pw.x or cp2k.psmp not installed")
def test_label_throughput_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/label_throughput.py", "--quick",
                          "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "benchmarks/results/label_throughput_quick.json").read_text())
    assert res["machine"] and res["date"] and "label_throughput.py --quick" in res["command"]
    cases = {(c["engine"], c["workers"]): c for c in res["cases"]}
    assert set(cases) == {("qe", 1), ("qe", 2), ("cp2k", 1), ("cp2k", 2)}
    for c in cases.values():
        assert c["labelled"] == c["frames"] == 2 and not c["failed"]
        assert c["frames_per_hour"] > 0 and c["engine_s_per_frame"] > 0
        assert c["label_s_per_frame"] >= c["engine_s_per_frame"]
        assert 0 <= c["outside_engine_share"] < 1
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- label_throughput_quick:start -->" in md and "| qe | 8 | 2 |" in md
