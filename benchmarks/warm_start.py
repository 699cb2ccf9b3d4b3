"""Warm-started fine-tunes: does starting M_i from M_{i-1} reach the same error sooner?

    python benchmarks/warm_start.py                 # the demo's fine-tune settings
    python benchmarks/warm_start.py --backend chgnet
    python benchmarks/warm_start.py --quick         # CI: 4 → 6 frames, 2 epochs

A run's fine-tune loop trains M_i on every frame labelled so far, and by default each M_i
starts from the foundation (``finetune.warm_start: false``). This replays that loop on the
PFD paper's Si frames (P1's split: ~100 held-out test frames, a 10-frame validation split
for early stopping, nested training sets standing in for D_0 ∪ … ∪ D_i) with the demo's
own ``finetune`` block (examples/si/pfd.yaml: epochs, patience, batch, learning rate):
at each size after the first, a *cold* fine-tune from the foundation and a *warm* one
from the previous warm model, through the run's code path (``backends.finetune`` with
``base_model_dir``). Per arm and size: epochs run, best epoch, training seconds, force
RMSE and energy RMSE (offset-refit, as P1) on the test frames.

The verdict compares the warm arm's total training time with the cold arm's, and its
test force RMSE at the last size (the model a run keeps): warm is the better default
only if it is faster *and* no worse than 5 % on forces.

Writes ``benchmarks/results/warm_start[_<backend>][_quick].json`` and a section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402
from _si_data import SOURCE, load_average, load_split, pin_threads  # noqa: E402
from p1_learning_curve import errors  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd.config import FinetuneSpec  # noqa: E402
from pfd.metrics import predict  # noqa: E402
from pfd.models import backends, registry  # noqa: E402

SIZES = [10, 20, 30, 40]
#: warm counts as no worse when its last test force RMSE is within this of cold's
TOLERANCE = 0.05


def demo_settings(backend: str, quick: bool) -> FinetuneSpec:
    block = yaml.safe_load((ROOT / "examples/si/pfd.yaml").read_text())["finetune"]
    block = {k: v for k, v in block.items() if k != "foundation" or backend == "sevennet"}
    if quick:
        block.update(epochs=2, patience_epochs=2)
    return FinetuneSpec(**block, backend=backend)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="CI: 4 → 6 frames, 2 epochs")
    ap.add_argument("--backend", choices=["sevennet", "chgnet"], default="sevennet")
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    pin_threads()
    test_every, valid_every = 5, 40
    sizes = [4, 6] if args.quick else args.sizes
    if args.quick:
        test_every, valid_every = 40, 100
    name = "warm_start" + ("" if args.backend == "sevennet" else f"_{args.backend}") + (
        "_quick" if args.quick else "")
    settings = demo_settings(args.backend, args.quick)
    split = load_split(test_every, valid_every)
    valid, test = split.take(split.valid), split.take(split.test)
    work = args.out_dir / "benchmarks" / ".cache" / name
    shutil.rmtree(work, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/warm_start.py"] + sys.argv[1:]),
        "machine": machine(), "date": utc_now(), "complete": False,
        "load_average_1_5_15_before": load_average(), "data": SOURCE,
        "split": split.describe(test_every, valid_every), "sizes": sizes,
        "settings": settings.backend_dump(), "rows": rows,
    }
    previous: Path | None = None
    for k, n in enumerate(sizes):
        train = split.take(split.train(n))
        arms = [("cold", None)] if k == 0 else [("cold", None), ("warm", previous)]
        for arm, base in arms:
            t = time.perf_counter()
            model = backends.finetune(settings, train, valid, work / f"{arm}-n{n}",
                                      base_model_dir=base)
            train_s = time.perf_counter() - t
            meta = json.loads((model / "pfd_model.json").read_text())
            point = {"arm": arm, "n_train": n, "epochs_run": meta["epochs_run"],
                     "best_epoch": meta["best_epoch"], "train_s": round(train_s, 1),
                     "start_valid_force_rmse": round(meta["history"][0]["valid_force_rmse"], 4),
                     **errors(test, predict(registry.load_calculator(model), test))}
            rows.append(point)
            print(point, flush=True)
            write_result(args.out_dir, name, result)
            if arm == "warm" or k == 0:
                previous = model  # the warm chain continues from warm models
    conclude(result)
    result["load_average_1_5_15_after"] = load_average()
    result["complete"] = True
    write_result(args.out_dir, name, result)
    report(result, args.out_dir)
    print({k: result[k] for k in ("train_s", "last_force_rmse_eV_A", "warm_is_better")})


def conclude(result: dict[str, Any]) -> None:
    rows = [r for r in result["rows"] if r["n_train"] != result["sizes"][0]]
    total = {a: round(sum(r["train_s"] for r in rows if r["arm"] == a), 1)
             for a in ("cold", "warm")}
    epochs = {a: sum(r["epochs_run"] for r in rows if r["arm"] == a) for a in ("cold", "warm")}
    last = {r["arm"]: r["force_rmse_eV_A"] for r in rows if r["n_train"] == result["sizes"][-1]}
    result.update(train_s=total, epochs_run=epochs, last_force_rmse_eV_A=last,
                  tolerance=TOLERANCE,
                  warm_is_better=bool(total["warm"] < total["cold"] and
                                      last["warm"] <= (1 + TOLERANCE) * last["cold"]))


def report(result: dict[str, Any], out_dir: Path) -> None:
    s = result["settings"]
    body = [f"## Warm-started fine-tunes ({s['backend']})"
            f"{' — quick' if result['benchmark'].endswith('quick') else ''}", "",
            f"Command: `{result['command']}` · machine: {result['machine']} · date: "
            f"{result['date']} · load average before: "
            f"{result['load_average_1_5_15_before'][0]} · one thread.", "",
            f"Data: {result['data']}; {result['split']['test']} held-out test frames, "
            f"{result['split']['valid']} validation frames for early stopping; nested "
            f"training sets {result['sizes']} stand in for the data of successive "
            f"iterations. Settings: the demo's (epochs {s['epochs']}, patience "
            f"{s['patience_epochs']}, batch {s['batch_size']}, lr {s['learning_rate']}). "
            "Cold: from the foundation; warm: from the previous warm model.", "",
            "| frames | arm | epochs run | best epoch | train s | start valid F eV/Å | "
            "test F eV/Å | test E meV/atom |", "|---|---|---|---|---|---|---|---|"]
    body += [f"| {r['n_train']} | {r['arm']} | {r['epochs_run']} | {r['best_epoch']} | "
             f"{r['train_s']} | {r['start_valid_force_rmse']:.3f} | "
             f"{r['force_rmse_eV_A']:.3f} | {r['energy_rmse_meV_atom']:.1f} |"
             for r in result["rows"]]
    t, last = result["train_s"], result["last_force_rmse_eV_A"]
    body += ["", f"After the first size: cold {t['cold']} s ({result['epochs_run']['cold']} "
             f"epochs), warm {t['warm']} s ({result['epochs_run']['warm']} epochs); test F at "
             f"{result['sizes'][-1]} frames: cold {last['cold']:.3f}, warm {last['warm']:.3f} "
             f"eV/Å. Warm is the better default (faster and within "
             f"{100 * result['tolerance']:.0f} % on forces): "
             f"**{'yes' if result['warm_is_better'] else 'no'}**."]
    update_markdown(out_dir / "docs" / "benchmarks.md", result["benchmark"], "\n".join(body))


if __name__ == "__main__":
    main()
