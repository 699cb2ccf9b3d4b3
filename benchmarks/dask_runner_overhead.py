"""Benchmark: Prefect's DaskTaskRunner vs a Dask client inside one task, for PFD fan-outs.

    python benchmarks/dask_runner_overhead.py            # 64 items
    python benchmarks/dask_runner_overhead.py --quick    # 8 items (what CI runs)

PFD fans out trajectories and DFT frames (tens to thousands per iteration). Two ways to
put them on Dask: (a) every item a Prefect task on a ``DaskTaskRunner`` — each is a
task run the UI shows, with its own state round-trips to the API; (b) one Prefect task
that maps plain functions over a ``dask.distributed`` client (what ``tasks/cluster.py``
does).  Each item is a fixed 0.25 s of CPU-free work (a sleep), so what is measured is
orchestration, not contention for the 2 cores; plain Dask with no Prefect is the
baseline.  Cluster start-up is timed separately and excluded from the per-item figure.
Writes ``benchmarks/results/dask_runner_overhead[_quick].json`` and a section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

ITEM_S = 0.25
WORKERS = 2


def work(i: int) -> int:
    time.sleep(ITEM_S)
    return i


def _cluster() -> Any:
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.WARNING)


def bare_dask(n: int) -> dict[str, float]:
    from dask.distributed import Client

    t0 = time.perf_counter()
    with _cluster() as cluster, Client(cluster) as client:
        t1 = time.perf_counter()
        assert client.gather(client.map(work, range(n), pure=False)) == list(range(n))
        t2 = time.perf_counter()
    return {"startup_s": t1 - t0, "map_s": t2 - t1}


def client_in_task(n: int) -> dict[str, float]:
    from dask.distributed import Client
    from prefect import flow, task

    marks: dict[str, float] = {}

    @task
    def fan_out(items: list[int]) -> list[int]:
        t0 = time.perf_counter()
        with _cluster() as cluster, Client(cluster) as client:
            marks["startup_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            out = client.gather(client.map(work, items, pure=False))
            marks["map_s"] = time.perf_counter() - t1
        return out

    @flow
    def pfd_like() -> list[int]:
        return fan_out(list(range(n)))

    t0 = time.perf_counter()
    assert pfd_like() == list(range(n))
    marks["flow_s"] = time.perf_counter() - t0
    return marks


def dask_task_runner(n: int) -> dict[str, float]:
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    @task
    def item(i: int) -> int:
        return work(i)

    marks: dict[str, float] = {}

    @flow(task_runner=DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": WORKERS, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None, "silence_logs": logging.WARNING}))
    def pfd_like() -> list[int]:
        t1 = time.perf_counter()
        futures = item.map(range(n))
        out = [f.result() for f in futures]
        marks["map_s"] = time.perf_counter() - t1
        return out

    t0 = time.perf_counter()
    assert pfd_like() == list(range(n))
    marks["flow_s"] = time.perf_counter() - t0
    marks["startup_s"] = marks["flow_s"] - marks["map_s"]  # cluster + flow set-up
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    n = 8 if args.quick else 64
    ideal = n * ITEM_S / WORKERS
    rows = {}
    # A real server, as in production: without one, every Dask worker process that runs
    # a Prefect task would start its own ephemeral API.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        for name, fn in (("plain Dask (no Prefect)", bare_dask),
                         ("client inside one Prefect task (pfd)", client_in_task),
                         ("Prefect DaskTaskRunner, one task per item", dask_task_runner)):
            m = fn(n)
            m["overhead_per_item_ms"] = 1000 * (m["map_s"] - ideal) / n
            rows[name] = {k: round(v, 3) for k, v in m.items()}
            print(name, rows[name], flush=True)
    finally:
        server.stop()
    runner = rows["Prefect DaskTaskRunner, one task per item"]["overhead_per_item_ms"]
    client = rows["client inside one Prefect task (pfd)"]["overhead_per_item_ms"]
    name = "dask_runner_overhead" + ("_quick" if args.quick else "")
    command = "python benchmarks/dask_runner_overhead.py" + (" --quick" if args.quick else "")
    result = {"machine": machine(), "date": utc_now(), "command": command,
              "load_avg_1min": os.getloadavg()[0], "items": n, "item_s": ITEM_S,
              "workers": WORKERS, "ideal_map_s": ideal, "modes": rows,
              "task_runner_minus_client_ms_per_item": round(runner - client, 2)}
    write_result(args.out_dir, name, result)
    lines = [f"### Dask fan-out: DaskTaskRunner vs client in a task ({n} items)", "",
             f"`{command}` on {result['machine']}, {result['date']} (load "
             f"{result['load_avg_1min']:.1f}). {n} items × {ITEM_S} s sleep on {WORKERS} "
             f"workers (ideal {ideal:.1f} s).", "",
             "| mode | cluster + set-up s | fan-out s | overhead per item ms |",
             "|---|---|---|---|"]
    for mode, m in rows.items():
        lines.append(f"| {mode} | {m['startup_s']:.2f} | {m['map_s']:.2f} | "
                     f"{m['overhead_per_item_ms']:.1f} |")
    lines += ["", f"One Prefect task per item costs {runner - client:.1f} ms more per item "
              "than mapping plain functions inside one task. pfd keeps the client inside "
              "its tasks: per-item states would add API round-trips for thousands of DFT "
              "frames and MD trajectories and a UI too long to read, while the store "
              "already makes each item resumable."]
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(lines))


if __name__ == "__main__":
    main()
