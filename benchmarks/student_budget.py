"""Benchmark: what a student's training budget buys — steps, a plateau stop, frames.

    python benchmarks/student_budget.py            # the demo's student settings
    python benchmarks/student_budget.py --quick    # tiny (CI)

Data: the PFD paper's Si frames (P1's split: the student trains on the pool, is
validated on the small validation split and tested on the 103 held-out frames).
Teacher: SevenNet-0 with its per-element energy shift fitted on the pool (no fine-tune,
so this benchmark needs no P1 cache); it labels pool, validation and test frames once
(cached). Student: ``distill.student`` of ``examples/si/pfd.yaml`` (the demo's), trained
on teacher labels only, each arm in a process of its own on one thread:

- ``full-N``: the full learning-rate schedule of N steps (the demo trains 8000);
- ``stop-N``: ceiling N, ended where :class:`pfd.config.PlateauSpec` finds the curve
  flat (``anneal_fraction: 0``);
- ``plateau-N``: ceiling N with the default plateau rule: flat curve, then the
  learning rate decayed to ``stop_lr`` over 15 % of N from there;
- ``half-frames``: the demo's schedule on half the pool (what frames buy at equal steps).

Per arm: steps trained, wall seconds, F/E RMSE against the teacher on the held-out
frames (the distillation error) and against DFT, and student/teacher F RMSE vs DFT.
Writes ``benchmarks/results/student_budget[_quick].json`` and a section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402
from _si_data import SOURCE, load_average, load_split, pin_threads  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd import frames as fr  # noqa: E402
from pfd.config import PlateauSpec, StudentSpec  # noqa: E402

DEMO = ROOT / "examples/si/pfd.yaml"


def demo_student() -> StudentSpec:
    """The demo's student settings (its config is their one owner)."""
    return StudentSpec(**yaml.safe_load(DEMO.read_text())["distill"]["student"])


def label_with_teacher(split: Any, out: Path) -> dict[str, list[Any]]:
    """Pool, validation and test frames labelled by the teacher (cached in ``out``)."""
    from pfd.metrics import predict
    from pfd.models import sevennet

    parts = {"pool": split.pool, "valid": split.valid, "test": split.test}
    files = {k: out / f"{k}.extxyz" for k in parts}
    if all(f.is_file() for f in files.values()):
        return {k: fr.read_frames(f) for k, f in files.items()}
    out.mkdir(parents=True, exist_ok=True)
    calc = sevennet.foundation_calculator(threads=1)
    shift = sevennet.fit_energy_shift(split.take(split.pool), calc)
    teacher_dir = out / "teacher"
    sevennet.save_foundation(teacher_dir, energy_shift=shift)
    teacher = sevennet.load_calculator(teacher_dir, threads=1)
    labelled = {}
    for k, idx in parts.items():
        labelled[k] = predict(teacher, [a.copy() for a in split.take(idx)])
        fr.write_frames(files[k], labelled[k])
    return labelled


def train_arm(job: tuple[str, dict[str, Any], str, int]) -> dict[str, Any]:
    """Train one arm and test it (its own process: one core)."""
    from pfd.distill.student import training_summary
    from pfd.metrics import evaluate
    from pfd.models.deepmd import load_calculator, train_student

    name, settings, data_dir, n_pool = job
    pin_threads()
    s = StudentSpec(**settings)
    labelled = {k: fr.read_frames(Path(data_dir) / f"{k}.extxyz")
                for k in ("pool", "valid", "test")}
    dft_test = fr.read_frames(Path(data_dir) / "test_dft.extxyz")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = train_student(labelled["pool"][:n_pool], labelled["valid"], Path(tmp) / "s",
                              s, type_map=["Si"])
        wall = time.perf_counter() - t0
        meta = json.loads((model / "pfd_model.json").read_text())
        calc = load_calculator(model)
        vs_teacher, _ = evaluate(calc, labelled["test"])
        vs_dft, _ = evaluate(calc, dft_test)
    trained = training_summary(0, meta)  # the run record's own reading of the model
    return {"arm": name, "steps_ceiling": trained["steps_ceiling"],
            "steps_trained": trained["steps_trained"],
            "stopped_at_step": meta.get("stopped_at_step"),
            "stopped_early": trained["stopped_early"], "n_train": n_pool,
            "wall_s": round(wall, 1), "train_s": trained["train_seconds"],
            "vs_teacher_F_eV_A": vs_teacher.force_rmse_eV_A,
            "vs_teacher_E_meV_atom": vs_teacher.energy_rmse_meV_atom,
            "vs_dft_F_eV_A": vs_dft.force_rmse_eV_A,
            "vs_dft_E_meV_atom": vs_dft.energy_rmse_meV_atom}


