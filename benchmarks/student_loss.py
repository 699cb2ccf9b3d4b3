"""Benchmark: the student's loss prefactors and step budget, on a finished run's data.

    python benchmarks/student_loss.py --store S --run si-demo-one-shot [--steps 8000]

Trains the run's student settings (its stored config's ``distill.student``) on the run's
teacher-labelled set (``distill/synthetic.extxyz``), once per variant of the loss
prefactors, and measures each student on the held-out teacher frames
(``distill/synthetic_test.extxyz``) and on every DFT frame of the run. Why: the demo's
student plateaus at a force error of ~0.13 eV/Å from a third of its steps on, while the
energy prefactor grows and the force prefactor falls to 1 (deepmd's schedule moves the
weight from forces to energies as the learning rate decays). Results:
``benchmarks/results/student_loss.json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

#: prefactor variants over the run's own (``as configured``)
VARIANTS: dict[str, dict[str, float]] = {
    "as configured": {},
    "forces stay dominant": {"limit_pref_f": 100.0, "limit_pref_e": 1.0},
    "slower decay": {"stop_lr": 1e-4},
}


def measure(args: tuple[str, dict[str, Any], str, str]) -> dict[str, Any]:
    """Train one variant and test it (a process of its own: one core each)."""
    from pfd import run_store as rs
    from pfd.config import parse_config
    from pfd.metrics import evaluate
    from pfd.models.deepmd import load_calculator, train_student
    from pfd.steps import load_datasets
    from pfd.store import open_store

    name, upd, url, run = args
    st = open_store(url)
    cfg = parse_config(rs.read_config(st, run), source=rs.config_key(run))
    assert cfg.distill is not None
    train = st.get_frames(rs.run_key(run, rs.SYNTHETIC_DATASETS[0]))
    test = st.get_frames(rs.run_key(run, rs.SYNTHETIC_DATASETS[1]))
    dft = load_datasets(st, rs.all_dft_keys(st, run))
    s = cfg.distill.student.model_copy(update=upd)
    with tempfile.TemporaryDirectory() as tmp:
        model = train_student(train, test, Path(tmp) / "s", s, threads=1)
        calc = load_calculator(model)
        m_t, _ = evaluate(calc, test)
        m_d, _ = evaluate(calc, dft)
    return {"variant": name, "steps": s.steps, "stop_lr": s.stop_lr,
            "prefactors": {k: getattr(s, k) for k in (
                "start_pref_e", "limit_pref_e", "start_pref_f", "limit_pref_f")},
            "vs_teacher_F_eV_A": m_t.force_rmse_eV_A,
            "vs_teacher_E_meV_atom": m_t.energy_rmse_meV_atom,
            "vs_dft_F_eV_A": m_d.force_rmse_eV_A, "vs_dft_E_meV_atom": m_d.energy_rmse_meV_atom,
            "n_train": len(train), "n_test": len(test), "n_dft": len(dft)}


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--steps", type=int, default=None, help="default: the run's student steps")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--workers", type=int, default=2, help="variants trained at once")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    url = args.store if "://" in args.store else str(Path(args.store).resolve())
    jobs = [(n, VARIANTS[n] | ({"steps": args.steps} if args.steps else {}), url, args.run)
            for n in args.variants]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(measure, jobs))
    for r in rows:
        print(r, flush=True)
    train_n, test_n, dft_n = rows[0]["n_train"], rows[0]["n_test"], rows[0]["n_dft"]
    res = {"machine": machine(), "date": utc_now(), "run": args.run, "n_train": train_n,
           "n_test": test_n, "n_dft": dft_n, "workers": args.workers,
           "command": "python benchmarks/student_loss.py " + " ".join(sys.argv[1:]),
           "rows": rows}
    write_result(args.out_dir, "student_loss", res)
    lines = ["## Student loss prefactors (`student_loss`)", "",
             f"`{res['command']}` · {res['machine']} · {res['date']} · run `{args.run}`: "
             f"{train_n} teacher-labelled training frames, {test_n} held out, "
             f"{dft_n} DFT frames; {args.workers} variants trained at once.", "",
             "| variant | steps | stop lr | pref e start→limit | pref f start→limit | F vs teacher "
             "(held out) eV/Å | E vs teacher meV/atom | F vs DFT eV/Å | E vs DFT meV/atom |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["prefactors"]
        lines.append(f"| {r['variant']} | {r['steps']} | {r['stop_lr']:g} | "
                     f"{p['start_pref_e']:g}→"
                     f"{p['limit_pref_e']:g} | {p['start_pref_f']:g}→{p['limit_pref_f']:g} | "
                     f"{r['vs_teacher_F_eV_A']:.3f} | {r['vs_teacher_E_meV_atom']:.1f} | "
                     f"{r['vs_dft_F_eV_A']:.3f} | {r['vs_dft_E_meV_atom']:.1f} |")
    update_markdown(args.out_dir / "docs/benchmarks.md", "student_loss", "\n".join(lines))


if __name__ == "__main__":
    main()
