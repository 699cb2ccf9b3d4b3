"""Benchmark: DFT labelling throughput, frames per hour, per engine and Dask worker count.

    python benchmarks/label_throughput.py              # 8-atom Si, QE and CP2K
    python benchmarks/label_throughput.py --with-64    # also 64-atom Si (an hour or more here)
    python benchmarks/label_throughput.py --quick      # 8-atom, cheap settings (CI)

Frames go through the real path (``label_frames`` -> Dask ``LocalCluster`` -> labeller under
custodian -> label cache in a fresh store), with 1 and 2 workers. Two overhead figures:
``outside_engine_share`` = 1 - (sum of the engines' own reported wall times) / (workers x
wall): everything that is not DFT, including Dask, custodian, input/output and idle
workers; ``per_frame_overhead_s`` = labeller wall time minus engine wall time per frame.
Writes ``benchmarks/results/label_throughput[_quick].json`` and a section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, update_markdown, utc_now, write_result  # noqa: E402

# the defaults, spelled out; validated by the QE-vs-CP2K test (forces within 0.1 eV/Å,
# stress within 1 GPa on a distorted 8-atom cell)
FULL = {"qe": {"ecutwfc_Ry": 30.0, "kspacing_invA": 0.4},
        "cp2k": {"basis_set": "DZVP-MOLOPT-SR-GTH", "cutoff_Ry": 400.0, "kspacing_invA": 0.4}}
# cheap settings for --quick: throughput plumbing only, not converged physics
QUICK = {"qe": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}, "ecutwfc_Ry": 16.0,
                "kspacing_invA": 0.7, "conv_thr_Ry": 1e-6},
         "cp2k": {"basis_set": "SZV-MOLOPT-SR-GTH", "cutoff_Ry": 120.0, "kspacing_invA": 5.0,
                  "eps_default": 1e-10}}


def si_frames(n_atoms: int, n: int) -> list[Any]:
    """Distinct distorted diamond-Si cells (rattled and strained), so nothing is cached."""
    import numpy as np
    from ase.build import bulk

    reps = round((n_atoms / 8) ** (1 / 3))
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    out = []
    for i in range(n):
        a = base.copy()
        a.rattle(0.05, seed=100 + i)
        strain = np.eye(3) + 0.01 * np.random.default_rng(i).uniform(-1, 1, (3, 3))
        a.set_cell(a.cell.array @ strain, scale_atoms=True)
        out.append(a)
    return out


def engine_seconds(workdir: Path) -> float | None:
    """The engine's own wall time from its output (QE: PWSCF WALL; CP2K: timing table)."""
    cp2k_total = r"^ CP2K\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)"
    for name, pattern in (("pw.out", r"PWSCF\s+:.*?([\d.]+)s WALL"), ("cp2k.out", cp2k_total)):
        p = workdir / name
        if p.is_file():
            m = re.findall(pattern, p.read_text(errors="replace"), flags=re.MULTILINE)
            if m:
                return float(m[-1])
    return None


def make_labeller(engine: str, overrides: dict[str, Any]) -> Any:
    from pfd.config import CP2KSpec, QESpec
    from pfd.label.cp2k import CP2KLabeller
    from pfd.label.qe import QELabeller

    if engine == "qe":
        return QELabeller(QESpec(**overrides), elements=("Si",))
    return CP2KLabeller(CP2KSpec(**overrides), elements=("Si",))


