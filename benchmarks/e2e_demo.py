"""Benchmark: wall time of the demo split by phase, DFT frames, teacher/student accuracy.

    python benchmarks/e2e_demo.py            # examples/si/pfd.yaml (the `make demo` run)
    python benchmarks/e2e_demo.py --quick    # tests/data/orchestration.yaml (what CI runs)
    python benchmarks/e2e_demo.py --repeat 3 --skip-install   # does `make demo` finish?

``--repeat N`` clones the committed repository N times, one fresh clone after another,
and runs each clone's `make demo` command (`pfd run examples/si/pfd.yaml` in the clone,
its default ./pfd-store and ./pfd-work, the clone's own code on PYTHONPATH, this
checkout's venv instead of a new install). A run that fails is counted, its log tail
kept, and the next one starts: the figure is ``runs_completed / runs_started``. Every
finished run is written to ``e2e_demo.json`` (key ``repeat``) at once, so a session that
ends part-way keeps the runs it did; ``--repeat-append`` continues that list.

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
    ap.add_argument("--quick", action="store_true", help="the smallest run with a student (CI)")
    ap.add_argument("--backend", choices=["sevennet", "chgnet"], default="sevennet",
                    help="finetune.backend of the run (chgnet: the same demo from CHGNet "
                         "0.3.0; results to e2e_demo_chgnet.json)")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument("--install-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/*.json and docs/benchmarks.md go "
                         "(default: the repository)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="run in this directory and keep its store (for validation_si.py)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="run `make demo` from this many fresh clones in a row")
    ap.add_argument("--repeat-append", action="store_true",
                    help="add to the runs recorded by an earlier --repeat")
    ap.add_argument("--repeat-report", action="store_true",
                    help="only rewrite the docs section of the recorded --repeat runs")
    args = ap.parse_args()
    if args.repeat_report:
        repeat_markdown(args.out_dir)
        return
    if args.repeat:
        repeat(args.repeat, args.out_dir, append=args.repeat_append)
        return
    # --quick checks this script's machinery (CI): the smallest run with a student
    config = ROOT / ("tests/data/orchestration.yaml" if args.quick else "examples/si/pfd.yaml")
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
    source = config
    if args.backend != "sevennet":
        import yaml

        raw = yaml.safe_load(config.read_text())
        raw["finetune"] = {k: v for k, v in raw.get("finetune", {}).items()
                           if k != "foundation"} | {"backend": args.backend}
        raw["run_id"] = f"{raw.get('run_id', 'run')}-{args.backend}"
        config = work / f"{config.stem}-{args.backend}.yaml"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        name += f"_{args.backend}"
    env["PREFECT_HOME"] = str(work / "prefect-home")  # task run times are read back from it
    t1 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/pfd"), "run", str(config), "--store", str(store),
                    "--workdir", str(work / "work")], cwd=work, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    run_s = time.perf_counter() - t1

    from _overhead import overhead, overhead_markdown

    from pfd.config import load_config
    from pfd.run_store import force_call_totals, status_rows
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
                            + (["--quick"] if args.quick else [])
                            + ([f"--backend {args.backend}"] if args.backend != "sevennet"
                               else [])),
        "config": str(source.relative_to(ROOT)) + (
            f" with finetune.backend {args.backend}" if args.backend != "sevennet" else ""),
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
        # model force calls per phase (issue 17: what exploration and distillation cost)
        "force_calls": force_call_totals(st, rid),
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
             f"{result['synthetic_frames']}. Model force calls: " + ", ".join(
                 f"{p} {c['force_calls']:,} ({c['atom_steps']:,} atom-steps)"
                 for p, c in result["force_calls"].items()) + ".", "",
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


def _phases_of(clone: Path) -> dict[str, float]:
    """The per-phase wall times the flow recorded in the clone's default store."""
    stored = sorted((clone / "pfd-store" / "runs").glob("*/timings.json"))
    return json.loads(stored[0].read_text()) if stored else {}


