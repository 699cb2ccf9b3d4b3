"""Benchmark P6: how many DFT frames entropy selection saves over random selection.

    python benchmarks/p6_selection.py            # full: 20 + 20/iteration, up to 10 iterations
    python benchmarks/p6_selection.py --quick    # tiny (CI): 2 iterations, 1 epoch

The fine-tune loop is simulated on an already-labelled pool, so no DFT runs: the PFD
paper's final Si fine-tuning set (515 VASP frames; GitHub ruoyuwang1995nya/pfd-paper,
dataset/Si/train.extxyz, commit eb5fb856; kept unchanged in tests/data/si_paper, see
tests/data/README.md; ``$PFD_SI_DATA`` points the benchmarks at another copy). A fixed
held-out test split and a small validation split (only for fine-tuning's early stopping
and checkpoint choice) are taken out first, stratified by cell size and energy per atom so
that every phase and cell size appears in the test. Both methods start from the same 20
random pool frames; every iteration fine-tunes SevenNet-0 afresh from the foundation on
all frames chosen so far, tests it, and stops when the force RMSE on the test split drops
below the target (0.10 eV/Å) or the iteration cap is hit; otherwise 20 more frames are
chosen from the rest of the pool by entropy (``pfd.select.entropy``, against everything
chosen so far) or at random (one seeded permutation per seed). The figure of merit is
``entropy_over_random_frames`` = frames entropy needed / frames random needed (issue 5
target: <= 0.7).

Writes ``benchmarks/results/p6_selection[_quick].json`` (rewritten after every model, with
``complete: false`` until the end, so a cut-off run still leaves its curves), a PNG of both
curves next to it, and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd import frames as fr  # noqa: E402
from pfd.config import (
    FinetuneSpec,  # noqa: E402
    SelectSpec,  # noqa: E402
)
from pfd.metrics import evaluate  # noqa: E402
from pfd.models.sevennet import finetune, load_calculator  # noqa: E402
from pfd.plotting import png, pyplot  # noqa: E402
from pfd.select.entropy import entropy_select  # noqa: E402
from pfd.threads import pin_threads  # noqa: E402

#: the Si set (P1-P3 read it too): the repo's copy unless $PFD_SI_DATA names another
DATA = Path(os.environ.get("PFD_SI_DATA") or ROOT / "tests/data/si_paper/train.extxyz")
SOURCE = ("PFD paper data release: GitHub ruoyuwang1995nya/pfd-paper, dataset/Si/train.extxyz "
          "@ eb5fb856 (515 VASP frames, 500 eV; PBEsol per its INCAR)")
TARGET_RATIO = 0.7


def require_data(path: Path) -> Path:
    """The data file, or an error that says where it was looked for and how to fix it."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"Si benchmark data not found: {path}. It is the repo's "
            "tests/data/si_paper/train.extxyz unless $PFD_SI_DATA names another copy of "
            "pfd-paper's dataset/Si/train.extxyz (see tests/data/README.md).")
    return Path(path)


