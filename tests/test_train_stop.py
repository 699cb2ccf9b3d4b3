"""A student's training ends when its validation curve is flat or its wall budget is
spent, on its newest checkpoint, and stays ended when called again.

The rule is tested on built curves; the subprocess control on a stand-in ``dp`` that
writes a learning curve and checkpoints the way deepmd does (pointer after checkpoint),
so a stop is exercised in a second instead of a training; the real training is in
tests/test_deepmd_student.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import configs
import numpy as np
import pytest

from pfd.config import ConfigError, PlateauSpec, StudentSpec, parse_config
from pfd.models.deepmd_run import LCURVE_FILE, read_lcurve, run_training
from pfd.models.train_stop import plateau_reason, stop_rule, student_stop

SPEC = PlateauSpec(min_fraction=0.3, window_fraction=0.1, min_improvement=0.02)


def _curve(f: np.ndarray, e: np.ndarray | None = None, every: int = 10) -> list[dict]:
    e = f / 10 if e is None else e
    return [{"step": (i + 1) * every, "rmse_e_val": float(e[i]), "rmse_f_val": float(f[i]),
             "rmse_e_trn": math.nan, "rmse_f_trn": math.nan} for i in range(len(f))]


def test_a_falling_curve_never_stops() -> None:
    steps = np.arange(1, 101)
    f = 1.0 / np.sqrt(steps)  # still ~5 % better per window at the end
    rows = _curve(f)
    assert all(plateau_reason(rows[:k], 1000, SPEC) is None for k in range(1, 101))


def test_a_flat_noisy_curve_stops_once_past_min_fraction() -> None:
    rng = np.random.default_rng(0)
    f = np.concatenate([np.linspace(1.0, 0.2, 20), 0.2 * (1 + 0.3 * rng.standard_normal(80))])
    rows = _curve(np.abs(f))
    first = next(k for k in range(1, 101) if plateau_reason(rows[:k], 1000, SPEC))
    # not before 30 % of the steps, and not long after (windows of 10 points, medians)
    assert rows[first - 1]["step"] >= 300 and first <= 45, first
    assert "rmse_f_val" in plateau_reason(rows[:first], 1000, SPEC)


def test_energies_still_falling_keep_training() -> None:
    n = 100
    f = np.full(n, 0.2)
    e = np.geomspace(1.0, 0.01, n)  # forces flat, energies falling 4 % per point
    assert all(plateau_reason(_curve(f, e)[:k], 1000, SPEC) is None for k in range(1, n + 1))


def test_training_columns_stand_in_without_validation() -> None:
    rows = [{"step": (i + 1) * 10, "rmse_e_val": math.nan, "rmse_f_val": math.nan,
             "rmse_e_trn": 0.01, "rmse_f_trn": 0.2} for i in range(60)]
    assert "rmse_f_trn" not in (plateau_reason(rows, 1000, SPEC) or "x")  # named as val
    assert plateau_reason(rows, 1000, SPEC) is not None


def test_a_coarse_curve_does_not_stop_on_two_points() -> None:
    rows = _curve(np.full(6, 0.2), every=200)  # 6 points over 1200 steps
    assert plateau_reason(rows, 1200, SPEC) is None


def test_wall_budget_uses_the_clock() -> None:
    now = [0.0]
    check = stop_rule(1000, None, 2.0, clock=lambda: now[0])
    assert check is not None
    rows = _curve(np.linspace(1, 0.1, 5))
    assert check(rows) is None
    now[0] = 121.0
    halt = check(rows)
    assert halt is not None and halt.anneal_steps == 0  # a spent budget does not anneal
    assert "wall budget of 2 min reached at step 50 of 1000" in halt.reason
    assert stop_rule(1000, None, None) is None


def test_stop_settings_join_the_fingerprint_only_when_set() -> None:
    assert student_stop(StudentSpec()) == (None, {})
    stop, ident = student_stop(StudentSpec(plateau=PlateauSpec(), max_minutes=5))
    assert stop is not None and ident["stop"]["max_minutes"] == 5
    # a stop saves a checkpoint every 5 % so it rolls back little; without one, 4 per run
    assert StudentSpec(steps=8000, plateau=PlateauSpec()).resolved_save_freq() == 400
    assert StudentSpec(steps=8000).resolved_save_freq() == 2000


FAKE_DP = r'''
import json, sys, time
from pathlib import Path
args = sys.argv[1:]
cfg = json.loads(Path(args[args.index("train") + 1]).read_text())
start = 0
if "--restart" in args:  # model.ckpt-N.pt
    start = int(args[args.index("--restart") + 1].split("-")[1].split(".")[0])
n = cfg["training"]["numb_steps"]; disp = cfg["training"]["disp_freq"]
save = cfg["training"]["save_freq"]
with open("lcurve.out", "a" if start else "w") as fh:
    if not start:
        fh.write("# step rmse_e_val rmse_e_trn rmse_f_val rmse_f_trn lr\n")
    for step in range(start + disp, n + 1, disp):
        f = max(0.2, 1.0 - step / 400)   # flat from step 320 on
        fh.write(f"{step} {f / 10} {f / 10} {f} {f} 1e-3\n"); fh.flush()
        if step % save == 0 or step == n:
            Path(f"model.ckpt-{step}.pt").write_text("w")
            Path("checkpoint").write_text(f"model.ckpt-{step}.pt")
        time.sleep(0.02)
'''


def _fake_dp(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_dp.py"
    script.write_text(FAKE_DP)  # called as `fake_dp.py --pt train input.json`
    return [sys.executable, str(script)]


def _config(steps: int, disp: int, save: int) -> dict:
    return {"training": {"numb_steps": steps, "disp_freq": disp, "save_freq": save}}


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "w"
    (work / "data").mkdir(parents=True)
    return work


def test_a_stopped_training_ends_on_its_checkpoint_and_stays_ended(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    cfg = _config(4000, 10, 100)
    rule = PlateauSpec(min_fraction=0.05, anneal_fraction=0)
    run = run_training(work, cfg, [work / "data"], dp=_fake_dp(tmp_path), backend="pt",
                       threads=1, stop=stop_rule(4000, rule, None), poll_s=0.05)
    assert run.stopped and "validation plateau" in run.stopped
    # flat from step 320; windows of 400 steps; stopped long before 4000
    assert run.stopped_at_step is not None and 400 <= run.stopped_at_step < 2000
    assert run.stopped_at_step % 100 == 0 and run.steps_done == run.stopped_at_step
    # the curve ends where the model's checkpoint is
    assert read_lcurve(work / LCURVE_FILE)[-1]["step"] == run.stopped_at_step
    state = json.loads((work / "pfd_train.json").read_text())
    assert state["stopped"] == {"reason": run.stopped, "step": run.stopped_at_step}
    again = run_training(work, cfg, [work / "data"], dp=["false"], backend="pt", threads=1,
                         stop=stop_rule(4000, rule, None))
    assert again.seconds == 0 and again.stopped == run.stopped
    assert again.stopped_at_step == again.steps_done == run.stopped_at_step


def test_a_plateau_anneals_over_a_shortened_schedule(tmp_path: Path) -> None:
    """After the stop, the same training continues from the stop's checkpoint with
    ``numb_steps`` = stop step + the tail; a kill during the tail finishes it later."""
    work = _workdir(tmp_path)
    cfg = _config(4000, 10, 100)
    rule = PlateauSpec(min_fraction=0.05, anneal_fraction=0.1)  # 400 steps
    run = run_training(work, cfg, [work / "data"], dp=_fake_dp(tmp_path), backend="pt",
                       threads=1, stop=stop_rule(4000, rule, None), poll_s=0.05)
    at = run.stopped_at_step
    assert at is not None and run.steps_done == at + 400
    assert json.loads((work / "restart.json").read_text())["training"]["numb_steps"] == at + 400
    steps = [r["step"] for r in read_lcurve(work / LCURVE_FILE)]
    assert steps[-1] == at + 400 and len(steps) == len(set(steps))  # one row per step
    state = json.loads((work / "pfd_train.json").read_text())
    assert state["stopped"]["anneal_to"] == at + 400
    # a kill during the tail, as the state would be: the anneal was to go further
    state["stopped"]["anneal_to"] = at + 600
    (work / "pfd_train.json").write_text(json.dumps(state))
    rest = run_training(work, cfg, [work / "data"], dp=_fake_dp(tmp_path), backend="pt",
                        threads=1, stop=stop_rule(4000, rule, None), poll_s=0.05)
    assert rest.steps_done == at + 600 and rest.stopped_at_step == at
    assert rest.resumed_from_step == at + 400


def test_without_a_stop_the_same_curve_runs_to_its_end(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    run = run_training(work, _config(600, 10, 100), [work / "data"],
                       dp=_fake_dp(tmp_path), backend="pt", threads=1, poll_s=0.05)
    assert run.stopped is None and read_lcurve(work / LCURVE_FILE)[-1]["step"] == 600


@pytest.mark.parametrize("field, value", [("min_fraction", 0), ("window_fraction", 0.9),
                                          ("min_improvement", 1.5)])
def test_bad_plateau_setting_names_its_field_and_value(field: str, value: float) -> None:
    raw = configs.base()
    raw["distill"] = {"groups": raw["stages"][0]["groups"],
                      "student": {"plateau": {field: value}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    lines = str(err.value).splitlines()[1:]  # one line per problem under the header
    assert len(lines) == 1 and f"distill.student.plateau.{field}" in lines[0], lines
    assert f"(got {value})" in lines[0], lines
