"""When a dp training is done before its last step: a flat validation curve or a wall budget.

deepmd trains for a fixed ``numb_steps``. A student's learning curve is flat long before
that on the demo (a third of 8000 steps), so the rest is wall time a user waits through
for nothing. :func:`stop_rule` builds the check :func:`pfd.models.deepmd_run.run_dp`
asks at every poll; a reason it returns ends the training at its newest checkpoint.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pfd.config import PlateauSpec, StudentSpec


@dataclass(frozen=True)
class Stop:
    """Why a training ends before its last step, and how many steps of a shortened
    learning-rate decay follow from the stop's checkpoint (0: none, it ends there)."""

    reason: str
    anneal_steps: int = 0


#: what a stop check is given (the learning-curve rows so far) and returns
StopCheck = Callable[[Sequence[dict[str, Any]]], "Stop | None"]

#: learning-curve columns compared, each with its training-set fallback
_METRICS = (("rmse_e_val", "rmse_e_trn"), ("rmse_f_val", "rmse_f_trn"))


def _column(rows: Sequence[dict[str, Any]], names: tuple[str, str]) -> list[float] | None:
    for name in names:
        vals = [float(r.get(name, math.nan)) for r in rows]
        if vals and all(math.isfinite(v) for v in vals):
            return vals
    return None


def plateau_reason(rows: Sequence[dict[str, Any]], numb_steps: int,
                   spec: PlateauSpec) -> str | None:
    """Why the curve in ``rows`` is flat (see :class:`pfd.config.PlateauSpec`), or None.

    Needs at least three points in each of the two windows, so a coarse curve (few
    display points) never stops on noise.
    """
    if not rows:
        return None
    step = int(rows[-1]["step"])
    if step < spec.min_fraction * numb_steps:
        return None
    width = max(1, round(spec.window_fraction * numb_steps))
    recent = [r for r in rows if step - width < r["step"] <= step]
    before = [r for r in rows if step - 2 * width < r["step"] <= step - width]
    if len(recent) < 3 or len(before) < 3:
        return None
    gains: list[str] = []
    for names in _METRICS:
        new, old = _column(recent, names), _column(before, names)
        if new is None or old is None:
            continue
        m_new, m_old = statistics.median(new), statistics.median(old)
        if m_new < (1.0 - spec.min_improvement) * m_old:
            return None  # still falling
        gains.append(f"{names[0]} {m_old:.3g} -> {m_new:.3g}")
    if not gains:
        return None
    return (f"validation plateau at step {step}: median over the last {width} steps "
            f"fell less than {spec.min_improvement:.0%} ({', '.join(gains)})")


def stop_rule(numb_steps: int, plateau: PlateauSpec | None, max_minutes: float | None,
              clock: Callable[[], float] = time.monotonic) -> StopCheck | None:
    """The check for one training (its wall clock starts now), or None when neither
    a plateau nor a budget is set."""
    if plateau is None and max_minutes is None:
        return None
    t0 = clock()

    def check(rows: Sequence[dict[str, Any]]) -> Stop | None:
        if max_minutes is not None and clock() - t0 > 60.0 * max_minutes:
            step = int(rows[-1]["step"]) if rows else 0
            return Stop(f"wall budget of {max_minutes:g} min reached at step {step} of "
                        f"{numb_steps} (the learning rate had not decayed to stop_lr)")
        if plateau is None:
            return None
        reason = plateau_reason(rows, numb_steps, plateau)
        if reason is None:
            return None
        return Stop(reason, round(plateau.anneal_fraction * numb_steps))

    return check


def student_stop(settings: StudentSpec) -> tuple[StopCheck | None, dict[str, Any]]:
    """A student's stop check (fresh clock) and what of its settings joins the training's
    fingerprint: a training stopped under one rule is not reused under another."""
    plateau = settings.plateau
    identity: dict[str, Any] = {}
    if plateau is not None or settings.max_minutes is not None:
        identity["stop"] = {"plateau": plateau.model_dump() if plateau else None,
                            "max_minutes": settings.max_minutes}
    return stop_rule(int(settings.steps), plateau, settings.max_minutes), identity
