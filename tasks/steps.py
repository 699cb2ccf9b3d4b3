"""Prefect tasks: thin wrappers over ``pfd.steps`` adding retries and visibility.

Resume is the store's job (each step returns its stored record when present), so the
tasks keep Prefect's caching off: a cache hit that points at a store someone wiped
would be worse than recomputing.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pfd import steps
from pfd.config import MDGroup, StageSpec
from pfd.steps import RunContext
from tasks.cluster import dask_map


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what might succeed next time: store/network hiccups, lost workers.

    Bad input (ValueError/KeyError/FileNotFoundError) and exhausted DFT are final.
    """
    try:
        state.result()
    except (ValueError, KeyError, FileNotFoundError, TypeError):
        return False
    except Exception:
        return True
    return False


_task = {"cache_policy": NO_CACHE, "retries": 2, "retry_delay_seconds": [5, 30],
         "retry_condition_fn": _retry_transient}


@task(name="init-dataset", **_task)
def init_dataset(ctx: RunContext) -> dict[str, Any]:
    return steps.init_dataset(ctx, dask_map)


@task(name="finetune", **_task)
def finetune(ctx: RunContext, dataset_keys: list[str]) -> dict[str, Any]:
    return steps.finetune_model(ctx, dataset_keys)


@task(name="explore", **_task)
def explore(ctx: RunContext, model_key: str, groups: list[MDGroup],
            out_prefix: str) -> dict[str, Any]:
    return steps.explore(ctx, model_key, groups, out_prefix, dask_map)


@task(name="filter-select", **_task)
def filter_select(ctx: RunContext, explored_keys: list[str], reference_keys: list[str],
                  stage: StageSpec, out_prefix: str) -> dict[str, Any]:
    return steps.filter_and_select(ctx, explored_keys, reference_keys, stage, out_prefix)


@task(name="label", **_task)
def label(ctx: RunContext, frames_key: str, out_prefix: str) -> dict[str, Any]:
    return steps.label_set(ctx, frames_key, out_prefix, dask_map)


@task(name="test-model", **_task)
def test_model(ctx: RunContext, model_key: str, data_keys: list[str],
               out_key: str) -> dict[str, Any]:
    return steps.test_model(ctx, model_key, data_keys, out_key)


@task(name="synthetic-dataset", **_task)
def synthetic(ctx: RunContext, explored_keys: list[str]) -> dict[str, Any]:
    return steps.build_synthetic(ctx, explored_keys)


@task(name="train-student", **_task)
def train_student(ctx: RunContext, synthetic_record: dict[str, Any]) -> dict[str, Any]:
    return steps.train_student(ctx, synthetic_record)
