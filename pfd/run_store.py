"""A run's layout in the store: every key under ``runs/<id>/``, its records and its status.

This module is the one place that knows where a run keeps things::

    runs/<id>/config.json              the parsed config the run was started with
    runs/<id>/run.json                 status, generation, Prefect flow run, warnings
    runs/<id>/timings.json             wall seconds per phase (dft, finetune, explore, ...)
    runs/<id>/init/...                 D0: perturbed frames, labels, record.json
    runs/<id>/stage-SS/iter-II/...     one fine-tune iteration: explore/, select.json,
                                       label.json, labelled.extxyz, test.json, record.json
    runs/<id>/models/finetuned-<hash>  fine-tuned models
    runs/<id>/retention/               replay frames of the forgetting check (foundation
                                       labels); each iteration's drift is in its
                                       retention.json
    runs/<id>/teacher.json             the teacher model and the datasets it was trained on
    runs/<id>/distill/...              synthetic data, round-RR/ (student rounds),
                                       audit/, student/ (the final one), test_*.json,
                                       record.json
    runs/<id>/validation/, report/     validation results; the report (summary.md, plots)

Everything here reads or writes the store only: no Prefect, no engines, so ``pfd status``
and ``pfd ls`` stay light and work on any machine that can reach the store.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pfd.store import ArtifactStore, open_store

if TYPE_CHECKING:
    from pfd.config import PFDConfig

RUNS = "runs"


# --------------------------------------------------------------------------- keys
def run_key(run_id: str, *parts: str) -> str:
    """``runs/<id>/<parts...>``; with no parts, the run's prefix ``runs/<id>``."""
    return "/".join((RUNS, run_id, *parts))


def config_key(run_id: str) -> str:
    return run_key(run_id, "config.json")


def run_info_key(run_id: str) -> str:
    return run_key(run_id, "run.json")


def force_calls_key(run_id: str) -> str:
    return run_key(run_id, "force_calls.json")


def timings_key(run_id: str) -> str:
    return run_key(run_id, "timings.json")


def teacher_key(run_id: str) -> str:
    return run_key(run_id, "teacher.json")


def student_key(run_id: str) -> str:
    """Where the student model lives (a model directory)."""
    return run_key(run_id, "distill", "student")


def replay_key(run_id: str, digest: str) -> str:
    """The forgetting check's replay frames, labelled by the foundation; ``digest`` names
    the configurations and settings they were made from."""
    return run_key(run_id, "retention", f"replay-{digest}.extxyz")


def distill_explore_prefix(run_id: str) -> str:
    """The teacher's MD trajectories of the distillation."""
    return run_key(run_id, "distill", "explore")


def distill_round_prefix(run_id: str, round_idx: int) -> str:
    """One student round: ``round-00`` is the first student, later ones refine it
    (student MD in ``explore/``, ``added.extxyz``, ``student/``, ``record.json``)."""
    return run_key(run_id, "distill", f"round-{round_idx:02d}")


def distill_audit_prefix(run_id: str) -> str:
    """The DFT audit of the final student: frames of its own MD, DFT-labelled."""
    return run_key(run_id, "distill", "audit")


def distill_record_key(run_id: str) -> str:
    return run_key(run_id, "distill", "record.json")


def distill_test_key(run_id: str, name: str) -> str:
    """A distillation test record, e.g. ``name="student_vs_dft"``."""
    return run_key(run_id, "distill", f"test_{name}.json")


#: the teacher-labelled frames of the distillation, relative to the run's prefix
SYNTHETIC_DATASETS = ("distill/synthetic.extxyz", "distill/synthetic_test.extxyz")


def report_key(run_id: str, *parts: str) -> str:
    return run_key(run_id, "report", *parts)


# --------------------------------------------------------------------------- runs in a store
def list_runs(store: ArtifactStore) -> list[str]:
    """The ids of every run in the store, sorted."""
    return sorted({k.split("/")[1] for k in store.list(f"{RUNS}/")})


def run_exists(store: ArtifactStore, run_id: str) -> bool:
    return store.exists(config_key(run_id))


