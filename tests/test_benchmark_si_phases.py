"""benchmarks/si_phases.py: its --quick mode runs (CI), and its figures are computed right
from a run's record (a store holding labelled sets and a validation.json built here)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from ase.build import bulk
from procs import load_module, run_quick_benchmark

from pfd.frames import attach_labels
from pfd.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    return load_module(ROOT / "benchmarks/si_phases.py")


def _labelled(n: int, e: float = -10.0) -> list[Any]:
    si = bulk("Si", "diamond", a=5.43)
    return [attach_labels(si, e, np.zeros((2, 3)), None) for _ in range(n)]


def test_dft_frames_counts_training_sets_not_validation(tmp_path: Path) -> None:
    b = _bench()
    st = LocalStore(tmp_path / "store")
    st.put_frames("runs/R/init/labelled.extxyz", _labelled(5))
    st.put_frames("runs/R/stages/0-a/iter-000/labelled.extxyz", _labelled(3))
    st.put_frames("runs/R/validation/eos/labelled.extxyz", _labelled(7))
    st.put_frames("runs/OTHER/init/labelled.extxyz", _labelled(2))
    assert b.dft_frames(st.url, "R") == {"init/labelled.extxyz": 5,
                                         "stages/0-a/iter-000/labelled.extxyz": 3}


def test_per_phase_errors_and_the_constant_offset() -> None:
    b = _bench()
    ref = _labelled(2, -10.0) + _labelled(2, -12.0)
    for a, s in zip(ref, ["diamond", "diamond", "fcc", "fcc"], strict=True):
        a.info["structure"] = s
    # predictions: +0.2 eV per frame everywhere (2 atoms: 100 meV/atom), forces off by 0.1
    pred = [attach_labels(a, -10.0 + 0.2 if i < 2 else -12.0 + 0.2, np.full((2, 3), 0.1),
                          None) for i, a in enumerate(ref)]
    r = b.per_phase_errors(ref, pred)
    assert r["offset_meV_atom"] == pytest.approx(100.0)
    for ph in ("diamond", "fcc", "all"):
        row = r["phases"][ph]
        assert row["E_rmse_meV_atom"] == pytest.approx(100.0)
        assert row["E_rmse_offset_meV_atom"] == pytest.approx(0.0, abs=1e-9)
        assert row["F_rmse_eV_A"] == pytest.approx(0.1)
    assert r["phases"]["all"]["n_frames"] == 4


def _q(v: float, err: float = 0.1) -> dict[str, Any]:
    return {"value": v, "err": err, "meaningful": True, "problems": []}


def test_validation_figures_and_goals() -> None:
    b = _bench()
    vals = {
        "eos.bc8.dE0_meV_atom": {"dft": _q(100.0), "teacher": _q(104.0), "student": _q(125.0)},
        "eos.bc8.V0_A3_atom": {"dft": _q(20.0), "teacher": _q(20.1), "student": _q(20.0)},
        "eos.bc8.B0_GPa": {"dft": _q(100.0), "teacher": _q(95.0), "student": _q(130.0)},
        "vacancy.E_f_eV": {"dft": _q(3.0), "teacher": _q(3.1), "student": _q(2.7)},
        "phonons.gamma_optical_THz": {"dft": _q(15.0), "teacher": _q(15.2),
                                      "student": _q(14.0)},
    }
    val = b.validation_figures({"quantities": {"values": vals}}, ["bc8"])
    assert val["phases"]["bc8"]["dE0_meV_atom"]["teacher_err"] == pytest.approx(4.0)
    assert val["phases"]["bc8"]["V0_A3_atom"]["teacher_err"] == pytest.approx(0.005)
    assert val["vacancy"]["vacancy.E_f_eV"]["student_err"] == pytest.approx(-0.3)
    test_set = {m: {"phases": {"all": {"E_rmse_meV_atom": e, "F_rmse_eV_A": f}}}
                for m, e, f in (("teacher", 2.0, 0.06), ("student", 4.0, 0.09))}
    goals = b.goal_checks({"dft_frames_total": 150, "test_set": test_set, "validation": val,
                           "wall_s": 100 * 60})
    assert goals["dft_frames"]["met"] is True
    assert goals["teacher_F_rmse_eV_A"]["met"] is True
    assert goals["student_teacher_F_ratio"]["value"] == pytest.approx(1.5)
    assert goals["student_teacher_F_ratio"]["met"] is False
    assert goals["dE0_abs_err_meV_atom.teacher"]["met"] is True
    assert goals["dE0_abs_err_meV_atom.student"]["met"] is False  # 25 meV/atom off
    assert goals["B0_rel_err.student"]["value"] == pytest.approx(0.3)
    assert goals["vacancy_diamond_abs_err_eV.student"]["met"] is False
    assert goals["phonon_abs_err_THz.teacher"]["met"] is True
    assert goals["wall_min"]["met"] is False


@pytest.mark.slow
def test_si_phases_quick(tmp_path: Path) -> None:
    res = run_quick_benchmark("si_phases", tmp_path)
    raw = res["test_set"]["raw"]["phases"]
    assert set(raw) == {"diamond", "hex-diamond", "bc8", "beta-sn", "fcc", "hcp", "vacancy",
                        "all"}
    assert raw["all"]["n_frames"] == res["test_frames"] == 28
    # the raw foundation against QE: forces off by a tenth of an eV/Å or more, not zero
    assert 0.05 < raw["all"]["F_rmse_eV_A"] < 1.0
    assert res["goals"]["dft_frames"]["met"] is None  # no run measured in quick mode
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- si_phases_quick:start -->" in md and "| bc8 |" in md
