"""Benchmark: the Si validation table of a finished run (teacher vs student vs DFT).

    python benchmarks/validation_si.py --store ./pfd-store --run-id si-demo
    python benchmarks/validation_si.py --store S --run-id R --quick   # models only (CI)

Runs ``pfd validate RUN`` (stored results are reused, DFT points come from the label
cache when already paid for), then writes ``benchmarks/results/validation_si[_quick].json``
and the ``validation_si[_quick]`` section of ``docs/benchmarks.md``: lattice constant,
bulk modulus, vacancy formation energy and Γ optical phonon per model.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, portable, update_markdown, utc_now, write_result  # noqa: E402

MODELS = ("teacher", "student", "dft")


def _num(v: Any, digits: int) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f"{v:.{digits}f}"


def table(nums: dict[str, Any], structure: str) -> dict[str, dict[str, float | None]]:
    """property -> model -> value, from validation.json."""
    eos = nums.get("eos", {}).get(structure, {})

    def fit(m: str, k: str) -> float | None:
        f = (eos.get(m) or {}).get("fit")
        return None if not f else float(f[k])

    def gamma(m: str) -> float | None:
        src = nums.get("phonons", {}).get(m) or nums.get("phonon_points", {}).get(m)
        return None if not src else float(src["gamma_optical_THz"])

    def vac(m: str) -> float | None:
        r = nums.get("vacancy", {}).get(m)
        return None if not r else float(r["formation_eV"])

    return {
        "a0_A": {m: fit(m, "a0_A") for m in MODELS},
        "B0_GPa": {m: fit(m, "b0_GPa") for m in MODELS},
        "vacancy_formation_eV": {m: vac(m) for m in MODELS},
        "gamma_optical_THz": {m: gamma(m) for m in MODELS},
    }


def markdown(res: dict[str, Any]) -> str:
    t = res["table"]
    rows = [("a0 (Å)", "a0_A", 4), ("B0 (GPa)", "B0_GPa", 1),
            ("vacancy formation (eV)", "vacancy_formation_eV", 3),
            ("Γ optical phonon (THz)", "gamma_optical_THz", 2)]
    lines = [f"### Si validation: run `{res['run_id']}`", "",
             f"{res['machine']}, {res['date']}; `{res['command']}`; "
             f"this `pfd validate` call took {res['validate_s']:.0f} s, computed "
             f"{res['dft']['computed']} DFT frames and took {res['dft']['cached']} from the "
             "label cache (stored results are reused; `compute_s` in the JSON is what each "
             "cost when first computed).", "",
             "| property | teacher | student | DFT |", "|---|---|---|---|"]
    for label, key, digits in rows:
        lines.append(f"| {label} | " + " | ".join(_num(t[key][m], digits) for m in MODELS)
                     + " |")
    a0 = t["a0_A"]
    if a0["dft"]:
        dev = {m: 100 * (a0[m] - a0["dft"]) / a0["dft"] for m in ("teacher", "student")
               if a0[m]}
        lines += ["", "a0 deviation from DFT: " + ", ".join(f"{m} {v:+.2f} %"
                                                            for m, v in dev.items()) + "."]
    imag = res.get("imaginary_modes", {})
    if imag:
        lines.append("Imaginary phonon modes: " + ", ".join(
            f"{m} {'yes' if v else 'no'}" for m, v in imag.items()) + ".")
    if res["errors"]:
        lines.append("Failed properties: " + ", ".join(f"`{k}`" for k in res["errors"]) + ".")
    if res.get("summary"):
        head, body = res["summary"]["header"], res["summary"]["rows"]
        lines += ["", "Every quantity, ± one standard uncertainty, ⚠ = its own check finds it "
                  "not meaningful:", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    if res.get("checks"):
        lines += ["", "Checks that failed:", ""] + [f"- {q}, {m}: {why}"
                                                    for q, m, why in res["checks"]]
    if res.get("vs_dft"):
        lines += ["", "Against DFT (difference in combined σ; targets from the config):", ""]
        lines += [f"- {q}, {m}: {v}" for q, m, v in res["vs_dft"]]
    lines += ["", "Settings: the run's `validation:` section (docs/validation.md); the full "
              f"report is `runs/{res['run_id']}/report/validation.html` in the store."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True, help="store URL of the finished run")
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=None,
                    help="YAML whose validation: section replaces the run's")
    ap.add_argument("--structure", default="diamond", help="the E-V structure to tabulate")
    ap.add_argument("--quick", action="store_true", help="models only, no DFT (CI)")
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/*.json and docs/benchmarks.md go")
    args = ap.parse_args()
    name = "validation_si_quick" if args.quick else "validation_si"
    pfd = str(Path(sys.executable).parent / "pfd")
    cmd = [pfd, "validate", args.run_id, "--store", args.store]
    if args.workdir:
        cmd += ["--workdir", str(args.workdir)]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.quick:
        cmd.append("--no-dft")
    from pfd.threads import thread_env

    env = dict(os.environ, **thread_env(1), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    validate_s = time.perf_counter() - t0

    from pfd.store import open_store

    nums = open_store(args.store).get_json(f"runs/{args.run_id}/report/validation.json")
    res = {"name": name, "machine": machine(), "date": utc_now(),
           "command": "python benchmarks/validation_si.py "
                      + " ".join(portable(a) for a in sys.argv[1:]),
           "run_id": args.run_id, "store": portable(args.store), "validate_s": round(validate_s, 1),
           "table": table(nums, args.structure),
           "imaginary_modes": {m: r["imaginary_modes"] for m, r in nums["phonons"].items()},
           "dft": nums["dft"], "errors": sorted(nums["errors"]),
           "summary": nums.get("summary"), "checks": nums.get("checks", []),
           "vs_dft": nums.get("vs_dft", []), "quantities": nums.get("quantities", {}),
           "timings_s": nums["timings_s"], "compute_s": nums.get("compute_s", {}),
           "models": nums["models"]}
    out = write_result(args.out_dir, name, res)
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, markdown(res))
    print(markdown(res))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
