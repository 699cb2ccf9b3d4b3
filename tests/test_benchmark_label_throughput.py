"""The labelling-throughput benchmark's --quick mode runs in CI, so the script cannot rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from procs import run_quick_benchmark
from requires import needs


@pytest.mark.slow
@needs(shutil.which("pw.x") is not None and shutil.which("cp2k.psmp") is not None,
       "pw.x or cp2k.psmp not installed")
def test_label_throughput_quick(tmp_path: Path) -> None:
    res = run_quick_benchmark("label_throughput", tmp_path)
    cases = {(c["engine"], c["workers"]): c for c in res["cases"]}
    assert set(cases) == {("qe", 1), ("qe", 2), ("cp2k", 1), ("cp2k", 2)}
    for c in cases.values():
        assert c["labelled"] == c["frames"] == 2 and not c["failed"]
        assert c["frames_per_hour"] > 0 and c["engine_s_per_frame"] > 0
        assert c["label_s_per_frame"] >= c["engine_s_per_frame"]
        assert 0 <= c["outside_engine_share"] < 1
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- label_throughput_quick:start -->" in md and "| qe | 8 | 2 |" in md
