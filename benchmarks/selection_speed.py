"""Benchmark: entropy selection of 50 of 2,000 candidate 64-atom frames against 500 labelled.

    python benchmarks/selection_speed.py            # the issue's case (target: < 60 s)
    python benchmarks/selection_speed.py --quick    # tiny sizes (what CI runs)

The frames are 64-atom diamond Si cells, each under a random symmetric strain (up to 3 %)
and a Gaussian rattle; the candidates are rattled up to twice as hard as the labelled
set, as MD at a higher temperature would be. Both precisions of
``pfd.select.entropy.entropy_select`` are timed (descriptors, the one-off pass over the
labelled set, the greedy picks) and their picks compared; quests' own ``kernel_sum`` is
timed on a slice of the candidates and extrapolated, to show what the tiled matmul buys.
Writes ``benchmarks/results/selection_speed[_quick].json`` and a section of
``docs/benchmarks.md``. The load average is recorded: on shared cores, timings taken
while others run are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (imported before any timing starts)
from ase import Atoms
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd.config import SelectSpec  # noqa: E402
from pfd.select.entropy import descriptors, entropy_select  # noqa: E402

TARGET_S = 60.0


def si_frames(n: int, seed: int, max_rattle_A: float) -> list[Atoms]:
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = base.copy()
        eps = rng.uniform(-0.03, 0.03, (3, 3))
        a.set_cell(a.cell.array @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
        a.positions += rng.normal(0.0, rng.uniform(0.02, max_rattle_A), a.positions.shape)
        a.wrap()
        out.append(a)
    return out


def quests_pair_ns(cands: list[Atoms], ref: list[Atoms], rows: int, h: float) -> float:
    """ns per (candidate atom, reference atom) pair of quests.entropy.kernel_sum."""
    from quests.entropy import kernel_sum

    y, x = descriptors(cands), descriptors(ref)
    y = y[:rows]
    kernel_sum(y[:8], x[:8], h=h)  # numba compile / cache load
    t = time.perf_counter()
    kernel_sum(y, x, h=h)
    return (time.perf_counter() - t) / (len(y) * len(x)) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--reference", type=int, default=500)
    ap.add_argument("--select", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for kernel sums")
    ap.add_argument("--quests-rows", type=int, default=4000,
                    help="candidate atoms timed with quests' kernel_sum (0: skip)")
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/*.json and docs/benchmarks.md go "
                         "(default: the repository)")
    args = ap.parse_args()
    if args.quick:
        args.candidates, args.reference, args.select, args.quests_rows = 60, 15, 5, 500
    name = "selection_speed_quick" if args.quick else "selection_speed"
    load_before = os.getloadavg()

    t = time.perf_counter()
    ref = si_frames(args.reference, seed=1, max_rattle_A=0.10)
    cands = si_frames(args.candidates, seed=2, max_rattle_A=0.20)
    build_s = time.perf_counter() - t
    descriptors(cands[:2])  # load numba's cached compilation outside the timings

    runs: dict[str, dict[str, float]] = {}
    picks: dict[str, list[int]] = {}
    for precision in ("float32", "float64"):
        spec = SelectSpec(n_frames=args.select, precision=precision)
        t = time.perf_counter()
        sel = entropy_select(cands, ref, args.select, spec, threads=args.threads)
        total = time.perf_counter() - t
        runs[precision] = {**{k: round(v, 2) for k, v in sel.timings_s.items()},
                           "total": round(total, 2)}
        picks[precision] = sel.indices
        print(precision, runs[precision], flush=True)

    n_pairs = args.candidates * 64 * args.reference * 64
    quests = None
    if args.quests_rows > 0:
        ns = quests_pair_ns(cands, ref, args.quests_rows, SelectSpec().bandwidth)
        quests = {"ns_per_pair": round(ns, 2), "timed_rows": args.quests_rows,
                  "extrapolated_reference_pass_s": round(ns * n_pairs * 1e-9, 1)}
    same_set = len(set(picks["float32"]) & set(picks["float64"])) / max(1, args.select)
    result = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/selection_speed.py"] + sys.argv[1:]),
        "machine": machine(),
        "date": utc_now(),
        "load_average_1_5_15_before": [round(v, 2) for v in load_before],
        "load_average_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        "candidates": args.candidates, "reference": args.reference,
        "atoms_per_frame": 64, "selected": args.select, "torch_threads": args.threads,
        "kernel_pairs": n_pairs,
        "wall_s": runs,
        "frame_build_s": round(build_s, 2),
        "float32_vs_float64_same_picks": round(same_set, 3),
        "float32_vs_float64_same_order": picks["float32"] == picks["float64"],
        "quests_kernel_sum": quests,
        "target_s": TARGET_S,
        "meets_target": runs["float32"]["total"] < TARGET_S,
    }
    write_result(args.out_dir, name, result)

    f32, f64 = runs["float32"], runs["float64"]
    body = [f"## Entropy selection speed{' — quick' if args.quick else ''}", "",
            f"Command: `{result['command']}` · machine: {result['machine']} · "
            f"date: {result['date']} · load average before/after: "
            f"{result['load_average_1_5_15_before'][0]} / "
            f"{result['load_average_1_5_15_after'][0]} (other jobs share these cores, so "
            "the timings are pessimistic)", "",
            f"Select {args.select} of {args.candidates} candidate 64-atom Si frames against "
            f"{args.reference} labelled ones ({n_pairs:.2e} kernel pairs), "
            f"{args.threads} torch thread(s), one numba thread.", "",
            "| precision | descriptors s | labelled-set pass s | greedy s | total s |",
            "|---|---|---|---|---|",
            f"| float32 (default) | {f32['descriptors']} | {f32['reference']} | "
            f"{f32['greedy']} | **{f32['total']}** |",
            f"| float64 (exact) | {f64['descriptors']} | {f64['reference']} | "
            f"{f64['greedy']} | {f64['total']} |", "",
            f"Target < {TARGET_S:.0f} s: **{'met' if result['meets_target'] else 'missed'}**. "
            f"float32 and float64 picked the same frames: {same_set:.0%} "
            f"(same order: {result['float32_vs_float64_same_order']})."]
    if quests:
        body += ["", f"quests' `kernel_sum` (numba, float64) timed on {quests['timed_rows']} "
                 f"candidate atoms: {quests['ns_per_pair']} ns per pair, so the labelled-set "
                 f"pass alone would take ~{quests['extrapolated_reference_pass_s']} s "
                 "(extrapolated)."]
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(body))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
