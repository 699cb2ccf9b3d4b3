"""The PFD steps as store-aware functions: read inputs by key, write outputs, return records.

Each step first looks for its own finished output in the store and returns the stored
record if it is there; that is what makes "resume = rerun". Outputs are written in an
order where the record (the completion marker) is always last, so a step killed half-way
is simply redone, while every DFT label and trained model it had finished stays in the
store (labels in the content-addressed cache, models under ``models/<hash>``).

No Prefect here: flows/ adds retries, artifacts and the stage loop on top.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from ase import Atoms

from pfd import frames as fr
from pfd.config import MDGroup, PFDConfig, StageSpec
from pfd.explore.md import TrajectorySpec
from pfd.explore.stream import frame_keys, record_key, run_streamed
from pfd.label.base import Labeller, LabelResult
from pfd.label.cache import label_frames
from pfd.label.registry import make_labeller as labeller_from_spec
from pfd.metrics import Metrics, converged, evaluate
from pfd.model_cache import cached_calculator, fetch_model, model_ready, upload_model
from pfd.models import backends
from pfd.models.registry import MODEL_JSON
from pfd.perturb import perturb, strained_copies
from pfd.run_store import RunContext
from pfd.select.entropy import select_frames
from pfd.select.filters import apply_filters
from pfd.store import ArtifactStore, open_store
from pfd.structures import load_structures
from pfd.threads import pin_threads

MapFn = Callable[..., Iterable[Any]]


def serial_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    return list(map(fn, *iterables))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_labeller(cfg: PFDConfig) -> Labeller:
    """The configured engine (``labeller.engine``) for every element of the run."""
    structures = load_structures(cfg)
    elements = tuple(fr.species(a for fs in structures.values() for a in fs))
    return labeller_from_spec(cfg.labeller, elements)


class LabellingStopped(RuntimeError):
    """Too many frames failed: a systematic problem (settings, pseudopotentials, a broken
    engine), not bad luck. Everything labelled so far is already in the label cache."""


def check_failure_fraction(cfg: PFDConfig, res: LabelResult, n_frames: int,
                           failed_key: str) -> None:
    limit = cfg.labeller.max_failure_fraction
    n_failed = len(res.failed)
    if n_frames == 0 or n_failed / n_frames <= limit:
        return
    reasons: dict[str, int] = {}
    for f in res.failed:
        reasons[f.reason] = reasons.get(f.reason, 0) + 1
    top = "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
    raise LabellingStopped(
        f"labelling stopped: {n_failed} of {n_frames} frames failed "
        f"({n_failed / n_frames:.0%} > labeller.max_failure_fraction={limit:.0%}). "
        f"Most common: {top}. Every failure (reason, output tail, kept scratch directory) is "
        f"in {failed_key}; the {len(res.labelled)} labels already computed are in the "
        "store's label cache and will not be paid for again when you rerun.")


# --------------------------------------------------------------------------- datasets
def load_datasets(store: ArtifactStore, keys: Iterable[str]) -> list[Atoms]:
    out: list[Atoms] = []
    for k in keys:
        out.extend(store.get_frames(k))
    return out


def split_by_hash(frames: list[Atoms], fraction: float) -> tuple[list[Atoms], list[Atoms]]:
    """Deterministic split: a frame's side depends only on its content, so adding data
    never moves an old validation frame into training."""
    train, valid = [], []
    for a in frames:
        h = int(fr.frame_hash(a)[:8], 16) / 0xFFFFFFFF
        (valid if h < fraction else train).append(a)
    if not train:  # tiny sets: never train on nothing
        train, valid = valid, []
    return train, valid


def held_out(frames: list[Atoms], fraction: float, min_valid: int
             ) -> tuple[list[Atoms], list[Atoms]]:
    """:func:`split_by_hash`, unless fewer than ``min_valid`` frames would be held out:
    a validation loss over a handful of frames is noise, and choosing the best epoch (and
    when to stop) on it under-fits; then all frames train."""
    train, valid = split_by_hash(frames, fraction)
    if len(valid) < min_valid:
        return train + valid, []
    return train, valid


# --------------------------------------------------------------------------- init
def initial_frames(cfg: PFDConfig) -> list[Atoms]:
    """The unlabelled D0: the init structures perturbed as ``init.perturb`` says, and
    their strained copies (``init.volume_ratios``)."""
    structures = load_structures(cfg)
    p = cfg.init.perturb
    base = [a for name in cfg.init.structures for a in structures[name]]
    perturbed = perturb(base, p.n_per_structure, p.atom_displacement_A, p.cell_strain,
                        p.displacement_style, p.seed, p.include_unperturbed,
                        atom_fraction=p.atom_fraction, supercell=p.supercell)
    return perturbed + strained_copies([a.repeat(p.supercell) for a in base],
                                       cfg.init.volume_ratios, cfg.init.volume_rattle_A,
                                       p.seed)


def init_dataset(ctx: RunContext, map_fn: MapFn = serial_map) -> dict[str, Any]:
    """Perturb the init structures and label them with DFT: D0."""
    store, rec_key = ctx.store, ctx.key("init", "record.json")
    if store.exists(rec_key):
        return store.get_json(rec_key) | {"resumed": True}
    frames = initial_frames(ctx.cfg)
    store.put_frames(ctx.key("init", "perturbed.extxyz"), frames)
    _, counts = label_and_store(ctx, frames, ctx.key("init"), map_fn, require_labels=True)
    record = {"dataset": counts["dataset"], "n_perturbed": len(frames),
              **{k: counts[k] for k in ("labelled", "failed", "dft_computed", "dft_cached")}}
    store.put_json(rec_key, record)
    return record


def label_and_store(ctx: RunContext, frames: list[Atoms], out_prefix: str, map_fn: MapFn,
                    require_labels: bool = False, data_name: str = "labelled.extxyz"
                    ) -> tuple[LabelResult, dict[str, Any]]:
    """Label ``frames`` and write ``failed.json`` then ``data_name`` under ``out_prefix``;
    failures are stored before any stop, so a user can see why. Only files named
    ``labelled.extxyz`` are the run's DFT data (:func:`pfd.run_store.all_dft_keys`)."""
    store = ctx.store
    res = label_frames(make_labeller(ctx.cfg), frames, ctx.store_url, map_fn,
                       scratch=str(ctx.workdir), keep_scratch=ctx.cfg.labeller.keep_scratch)
    failed_key = f"{out_prefix}/failed.json"
    store.put_json(failed_key, [f.to_dict() for f in res.failed])
    check_failure_fraction(ctx.cfg, res, len(frames), failed_key)
    if require_labels and not res.labelled:
        raise RuntimeError(f"no frame could be labelled; see {failed_key}")
    data_key = f"{out_prefix}/{data_name}"
    store.put_frames(data_key, res.labelled)
    return res, {"dataset": data_key, "labelled": len(res.labelled), "failed": len(res.failed),
                 "dft_computed": res.computed, "dft_cached": res.cached}


