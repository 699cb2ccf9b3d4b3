"""Where a finished run's wall time went: compute vs orchestration (Prefect, Dask, store).

Compute is what would remain with a perfect scheduler and free bookkeeping:
- fan-out tasks (initial labelling, exploration, DFT labelling): the makespan of their
  items (each DFT frame's ``label_wall_s``, each trajectory's ``wall_s``, both recorded
  by the items themselves) scheduled longest-first on the run's Dask workers;
- every other task (fine-tuning, selection, student training, testing, validation): the
  task's own run time as Prefect measured it.
Orchestration is the rest of the run's wall time: flow/task state handling, the Dask
cluster, store reads/writes, artifacts, interpreter start-up.  Item imbalance left by a
real scheduler counts as overhead here, so the share is an upper bound.
"""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pfd.store import LocalStore

FAN_OUT = ("init-dataset", "explore", "label")
SUBFLOWS = ("pfd-stage", "pfd-distill")

_TASK_TIMES = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    runs, offset = [], 0
    while True:  # the API serves at most 200 per call
        page = c.read_task_runs(limit=200, offset=offset)
        runs += page
        offset += len(page)
        if len(page) < 200:
            break
print(json.dumps([[r.name, r.total_run_time.total_seconds(),
                   r.state.name if r.state else None] for r in runs]))
"""


def task_times(env: dict[str, str]) -> list[tuple[str, float, str]]:
    """(task name, run seconds, state) of every task run in the Prefect database of env."""
    out = subprocess.run([sys.executable, "-c", _TASK_TIMES], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def makespan(durations: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule length on ``workers`` identical workers."""
    loads = [0.0] * max(workers, 1)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def _item_groups(store: LocalStore, rid: str) -> dict[str, list[float]]:
    """Item durations per fan-out call, keyed by the store prefix that call wrote."""
    groups: dict[str, list[float]] = {}
    for key in store.list(f"runs/{rid}/"):
        if key.endswith("labelled.extxyz"):
            frames = store.get_frames(key)
            groups[key] = [float(a.info.get("label_wall_s", 0.0)) for a in frames]
        elif "/explore/" in key and key.endswith(".json"):
            rec = store.get_json(key)
            if "wall_s" in rec:
                groups.setdefault(key.rsplit("/", 1)[0], []).append(float(rec["wall_s"]))
    return groups


def overhead(store: LocalStore, rid: str, wall_s: float, env: dict[str, str],
             workers: int) -> dict[str, Any]:
    tasks = task_times(env)
    per_task: dict[str, float] = {}
    for name, secs, _ in tasks:
        base = name.rsplit("-", 1)[0]
        if base in SUBFLOWS:  # a subflow's wrapper run: its tasks are counted themselves
            continue
        per_task[base] = per_task.get(base, 0.0) + secs
    groups = _item_groups(store, rid)
    fan_compute = sum(makespan(d, workers) for d in groups.values())
    serial = {k: v for k, v in per_task.items() if k not in FAN_OUT}
    fan_task_s = sum(v for k, v in per_task.items() if k in FAN_OUT)
    compute = fan_compute + sum(serial.values())
    return {
        "wall_s": round(wall_s, 1),
        "compute_s": round(compute, 1),
        "overhead_s": round(wall_s - compute, 1),
        "overhead_share": round((wall_s - compute) / wall_s, 4),
        "fan_out": {"task_s": round(fan_task_s, 1), "item_makespan_s": round(fan_compute, 1),
                    "calls": len(groups), "items": sum(len(d) for d in groups.values()),
                    "item_s_total": round(sum(sum(d) for d in groups.values()), 1)},
        "serial_tasks_s": {k: round(v, 1) for k, v in sorted(serial.items())},
        "outside_tasks_s": round(wall_s - sum(per_task.values()), 1),
        "task_runs": len(tasks),
        "workers": workers,
    }


def overhead_markdown(p4: dict[str, Any]) -> list[str]:
    f = p4["fan_out"]
    return [
        f"Orchestration share of the run's wall time: **{100 * p4['overhead_share']:.1f} %** "
        f"({p4['overhead_s']} s of {p4['wall_s']} s; compute {p4['compute_s']} s). Of it, "
        f"{p4['outside_tasks_s']} s lie outside any task (interpreter and Prefect start-up, "
        "subflow and artifact calls, the Dask cluster) and "
        f"{round(f['task_s'] - f['item_makespan_s'], 1)} s inside fan-out tasks beyond the "
        f"best schedule of their {f['items']} items ({f['item_s_total']} s of item time, "
        f"{f['item_makespan_s']} s makespan on {p4['workers']} workers).",
    ]


def main_path() -> Path:  # pragma: no cover - convenience for ad-hoc use
    return Path(__file__)
