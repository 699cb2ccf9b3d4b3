"""The independent test set of the Si-phases case: frames no pfd model trains on.

    python benchmarks/si_phases_testset.py           # every structure of examples/si-phases
    python benchmarks/si_phases_testset.py --quick   # one cheap frame (CI-sized)

For each structure of ``examples/si-phases/pfd.yaml`` (six bulk phases and the diamond
vacancy): ``--rattled`` copies rattled and strained with seeds the run never uses, and
one snapshot per ``--md-temperatures`` of a short MD with the raw foundation model
(SevenNet-0, DFT-free) started from a rattled copy. So the set shares neither starting
configurations nor the fine-tuned models' trajectories with the run. Every frame is
labelled with the run's own QE settings through the label cache (``--store``; a killed
generation resumes without paying twice) and written with its provenance
(structure, kind, seed, temperature) to ``benchmarks/data/si_phases_test.extxyz``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, update_markdown, utc_now, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd.config import ClusterSpec, load_config  # noqa: E402
from pfd.label.cache import label_frames  # noqa: E402
from pfd.label.registry import make_labeller  # noqa: E402
from pfd.models.sevennet import foundation_calculator  # noqa: E402
from pfd.perturb import perturb_one  # noqa: E402
from pfd.store import LocalStore  # noqa: E402
from pfd.structures import load_structures  # noqa: E402
from tasks.cluster import dask_cluster, dft_map  # noqa: E402

CONFIG = ROOT / "examples/si-phases/pfd.yaml"
OUT = ROOT / "benchmarks/data/si_phases_test.extxyz"
#: far from the run's seeds (init.perturb.seed 1, MD group seeds 1...)
SEED = 7001


def rattled(atoms: Atoms, name: str, n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = perturb_one(atoms, rng, atom_displacement_A=0.08, cell_strain=0.02)
        a.info.update(structure=name, kind="rattled", seed=seed, index=i)
        out.append(a)
    return out


def md_snapshot(atoms: Atoms, name: str, temperature_K: float, steps: int, seed: int,
                calc: Any) -> Atoms:
    """The last frame of a Langevin NVT run with the raw foundation model."""
    a = perturb_one(atoms, np.random.default_rng(seed), atom_displacement_A=0.05,
                    cell_strain=0.0)
    a.calc = calc
    MaxwellBoltzmannDistribution(a, temperature_K=temperature_K,
                                 rng=np.random.default_rng(seed))
    Langevin(a, 2.0 * units.fs, temperature_K=temperature_K, friction=0.02,
             rng=np.random.default_rng(seed + 1)).run(steps)
    out = Atoms(a.get_chemical_symbols(), positions=a.positions, cell=a.cell, pbc=True)
    out.info.update(structure=name, kind="md", seed=seed, temperature_K=temperature_K,
                    md_steps=steps, md_model="7net-0")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="diamond only: one rattled frame, one 10-step MD snapshot, cheap QE")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--rattled", type=int, default=2)
    ap.add_argument("--md-temperatures", type=float, nargs="*", default=[500.0, 900.0])
    ap.add_argument("--md-steps", type=int, default=150)
    ap.add_argument("--store", type=Path, default=None,
                    help="label cache (default <out-dir>/benchmarks/.cache/si_phases_labels)")
    ap.add_argument("--out-dir", type=Path, default=ROOT)
    args = ap.parse_args()
    args.store = args.store or args.out_dir / "benchmarks/.cache/si_phases_labels"
    cfg = load_config(args.config)
    structures = {k: v[0] for k, v in load_structures(cfg).items()}
    labeller_spec = cfg.labeller
    if args.quick:
        structures = {"diamond": structures["diamond"]}
        args.rattled, args.md_temperatures, args.md_steps = 1, [500.0], 10
        qe = labeller_spec.qe.model_copy(update={"ecutwfc_Ry": 16.0, "kspacing_invA": 0.7,
                                                 "conv_thr_Ry": 1e-6})
        labeller_spec = labeller_spec.model_copy(update={"qe": qe})
    t0 = time.perf_counter()
    frames: list[Atoms] = []
    calc = foundation_calculator("7net-0") if args.md_temperatures else None  # raw, untuned
    for k, (name, atoms) in enumerate(structures.items()):
        frames += rattled(atoms, name, args.rattled, SEED + 100 * k)
        for j, temp in enumerate(args.md_temperatures):
            frames.append(md_snapshot(atoms, name, temp, args.md_steps,
                                      SEED + 100 * k + 10 * (j + 1), calc))
    md_s = time.perf_counter() - t0
    print(f"{len(frames)} frames built in {md_s:.0f} s", flush=True)
    labeller = make_labeller(labeller_spec, ("Si",))
    t1 = time.perf_counter()
    with dask_cluster(ClusterSpec(n_workers=1 if args.quick else 2), workdir=args.store):
        res = label_frames(labeller, frames, LocalStore(args.store).url, dft_map,
                           scratch=str(args.store / "scratch"))
    dft_s = time.perf_counter() - t1
    if res.failed:
        raise SystemExit(f"{len(res.failed)} frames failed to label: "
                         + "; ".join(f.reason for f in res.failed[:3]))
    out = (args.out_dir / "benchmarks/.cache/si_phases_test_quick.extxyz" if args.quick
           else args.out_dir / OUT.relative_to(ROOT))
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, res.labelled, format="extxyz")
    per: dict[str, dict[str, int]] = {}
    for a in res.labelled:
        row = per.setdefault(a.info["structure"], {"rattled": 0, "md": 0, "atoms": len(a)})
        row[a.info["kind"]] += 1
    name = "si_phases_testset_quick" if args.quick else "si_phases_testset"
    cmd = "python benchmarks/si_phases_testset.py" + (" --quick" if args.quick else "")
    result = {"benchmark": name, "command": cmd, "machine": machine(), "date": utc_now(),
              "config": str(args.config.relative_to(ROOT)), "frames": len(res.labelled),
              "computed": res.computed, "cached": res.cached, "build_s": round(md_s, 1),
              "dft_s": round(dft_s, 1), "per_structure": per,
              "output": str(out.relative_to(args.out_dir)), "seed": SEED}
    write_result(args.out_dir, name, result)
    if not args.quick:
        update_markdown(args.out_dir / "docs/benchmarks.md", name, markdown(result))
    print(result)


def markdown(r: dict[str, Any]) -> str:
    lines = ["## Si-phases independent test set", "",
             f"Command: `{r['command']}` · machine: {r['machine']} · date: {r['date']}", "",
             f"`{r['output']}`: {r['frames']} QE frames with the settings of `{r['config']}` "
             "(rattled + strained copies, and snapshots of raw-SevenNet-0 MD, seeds from "
             f"{r['seed']}: no run shares them). Labelling took {r['dft_s']:.0f} s on 2 "
             "workers.", "", "| structure | atoms | rattled | MD snapshots |", "|---|---|---|---|"]
    for s, row in r["per_structure"].items():
        lines.append(f"| {s} | {row['atoms']} | {row['rattled']} | {row['md']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