# --------------------------------------------------------------------------- fine-tune
def finetune_model(ctx: RunContext, dataset_keys: list[str],
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   previous: str | None = None) -> dict[str, Any]:
    """Fine-tune the foundation on the union of ``dataset_keys``.

    With ``finetune.warm_start`` the training starts from ``previous`` (the run's last
    fine-tuned model) when there is one, and that key joins the model's identity.

    The model key is a hash of the training data keys and settings: the same data and
    settings (a rerun, the teacher of a stage that ended on its last D_i) reuse the model. A killed
    fine-tune resumes from its last checkpoint (deepmd: its step checkpoints;
    sevennet: the state after its last finished epoch), and ``progress`` receives the
    learning-curve rows as it trains (deepmd: step, losses, rmse_e_val, rmse_f_val;
    sevennet: step = epoch, train/valid loss, valid force/energy RMSE).
    """
    cfg, store = ctx.cfg, ctx.store
    ft = cfg.finetune
    base = previous if ft.warm_start else None
    h = _digest({"data": sorted(dataset_keys), "finetune": ft.backend_dump(),
                 **({"start": base} if base else {})})
    key = ctx.key("models", f"finetuned-{h}")
    if model_ready(store, key):
        return {"model": key, "reused": True, **store.get_json(f"{key}/{MODEL_JSON}").get(
            "pfd_summary", {})}
    # provenance in atoms.info differs between init and MD frames; trainers that collate
    # info (sevenn via PyG) need identical keys, and labels are all they should see
    frames = [fr.attach_labels(a, fr.energy(a), fr.forces(a), fr.stress(a))
              for a in load_datasets(store, dataset_keys)]
    for a in frames:
        a.info.clear()
    train, valid = held_out(frames, ft.valid_fraction, ft.min_valid_frames)
    workdir = ctx.workdir / "finetune" / h
    # no wipe: the work dir is this exact training's, and every backend resumes in it
    # only what belongs to the same frames, start and settings (deepmd: its step
    # checkpoints; sevennet, chgnet: the state after the last epoch, by fingerprint)
    base_dir = fetch_model(ctx.store_url, base, ctx.workdir) if base else None
    model_dir = backends.finetune(ft, train, valid, workdir, progress=progress,
                                  base_model_dir=base_dir)
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    summary = {"n_train": len(train), "n_valid": len(valid),
               "epochs_run": meta.get("epochs_run"), "best_epoch": meta.get("best_epoch"),
               "datasets": sorted(dataset_keys), "warm_start_from": base}
    if ft.backend == "deepmd":
        summary.update(steps=ft.steps, resumed_from_step=meta.get("resumed_from_step"))
    else:
        summary.update(resumed_after_epoch=meta.get("resumed_after_epoch"))
    meta["pfd_summary"] = summary
    (model_dir / MODEL_JSON).write_text(json.dumps(meta, indent=2))
    upload_model(store, key, model_dir)
    return {"model": key, "reused": False, **summary}