def read_run_info(store: ArtifactStore, run_id: str) -> dict[str, Any]:
    """The run's ``run.json`` (status, generation, ...); ``{}`` before it exists."""
    key = run_info_key(run_id)
    return store.get_json(key) if store.exists(key) else {}


def read_config(store: ArtifactStore, run_id: str) -> dict[str, Any]:
    """The stored config mapping of the run (parse it with ``pfd.config.parse_config``)."""
    return store.get_json(config_key(run_id))


# --------------------------------------------------------------------------- the run context
@dataclass(frozen=True)
class RunContext:
    cfg: PFDConfig
    store_url: str
    workdir: Path
    # Identifies this run's copy in the store: a run recreated in a wiped store gets a new
    # one, so a workflow engine's result cache keyed on the context cannot point at
    # artifacts that no longer exist.
    generation: str = ""

    @property
    def run_id(self) -> str:
        return self.cfg.resolved_run_id

    def key(self, *parts: str) -> str:
        return run_key(self.run_id, *parts)

    @property
    def store(self) -> ArtifactStore:
        return open_store(self.store_url)


def make_context(cfg: PFDConfig, store_url: str | None = None,
                 workdir: Path | None = None, create: bool = True) -> RunContext:
    """The run's context; its config carries the resolved run id, so the stored copy
    (``config.json``) names its run and re-parses without the files it was hashed from.
    ``create=False`` makes no work directory (a look before the run starts)."""
    cfg = cfg.model_copy(update={"run_id": cfg.resolved_run_id})
    url = store_url or os.environ.get("PFD_STORE") or cfg.store
    if "://" not in url:
        url = str(Path(url).resolve())
    wd = (workdir or cfg.workdir).resolve() / cfg.resolved_run_id
    if create:
        wd.mkdir(parents=True, exist_ok=True)
    return RunContext(cfg=cfg, store_url=url, workdir=wd)


def write_config(ctx: RunContext) -> None:
    """Store the run's parsed config (what ``pfd validate RUN`` re-reads)."""
    ctx.store.put_json(config_key(ctx.run_id), ctx.cfg.model_dump(mode="json"))


def claim_generation(ctx: RunContext) -> RunContext:
    """Return ``ctx`` carrying the store's generation id for this run (created once)."""
    key = run_info_key(ctx.run_id)
    info = ctx.store.get_json(key) if ctx.store.exists(key) else {}
    generation = info.get("generation") or uuid.uuid4().hex
    if info.get("generation") != generation:
        ctx.store.put_json(key, info | {"run_id": ctx.run_id, "generation": generation,
                                        "status": info.get("status", "created"),
                                        "store": ctx.store_url})
    return replace(ctx, generation=generation)


def set_run_status(ctx: RunContext, status: str, **extra: Any) -> None:
    """Update run.json, keeping its generation and any fields other steps wrote."""
    key = run_info_key(ctx.run_id)
    info = ctx.store.get_json(key) if ctx.store.exists(key) else {}
    ctx.store.put_json(key, info | {"run_id": ctx.run_id, "status": status,
                                    "store": ctx.store_url, "generation": ctx.generation,
                                    **extra})


# --------------------------------------------------------------------------- timings
def add_phase_time(ctx: RunContext, name: str, seconds: float) -> None:
    """Add ``seconds`` to phase ``name`` in ``timings.json`` (phases repeat per iteration)."""
    store, key = ctx.store, timings_key(ctx.run_id)
    timings = store.get_json(key) if store.exists(key) else {}
    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    store.put_json(key, timings)


@contextmanager
def timed(ctx: RunContext, name: str) -> Iterator[None]:
    """Time the block into phase ``name`` of ``timings.json`` (when it finishes)."""
    t0 = time.perf_counter()
    yield
    add_phase_time(ctx, name, time.perf_counter() - t0)