def stratified_split(frames: list, test_every: int, valid_every: int
                     ) -> tuple[list[int], list[int], list[int]]:
    """(test, valid, pool) indices: systematic samples of the frames ordered by cell size,
    then energy per atom, so each split spans every cell size and the energy range."""
    order = sorted(range(len(frames)),
                   key=lambda i: (len(frames[i]), fr.energy(frames[i]) / len(frames[i]), i))
    test = [order[j] for j in range(test_every // 2, len(order), test_every)]
    rest = [i for i in order if i not in set(test)]
    valid = [rest[j] for j in range(valid_every // 2, len(rest), valid_every)]
    pool = sorted(set(rest) - set(valid))
    return sorted(test), sorted(valid), pool


class Loop:
    """One method's learning curve; models are fine-tuned, tested, then deleted."""

    def __init__(self, frames: list, test: list[int], valid: list[int],
                 settings: FinetuneSpec, work: Path, target: float) -> None:
        self.frames, self.test, self.valid = frames, test, valid
        self.settings, self.work, self.target = settings, work, target

    def point(self, train: list[int], tag: str) -> dict[str, Any]:
        t = time.perf_counter()
        wd = self.work / tag
        model = finetune([self.frames[i] for i in train], [self.frames[i] for i in self.valid],
                         wd, self.settings)
        t_ft = time.perf_counter() - t
        m, _ = evaluate(load_calculator(model, threads=1),
                        [self.frames[i] for i in self.test])
        shutil.rmtree(wd, ignore_errors=True)
        return {"n_train": len(train), "force_rmse_eV_A": round(m.force_rmse_eV_A, 4),
                "energy_rmse_meV_atom": round(m.energy_rmse_meV_atom, 2),
                "finetune_s": round(t_ft, 1), "total_s": round(time.perf_counter() - t, 1)}


def frames_needed(curve: list[dict[str, Any]], target: float) -> int | None:
    for p in curve:
        if p["force_rmse_eV_A"] < target:
            return int(p["n_train"])
    return None


def compare(ent: int | None, rnd: list[int | None], max_tested: int) -> dict[str, Any]:
    """The ratio when both reached the target; otherwise the bound the data do support."""
    reached = [r for r in rnd if r is not None]
    out: dict[str, Any] = {"entropy_over_random_frames": None, "bound": None}
    if ent is not None and len(reached) == len(rnd):
        out["entropy_over_random_frames"] = round(ent / float(np.mean(reached)), 3)
    elif ent is not None:
        # random runs that never got there needed more than every size tested
        lower = [r if r is not None else max_tested + 1 for r in rnd]
        out["bound"] = f"<= {ent / float(np.mean(lower)):.3f} (some random runs never reached)"
    elif reached:
        out["bound"] = (f">= {(max_tested + 1) / float(np.mean(reached)):.3f} "
                        "(entropy never reached the target)")
    return out


def plot(path: Path, curves: dict[str, Any], target: float, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    e = curves["entropy"]
    ax.plot([p["n_train"] for p in e], [p["force_rmse_eV_A"] for p in e], "o-",
            color="C0", label="entropy (species-aware QUESTS)")
    for k, (seed, c) in enumerate(curves["random"].items()):
        ax.plot([p["n_train"] for p in c], [p["force_rmse_eV_A"] for p in c], "s--",
                color="C1", alpha=0.9 if k == 0 else 0.5,
                label="random" if k == 0 else None)
        ax.annotate(f"seed {seed}", (c[-1]["n_train"], c[-1]["force_rmse_eV_A"]),
                    fontsize=7, color="C1")
    ax.axhline(target, color="k", lw=0.8, ls=":", label=f"target {target} eV/Å")
    ax.set_xlabel("training frames (DFT-labelled)")
    ax.set_ylabel("force RMSE on held-out test, eV/Å")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(fig, dpi=120))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny (CI)")
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--per-iter", type=int, default=20)
    ap.add_argument("--max-iters", type=int, default=10, help="models per method, at most")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.10, help="force RMSE, eV/Å")
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--full-curve", action="store_true",
                    help="keep adding frames after the target is reached (curves to the cap)")
    ap.add_argument("--report-only", action="store_true",
                    help="redraw the PNG and docs section from the existing results JSON")
    ap.add_argument("--max-wall-min", type=float, default=None,
                    help="skip random seeds after the first that would not finish in time")
    ap.add_argument("--out-dir", type=Path, default=ROOT,
                    help="where benchmarks/results/ and docs/benchmarks.md go "
                         "(default: the repository)")
    args = ap.parse_args()
    test_every, valid_every = 5, 40
    if args.quick:
        args.initial, args.per_iter, args.max_iters, args.epochs = 8, 8, 2, 1
        args.random_seeds = args.random_seeds[:1]
        test_every, valid_every = 40, 100
    name = "p6_selection_quick" if args.quick else "p6_selection"
    if args.report_only:
        report(json.loads((args.out_dir / "benchmarks" / "results" / f"{name}.json")
                          .read_text()), args.out_dir)
        return
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    pin_threads(1, override=False)

    frames = fr.read_frames(require_data(DATA))
    test, valid, pool = stratified_split(frames, test_every, valid_every)
    rng = np.random.default_rng(0)
    initial = sorted(int(i) for i in rng.choice(pool, size=args.initial, replace=False))
    settings = FinetuneSpec(epochs=args.epochs, seed=1, patience_epochs=args.epochs)
    work = Path(tempfile.mkdtemp(prefix="pfd-p6-"))
    loop = Loop(frames, test, valid, settings, work, args.target)
    max_tested = args.initial + (args.max_iters - 1) * args.per_iter
    t_start = time.perf_counter()

    curves: dict[str, Any] = {"entropy": [], "random": {str(s): [] for s in args.random_seeds}}
    picked_natoms: dict[str, list[list[int]]] = {"entropy": []}
    selection_s: list[float] = []
    result: dict[str, Any] = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/p6_selection.py"] + sys.argv[1:]),
        "machine": machine(), "date": utc_now(), "complete": False,
        "data": SOURCE,
        "split": {"test": len(test), "valid": len(valid), "pool": len(pool),
                  "how": f"frames ordered by (natoms, E/atom); test = every {test_every}th, "
                         f"valid = every {valid_every}th of the rest (early stopping only)",
                  "test_natoms": {str(n): sum(len(frames[i]) == n for i in test)
                                  for n in sorted({len(a) for a in frames})}},
        "protocol": {"initial": args.initial, "per_iteration": args.per_iter,
                     "max_models_per_method": args.max_iters, "target_force_rmse_eV_A":
                     args.target, "finetune": settings.backend_dump(),
                     "entropy": SelectSpec(n_frames=args.per_iter).model_dump(),
                     "full_curve": args.full_curve,
                     "initial_frames_seed": 0},
        "curves": curves,
    }

    def save() -> None:
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_result(args.out_dir, name, result)

    print(f"split: test {len(test)} valid {len(valid)} pool {len(pool)}", flush=True)
    # iteration 0 is the same for both methods: one model
    first = loop.point(initial, "init")
    print("initial", first, flush=True)
    curves["entropy"].append(first)
    for s in args.random_seeds:
        curves["random"][str(s)].append(dict(first))
    save()

    # entropy
    train = list(initial)
    while (args.full_curve or curves["entropy"][-1]["force_rmse_eV_A"] >= args.target) \
            and len(curves["entropy"]) < args.max_iters:
        remaining = [i for i in pool if i not in set(train)]
        if not remaining:
            break
        t = time.perf_counter()
        sel = entropy_select([frames[i] for i in remaining], [frames[i] for i in train],
                             args.per_iter, SelectSpec(n_frames=args.per_iter))
        selection_s.append(round(time.perf_counter() - t, 2))
        new = [remaining[j] for j in sel.indices]
        picked_natoms["entropy"].append(sorted(len(frames[i]) for i in new))
        train += new
        p = loop.point(train, f"entropy-{len(train)}")
        print("entropy", p, flush=True)
        curves["entropy"].append(p)
        save()

    # random, one permutation of the pool per seed
    skipped: list[int] = []
    seed_s: float | None = None  # wall time of the last seed: the estimate for the next
    for s in args.random_seeds:
        elapsed = time.perf_counter() - t_start
        if args.max_wall_min and seed_s is not None \
                and elapsed + seed_s > 60 * args.max_wall_min:
            skipped.append(s)
            del curves["random"][str(s)]
            continue
        t_seed = time.perf_counter()
        order = [i for i in np.random.default_rng(s).permutation(pool) if i not in initial]
        c = curves["random"][str(s)]
        picked_natoms[f"random-{s}"] = []
        train = list(initial)
        while (args.full_curve or c[-1]["force_rmse_eV_A"] >= args.target) \
                and len(c) < args.max_iters \
                and len(train) < len(initial) + len(order):
            k = len(train) - len(initial)
            new = [int(i) for i in order[k:k + args.per_iter]]
            picked_natoms[f"random-{s}"].append(sorted(len(frames[i]) for i in new))
            train += new
            p = loop.point(train, f"random{s}-{len(train)}")
            print(f"random {s}", p, flush=True)
            c.append(p)
            save()
        seed_s = time.perf_counter() - t_seed

    ent = frames_needed(curves["entropy"], args.target)
    rnd = [frames_needed(c, args.target) for c in curves["random"].values()]
    result.update({
        "complete": True,
        "frames_needed": {"entropy": ent, "random": dict(zip(curves["random"], rnd,
                                                             strict=True)),
                          "max_tested": max_tested},
        **compare(ent, rnd, max_tested),
        "target_ratio": TARGET_RATIO,
        "entropy_selection_s": selection_s,
        "random_seeds_skipped_for_time": skipped,
        "picked_natoms": picked_natoms,
    })
    ratio = result["entropy_over_random_frames"]
    result["meets_target"] = None if ratio is None else bool(ratio <= TARGET_RATIO)
    save()
    shutil.rmtree(work, ignore_errors=True)
    report(result, args.out_dir)
    print({k: result[k] for k in ("frames_needed", "entropy_over_random_frames", "bound",
                                  "meets_target", "wall_s")}, flush=True)


def _cell_sizes(picks: list[list[int]]) -> str:
    counts = Counter(n for batch in picks for n in batch)
    return ", ".join(f"{n}-atom x{c}" for n, c in sorted(counts.items()))


def report(result: dict[str, Any], out_dir: Path) -> None:
    """PNG and docs/benchmarks.md section from a result record alone, so both can be
    redrawn (``--report-only``) without fine-tuning anything again."""
    name, proto, split = result["benchmark"], result["protocol"], result["split"]
    curves, target = result["curves"], proto["target_force_rmse_eV_A"]
    ft = proto["finetune"]
    png_path = out_dir / "benchmarks" / "results" / f"{name}.png"
    plot(png_path, curves, target, f"P6: SevenNet-0 fine-tuned on PFD-paper Si "
         f"({ft['epochs']} epochs/model)")
    result["plot"] = str(png_path.relative_to(out_dir))
    write_result(out_dir, name, result)

    ratio, needed = result["entropy_over_random_frames"], result["frames_needed"]
    verdict = ("not decidable (see bound)" if ratio is None else
               ("met" if result["meets_target"] else "missed"))
    body = [f"## P6: entropy vs random selection{' — quick' if name.endswith('quick') else ''}",
            "", f"Command: `{result['command']}` · machine: {result['machine']} · "
            f"date: {result['date']} · wall: {result['wall_s']:.0f} s (shared cores)", "",
            f"Data: {result['data']}. Split: {split['test']} test / {split['valid']} "
            f"validation (early stopping only) / {split['pool']} pool frames, stratified by "
            f"cell size and energy per atom. Start {proto['initial']} random pool frames; add "
            f"{proto['per_iteration']} per iteration; SevenNet-0 fine-tuned from the "
            f"foundation every time ({ft['epochs']} epochs, lr {ft['learning_rate']}, batch "
            f"{ft['batch_size']}, {ft.get('threads', 1)} thread); at most "
            f"{proto['max_models_per_method']} models per method"
            + ("; curves continued past the target (`--full-curve`)."
               if proto.get("full_curve") else "."),
            "", "| training frames | entropy F RMSE eV/Å | entropy E RMSE meV/atom | "
            + " | ".join(f"random (seed {s}) F RMSE" for s in curves["random"]) + " |",
            "|---|---|---|" + "---|" * len(curves["random"])]
    sizes = sorted({p["n_train"] for p in curves["entropy"]}
                   | {p["n_train"] for c in curves["random"].values() for p in c})
    for n in sizes:
        e = next((p for p in curves["entropy"] if p["n_train"] == n), None)
        cells = [f"{e['force_rmse_eV_A']:.3f}" if e else "—",
                 f"{e['energy_rmse_meV_atom']:.1f}" if e else "—"]
        for c in curves["random"].values():
            r = next((p for p in c if p["n_train"] == n), None)
            cells.append(f"{r['force_rmse_eV_A']:.3f}" if r else "—")
        body.append(f"| {n} | " + " | ".join(cells) + " |")
    rnd = ", ".join(str(r) for r in needed["random"].values())
    skipped = result.get("random_seeds_skipped_for_time") or []
    body += ["", f"Frames needed for F RMSE < {target} eV/Å: entropy **{needed['entropy']}**, "
             f"random **{rnd}** (None = not reached by {needed['max_tested']} frames). "
             f"`entropy_over_random_frames` = **{ratio}**"
             + (f" (bound: {result['bound']})" if result["bound"] else "")
             + f"; target ≤ {result['target_ratio']}: **{verdict}**."
             + (f" Random seeds skipped to stay in the time budget: {skipped}." if skipped
                else "")]
    body += ["", "Cell sizes of the frames each method added (the test split follows the "
             "pool's own mix): " + "; ".join(f"{k}: {_cell_sizes(v)}"
                                             for k, v in result["picked_natoms"].items())
             + "."]
    body += ["", f"![P6 learning curves](../{result['plot']})"]
    update_markdown(out_dir / "docs" / "benchmarks.md", name, "\n".join(body))


if __name__ == "__main__":
    main()