# --------------------------------------------------------------------------- exploration
def plan_trajectories(cfg: PFDConfig, groups: list[MDGroup], tag: str) -> list[
        tuple[TrajectorySpec, Atoms]]:
    """structures × temperatures × pressures, with seeds distinct per tag (stage/iter)."""
    structures = load_structures(cfg)
    plan: list[tuple[TrajectorySpec, Atoms]] = []
    salt = int(hashlib.sha256(tag.encode()).hexdigest()[:6], 16)
    for g_idx, g in enumerate(groups):
        pressures = g.pressures_GPa or [None]
        for name in g.structures:
            for s_idx, atoms in enumerate(structures[name]):
                for t in g.temperatures_K:
                    for p in pressures:
                        tid = f"g{g_idx}-{name}-{s_idx}-{t:g}K"
                        tid += "" if p is None else f"-{p:g}GPa"
                        spec = TrajectorySpec(
                            **g.md_settings(), traj_id=tid, structure=name,
                            temperature_K=t, pressure_GPa=p,
                            seed=(g.seed * 1_000_003 + salt + len(plan)) % 2**31)
                        plan.append((spec, atoms))
    return plan


def run_trajectory(store_url: str, model_key: str, spec: TrajectorySpec, atoms: Atoms,
                   out_prefix: str, cache_root: str) -> dict[str, Any]:
    """One trajectory on a worker, streamed in parts; a rerun continues a killed one."""
    pin_threads(1, torch=True)
    store = open_store(store_url)
    calc = cached_calculator(store_url, model_key, cache_root, 1)
    return run_streamed(store, out_prefix, atoms, calc, spec, context=model_key)


