"""How many fine-tune iterations a stage may use, and what to say when they run out.

Running out of iterations is not an error (the labels are kept and the run goes on), so
nothing would fail loudly by itself: these notes go to the log as warnings, into the
report and into ``run.json``'s ``warnings``, naming which limit was hit.
"""

from __future__ import annotations


def stage_iterations(stage_max: int, total_left: int) -> int:
    """Iterations a stage may run: its own ``max_iterations``, capped by the global budget."""
    return max(0, min(stage_max, total_left))


def stage_note(stage_name: str, iterations_run: int, converged: bool, stage_max: int,
               total_cap: int, total_left_before: int) -> str | None:
    """The warning for a stage that ended without converging, or None if it converged."""
    if converged:
        return None
    if iterations_run >= stage_max:
        limit = f"its max_iterations={stage_max} reached"
    elif iterations_run >= total_left_before:
        limit = f"max_total_iterations={total_cap} reached"
    else:  # defensive: the loop ended early for a reason this module does not know
        limit = "stopped early"
    return (f"stage {stage_name} did NOT converge in {iterations_run} iteration(s) "
            f"({limit}); its last labels are kept and used below")


def skipped_stage_note(stage_name: str, total_cap: int) -> str:
    return (f"stage {stage_name} SKIPPED: max_total_iterations={total_cap} was used up by "
            "earlier stages")