def main() -> None:
    from pfd.metrics import compare

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny (CI)")
    ap.add_argument("--workers", type=int, default=2, help="arms trained at once")
    ap.add_argument("--arms", nargs="+", default=None,
                    help="subset of arm names (default: all)")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    name = "student_budget_quick" if args.quick else "student_budget"
    test_every, valid_every = (40, 100) if args.quick else (5, 40)
    t_start, load_before = time.perf_counter(), load_average()
    split = load_split(test_every, valid_every)
    if args.quick:  # a handful of small cells: the machinery, not the figure
        small = [i for i in split.order if len(split.frames[i]) <= 16][:12]
        split.pool, split.order = small, small
    data_dir = (args.out_dir / "benchmarks/.cache/student_budget" if not args.quick
                else Path(tempfile.mkdtemp()) / "student_budget")
    t = time.perf_counter()
    labelled = label_with_teacher(split, data_dir)
    label_s = time.perf_counter() - t
    dft_test = split.take(split.test)
    fr.write_frames(data_dir / "test_dft.extxyz", dft_test)
    teacher_vs_dft, _ = compare(dft_test, labelled["test"])

    base = demo_student()
    if args.quick:
        base = base.model_copy(update={"descriptor_neuron": [4, 8], "fitting_neuron": [16],
                                       "axis_neuron": 4, "steps": 60, "disp_freq": 5,
                                       "compress": False})
    n = base.steps
    plateau = PlateauSpec()
    if args.quick:  # windows of a few points over the tiny schedule
        plateau = PlateauSpec(min_fraction=0.2, window_fraction=0.2)
    stop = plateau.model_copy(update={"anneal_fraction": 0.0})
    arms: dict[str, tuple[dict[str, Any], int]] = {
        f"full-{n // 4}": ({"steps": n // 4}, len(split.pool)),
        f"full-{n}": ({}, len(split.pool)),
        f"stop-{n}": ({"plateau": stop}, len(split.pool)),
        f"stop-{2 * n}": ({"steps": 2 * n, "plateau": stop}, len(split.pool)),
        f"plateau-{n}": ({"plateau": plateau}, len(split.pool)),
        f"plateau-{2 * n}": ({"steps": 2 * n, "plateau": plateau}, len(split.pool)),
        "half-frames": ({}, len(split.pool) // 2),
    }
    # quick: a full schedule and a plateau stop are the machinery CI checks
    chosen = args.arms or ([f"full-{n}", f"plateau-{2 * n}"] if args.quick else list(arms))
    jobs = [(a, base.model_copy(update=arms[a][0]).model_dump(mode="json"), str(data_dir),
             arms[a][1]) for a in chosen]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(train_arm, jobs))
    t_f = teacher_vs_dft.force_rmse_eV_A
    for r in rows:
        r["student_over_teacher_F"] = round(r["vs_dft_F_eV_A"] / t_f, 3)
        r["date"] = utc_now()
        print(r, flush=True)
    earlier = args.out_dir / f"benchmarks/results/{name}.json"
    if args.arms and earlier.is_file():  # a subset rerun keeps the other arms' rows
        kept = [r for r in json.loads(earlier.read_text())["rows"] if r["arm"] not in chosen]
        rows = sorted(kept + rows, key=lambda r: list(arms).index(r["arm"])
                      if r["arm"] in arms else len(arms))
    res = {"benchmark": name, "machine": machine(), "date": utc_now(),
           "command": " ".join(["python", "benchmarks/student_budget.py", *sys.argv[1:]]),
           "load_average_1_5_15_before": load_before,
           "load_average_1_5_15_after": load_average(),
           "data": SOURCE, "split": split.describe(test_every, valid_every),
           "teacher": {"description": "SevenNet-0, per-element energy shift fitted on the pool",
                       "test_vs_dft_F_eV_A": t_f,
                       "test_vs_dft_E_meV_atom": teacher_vs_dft.energy_rmse_meV_atom,
                       "label_s": round(label_s, 1)},
           "student_settings": base.model_dump(mode="json"),
           "plateau": plateau.model_dump(), "workers": args.workers, "rows": rows,
           "total_s": round(time.perf_counter() - t_start, 1)}
    write_result(args.out_dir, name, res)
    lines = [f"## Student training budget (`{name}`)", "",
             f"`{res['command']}` · {res['machine']} · {res['date']}: the demo's student "
             f"settings on the PFD paper's Si frames ({len(split.pool)} pool frames labelled "
             f"by SevenNet-0 with a fitted energy shift; {len(dft_test)} held-out frames). "
             f"Teacher F vs DFT on them {t_f:.3f} eV/Å. {args.workers} arms at once, "
             f"one thread each.", "",
             "| arm | frames | steps trained / ceiling | stop | train s | F vs teacher eV/Å "
             "| E vs teacher meV/atom | F vs DFT eV/Å | E vs DFT meV/atom | student/teacher F |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        why = (r["stopped_early"] or "").split(":")[0] or "schedule end"
        lines.append(f"| {r['arm']} | {r['n_train']} | {r['steps_trained']} / "
                     f"{r['steps_ceiling']} | {why} | {r['train_s']:.0f} | "
                     f"{r['vs_teacher_F_eV_A']:.3f} | {r['vs_teacher_E_meV_atom']:.1f} | "
                     f"{r['vs_dft_F_eV_A']:.3f} | {r['vs_dft_E_meV_atom']:.1f} | "
                     f"{r['student_over_teacher_F']:.2f} |")
    update_markdown(args.out_dir / "docs/benchmarks.md", name, "\n".join(lines))


if __name__ == "__main__":
    main()
