"""The k-point benchmark's --quick mode runs in CI, so the script cannot rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from procs import run_quick_benchmark
from requires import needs


@pytest.mark.slow
@needs(shutil.which("pw.x") is not None, "pw.x not installed")
def test_label_kpoints_quick(tmp_path: Path) -> None:
    res = run_quick_benchmark("label_kpoints", tmp_path)
    assert res["reference_mesh"] == [4, 4, 4]
    (row,) = res["rows"]
    assert row["mesh"] == [3, 3, 3] and len(row["frames"]) == 1
    frame = row["frames"][0]
    # a broken-bond vacancy frame: the two meshes give measurably different, sane forces
    assert frame["structure"] == "vacancy"
    assert 0.005 < frame["force_rmse_eV_A"] < 0.5
    assert frame["force_max_eV_A"] >= frame["force_rmse_eV_A"]
