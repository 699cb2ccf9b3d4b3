"""The Si-phases test-set generator's --quick mode runs in CI, so the script cannot rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ase.io import read
from procs import run_quick_benchmark
from requires import needs

from pfd import frames as fr


@pytest.mark.slow
@needs(shutil.which("pw.x") is not None, "pw.x not installed")
def test_si_phases_testset_quick(tmp_path: Path) -> None:
    res = run_quick_benchmark("si_phases_testset", tmp_path)
    assert res["frames"] == 2 and res["computed"] == 2 and res["cached"] == 0
    assert res["per_structure"] == {"diamond": {"rattled": 1, "md": 1, "atoms": 8}}
    frames = read(tmp_path / res["output"], ":")
    kinds = sorted(a.info["kind"] for a in frames)
    assert kinds == ["md", "rattled"]
    for a in frames:  # labelled, with provenance, and really moved off the lattice
        assert fr.forces(a) is not None and fr.energy(a) is not None
        assert a.info["structure"] == "diamond" and a.info["seed"] >= 7001
        assert abs(fr.forces(a)).max() > 0.05
