"""Benchmark: wall time of the demo split by phase, DFT frames, teacher/student accuracy.

    python benchmarks/e2e_demo.py            # examples/si/pfd.yaml (the `make demo` run)
    python benchmarks/e2e_demo.py --quick    # tests/data/tiny.yaml (what CI runs)

Runs ``make install system-deps`` (timed as the install phase) then ``pfd run`` in a fresh
store, reads the per-phase timings the flow records in the store, and writes
``benchmarks/results/e2e_demo[-quick].json`` plus a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny config (CI)")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument("--install-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/*.json and docs/benchmarks.md go "
                         "(default: the repository)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="run in this directory and keep its store (for validation_si.py)")
    args = ap.parse_args()
    config = ROOT / ("tests/data/tiny.yaml" if args.quick else "examples/si/pfd.yaml")
    name = "e2e_demo_quick" if args.quick else "e2e_demo"
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)  # the run's own ephemeral API, with its own database

    t0 = time.perf_counter()
    if not args.skip_install:
        subprocess.run(["make", "install", "system-deps"], cwd=ROOT, check=True, env=env)
    install_s = time.perf_counter() - t0 + args.install_seconds
    venv_python = ROOT / ".venv" / "bin" / "python"
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        # first call from the system python: continue inside the freshly built venv
        argv = [a for a in sys.argv[1:] if a != "--skip-install"]
        os.execv(venv_python, [str(venv_python), __file__, *argv, "--skip-install",
                               f"--install-seconds={install_s:.1f}"])

    work = Path(tempfile.mkdtemp(prefix="pfd-bench-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    env["PREFECT_HOME"] = str(work / "prefect-home")  # task run times are read back from it
    t1 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/pfd"), "run", str(config), "--store", str(store),
                    "--workdir", str(work / "work")], cwd=work, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    run_s = time.perf_counter() - t1

    from _overhead import overhead, overhead_markdown

    from pfd.config import load_config
    from pfd.steps import status_rows
    from pfd.store import LocalStore

    cfg = load_config(config)
    st = LocalStore(store)
    rid = cfg.resolved_run_id
    phases = st.get_json(f"runs/{rid}/timings.json")
    init = st.get_json(f"runs/{rid}/init/record.json")
    rows = status_rows(st, rid)
    dft_frames = int(init["labelled"]) + sum(int(r["labelled"]) for r in rows)
    distill = st.get_json(f"runs/{rid}/distill/record.json")
    table = {f"{r['model']}_vs_{r['data']}": r for r in distill["table"]}
    result = {
        "benchmark": name,
        "command": " ".join([sys.executable.split("/")[-1], "benchmarks/e2e_demo.py"]
                            + (["--quick"] if args.quick else [])),
        "config": str(config.relative_to(ROOT)),
        "machine": machine(),
        "date": utc_now(),
        "wall_s": {"total": round(install_s + run_s, 1), "install": round(install_s, 1),
                   "run": round(run_s, 1), **phases,
                   "other": round(run_s - sum(phases.values()), 1)},
        "dft_frames": dft_frames,
        "iterations": [{k: r[k] for k in ("stage", "iter", "explored", "selected", "labelled",
                                           "energy_rmse_meV_atom", "force_rmse_eV_A",
                                           "converged")} for r in rows],
        "teacher": {"force_rmse_eV_A": table["teacher_vs_dft"]["force_rmse_eV_A"],
                    "energy_rmse_meV_atom": table["teacher_vs_dft"]["energy_rmse_meV_atom"],
                    "tested_on_dft_frames": table["teacher_vs_dft"]["n_frames"]},
        "student": {"force_rmse_eV_A": table["student_vs_dft"]["force_rmse_eV_A"],
                    "energy_rmse_meV_atom": table["student_vs_dft"]["energy_rmse_meV_atom"],
                    "vs_teacher_force_rmse_eV_A": table["student_vs_teacher"]["force_rmse_eV_A"],
                    "vs_teacher_energy_rmse_meV_atom":
                        table["student_vs_teacher"]["energy_rmse_meV_atom"]},
        "synthetic_frames": distill["synthetic"]["n_train"] + distill["synthetic"]["n_test"],
        "orchestration": overhead(st, rid, run_s, env, cfg.cluster.n_workers),
    }
    write_result(args.out_dir, name, result)
    w = result["wall_s"]
    body = [f"## End-to-end demo (`{result['config']}`){' — quick' if args.quick else ''}", "",
            f"Command: `{result['command']}` · machine: {result['machine']} · "
            f"date: {result['date']}", "",
            "| phase | wall s |", "|---|---|"]
    body += [f"| {k} | {v} |" for k, v in w.items()]
    body += ["", f"DFT frames (QE pw.x): **{dft_frames}**; teacher-labelled synthetic frames: "
             f"{result['synthetic_frames']}.", "",
             "| model | tested on | E RMSE meV/atom | F RMSE eV/Å |", "|---|---|---|---|"]
    body += [f"| {r['model']} | {r['data']} ({r['n_frames']} frames) | "
             f"{r['energy_rmse_meV_atom']:.2f} | {r['force_rmse_eV_A']:.3f} |"
             for r in distill["table"]]
    body += ["", "Phases: install = `make install system-deps` on a fresh clone (new `.venv`, "
             "deepmd-kit built from source, warm pip cache, Debian QE/CP2K already present: a "
             "fresh machine adds their apt download); dft, finetune, "
             "explore and distill are summed inside the flow (explore/dft fan out over 2 Dask "
             "workers); other = Prefect/Dask start-up, selection, testing, report.", ""]
    body += overhead_markdown(result["orchestration"])
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(body))
    print(json.dumps(result, indent=2))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