def explore(ctx: RunContext, model_key: str, groups: list[MDGroup], out_prefix: str,
            map_fn: MapFn = serial_map) -> dict[str, Any]:
    store = ctx.store
    plan = plan_trajectories(ctx.cfg, groups, out_prefix)
    todo = [(s, a) for s, a in plan if not store.exists(record_key(out_prefix, s.traj_id))]
    if todo:
        n = len(todo)
        list(map_fn(run_trajectory, [ctx.store_url] * n, [model_key] * n,
                    [s for s, _ in todo], [a for _, a in todo], [out_prefix] * n,
                    [str(ctx.workdir)] * n))
    records = [store.get_json(record_key(out_prefix, s.traj_id)) for s, _ in plan]
    # model force calls: one per MD step and one at the start (what exploration costs)
    calls = [int(r["steps_done"]) + 1 for r in records]
    return {"trajectories": len(plan), "ran": len(todo),
            "force_calls": sum(calls),
            "atom_steps": sum(c * len(a) for c, (_, a) in zip(calls, plan, strict=True)),
            "frames": sum(int(r["n_frames"]) for r in records),
            "stopped_early": {r["traj_id"]: r["stopped"] for r in records if r["stopped"]},
            "keys": [k for r in records for k in frame_keys(r, out_prefix)]}


# --------------------------------------------------------------------------- select + label
def filter_and_select(ctx: RunContext, explored_keys: list[str], reference_keys: list[str],
                      stage: StageSpec, out_prefix: str) -> dict[str, Any]:
    store, rec_key = ctx.store, f"{out_prefix}/select.json"
    if store.exists(rec_key):
        return store.get_json(rec_key)
    explored = load_datasets(store, explored_keys)
    kept, rejected = apply_filters(explored, ctx.cfg.filters)
    sel = select_frames(kept, load_datasets(store, reference_keys), stage.select)
    chosen = [fr.strip_labels(kept[i]) for i in sel.indices]
    store.put_frames(f"{out_prefix}/selected.extxyz", chosen)
    record = {"explored": len(explored), "filtered": len(explored) - len(kept),
              "rejected_by_reason": rejected, "selected": len(chosen), "method": sel.method,
              "scores": sel.scores, "candidates": f"{out_prefix}/selected.extxyz"}
    store.put_json(rec_key, record)
    return record


def label_set(ctx: RunContext, frames_key: str, out_prefix: str,
              map_fn: MapFn = serial_map) -> dict[str, Any]:
    store, rec_key = ctx.store, f"{out_prefix}/label.json"
    if store.exists(rec_key):
        return store.get_json(rec_key)
    res, record = label_and_store(ctx, store.get_frames(frames_key), out_prefix, map_fn)
    record["failures"] = [f.to_dict() for f in res.failed]
    store.put_json(rec_key, record)
    return record


# --------------------------------------------------------------------------- testing
def test_model(ctx: RunContext, model_key: str, data_keys: list[str],
               out_key: str) -> dict[str, Any]:
    store = ctx.store
    if store.exists(out_key):
        return store.get_json(out_key)
    frames = load_datasets(store, data_keys)
    calc = cached_calculator(ctx.store_url, model_key, str(ctx.workdir), 1)
    m, pred = evaluate(calc, frames)
    record = {"model": model_key, "data": data_keys, **m.summary(), "per_frame": m.per_frame,
              "parity": {"e_ref": pred.e_ref_per_atom, "e_pred": pred.e_pred_per_atom,
                         "f_ref": pred.f_ref, "f_pred": pred.f_pred}}
    store.put_json(out_key, record)
    return record


def is_converged(test_record: dict[str, Any], stage: StageSpec) -> bool:
    m = Metrics(n_frames=int(test_record["n_frames"]),
                energy_rmse_meV_atom=float(test_record["energy_rmse_meV_atom"]),
                energy_mae_meV_atom=float(test_record["energy_mae_meV_atom"]),
                force_rmse_eV_A=float(test_record["force_rmse_eV_A"]),
                force_mae_eV_A=float(test_record["force_mae_eV_A"]),
                stress_rmse_GPa=test_record.get("stress_rmse_GPa"),
                per_frame=list(test_record.get("per_frame") or []))
    return converged(m, stage.converge)
