"""What a fine-tune spends building graphs: is a graph cache keyed by frame hash worth it?

    python benchmarks/graph_build.py            # the PFD paper's 515 Si frames, subsets
    python benchmarks/graph_build.py --quick    # CI: 20 frames

Each fine-tune of the loop builds the graphs of every frame it trains on (the earlier
iterations' too), through the backend's own builder: ``pfd.models.sevennet._graph_dataset``
(sevenn's ``SevenNetGraphDataset``) and ``pfd.models.chgnet._graphs`` (CHGNet's graph
converter). This times both on one thread for growing sets of the paper's Si frames
(tests/data/si_paper/train.extxyz, 8–64 atoms) and sets the cost against one epoch of the
same fine-tune (``benchmarks/results/finetune_speed.json``, s/epoch per 100 frames of
8 atoms: the smallest epoch, so the share is an upper bound). Writes
``benchmarks/results/graph_build[_quick].json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402
from _si_data import load_average, pin_threads  # noqa: E402

sys.path.insert(0, str(ROOT))
from ase.io import read  # noqa: E402

DATA = ROOT / "tests" / "data" / "si_paper" / "train.extxyz"


def sevennet_seconds(frames: list[Any], tmp: Path) -> float:
    from pfd.models.sevennet import _graph_dataset

    t = time.perf_counter()
    _graph_dataset(frames, tmp / f"sevennet-{len(frames)}", "train", cutoff=5.0)
    return time.perf_counter() - t


def chgnet_seconds(frames: list[Any], model: Any) -> float:
    from pfd import frames as fr
    from pfd.models.chgnet import _graphs

    t = time.perf_counter()
    _graphs(model, frames, with_stress=all(fr.stress(a) is not None for a in frames))
    return time.perf_counter() - t


def epoch_seconds_per_100() -> dict[str, float]:
    """s/epoch per 100 8-atom frames from the recorded fine-tune speed benchmark."""
    path = ROOT / "benchmarks" / "results" / "finetune_speed.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    return {r["backend"]: float(r["s_per_epoch_per_100_frames"]) for r in rows
            if r["natoms"] == 8}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="CI: 20 frames")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    pin_threads()
    from pfd.models.chgnet import load_model

    frames = read(DATA, index=":")
    sizes = [20] if args.quick else [25, 100, len(frames)]
    name = "graph_build_quick" if args.quick else "graph_build"
    epoch = epoch_seconds_per_100()
    model = load_model("0.3.0")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pfd-graphs-") as tmp:
        sevennet_seconds(frames[:2], Path(tmp))  # imports and first-call set-up, untimed
        chgnet_seconds(frames[:2], model)
        for n in sizes:
            sub = frames[:n]
            atoms = sum(len(a) for a in sub)
            for backend, seconds in (("sevennet", sevennet_seconds(sub, Path(tmp))),
                                     ("chgnet", chgnet_seconds(sub, model))):
                # one epoch of the same frames, at the 8-atom rate (a lower bound)
                one_epoch = epoch[backend] * n / 100 if backend in epoch else None
                rows.append({
                    "backend": backend, "frames": n, "atoms": atoms,
                    "graph_s": round(seconds, 3),
                    "graph_ms_per_frame": round(1000 * seconds / n, 2),
                    "epoch_s_at_8_atom_rate": None if one_epoch is None else round(one_epoch, 1),
                    "share_of_one_epoch": (None if one_epoch is None
                                           else round(seconds / one_epoch, 4))})
                print(rows[-1], flush=True)
    result = {"benchmark": name,
              "command": " ".join(["python", "benchmarks/graph_build.py"] + sys.argv[1:]),
              "machine": machine(), "date": utc_now(), "threads": 1,
              "load_average_1_5_15": load_average(), "data": str(DATA.relative_to(ROOT)),
              "epoch_rates_from": "benchmarks/results/finetune_speed.json (8 atoms)",
              "rows": rows}
    write_result(args.out_dir, name, result)
    body = [f"## Graph building per fine-tune{' — quick' if args.quick else ''}", "",
            f"Command: `{result['command']}` · machine: {result['machine']} · date: "
            f"{result['date']} · one thread · load average {result['load_average_1_5_15'][0]}.",
            "", "Every fine-tune builds the graphs of all its frames once, with the backend's "
            "own builder; an epoch's cost is from `finetune_speed.json` at the 8-atom rate "
            "(the cheapest epoch, so the share is an upper bound).", "",
            "| backend | frames | atoms | graphs s | ms/frame | one epoch s | graphs / epoch |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["share_of_one_epoch"]
        body.append(f"| {r['backend']} | {r['frames']} | {r['atoms']} | {r['graph_s']} | "
                    f"{r['graph_ms_per_frame']} | {r['epoch_s_at_8_atom_rate'] or '–'} | "
                    f"{'–' if share is None else f'{100 * share:.1f} %'} |")
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(body))


if __name__ == "__main__":
    main()
