"""P4: orchestration overhead of the e2e demo, and exploration speed-up on 2 Dask workers.

    python benchmarks/p4_overhead.py            # 4 × 64-atom Si trajectories, SevenNet-0
    python benchmarks/p4_overhead.py --quick    # 2 × 8-atom, few steps (what CI runs)

Targets (issue 6): orchestration < 5 % of the demo's wall time; exploration ≥ 1.8×
faster on 2 workers than on 1.  The overhead share is read from the e2e demo's result
(``benchmarks/e2e_demo.py`` measures it from that run's own Prefect task times and item
timings, see ``benchmarks/_overhead.py``); the speed-up is measured here by running the
same exploration step (``pfd.steps.explore``: SevenNet-0 MD streamed to the store) on a
Dask LocalCluster of 1 and of 2 single-threaded workers, each in a fresh store so
nothing is reused.  Writes ``benchmarks/results/p4_overhead[_quick].json`` and a section
of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))


def _config(quick: bool, store: Path) -> dict[str, Any]:
    cell = [1, 1, 1] if quick else [2, 2, 2]
    return {
        "run_id": "p4", "store": str(store),
        "structures": {"diamond": {"build": {"element": "Si", "crystal": "diamond",
                                             "a_A": 5.43, "supercell": cell}}},
        "init": {"structures": ["diamond"]},
        "labeller": {"qe": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}},
        "stages": [{"name": "s", "groups": [{"structures": ["diamond"],
                                             "temperatures_K": [300, 600, 900, 1200][
                                                 :2 if quick else 4],
                                             "steps": 20 if quick else 60,
                                             "sample_every": 10}]}],
    }


def explore_wall(workers: int, quick: bool, tmp: Path) -> dict[str, Any]:
    from pfd import run_store, steps
    from pfd.config import ClusterSpec, parse_config
    from pfd.model_cache import upload_model
    from pfd.models.sevennet import save_foundation
    from tasks.cluster import dask_cluster, dask_map

    store = tmp / f"store-{workers}w"
    cfg = parse_config(_config(quick, store))
    ctx = run_store.make_context(cfg, str(store), tmp / f"work-{workers}w")
    upload_model(ctx.store, "models/m0", save_foundation(tmp / "m0",
                                                               type_map=["Si"]))
    with dask_cluster(ClusterSpec(n_workers=workers, threads_per_worker=1)):
        t0 = time.perf_counter()
        rec = steps.explore(ctx, "models/m0", list(cfg.stages[0].groups), "explore",
                            dask_map)
        wall = time.perf_counter() - t0
    traj = [ctx.store.get_json(k) for k in ctx.store.list("explore/")
            if k.endswith(".json")]
    return {"wall_s": round(wall, 2), "trajectories": rec["trajectories"],
            "frames": rec["frames"], "md_s_per_trajectory": [t["wall_s"] for t in traj]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    from pfd.threads import pin_threads

    pin_threads(1, override=False)
    tmp = Path(tempfile.mkdtemp(prefix="pfd-p4-"))
    runs = {w: explore_wall(w, args.quick, tmp) for w in (1, 2)}
    speedup = runs[1]["wall_s"] / runs[2]["wall_s"]
    e2e_name = "e2e_demo_quick" if args.quick else "e2e_demo"
    e2e_path = args.out_dir / "benchmarks" / "results" / f"{e2e_name}.json"
    if not e2e_path.is_file():
        e2e_path = ROOT / "benchmarks" / "results" / f"{e2e_name}.json"
    orch = (json.loads(e2e_path.read_text()).get("orchestration")
            if e2e_path.is_file() else None)
    name = "p4_overhead" + ("_quick" if args.quick else "")
    command = "python benchmarks/p4_overhead.py" + (" --quick" if args.quick else "")
    result = {"machine": machine(), "date": utc_now(), "command": command,
              "load_avg_1min": os.getloadavg()[0],
              "overhead_share": orch["overhead_share"] if orch else None,
              "overhead_source": str(e2e_path.relative_to(e2e_path.parents[2]))
              if orch else "no e2e demo result with an orchestration section yet",
              "orchestration": orch,
              "dask_speedup_2w": round(speedup, 3), "explore": runs,
              "targets": {"overhead_share_max": 0.05, "dask_speedup_2w_min": 1.8}}
    write_result(args.out_dir, name, result)
    ov = (f"{100 * orch['overhead_share']:.1f} % ({orch['overhead_s']} s of "
          f"{orch['wall_s']} s)" if orch else "not measured yet")
    lines = [f"## P4 — orchestration overhead and Dask speed-up{' (quick)' if args.quick else ''}",
             "", f"`{command}` on {result['machine']}, {result['date']} "
             f"(load {result['load_avg_1min']:.1f}).", "",
             "| figure | value | target |", "|---|---|---|",
             f"| orchestration share of the e2e demo ({result['overhead_source']}) | {ov} "
             "| < 5 % |",
             f"| exploration, 1 worker | {runs[1]['wall_s']} s | |",
             f"| exploration, 2 workers | {runs[2]['wall_s']} s | |",
             f"| speed-up 2 vs 1 worker | **{speedup:.3f}×** | ≥ 1.8× |", "",
             "Verdict: overhead " + ("met" if orch and orch["overhead_share"] < 0.05
                                     else "missed" if orch else "not measured")
             + "; speed-up " + ("met" if speedup >= 1.8 else "missed") + ". The overhead is an "
             "upper bound (item imbalance left by the scheduler counts as overhead).", "",
             f"Exploration: {runs[1]['trajectories']} SevenNet-0 trajectories "
             f"({runs[1]['frames']} frames kept) through `pfd.steps.explore` on a Dask "
             "LocalCluster, 1 thread per worker; the wall time includes loading the model "
             "in each worker and streaming frames to the store."]
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(lines))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
