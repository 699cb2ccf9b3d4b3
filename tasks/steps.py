"""Prefect tasks: thin wrappers over ``pfd.steps`` adding retries, caching and visibility.

Two layers make a rerun cheap.  The store is the first: each step returns its stored
record when present, so even a run with no Prefect server resumes.  Prefect's cache is
the second: ``INPUTS + TASK_SOURCE`` with persisted results, so a *new flow run* of the
same config shows finished tasks as Cached and skips them (Prefect's default key
includes the flow run id and would recompute).  The inputs include the run context's
``generation``, a token the store issues once per run, so wiping the store invalidates
every cached result that points into it.  Set ``PREFECT_TASKS_REFRESH_CACHE=true`` to
ignore the cache for a rerun.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from pfd import retention, steps
from pfd.config import ConfigError, MDGroup, StageSpec
from pfd.label.registry import LabellerConfigError
from pfd.run_lease import RunBusy
from pfd.run_store import RunContext
from pfd.steps import LabellingStopped
from pfd.store import IntegrityError
from tasks.cluster import dask_map, dft_map, reporting_progress

# Failures a retry cannot fix, by cause. Everything else raised while fetching, loading
# or running on a worker (a model copy another worker was publishing, a store or network
# hiccup, a lost worker, an engine crash) is retried: a ValueError or FileNotFoundError
# from deep inside a library says nothing about whether the next attempt fails too.
FINAL_ERRORS: dict[type[BaseException], str] = {
    ConfigError: "bad input (a config field, file or engine setting)",
    LabellerConfigError: "bad input (the labeller's settings)",
    LabellingStopped: "labelling over its failure limit (every failure is recorded)",
    IntegrityError: "data integrity (a stored object fails its checksum)",
    RunBusy: "another flow holds the run",
    retention.RetentionExceeded: "a fine-tuned model past the forgetting check's bounds",
}


def classify_failure(exc: BaseException) -> tuple[bool, str]:
    """(retry?, why) for an exception a task raised."""
    for cls, why in FINAL_ERRORS.items():
        if isinstance(exc, cls):
            return False, why
    return True, f"transient until proven otherwise ({type(exc).__name__})"


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry only what :func:`classify_failure` calls transient."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified, not handled
        retry, why = classify_failure(exc)
        try:
            log: Any = get_run_logger()
        except Exception:  # noqa: BLE001 - no run context here: the module logger
            log = logging.getLogger(__name__)
        log.warning("%s failed (%s: %s): %s", task.name, type(exc).__name__, exc,
                    "retrying" if retry else f"not retried, {why}")
        return retry
    return False


CACHE_POLICY = INPUTS + TASK_SOURCE

#: the options of every PFD task (``@task(name=..., **TASK_OPTIONS)``)
TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": CACHE_POLICY, "persist_result": True, "retries": 2,
    "retry_delay_seconds": [5, 30], "retry_condition_fn": _retry_transient}


def artifact_key(ctx: RunContext, what: str) -> str:
    """The key of the run's Prefect artifact ``what`` (progress, iterations, report, ...)."""
    # Prefect artifact keys: lowercase letters, digits and dashes only
    safe = "".join(c if c.isalnum() else "-" for c in ctx.run_id.lower())
    return f"pfd-{safe}-{what}"[:100]


@contextmanager
def _phase_progress(ctx: RunContext, phase: str, what: str) -> Iterator[None]:
    """A progress artifact for one fan-out phase (trajectories run, frames labelled)."""
    art = create_progress_artifact(progress=0.0, key=artifact_key(ctx, phase),
                                   description=f"{what} done (%)")
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 2.0:  # keep the API calls few
            last[0] = now
            update_progress_artifact(art, progress=100.0 * done / max(total, 1))

    with reporting_progress(report):
        yield
    # Nothing left to run (all in the store) or finished: the phase is complete.
    update_progress_artifact(art, progress=100.0)


@task(name="init-dataset", **TASK_OPTIONS)
def init_dataset(ctx: RunContext) -> dict[str, Any]:
    with _phase_progress(ctx, "label-progress", "initial DFT frames"):
        return steps.init_dataset(ctx, dft_map)


