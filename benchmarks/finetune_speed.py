"""Fine-tune speed per foundation backend: seconds per epoch per 100 frames, 8 and 64 atoms.

    python benchmarks/finetune_speed.py            # sevennet, chgnet, mace; 8- and 64-atom Si
    python benchmarks/finetune_speed.py --quick    # CI: 8 atoms, 4 frames
    python benchmarks/finetune_speed.py --backends mace

Frames: cubic diamond Si (8 atoms) and its 2×2×2 supercell (64 atoms), rattled by
0.05 Å with a random 1 % strain, labelled by each backend's own foundation (energies,
forces, stresses: a fine-tune step costs the same whatever the labels say, and no DFT is
needed to time it). Each backend fine-tunes through ``pfd.models.backends.finetune`` —
the run's own code path — once for 1 epoch and once for 4, on one thread; the
difference over 3 epochs is the cost of an epoch without the start-up (model load,
graph building, the energy-shift fit, epoch 0's validation pass), which is reported
apart. Validation is 2 frames, so an epoch is mostly its training pass.

MACE: no MACE weights can be had here, so its arm fine-tunes a MACE of MACE-MP-0
"medium"'s shape (``pfd.models.mace.ARCHITECTURES["mp-medium"]``) trained for one epoch
on CHGNet-labelled cells: the cost of an epoch depends on the architecture, not on what
the weights learned. It runs through ``mace_run_train`` in ``.venv-mace`` (float64, as
pfd fine-tunes MACE), so its start-up includes that process's imports.

Writes ``benchmarks/results/finetune_speed[_quick].json`` and a section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402
from _si_data import load_average, pin_threads  # noqa: E402

sys.path.insert(0, str(ROOT))
from ase.build import bulk  # noqa: E402

from pfd import frames as fr  # noqa: E402
from pfd.config import FinetuneSpec  # noqa: E402
from pfd.models import backends  # noqa: E402
from pfd.perturb import perturb_one  # noqa: E402

BACKENDS = ("sevennet", "chgnet", "mace")
LABELS = {"sevennet": "SevenNet-0", "chgnet": "CHGNet 0.3.0",
          "mace": "MACE (MP-0 medium shape)"}


def spec(backend: str, foundations: dict[str, str], **kw: Any) -> FinetuneSpec:
    """The backend's settings, with the foundation file this benchmark built (mace)."""
    if backend in foundations:
        kw["foundation"] = foundations[backend]
    return FinetuneSpec(backend=backend, **kw)


def mace_foundation(workdir: Path) -> str:
    """A MACE-MP-0-medium-shaped model, one epoch on CHGNet-labelled diamond cells."""
    from pfd.models import mace

    data = frames(8, 10, "chgnet", seed=99, foundations={})
    return str(mace.train_new(data, workdir, architecture="mp-medium", epochs=1))


def frames(natoms: int, n: int, backend: str, seed: int,
           foundations: dict[str, str]) -> list[Any]:
    """``n`` rattled, strained Si cells of ``natoms`` atoms labelled by the foundation."""
    cell = bulk("Si", "diamond", a=5.43, cubic=True)
    if natoms == 64:
        cell = cell.repeat((2, 2, 2))
    elif natoms != 8:
        raise ValueError(f"natoms: 8 or 64, got {natoms}")
    calc = backends.foundation_calculator(spec(backend, foundations), threads=1)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = perturb_one(cell, rng, 0.05, 0.01, style="normal")
        a.calc = calc
        out.append(fr.attach_labels(a, a.get_potential_energy(), a.get_forces(),
                                    a.get_stress()))
    return out


def timed_finetune(settings: FinetuneSpec, train: list[Any], valid: list[Any],
                   workdir: Path) -> float:
    shutil.rmtree(workdir, ignore_errors=True)
    t = time.perf_counter()
    backends.finetune(settings, train, valid, workdir)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="CI: 8 atoms, 4 frames")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    pin_threads()
    sizes = {8: 4} if args.quick else {8: 40, 64: 8}  # natoms -> training frames
    name = "finetune_speed_quick" if args.quick else "finetune_speed"
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": name,
        "command": " ".join(["python", "benchmarks/finetune_speed.py"] + sys.argv[1:]),
        "machine": machine(), "date": utc_now(), "threads": 1,
        "load_average_1_5_15_before": load_average(), "rows": rows,
        "protocol": "fine-tune for 1 and 4 epochs (batch 4, 2 validation frames); "
                    "per-epoch = (t4 - t1) / 3, start-up = t1 - per-epoch",
    }
    with tempfile.TemporaryDirectory(prefix="pfd-ftspeed-") as tmp:
        foundations = ({"mace": mace_foundation(Path(tmp) / "mace-foundation")}
                       if "mace" in args.backends else {})
        for backend in args.backends:
            for natoms, n in sizes.items():
                data = frames(natoms, n + 2, backend, seed=natoms, foundations=foundations)
                train, valid = data[:n], data[n:]
                wd = Path(tmp) / f"{backend}-{natoms}"
                t1, t4 = (timed_finetune(spec(backend, foundations, epochs=e,
                                              patience_epochs=e, batch_size=4),
                                         train, valid, wd) for e in (1, 4))
                epoch = (t4 - t1) / 3
                row = {"backend": backend, "natoms": natoms, "train_frames": n,
                       "s_per_epoch": round(epoch, 2),
                       "s_per_epoch_per_100_frames": round(epoch * 100 / n, 1),
                       "startup_s": round(t1 - epoch, 1)}
                rows.append(row)
                print(row, flush=True)
    result["load_average_1_5_15_after"] = load_average()
    write_result(args.out_dir, name, result)
    body = [f"## Fine-tune speed per backend{' — quick' if args.quick else ''}", "",
            f"Command: `{result['command']}` · machine: {result['machine']} · date: "
            f"{result['date']} · load average before: "
            f"{result['load_average_1_5_15_before'][0]} · one thread.", "",
            "Rattled, 1 %-strained diamond Si labelled by each foundation; "
            f"{result['protocol']}.", ""]
    if any(r["backend"] == "mace" for r in rows):
        body += ["MACE: a model of MACE-MP-0 \"medium\"'s shape (no MACE weights can be had "
                 "here; an epoch's cost depends on the architecture, not the weights), float64, "
                 "through `mace_run_train` in `.venv-mace`: its start-up includes that "
                 "process's imports and data loading.", ""]
    body += ["| backend | atoms | training frames | s/epoch | s/epoch per 100 frames | "
            "start-up s |", "|---|---|---|---|---|---|"]
    body += [f"| {LABELS[r['backend']]} | {r['natoms']} | {r['train_frames']} | "
             f"{r['s_per_epoch']} | {r['s_per_epoch_per_100_frames']} | {r['startup_s']} |"
             for r in rows]
    update_markdown(args.out_dir / "docs" / "benchmarks.md", name, "\n".join(body))


if __name__ == "__main__":
    main()
