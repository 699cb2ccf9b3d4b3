"""Did a fine-tune forget? Each M_i against its foundation where the run did not look.

Fine-tuning on a few DFT frames of one phase can move a foundation model everywhere else:
the demo's teacher learned diamond's forces and got the energies *between* phases worse
than the raw model (docs/benchmarks.md). Nothing in the fine-tune loop sees this, since
M_i is tested on D_i only. This check builds a replay set once per run — every structure
the config names, at other volumes and rattled hot (:class:`pfd.config.RetentionSpec`) —
labels it with the foundation (a few model calls, no DFT), and measures each M_i's
drift from the foundation there: force RMSE, and per-atom energy RMSE after per-element
offsets (a fine-tuned model speaks the labeller's reference, the foundation its own).

A drift is not an error by itself (the foundation is wrong where DFT says so, and fixing
that is the point), so it is read against the foundation's own force error on the DFT
frames M_i trained on: a ratio near 1 is a model that moved about as far as DFT says the
foundation is off; far above 1, it moved where no label asked it to. With bounds set
(absolute, or on that ratio) the run warns or stops on it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from pfd import frames as fr
from pfd.metrics import predict
from pfd.models.energy_shift import fit_offsets
from pfd.perturb import perturb_one

if TYPE_CHECKING:
    from pfd.config import RetentionSpec
    from pfd.run_store import RunContext


class RetentionExceeded(RuntimeError):
    """A fine-tuned model drifted past ``retention``'s bounds with ``on_exceed: stop``."""


def replay_configurations(structures: dict[str, list[Atoms]], spec: RetentionSpec
                          ) -> list[Atoms]:
    """Each structure at each volume ratio, ``copies`` rattled copies (label-free)."""
    rng = np.random.default_rng(spec.seed)
    out: list[Atoms] = []
    for name in sorted(structures):
        for s_idx, atoms in enumerate(structures[name]):
            for ratio in spec.volume_ratios:
                scaled = atoms.copy()
                scaled.calc = None
                scaled.set_cell(atoms.cell.array * float(ratio) ** (1 / 3), scale_atoms=True)
                for _ in range(spec.copies):
                    a = perturb_one(scaled, rng, spec.rattle_A, 0.0, style="normal")
                    a.info = {"structure": name, "structure_index": s_idx,
                              "volume_ratio": float(ratio)}
                    out.append(a)
    return out


def drift(reference: list[Atoms], predicted: list[Atoms]) -> dict[str, Any]:
    """M_i (``predicted``) against the foundation (``reference``): overall and per
    structure, force RMSE (eV/Å) and energy RMSE (meV/atom) after per-element offsets."""
    diff = [fr.energy(p) - fr.energy(r) for r, p in zip(reference, predicted, strict=True)]
    _, resid = fit_offsets(reference, diff)
    per_frame = []
    for r, p, e in zip(reference, predicted, resid, strict=True):
        df = np.asarray(fr.forces(p)) - np.asarray(fr.forces(r))
        per_frame.append({"structure": str(r.info.get("structure", "?")),
                          "energy_meV_atom": 1000 * float(e),
                          "force_sq": float((df ** 2).sum()), "n_comp": int(df.size)})

    def summary(rows: list[dict[str, Any]]) -> dict[str, float | int]:
        return {"n_frames": len(rows),
                "energy_drift_meV_atom": math.sqrt(np.mean([x["energy_meV_atom"] ** 2
                                                            for x in rows])),
                "force_drift_eV_A": math.sqrt(sum(x["force_sq"] for x in rows)
                                              / sum(x["n_comp"] for x in rows))}

    names = sorted({x["structure"] for x in per_frame})
    return {**summary(per_frame),
            "by_structure": {n: summary([x for x in per_frame if x["structure"] == n])
                             for n in names}}


def exceeded(record: dict[str, Any], spec: RetentionSpec) -> list[str]:
    """The bounds a drift record breaks, as 'quantity value > bound' phrases."""
    out = []
    ratio = record.get("force_drift_ratio")
    if spec.max_force_drift_ratio is not None and ratio is not None and \
            ratio > spec.max_force_drift_ratio:
        out.append(f"force drift {ratio:.2f}× the foundation's own error on the run's DFT "
                   f"frames > {spec.max_force_drift_ratio:g}×")
    if spec.max_force_drift_eV_A is not None and \
            record["force_drift_eV_A"] > spec.max_force_drift_eV_A:
        out.append(f"force drift {record['force_drift_eV_A']:.3f} eV/Å > "
                   f"{spec.max_force_drift_eV_A:g}")
    if spec.max_energy_drift_meV_atom is not None and \
            record["energy_drift_meV_atom"] > spec.max_energy_drift_meV_atom:
        out.append(f"energy drift {record['energy_drift_meV_atom']:.1f} meV/atom > "
                   f"{spec.max_energy_drift_meV_atom:g}")
    return out


