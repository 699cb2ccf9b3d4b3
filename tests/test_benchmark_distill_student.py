"""benchmarks/distill_student.py: arm configs, the stage copy, and the figures it reports."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml
from ase.build import bulk
from procs import load_module

from pfd.config import load_config
from pfd.frames import attach_labels
from pfd.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    return load_module(ROOT / "benchmarks/distill_student.py")


def test_arm_configs_change_only_the_distillation(tmp_path: Path) -> None:
    b = _bench()
    base = yaml.safe_load((ROOT / "examples/si/pfd.yaml").read_text())
    for arm in b.ARMS:
        raw = yaml.safe_load(b.arm_config(arm, tmp_path).read_text())
        assert raw["run_id"] == f"si-demo-{arm}"
        assert raw["validation"] == {"enabled": False}
        assert {k: v for k, v in raw.items() if k not in ("run_id", "validation", "distill")} \
            == {k: v for k, v in base.items() if k not in ("run_id", "validation", "distill")}
        assert raw["distill"]["student"] == base["distill"]["student"]
        assert raw["distill"]["groups"] == base["distill"]["groups"]
        cfg = load_config(tmp_path / f"{arm}.yaml")  # a valid config
        assert cfg.distill is not None
    one = load_config(tmp_path / "one-shot.yaml").distill
    assert one is not None and one.refine.rounds == 0 and not one.data.dft_relabel
    assert one.refine.frames_per_round == 150  # the rest of refine keeps its defaults
    driven = load_config(tmp_path / "student-driven.yaml").distill
    assert driven is not None and driven.teacher_md is False
    refined = load_config(tmp_path / "refined.yaml").distill
    assert refined is not None and refined.teacher_md is True and refined.refine.rounds == 2


def test_copy_stages_leaves_the_distillation_behind(tmp_path: Path) -> None:
    b = _bench()
    st = LocalStore(tmp_path / "store")
    si = attach_labels(bulk("Si", "diamond", a=5.43), -10.0, np.zeros((2, 3)))
    st.put_frames("runs/si-demo/init/labelled.extxyz", [si])
    st.put_json("runs/si-demo/teacher.json", {"model": "runs/si-demo/models/m"})
    for own in ("distill/record.json", "validation/x.json", "run.json", "timings.json"):
        st.put_json(f"runs/si-demo/{own}", {})
    assert b.copy_stages(st.url, "si-demo-a") == 2
    assert sorted(k for k in st.list("runs/si-demo-a/") if not k.endswith(".sha256")) == [
        "runs/si-demo-a/init/labelled.extxyz", "runs/si-demo-a/teacher.json"]
    assert b.copy_stages(st.url, "si-demo-a") == 0  # nothing twice


def _model(f_dft: float, f_test: float, e_dft: float = 10.0) -> dict[str, Any]:
    return {"dft_F_rmse_eV_A": f_dft, "dft_E_rmse_meV_atom": e_dft,
            "test": {"phases": {"all": {"F_rmse_eV_A": f_test, "E_rmse_offset_meV_atom": 3.0}}}}


def test_summary_and_markdown() -> None:
    b = _bench()
    arm = {"models": {"teacher": _model(0.06, 0.05, 8.0), "student round 0": _model(0.3, 0.2),
                      "student round 1": _model(0.072, 0.06, 12.0)},
           "audit": {"n_frames": 6, "student": {"force_rmse_eV_A": 0.1,
                                                "energy_rmse_meV_atom": 4.0},
                     "teacher": {"force_rmse_eV_A": 0.08, "energy_rmse_meV_atom": 2.0}},
           "kinds": {"teacher_md": 400, "student_md": 150}, "distill_s": 500.0,
           "teacher_force_calls": 1234, "rounds": [
               {"round": 1, "force_rmse_eV_A": 0.2, "stopped_early": {"x": "blow-up"},
                "bound_force_eV_A": 0.045},
               {"round": 2, "force_rmse_eV_A": 0.04, "stopped_early": {},
                "bound_force_eV_A": 0.045}]}
    s = b.summary(arm)
    assert s["final"] == "student round 1"  # the last round, not the first
    assert s["dft_ratio_F"] == pytest.approx(1.2)
    assert s["test_ratio_F"] == pytest.approx(1.2)
    assert s["audit_ratio_F"] == pytest.approx(1.25)
    assert s["dft_ratio_E"] == pytest.approx(1.5)
    arm["summary"] = s
    md = b.markdown({"machine": "m", "date": "d", "n_test": 28, "arms": {"refined": arm}})
    assert "| refined | 1.20 | 1.20 | 1.25 | 1.50 | 0.100 / 4.0 | 1,234 | 500 |" in md
    assert "round 0: 0.200 eV/Å (1 blew up); round 1: 0.040 eV/Å (bound 0.045)" in md