@contextmanager
def _training_progress(ctx: RunContext, phase: str, total_steps: int | None
                       ) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress artifact fed by the trainer's learning-curve rows (step, losses).

    It reads 100 % once the training returns, also when it stopped early or found its
    model already trained, so a finished phase never shows as stuck part-way.
    """
    art = create_progress_artifact(progress=0.0, key=artifact_key(ctx, phase),
                                   description=f"{phase.replace('-', ' ')}: steps done (%)")
    log = get_run_logger()

    def report(row: dict[str, Any]) -> None:
        step = int(row.get("step", 0))
        if total_steps:
            update_progress_artifact(art, progress=min(100.0, 100.0 * step / total_steps))
        log.info("%s step %d: %s", phase, step, ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k != "step" and isinstance(v, float)))

    yield report
    update_progress_artifact(art, progress=100.0)


@task(name="finetune", **TASK_OPTIONS)
def finetune(ctx: RunContext, dataset_keys: list[str],
             previous: str | None = None) -> dict[str, Any]:
    spec = ctx.cfg.finetune
    # deepmd reports steps, sevennet epochs (an early stop jumps to 100 % at the end)
    total = spec.steps if spec.backend == "deepmd" else spec.epochs
    with _training_progress(ctx, "finetune-progress", total) as progress:
        return steps.finetune_model(ctx, dataset_keys, progress=progress, previous=previous)


@task(name="check-retention", **TASK_OPTIONS)
def check_retention(ctx: RunContext, model_key: str, out_key: str) -> dict[str, Any]:
    return retention.check_model(ctx, model_key, out_key)


@task(name="explore", **TASK_OPTIONS)
def explore(ctx: RunContext, model_key: str, groups: list[MDGroup],
            out_prefix: str) -> dict[str, Any]:
    with _phase_progress(ctx, "explore-progress", f"MD trajectories of {out_prefix}"):
        return steps.explore(ctx, model_key, groups, out_prefix, dask_map)


@task(name="filter-select", **TASK_OPTIONS)
def filter_select(ctx: RunContext, explored_keys: list[str], reference_keys: list[str],
                  stage: StageSpec, out_prefix: str) -> dict[str, Any]:
    return steps.filter_and_select(ctx, explored_keys, reference_keys, stage, out_prefix)


@task(name="label", **TASK_OPTIONS)
def label(ctx: RunContext, frames_key: str, out_prefix: str) -> dict[str, Any]:
    with _phase_progress(ctx, "label-progress", f"DFT frames of {out_prefix}"):
        return steps.label_set(ctx, frames_key, out_prefix, dft_map)


@task(name="check-targets", **TASK_OPTIONS)
def check_targets(ctx: RunContext, model_key: str, targets: dict[str, Any],
                  prefix: str) -> dict[str, Any]:
    """M_i's targeted properties against DFT (label cache; DFT fanned out like labels)."""
    from pfd.validate.targets import check_model

    log = get_run_logger()
    return check_model(ctx, model_key, targets, prefix, dft_map, log=log.warning)


@task(name="label-targets", **TASK_OPTIONS)
def label_targets(ctx: RunContext, missed: list[str], out_prefix: str,
                  seed: int) -> dict[str, Any]:
    with _phase_progress(ctx, "label-progress", f"DFT frames of {out_prefix}"):
        from pfd.validate.targets import label_target_frames

        return label_target_frames(ctx, missed, out_prefix, seed, dft_map)


@task(name="test-model", **TASK_OPTIONS)
def test_model(ctx: RunContext, model_key: str, data_keys: list[str],
               out_key: str) -> dict[str, Any]:
    return steps.test_model(ctx, model_key, data_keys, out_key)


@task(name="synthetic-dataset", **TASK_OPTIONS)
def synthetic(ctx: RunContext, explored_keys: list[str], teacher_key: str) -> dict[str, Any]:
    from pfd.distill.data import build_synthetic

    return build_synthetic(ctx, explored_keys, teacher_key, dask_map)


@task(name="train-student", **TASK_OPTIONS)
def train_student(ctx: RunContext, round_idx: int, train_keys: list[str], valid_key: str,
                  init_from: str | None = None, steps: int | None = None) -> dict[str, Any]:
    from pfd.distill.student import train_round

    total = steps or (ctx.cfg.distill.student.steps if ctx.cfg.distill else None)
    # one progress artifact for every round (each round starts it again at 0 %)
    with _training_progress(ctx, "student-progress", total) as progress:
        return train_round(ctx, round_idx, train_keys, valid_key, init_from, steps,
                           progress=progress)


@task(name="student-round", **TASK_OPTIONS)
def student_round(ctx: RunContext, round_idx: int, student_key: str, teacher_key: str,
                  bound_eV_A: float) -> dict[str, Any]:
    """The student's own MD, judged by the teacher (see :mod:`pfd.distill.refine`)."""
    from pfd.distill.refine import measure_round

    with _phase_progress(ctx, "explore-progress", f"student MD of round {round_idx}"):
        return measure_round(ctx, round_idx, student_key, teacher_key, bound_eV_A, dask_map)


@task(name="student-audit", **TASK_OPTIONS)
def student_audit(ctx: RunContext, student_key: str, teacher_key: str,
                  explored_keys: list[str]) -> dict[str, Any]:
    from pfd.distill.audit import audit

    with _phase_progress(ctx, "label-progress", "DFT audit of the student"):
        return audit(ctx, student_key, teacher_key, explored_keys, dft_map)