def repeat(n: int, out_dir: Path, append: bool = False) -> None:
    """``n`` `make demo`-equivalent runs from fresh clones, one after another."""
    out = Path(out_dir) / "benchmarks" / "results" / "e2e_demo.json"
    result = json.loads(out.read_text()) if out.is_file() else {"benchmark": "e2e_demo"}
    runs: list[dict[str, object]] = list(result.get("repeat", {}).get("runs", [])) \
        if append else []
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    pfd_bin = ROOT / ".venv" / "bin" / "pfd"
    for _ in range(n):
        clone = Path(tempfile.mkdtemp(prefix="pfd-demo-clone-"))
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PYTHONPATH=str(clone), PREFECT_HOME=str(clone / ".prefect-home"))
        env.pop("PREFECT_API_URL", None)
        t0 = time.perf_counter()
        proc = subprocess.run([str(pfd_bin), "run", "examples/si/pfd.yaml"], cwd=clone,
                              env=env, capture_output=True, text=True)
        wall = round(time.perf_counter() - t0, 1)
        rec: dict[str, object] = {
            "run": len(runs) + 1, "commit": head, "date": utc_now(), "exit_code": proc.returncode,
            "completed": proc.returncode == 0, "wall_s": wall, "phases_s": _phases_of(clone)}
        if proc.returncode != 0:  # no path of this machine in a committed result
            rec["log_tail"] = (proc.stdout + proc.stderr)[-3000:].replace(
                str(clone), "<clone>").replace(str(ROOT), "<checkout>")
        runs.append(rec)
        print(f"demo run {rec['run']}: exit {proc.returncode} after {wall} s", flush=True)
        result["repeat"] = {
            "command": f"python benchmarks/e2e_demo.py --repeat {n} --skip-install",
            "how": "fresh `git clone` of the committed repository per run; `pfd run "
                   "examples/si/pfd.yaml` in it (make demo's command) with the clone's code "
                   "and this checkout's venv",
            "machine": machine(), "runs_started": len(runs),
            "runs_completed": sum(bool(r["completed"]) for r in runs), "runs": runs}
        write_result(out_dir, "e2e_demo", result)
        repeat_markdown(out_dir, result)
        shutil.rmtree(clone, ignore_errors=True)


def repeat_markdown(out_dir: Path, result: dict[str, object] | None = None) -> None:
    """The docs/benchmarks.md section of the ``--repeat`` runs (rewritten after each)."""
    if result is None:
        result = json.loads((Path(out_dir) / "benchmarks" / "results" / "e2e_demo.json")
                            .read_text())
    rep_ = dict(result["repeat"])  # type: ignore[arg-type]
    lines = ["## `make demo` from fresh clones, in a row", "",
             f"Command: `{rep_['command']}` · machine: {rep_['machine']}", "",
             f"**{rep_['runs_completed']} of {rep_['runs_started']} runs completed.**", "",
             "| run | commit | exit | wall s | phases (s) | note |",
             "|---|---|---|---|---|---|"]
    for r in rep_["runs"]:  # a run's "note" (cause of a failure, machine load) is added by hand
        phases = ", ".join(f"{k} {v}" for k, v in dict(r["phases_s"]).items())
        lines.append(f"| {r['run']} | {str(r['commit'])[:8]} | {r['exit_code']} | "
                     f"{r['wall_s']} | {phases} | {r.get('note', '')} |")
    single = result.get("wall_s")
    if isinstance(single, dict):
        lines += ["", f"For comparison: the single run of the section above ({result.get('date')}"
                  f", same config) took {single.get('run')} s (dft {single.get('dft')}, "
                  f"finetune {single.get('finetune')}, explore {single.get('explore')}, "
                  f"distill {single.get('distill')}, validation {single.get('validation')})."]
    update_markdown(Path(out_dir) / "docs" / "benchmarks.md", "e2e_demo_repeat",
                    "\n".join(lines))


if __name__ == "__main__":
    main()
