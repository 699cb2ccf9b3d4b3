"""Why the Si-phases teacher misses its energies: the fine-tune's energy weight.

    python benchmarks/si_phases_energy_weight.py --store S --run-id si-phases --weights 1 20
    python benchmarks/si_phases_energy_weight.py --quick     # one epoch on test frames (CI)

Fine-tunes SevenNet-0 on exactly the frames the run's teacher trained on (``teacher.json``),
with the run's ``finetune`` settings except ``energy_weight``, and measures each model per
phase on the independent test set (benchmarks/data/si_phases_test.extxyz) and on its own
training frames. The loss is Huber with δ = 0.01 on per-atom energy and on every force
component: once errors exceed δ both terms are linear, so a frame's energy pulls with the
weight of one force component out of 3N, and an energy offset of tens of meV/atom survives
the training while forces fit (what the run showed on its vacancy frames).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402
from si_phases import TEST_SET, per_phase_errors  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd.config import FinetuneSpec  # noqa: E402
from pfd.metrics import predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store")
    ap.add_argument("--run-id", default="si-phases")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pfd-energy-weight"))
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 20.0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    from pfd.models import sevennet
    from pfd.steps import held_out

    test = read(TEST_SET, ":")
    cfg = yaml.safe_load((ROOT / "examples/si-phases/pfd.yaml").read_text())["finetune"]
    if args.quick:
        train, test, cfg["epochs"] = read(TEST_SET, ":6"), test[6:], 1
        args.weights = args.weights[:1]
    else:
        from pfd.store import open_store

        st = open_store(args.store)
        keys = st.get_json(f"runs/{args.run_id}/teacher.json")["datasets"]
        train = [a for k in keys for a in st.get_frames(k)]
    for a in train:
        a.info.clear()  # as the run's fine-tune does: graphs need uniform metadata
    base = FinetuneSpec(**cfg)
    fit, valid = held_out(train, base.valid_fraction, base.min_valid_frames)
    rows: dict[str, Any] = {}
    for w in args.weights:
        spec = base.model_copy(update={"energy_weight": w})
        t0 = time.perf_counter()
        model = sevennet.finetune(fit, valid, args.workdir / f"w{w:g}", spec)
        calc = sevennet.load_calculator(model)
        rows[f"{w:g}"] = {"train_s": round(time.perf_counter() - t0, 1),
                          "test": per_phase_errors(test, predict(calc, test)),
                          "train": per_phase_errors(train, predict(calc, train))["phases"]["all"]}
        print(w, rows[f"{w:g}"]["test"]["phases"]["all"], flush=True)
    name = "si_phases_energy_weight" + ("_quick" if args.quick else "")
    res = {"name": name, "machine": machine(), "date": utc_now(),
           "command": "python benchmarks/si_phases_energy_weight.py " + " ".join(sys.argv[1:]),
           "train_frames": len(train), "settings": cfg, "by_energy_weight": rows}
    write_result(args.out_dir, name, res)
    phases = list(next(iter(rows.values()))["test"]["phases"])
    lines = [f"### Fine-tune energy weight on the Si-phases data ({len(train)} frames)", "",
             f"{res['machine']}, {res['date']}; `{res['command']}`. Test: the independent set, "
             "E after one constant (meV/atom) / F (eV/Å); train: the frames it fitted.", "",
             "| energy_weight | " + " | ".join(phases) + " | train E / F | train s |",
             "|---|" + "---|" * (len(phases) + 2)]
    for w, r in rows.items():
        cells = [f"{r['test']['phases'][p]['E_rmse_offset_meV_atom']:.1f} / "
                 f"{r['test']['phases'][p]['F_rmse_eV_A']:.3f}" for p in phases]
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {r['train']['E_rmse_meV_atom']:.1f}"
                     f" / {r['train']['F_rmse_eV_A']:.3f} | {r['train_s']:.0f} |")
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