def run_case(engine: str, overrides: dict[str, Any], frames: list[Any], workers: int,
             work: Path) -> dict[str, Any]:
    from pfd.config import ClusterSpec
    from pfd.label.cache import label_frames
    from pfd.store import LocalStore
    from tasks.cluster import dask_cluster, dask_map

    tag = f"{engine}-{len(frames[0])}-{workers}w"
    store, scratch = LocalStore(work / tag / "store"), work / tag / "scratch"
    lab = make_labeller(engine, overrides)
    with dask_cluster(ClusterSpec(n_workers=workers, threads_per_worker=1)) as client:
        client.wait_for_workers(workers)  # workers up before the clock starts
        t0 = time.perf_counter()
        res = label_frames(lab, frames, store.url, map_fn=dask_map, scratch=str(scratch),
                           keep_scratch=True)
        wall = time.perf_counter() - t0
    engine_s = [s for d in scratch.rglob("*") if d.is_dir() for s in [engine_seconds(d)]
                if s is not None]
    label_s = [float(a.info["label_wall_s"]) for a in res.labelled]
    n_ok = len(res.labelled)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "engine": engine, "atoms": len(frames[0]), "workers": workers, "frames": len(frames),
        "labelled": n_ok, "failed": [f.reason for f in res.failed],
        "wall_s": round(wall, 1),
        "frames_per_hour": round(n_ok / wall * 3600, 1) if wall > 0 else None,
        "engine_s_per_frame": round(sum(engine_s) / len(engine_s), 2) if engine_s else None,
        "label_s_per_frame": round(sum(label_s) / len(label_s), 2) if label_s else None,
        "per_frame_overhead_s": round((sum(label_s) - sum(engine_s)) / n_ok, 2)
        if n_ok and engine_s else None,
        "outside_engine_share": round(1 - sum(engine_s) / (workers * wall), 3)
        if engine_s and wall > 0 else None,
    }


def markdown(result: dict[str, Any]) -> str:
    quick = result["benchmark"].endswith("quick")
    lines = [f"## DFT labelling throughput{' — quick (cheap settings)' if quick else ''}", "",
             f"Command: `{result['command']}` · machine: {result['machine']} · "
             f"date: {result['date']} · load average before/after: "
             f"{result['load_before']} / {result['load_after']}", "",
             "| engine | atoms | Dask workers | frames | wall s | frames/hour | engine s/frame "
             "| label s/frame | outside-engine share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["cases"]:
        share = r["outside_engine_share"]
        lines.append(f"| {r['engine']} | {r['atoms']} | {r['workers']} | {r['labelled']}/"
                     f"{r['frames']} | {r['wall_s']} | {r['frames_per_hour']} | "
                     f"{r['engine_s_per_frame']} | {r['label_s_per_frame']} | "
                     f"{'' if share is None else f'{share:.0%}'} |")
    lines += ["", "Settings: " + "; ".join(f"{k}: {json.dumps(v)}"
                                           for k, v in result["settings"].items()) + ".",
              "Each engine process runs with 1 thread; frames fan out over a Dask LocalCluster "
              "(`tasks.cluster.dask_cluster`) through `label_frames` into a fresh label cache. "
              "Engine s/frame is the engine's own wall time (QE `PWSCF ... WALL`, CP2K timing "
              "table); label s/frame adds input writing, custodian and parsing; the "
              "outside-engine share is 1 − Σ engine time / (workers × wall), so it also counts "
              "Dask scheduling and workers idle at the end of a batch."]
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines)


def _flags(argv: list[str]) -> list[str]:
    """The command line without ``--note`` texts (they are in the report already)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="8-atom, cheap settings, 2 frames")
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/*.json and docs/benchmarks.md go")
    ap.add_argument("--engines", default="qe,cp2k")
    ap.add_argument("--frames", type=int, default=None, help="frames per case")
    ap.add_argument("--frames-64", type=int, default=2, help="frames per 64-atom case")
    ap.add_argument("--with-64", action="store_true",
                    help="also 64-atom cells (2x2x2 k-points): minutes per frame")
    ap.add_argument("--note", action="append", default=[], help="a line for the report")
    args = ap.parse_args()
    name = "label_throughput_quick" if args.quick else "label_throughput"
    settings = QUICK if args.quick else FULL
    engines = [e for e in args.engines.split(",") if e]
    sizes = [(8, args.frames or (2 if args.quick else 6))]
    if args.with_64 and not args.quick:
        sizes.append((64, args.frames_64))
    load_before = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="pfd-label-bench-"))
    cases = []
    try:
        for n_atoms, n in sizes:
            frames = si_frames(n_atoms, n)
            for engine in engines:
                for workers in (1, 2):
                    case = run_case(engine, settings[engine], frames, workers, work)
                    print(case, flush=True)
                    cases.append(case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = list(args.note)
    result = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/label_throughput.py", *_flags(sys.argv[1:])]),
        "machine": machine(), "date": utc_now(), "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "settings": {e: settings[e] for e in engines}, "cases": cases, "notes": notes,
    }
    write_result(args.out_dir, name, result)
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