# --------------------------------------------------------------------------- run steps
def _digest(ctx: RunContext, configurations: list[Atoms]) -> str:
    h = hashlib.sha256(json.dumps(
        {"finetune": ctx.cfg.finetune.backend_dump()}, sort_keys=True, default=str).encode())
    for a in configurations:
        h.update(fr.frame_hash(a).encode())
    return h.hexdigest()[:16]


def replay_set(ctx: RunContext) -> tuple[str, list[Atoms]]:
    """(store key, frames): the run's replay frames with the foundation's labels, made
    once (a rerun, every later iteration and a resumed run read them back)."""
    from pfd import run_store as rs
    from pfd.models.backends import foundation_calculator
    from pfd.structures import load_structures

    configurations = replay_configurations(load_structures(ctx.cfg), ctx.cfg.retention)
    key = rs.replay_key(ctx.run_id, _digest(ctx, configurations))
    if ctx.store.exists(key):
        return key, ctx.store.get_frames(key)
    labelled = predict(foundation_calculator(ctx.cfg.finetune, threads=1), configurations)
    for src, out in zip(configurations, labelled, strict=True):
        out.info.update(src.info)
    ctx.store.put_frames(key, labelled)
    return key, labelled


def foundation_dft_error(ctx: RunContext, dataset_keys: list[str]) -> dict[str, Any] | None:
    """The foundation's force RMSE against the run's DFT labels in ``dataset_keys``: how
    far DFT says the foundation is off where the run looked — the scale a drift is read
    against. One stored record per dataset (``retention/foundation-vs-*.json``)."""
    from pfd.models.backends import foundation_calculator

    sq, n = 0.0, 0
    calc = None
    for key in dataset_keys:
        rec_key = ctx.key("retention", "foundation-vs-"
                          + hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
        if not ctx.store.exists(rec_key):
            frames = ctx.store.get_frames(key)
            calc = calc or foundation_calculator(ctx.cfg.finetune, threads=1)
            pred = predict(calc, [fr.strip_labels(a) for a in frames])
            diffs = [np.asarray(fr.forces(p)) - np.asarray(fr.forces(a))
                     for a, p in zip(frames, pred, strict=True)]
            ctx.store.put_json(rec_key, {"dataset": key, "n_frames": len(frames),
                                         "force_sq": float(sum((d ** 2).sum() for d in diffs)),
                                         "n_comp": int(sum(d.size for d in diffs))})
        rec = ctx.store.get_json(rec_key)
        sq, n = sq + rec["force_sq"], n + rec["n_comp"]
    return {"datasets": list(dataset_keys), "force_rmse_eV_A": math.sqrt(sq / n)} if n else None


def check_model(ctx: RunContext, model_key: str, out_key: str) -> dict[str, Any]:
    """M_i's drift from the foundation on the replay frames, stored at ``out_key``, beside
    the foundation's own error on the DFT frames M_i trained on."""
    from pfd.model_cache import cached_calculator
    from pfd.models.meta import MODEL_JSON

    if ctx.store.exists(out_key):
        return ctx.store.get_json(out_key)
    replay_key, replay = replay_set(ctx)
    calc = cached_calculator(ctx.store_url, model_key, str(ctx.workdir), 1)
    record = {"model": model_key, "replay": replay_key,
              **drift(replay, predict(calc, [fr.strip_labels(a) for a in replay]))}
    trained_on = ctx.store.get_json(f"{model_key}/{MODEL_JSON}").get(
        "pfd_summary", {}).get("datasets", [])
    scale = foundation_dft_error(ctx, trained_on)
    record["foundation_vs_dft"] = scale
    record["force_drift_ratio"] = (record["force_drift_eV_A"] / scale["force_rmse_eV_A"]
                                   if scale and scale["force_rmse_eV_A"] > 0 else None)
    spec = ctx.cfg.retention
    record["bounds"] = {"max_force_drift_eV_A": spec.max_force_drift_eV_A,
                        "max_energy_drift_meV_atom": spec.max_energy_drift_meV_atom,
                        "max_force_drift_ratio": spec.max_force_drift_ratio}
    record["exceeded"] = exceeded(record, spec)
    ctx.store.put_json(out_key, record)
    return record