# --------------------------------------------------------------------------- force calls
def record_force_calls(ctx: RunContext, phase: str, explore_prefix: str,
                       explored: dict[str, Any]) -> None:
    """Model force calls and atom-steps of one exploration (``explore``'s result) under
    ``phase`` in ``force_calls.json``, keyed by its prefix: a resumed run rewrites the same
    entry instead of counting it twice."""
    store, key = ctx.store, force_calls_key(ctx.run_id)
    rec = store.get_json(key) if store.exists(key) else {}
    rec.setdefault(phase, {})[explore_prefix] = {
        "trajectories": int(explored.get("trajectories", 0)),
        "force_calls": int(explored["force_calls"]),
        "atom_steps": int(explored["atom_steps"])}
    store.put_json(key, rec)


def force_call_totals(store: ArtifactStore, run_id: str) -> dict[str, dict[str, int]]:
    """phase → total trajectories, force calls and atom-steps (``{}`` before any MD)."""
    key = force_calls_key(run_id)
    rec = store.get_json(key) if store.exists(key) else {}
    return {phase: {f: sum(int(e[f]) for e in by.values())
                    for f in ("trajectories", "force_calls", "atom_steps")}
            for phase, by in rec.items()}


# --------------------------------------------------------------------------- iterations
def iteration_prefix(ctx: RunContext, stage_idx: int, it: int) -> str:
    return ctx.key(f"stage-{stage_idx + 1:02d}", f"iter-{it:02d}")


@dataclass(frozen=True)
class IterationKeys:
    """Where one fine-tune iteration keeps its outputs."""

    #: select.json, selected.extxyz, label.json, failed.json, labelled.extxyz (D_i)
    prefix: str

    @property
    def explore(self) -> str:
        """The MD trajectories' prefix."""
        return f"{self.prefix}/explore"

    @property
    def test(self) -> str:
        """M_i tested on D_i."""
        return f"{self.prefix}/test.json"

    @property
    def record(self) -> str:
        """The iteration's row of ``pfd status`` (its completion marker)."""
        return f"{self.prefix}/record.json"

    @property
    def retention(self) -> str:
        """M_i against its foundation on the run's replay frames (the forgetting check)."""
        return f"{self.prefix}/retention.json"

    @property
    def targets(self) -> str:
        """Frames labelled where a missed property target is decided (a D_i of its own)."""
        return f"{self.prefix}/targets"

    @property
    def targets_check(self) -> str:
        """M_i's property results for the stage's targets (``validation/``-like JSON)."""
        return f"{self.prefix}/targets/check"


def iteration_keys(ctx: RunContext, stage_idx: int, it: int) -> IterationKeys:
    return IterationKeys(iteration_prefix(ctx, stage_idx, it))


def iteration_row(stage_idx: int, stage_name: str, it: int, model_key: str,
                  explored: dict[str, Any], selected: dict[str, Any],
                  labelled: dict[str, Any], test: dict[str, Any],
                  converged: bool, targets: dict[str, Any] | None = None,
                  retention: dict[str, Any] | None = None) -> dict[str, Any]:
    """One iteration's record (a row of ``pfd status``) from its steps' records."""
    # a property that failed to compute (an SCF that will not converge) is a missed
    # target: its error goes in the record so `pfd status` readers see why
    extra = {} if targets is None else {"targets": targets["targets"],
                                        "targets_summary": targets["summary"],
                                        "targets_errors": targets.get("errors", {})}
    if retention is not None:  # M_i's drift from its foundation (pfd.retention)
        extra.update(retention_force_drift_eV_A=retention["force_drift_eV_A"],
                     retention_energy_drift_meV_atom=retention["energy_drift_meV_atom"],
                     retention_force_drift_ratio=retention.get("force_drift_ratio"),
                     retention_exceeded=retention["exceeded"])
    return {**extra, "stage": stage_idx + 1, "stage_name": stage_name, "iter": it,
            "model": model_key, "explored": explored["frames"],
            "filtered": selected["filtered"], "selected": selected["selected"],
            "labelled": labelled["labelled"], "failed": labelled["failed"],
            "energy_rmse_meV_atom": test.get("energy_rmse_meV_atom"),
            "force_rmse_eV_A": test.get("force_rmse_eV_A"), "converged": converged,
            "stopped_early": explored["stopped_early"], "dataset": labelled["dataset"]}


