"""Refinement-round pieces that need no model: groups, bound, worst frames, the report."""

from __future__ import annotations

import pytest
from ase.build import bulk
from configs import base

from pfd.config import ConfigError, DistillSpec, MDGroup, parse_config
from pfd.distill.data import KIND, kind_counts
from pfd.distill.refine import BOUND_FACTOR, default_bound, refine_groups, worst_frames
from pfd.report import distill_markdown


def _spec(**refine: object) -> DistillSpec:
    return DistillSpec(groups=[MDGroup(structures=["a"], temperatures_K=[300, 1000]),
                               MDGroup(structures=["b"], temperatures_K=[600], ensemble="npt",
                                       pressures_GPa=[0.0])],
                       refine=refine)


def test_refine_groups_add_one_hotter_temperature() -> None:
    groups = refine_groups(_spec(hot_factor=1.2))
    assert [g.temperatures_K for g in groups] == [[300, 1000, 1200.0], [600, 720.0]]
    assert groups[1].ensemble == "npt" and groups[1].pressures_GPa == [0.0]
    # factor 1: nothing hotter, no duplicate trajectory
    assert [g.temperatures_K for g in refine_groups(_spec(hot_factor=1.0))] == [
        [300, 1000], [600]]


def test_bound_follows_the_teacher_unless_set() -> None:
    assert default_bound(_spec(), 0.08) == pytest.approx(BOUND_FACTOR * 0.08)
    assert default_bound(_spec(bound_force_eV_A=0.02), 0.08) == 0.02


def test_worst_frames_are_the_largest_disagreements() -> None:
    frames = [bulk("Si", "diamond", a=5.43 + 0.01 * i) for i in range(5)]
    per_frame = [{"force_rmse_eV_A": v} for v in (0.1, 0.5, 0.05, 0.5, 0.3)]
    picked = worst_frames(frames, per_frame, 3)
    assert [round(a.cell[0, 1], 4) for a in picked] == [
        round(frames[i].cell[0, 1], 4) for i in (1, 3, 4)]


def test_kind_counts() -> None:
    frames = [bulk("Si") for _ in range(4)]
    for a, k in zip(frames, ["teacher_md", "dft_relabel", "teacher_md"], strict=False):
        a.info[KIND] = k
    assert kind_counts(frames) == {"dft_relabel": 1, "teacher_md": 2, "unknown": 1}


def test_report_shows_kinds_rounds_and_audit() -> None:
    row = {"model": "student", "data": "dft", "n_frames": 3, "energy_rmse_meV_atom": 5.0,
           "force_rmse_eV_A": 0.1}
    rounds = [{"round": 1, "frames": 40, "stopped_early": {"t": "blow-up"},
               "force_rmse_eV_A": 0.21, "energy_rmse_meV_atom": 9.0, "bound_force_eV_A": 0.05,
               "converged": False, "n_added": 10},
              {"round": 2, "frames": 44, "stopped_early": {}, "force_rmse_eV_A": 0.04,
               "energy_rmse_meV_atom": 3.0, "bound_force_eV_A": 0.05, "converged": True,
               "n_added": 10}]
    audit = {"n_frames": 6, "student": {"energy_rmse_meV_atom": 7.5, "force_rmse_eV_A": 0.12},
             "teacher": {"energy_rmse_meV_atom": 4.0, "force_rmse_eV_A": 0.09}}
    trainings = [{"round": 0, "steps_ceiling": 8000, "steps_trained": 2400,
                  "stopped_early": "validation plateau at step 2400: median ...",
                  "train_seconds": 190.0},
                 {"round": 1, "steps_ceiling": 4000, "steps_trained": 4000,
                  "stopped_early": None, "train_seconds": 310.0}]
    md = distill_markdown({"table": [row], "kinds": {"teacher_md": 400, "student_md": 10},
                           "rounds": rounds, "audit": audit, "trainings": trainings})
    assert ("Student trainings: round 0 2400 of 8000 steps in 190 s (validation plateau "
            "at step 2400); round 1 4000 of 4000 steps in 310 s.") in md
    assert "teacher_md 400, student_md 10" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| 0 |") or ln.startswith("| 1 |")]
    # round 0's student blew up once and was outside the bound; its 10 worst frames
    # trained round 1, whose measurement adds nothing (it is the last)
    assert lines == ["| 0 | 40 | 1 | 0.210 | 9.000 | 0.050 | no | 10 |",
                     "| 1 | 44 | 0 | 0.040 | 3.000 | 0.050 | yes | 0 |"]
    assert "student E 7.500 meV/atom, F 0.120 eV/Å; teacher E 4.000" in md


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("hot_factor", 0.5, "distill.refine.hot_factor"),
    ("rounds", -1, "distill.refine.rounds"),
    ("frames_per_round", 0, "distill.refine.frames_per_round"),
])
def test_bad_refine_settings_name_the_field(field: str, value: object, needle: str) -> None:
    raw = base() | {"distill": {"groups": [{"structures": ["d"], "temperatures_K": [300]}],
                                "refine": {field: value}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    problem = [ln for ln in str(err.value).splitlines()[1:]]
    assert len(problem) == 1 and needle in problem[0] and repr(value) in problem[0]


@pytest.mark.parametrize(("distill", "needle"), [
    ({"teacher_md": False, "refine": {"rounds": 0}}, "refine.rounds >= 1"),
    ({"teacher_md": False, "data": {"dft_relabel": False, "dft_copies": 0}},
     "data.dft_relabel or data.dft_copies"),
])
def test_a_student_without_teacher_md_needs_data_and_rounds(distill: dict[str, object],
                                                             needle: str) -> None:
    raw = base() | {"distill": {"groups": [{"structures": ["d"], "temperatures_K": [300]}],
                                **distill}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 1 and lines[0].strip().startswith("distill:") and needle in lines[0]


def test_refine_round_steps_default_to_half_the_students() -> None:
    assert _spec().refine.resolved_steps(8000) == 4000
    assert _spec(steps=300).refine.resolved_steps(8000) == 300
    assert _spec().refine.resolved_steps(1) == 1  # never a zero-step training
