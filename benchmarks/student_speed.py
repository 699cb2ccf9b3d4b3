"""Benchmark: student training speed against threads, batch size and network size.

    python benchmarks/student_speed.py             # the full grid (~5 min on 2 idle cores)
    python benchmarks/student_speed.py --quick     # one tiny point (CI)

Trains the demo's student settings (``examples/si/pfd.yaml`` ``distill.student``) for a
fixed number of steps on 8-atom Si frames of the committed P1/P3 data
(``tests/data/si_paper/train.extxyz``), once per grid point, on an otherwise idle machine;
steps/s is the wall time of ``dp train`` (data conversion, neighbour statistics and
freezing excluded: they are paid once per training). Results:
``benchmarks/results/student_speed[-quick].json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

DATA = ROOT / "tests/data/si_paper/train.extxyz"


def train_seconds(frames: list[Any], settings: Any, threads: int, work: Path) -> float:
    from pfd.models.deepmd import train_student

    model = train_student(frames, [], work, settings, threads=threads)
    return float(json.loads((model / "pfd_model.json").read_text())["train_seconds"])


def main() -> None:
    from pfd.config import StudentSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    demo = yaml.safe_load((ROOT / "examples/si/pfd.yaml").read_text())["distill"]["student"]
    frames = [a for a in read(DATA, index=":") if len(a) == 8][:200]
    steps = 20 if args.quick else args.steps
    grid: list[dict[str, Any]] = []
    nets = {"demo": {}, "wide": {"descriptor_neuron": [25, 50, 100],
                                 "fitting_neuron": [120, 120, 120]}}
    threads_list = [1] if args.quick else [1, 2]
    batches: list[int | str] = ["auto"] if args.quick else ["auto", 4]
    for net_name, net in (list(nets.items())[:1] if args.quick else nets.items()):
        for batch in batches:
            for threads in threads_list:
                s = StudentSpec(**(demo | net | {"steps": steps, "batch_size": batch,
                                                 "compress": False, "disp_freq": steps}))
                with tempfile.TemporaryDirectory() as tmp:
                    sec = train_seconds(frames, s, threads, Path(tmp))
                grid.append({"net": net_name, "batch_size": batch, "threads": threads,
                             "steps": steps, "train_s": round(sec, 2),
                             "steps_per_s": round(steps / sec, 1)})
                print(grid[-1], flush=True)
    res = {"machine": machine(), "date": utc_now(), "n_frames": len(frames),
           "command": "python benchmarks/student_speed.py " + " ".join(sys.argv[1:]),
           "grid": grid}
    name = "student_speed_quick" if args.quick else "student_speed"
    write_result(args.out_dir, name, res)
    lines = [f"## Student training speed (`{name}`)", "",
             f"`{res['command']}` · {res['machine']} · {res['date']} · {len(frames)} "
             "8-atom Si frames, the demo's student (se_e2_a, sel from the data), "
             f"{steps} steps of `dp --pt train` per point, nothing else running.", "",
             "| net | batch | threads | steps/s |", "|---|---|---|---|"]
    lines += [f"| {g['net']} | {g['batch_size']} | {g['threads']} | {g['steps_per_s']} |"
              for g in grid]
    update_markdown(args.out_dir / "docs/benchmarks.md", name, "\n".join(lines))


if __name__ == "__main__":
    main()
