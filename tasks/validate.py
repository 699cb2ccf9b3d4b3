"""The validation step as a Prefect task: ``pfd.validate`` plus a markdown artifact.

DFT points of the validation fan out over the run's Dask cluster (they go through the
label cache, so a rerun pays for none twice); stored per-property results make a rerun
of a finished validation nearly free.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pfd.report import markdown_table
from pfd.run_store import RunContext
from pfd.validate.run import validate_run
from tasks.cluster import dask_map
from tasks.steps import TASK_OPTIONS, artifact_key


def artifact_markdown(ctx: RunContext, record: dict[str, Any]) -> str:
    store = ctx.store
    lines = [f"# Validation of `{ctx.run_id}`", "",
             markdown_table(record["summary"]["header"], record["summary"]["rows"]), "",
             f"Full report (images inline): `{store.uri(record['html'])}`", "", "Plots:", ""]
    lines += [f"- [{name}]({store.uri(key)})" for name, key in record["plots"].items()]
    for key, err in record["errors"].items():
        lines.append(f"\n**failed** `{key}`: {err.splitlines()[0]}")
    return "\n".join(lines)


@task(name="validate", **TASK_OPTIONS)
def validate(ctx: RunContext) -> dict[str, Any]:
    log = get_run_logger()
    record = validate_run(ctx, dask_map, log=log.warning)
    create_markdown_artifact(markdown=artifact_markdown(ctx, record),
                             key=artifact_key(ctx, "validation"),
                             description=f"PFD validation of run {ctx.run_id}")
    return {k: v for k, v in record.items() if k != "markdown"}