def write_iteration_record(ctx: RunContext, stage_idx: int, it: int,
                           row: dict[str, Any]) -> None:
    ctx.store.put_json(iteration_keys(ctx, stage_idx, it).record, row)


# --------------------------------------------------------------------------- status
#: the columns of ``pfd status``: (title, iteration-record field)
STATUS_FIELDS = [("stage", "stage"), ("iter", "iter"), ("explored", "explored"),
                 ("filtered", "filtered"), ("selected", "selected"), ("labelled", "labelled"),
                 ("failed", "failed"), ("E RMSE meV/atom", "energy_rmse_meV_atom"),
                 ("F RMSE eV/Å", "force_rmse_eV_A"),
                 ("F drift eV/Å", "retention_force_drift_eV_A"),
                 ("drift / found. DFT err", "retention_force_drift_ratio"),
                 ("E drift meV/atom", "retention_energy_drift_meV_atom"),
                 ("targets", "targets_summary"), ("converged", "converged")]
STATUS_COLUMNS = [title for title, _ in STATUS_FIELDS]


def status_rows(store: ArtifactStore, run_id: str) -> list[dict[str, Any]]:
    """Every iteration record of the run, in order (stage, iteration)."""
    rows = []
    for k in store.list(run_key(run_id, "")):
        if k.endswith("/record.json") and "/stage-" in k:
            rows.append(store.get_json(k))
    rows.sort(key=lambda r: (r["stage"], r["iter"]))
    return rows


# --------------------------------------------------------------------------- datasets, models
def all_dft_keys(store: ArtifactStore, run_id: str) -> list[str]:
    """Every DFT-labelled dataset of the run: init plus each iteration's D_i."""
    return sorted(k for k in store.list(run_key(run_id, "")) if k.endswith("labelled.extxyz"))


def write_teacher(ctx: RunContext, model_key: str, datasets: list[str]) -> None:
    """The run's teacher: the model the fine-tune stages ended with, and its data."""
    ctx.store.put_json(teacher_key(ctx.run_id), {"model": model_key, "datasets": datasets})


def read_teacher_model(store: ArtifactStore, run_id: str) -> str | None:
    """The teacher's model key, once the stages are done."""
    key = teacher_key(run_id)
    return str(store.get_json(key)["model"]) if store.exists(key) else None


# --------------------------------------------------------------------------- distillation
def distill_table(tests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distillation test (``<model>_vs_<data>`` → its errors)."""
    return [{"model": name.split("_vs_")[0], "data": name.split("_vs_")[1],
             **{k: rec[k] for k in ("n_frames", "energy_rmse_meV_atom", "force_rmse_eV_A")}}
            for name, rec in tests.items()]


def write_distill_record(ctx: RunContext, student_model: str, teacher_model: str,
                         synthetic: dict[str, Any], tests: dict[str, dict[str, Any]],
                         rounds: list[dict[str, Any]] | None = None,
                         train_keys: list[str] | None = None,
                         audit: dict[str, Any] | None = None,
                         trainings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Store and return ``distill/record.json``: student, teacher, data (frames of each
    kind), each round's training, the refinement rounds, the DFT audit and the test
    table."""
    rounds = rounds or []
    kinds = dict(synthetic.get("kinds") or {})
    added = sum(int(r.get("n_added", 0)) for r in rounds[:-1])  # the last one only measures
    if added:
        kinds["student_md"] = kinds.get("student_md", 0) + added
    record = {"student": student_model, "teacher": teacher_model, "synthetic": synthetic,
              "train_keys": train_keys or [synthetic.get("train")], "kinds": kinds,
              "rounds": [{k: v for k, v in r.items() if k != "explored_keys"} for r in rounds],
              "trainings": trainings or [], "audit": audit, "table": distill_table(tests)}
    ctx.store.put_json(distill_record_key(ctx.run_id), record)
    return record


def read_distill_record(store: ArtifactStore, run_id: str) -> dict[str, Any] | None:
    key = distill_record_key(run_id)
    return store.get_json(key) if store.exists(key) else None
