"""Convergence criteria (RMSE thresholds, the paper's frame-ratio rule) and iteration caps."""

from __future__ import annotations

import json

import pytest

from pfd.config import ConvergeSpec, FrameRatioRule, StageSpec
from pfd.iteration_budget import skipped_stage_note, stage_iterations, stage_note
from pfd.metrics import Metrics, converged, convergence_checks


def _metrics(errors: list[tuple[float, float]], f_rmse: float = 0.01,
             e_rmse: float = 0.5) -> Metrics:
    """Metrics whose per-frame (energy meV/atom, force RMSE eV/Å) errors are ``errors``."""
    return Metrics(n_frames=len(errors), energy_rmse_meV_atom=e_rmse, energy_mae_meV_atom=e_rmse,
                   force_rmse_eV_A=f_rmse, force_mae_eV_A=f_rmse, stress_rmse_GPa=None,
                   per_frame=[{"energy_err_meV_atom": e, "force_rmse_eV_A": f}
                              for e, f in errors])


def _ratio_only(min_fraction: float, e: float | None = 1.0,
                f: float | None = 0.05) -> ConvergeSpec:
    return ConvergeSpec(force_rmse_eV_A=None, frame_ratio=FrameRatioRule(
        min_fraction=min_fraction, max_energy_error_meV_atom=e, max_force_rmse_eV_A=f))


# 10 frames: 7 good, one bad in energy (sign must not matter), one in force, one in both
FRAMES = [(0.2, 0.01)] * 6 + [(-0.9, 0.049), (-1.5, 0.01), (0.3, 0.08), (2.0, 0.2)]


def test_ratio_rule_flips_exactly_at_min_fraction() -> None:
    m = _metrics(FRAMES)
    assert converged(m, _ratio_only(0.7))  # 7/10 good: "at least 70 %" holds
    assert not converged(m, _ratio_only(0.7000001))
    assert converged(m, _ratio_only(0.5))
    assert convergence_checks(m, _ratio_only(0.7))["frame_ratio"]["value"] == pytest.approx(0.7)
    # 4 of 5 against 0.8 (not exactly representable): still counts as 80 %
    assert converged(_metrics(FRAMES[:4] + FRAMES[-1:]), _ratio_only(0.8))


def test_ratio_rule_per_frame_thresholds_are_strict() -> None:
    # move the energy limit across the frame at |-0.9| meV/atom
    m = _metrics([(0.9, 0.01), (-0.9, 0.01), (0.1, 0.01), (0.1, 0.01)])
    assert not converged(m, _ratio_only(0.75, e=0.9))  # 2 of 4: error == limit is not below
    assert converged(m, _ratio_only(1.0, e=0.9000001))  # 4 of 4
    # force limit alone (energy unchecked)
    m = _metrics([(50.0, 0.049), (50.0, 0.05)])
    assert convergence_checks(m, _ratio_only(1.0, e=None))["frame_ratio"]["value"] == 0.5
    assert converged(m, _ratio_only(1.0, e=None, f=0.0500001))


def test_criteria_combine_with_and() -> None:
    m = _metrics(FRAMES, f_rmse=0.07, e_rmse=0.8)
    rule = FrameRatioRule(min_fraction=0.7)
    assert converged(m, ConvergeSpec(force_rmse_eV_A=0.08, frame_ratio=rule))
    assert not converged(m, ConvergeSpec(force_rmse_eV_A=0.06, frame_ratio=rule))
    assert not converged(m, ConvergeSpec(force_rmse_eV_A=0.08,
                                         frame_ratio=FrameRatioRule(min_fraction=0.8)))
    assert not converged(m, ConvergeSpec(force_rmse_eV_A=0.08, energy_rmse_meV_atom=0.8,
                                         frame_ratio=rule))  # 0.8 is not < 0.8
    checks = convergence_checks(m, ConvergeSpec(force_rmse_eV_A=0.06, frame_ratio=rule))
    assert {k: c["ok"] for k, c in checks.items()} == {"force_rmse_eV_A": False,
                                                       "frame_ratio": True}


def test_empty_test_set_never_converges_and_ratio_needs_per_frame() -> None:
    assert not converged(_metrics([]), _ratio_only(0.5))
    m = _metrics(FRAMES)
    m.per_frame = []
    with pytest.raises(ValueError, match="per-frame errors"):
        converged(m, _ratio_only(0.5))


def test_is_converged_reads_per_frame_from_the_stored_record() -> None:
    from pfd.steps import is_converged

    m = _metrics(FRAMES)
    record = json.loads(json.dumps({"model": "m", "data": ["d"], **m.summary(),
                                    "per_frame": m.per_frame}))
    groups = [{"structures": ["d"], "temperatures_K": [300]}]
    stage = StageSpec(name="s", groups=groups,  # type: ignore[arg-type]
                      converge=_ratio_only(0.7))
    assert is_converged(record, stage)
    assert not is_converged(record, stage.model_copy(update={"converge": _ratio_only(0.71)}))


def test_iteration_caps_are_reported() -> None:
    assert stage_iterations(3, 10) == 3 and stage_iterations(3, 2) == 2
    assert stage_iterations(3, 0) == 0
    assert stage_note("hot", 2, True, 3, 10, 10) is None
    own = stage_note("hot", 3, False, 3, 10, 10)
    assert own is not None and own.startswith("stage hot did NOT converge in 3 iteration(s)")
    assert "its max_iterations=3 reached" in own
    glob = stage_note("hot", 2, False, 3, 5, 2)  # the global budget ran out first
    assert glob is not None and "max_total_iterations=5 reached" in glob
    assert "did NOT converge" in glob
    assert skipped_stage_note("cold", 5).startswith("stage cold SKIPPED: max_total_iterations=5")
