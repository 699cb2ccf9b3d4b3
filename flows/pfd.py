"""The parent flow: init → stages (each a subflow of fine-tune iterations) → distill →
validate → report.

Stages run in sequence because each starts from everything the previous ones labelled.
Inside an iteration the semantics are the paper's: M_i is tested on the fresh D_i
*before* D_i joins the training set; converged ⇒ the stage ends with M_i.

This module only sequences Prefect tasks and subflows and publishes Prefect artifacts;
where the run keeps things (keys, records, timings, status) is ``pfd.run_store``, and
the report's content is ``pfd.run_report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pfd import run_store as rs
from pfd import steps
from pfd.config import PFDConfig
from pfd.distill.student import publish_final
from pfd.iteration_budget import skipped_stage_note, stage_iterations, stage_note
from pfd.preflight import check_config, check_config_file
from pfd.report import status_records
from pfd.retention import RetentionExceeded
from pfd.run_lease import hold_run
from pfd.run_report import write_report
from pfd.run_store import RunContext
from tasks import steps as t
from tasks import validate as tv
from tasks.cluster import dask_cluster


def publish_status(ctx: RunContext) -> list[dict[str, Any]]:
    rows = rs.status_rows(ctx.store, ctx.run_id)
    create_table_artifact(table=status_records(rows), key=t.artifact_key(ctx, "iterations"),
                          description=f"PFD iterations of run {ctx.run_id}")
    return rows


@flow(name="pfd-stage")
def stage_flow(ctx: RunContext, stage_idx: int, datasets: list[str],
               iterations_left: int, previous: str | None = None) -> dict[str, Any]:
    """Fine-tune / explore / select / label / test until converged or out of iterations."""
    log = get_run_logger()
    stage = ctx.cfg.stages[stage_idx]
    datasets = list(datasets)
    trained_on = list(datasets)
    model_key: str | None = None  # M_i; ``previous`` is the run's model before this stage
    conv = False
    it = 0
    warnings: list[str] = []
    for it in range(stage_iterations(stage.max_iterations, iterations_left)):
        keys = rs.iteration_keys(ctx, stage_idx, it)
        trained_on = list(datasets)
        with rs.timed(ctx, "finetune"):
            model_key = t.finetune(ctx, trained_on, model_key or previous)["model"]
        kept = None
        if ctx.cfg.retention_active:
            # before any DFT of this iteration: a stop here costs no label
            with rs.timed(ctx, "retention"):
                kept = t.check_retention(ctx, model_key, keys.retention)
            if kept["exceeded"]:
                msg = (f"stage {stage.name} iter {it}: the fine-tuned model drifted from its "
                       f"foundation on the replay frames ({'; '.join(kept['exceeded'])})")
                if ctx.cfg.retention.on_exceed == "stop":
                    raise RetentionExceeded(f"{msg}; stopped by retention.on_exceed: stop "
                                            "(labels and models so far are kept)")
                log.warning(msg)
                warnings.append(msg)
        with rs.timed(ctx, "explore"):
            ex = t.explore(ctx, model_key, stage.groups, keys.explore)
        rs.record_force_calls(ctx, "explore", keys.explore, ex)
        sel = t.filter_select(ctx, ex["keys"], datasets, stage, keys.prefix)
        with rs.timed(ctx, "dft"):
            lab = t.label(ctx, sel["candidates"], keys.prefix)
        test = t.test_model(ctx, model_key, [lab["dataset"]], keys.test)
        conv = lab["labelled"] > 0 and steps.is_converged(test, stage)
        targets = None
        if stage.converge.targets:
            # M_i's properties against DFT (its reference frames stay out of training)
            with rs.timed(ctx, "targets"):
                targets = t.check_targets(ctx, model_key, stage.converge.targets,
                                          keys.targets_check)
            conv = conv and targets["met"]
        row = rs.iteration_row(stage_idx, stage.name, it, model_key, ex, sel, lab, test, conv,
                               targets, kept)
        rs.write_iteration_record(ctx, stage_idx, it, row)
        publish_status(ctx)
        log.info("stage %s iter %d: F RMSE %.4f eV/Å, E RMSE %.2f meV/atom, targets %s, "
                 "converged=%s", stage.name, it, row["force_rmse_eV_A"] or float("nan"),
                 row["energy_rmse_meV_atom"] or float("nan"),
                 targets["summary"] if targets else "–", conv)
        if lab["labelled"]:
            # also when M_i passed on D_i: those are paid DFT labels, and the later stages'
            # models train on them (M_i itself stays the stage's model: it was tested)
            datasets.append(lab["dataset"])
        if conv:
            break
        if targets is not None and not targets["met"]:
            missed = [n for n, r in targets["targets"].items() if not r["met"]]
            with rs.timed(ctx, "dft"):
                extra = t.label_targets(ctx, missed, keys.targets, seed=1000 * stage_idx + it)
            if extra["labelled"]:
                datasets.append(extra["dataset"])
    return {"model": model_key, "converged": conv, "datasets": datasets,
            "trained_on": trained_on, "iterations": it + 1, "warnings": warnings}


@flow(name="pfd-distill")
def distill_flow(ctx: RunContext, teacher_key: str) -> dict[str, Any]:
    """Teacher data → student → rounds of the student's own MD judged by the teacher →
    the final student, tested against teacher and DFT and audited by DFT on its own MD."""
    from pfd.distill.refine import default_bound

    d = ctx.cfg.distill
    assert d is not None
    rid = ctx.run_id
    with rs.timed(ctx, "distill"):
        explored: list[str] = []
        if d.teacher_md:
            ex = t.explore(ctx, teacher_key, d.groups, rs.distill_explore_prefix(rid))
            rs.record_force_calls(ctx, "distill", rs.distill_explore_prefix(rid), ex)
            explored = ex["keys"]
        syn = t.synthetic(ctx, explored, teacher_key)
        dft = rs.all_dft_keys(ctx.store, rid)
        teacher_vs_dft = t.test_model(ctx, teacher_key, dft,
                                      rs.distill_test_key(rid, "teacher_vs_dft"))
        bound = default_bound(d, teacher_vs_dft["force_rmse_eV_A"])
        train_keys = [syn["train"]]
        trained = [t.train_student(ctx, 0, train_keys, syn["test"])]
        student = trained[-1]["model"]
        rounds: list[dict[str, Any]] = []
        for r in range(1, d.refine.rounds + 2):  # N retrains need N + 1 measurements
            rounds.append(t.student_round(ctx, r, student, teacher_key, bound))
            if rounds[-1]["converged"] or r == d.refine.rounds + 1:
                break
            train_keys.append(rounds[-1]["added"])
            trained.append(t.train_student(ctx, r, train_keys, syn["test"], init_from=student,
                                           steps=d.refine.resolved_steps(d.student.steps)))
            student = trained[-1]["model"]
        final = publish_final(ctx, student)
        tests = {
            "student_vs_teacher": t.test_model(ctx, final, [syn["test"]],
                                               rs.distill_test_key(rid, "student_vs_teacher")),
            "student_vs_dft": t.test_model(ctx, final, dft,
                                           rs.distill_test_key(rid, "student_vs_dft")),
            "teacher_vs_dft": teacher_vs_dft,
        }
        audit = (t.student_audit(ctx, final, teacher_key, rounds[-1]["explored_keys"])
                 if d.audit_frames else None)
    record = rs.write_distill_record(ctx, final, teacher_key, syn, tests, rounds=rounds,
                                     train_keys=train_keys, audit=audit,
                                     trainings=[x["training"] for x in trained])
    return record | {"tests": tests}


def _flow_run_info() -> dict[str, str]:
    """Which Prefect flow run is working on the run, for `pfd status` and the UI link."""
    from prefect.runtime import flow_run

    return {"id": str(flow_run.id or ""), "name": str(flow_run.name or "")}


def _load(config: str | dict[str, Any]) -> PFDConfig:
    if isinstance(config, dict):
        return check_config(config)
    return check_config_file(Path(config))


@flow(name="pfd")
def pfd_flow(config: str | dict[str, Any], store: str | None = None,
             workdir: str | None = None) -> dict[str, Any]:
    """Run (or resume) a whole PFD job described by a config file path or mapping."""
    log = get_run_logger()
    cfg = _load(config)
    ctx = rs.make_context(cfg, store, Path(workdir) if workdir else None)
    # one flow per run: a second `pfd run` of the same run refuses here, writing nothing
    with hold_run(ctx.store, ctx.run_id, flow_run=_flow_run_info()["id"]):
        return _run(ctx, log)


def _run(ctx: RunContext, log: Any) -> dict[str, Any]:
    """The workflow of one run, while this flow holds its lease."""
    cfg = ctx.cfg
    rs.write_config(ctx)
    ctx = rs.claim_generation(ctx)
    rs.set_run_status(ctx, "running", flow_run=_flow_run_info())
    log.info("PFD run %s → store %s", ctx.run_id, ctx.store_url)
    # phases for the progress bar: init, each stage, distillation, validation, report
    with_distill = bool(cfg.distill and cfg.distill.enabled)
    n_phases = len(cfg.stages) + 2 + int(with_distill) + int(cfg.validation.enabled)
    progress = create_progress_artifact(progress=0.0, key=t.artifact_key(ctx, "progress"),
                                        description="PFD phases done (%)")
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        update_progress_artifact(progress, progress=100.0 * done / n_phases)

    notes: list[str] = []
    with dask_cluster(cfg.cluster, workdir=ctx.workdir):
        # init: D0 from perturbed structures
        with rs.timed(ctx, "dft"):
            init = t.init_dataset(ctx)
        advance()
        # fine-tune stages: each continues from all data labelled so far
        datasets = [init["dataset"]]
        teacher_data = datasets
        teacher: str | None = None
        converged = True
        left = cfg.max_total_iterations
        for k, stage in enumerate(cfg.stages):
            if left <= 0:
                notes.append(skipped_stage_note(stage.name, cfg.max_total_iterations))
                log.warning(notes[-1])
                converged = False
                advance()  # a skipped stage is a finished phase for the progress bar
                continue
            res = stage_flow(ctx, k, datasets, left, teacher)
            note = stage_note(stage.name, res["iterations"], res["converged"],
                              stage.max_iterations, cfg.max_total_iterations, left)
            left -= res["iterations"]
            notes += res.get("warnings", [])
            datasets, teacher, converged = res["datasets"], res["model"], res["converged"]
            teacher_data = res["trained_on"]
            if note is not None:
                notes.append(note)
                log.warning(note)
            advance()
        if not converged or teacher is None:
            # the last D_i joined the data without a model trained on it: train one
            teacher_data = datasets
            teacher = t.finetune(ctx, datasets, teacher)["model"]
        rs.write_teacher(ctx, teacher, teacher_data)
        # distillation: teacher → student
        distill = distill_flow(ctx, teacher) if with_distill else None
        if with_distill:
            advance()
        # validation: properties of teacher/student vs DFT, into report/validation.*
        if cfg.validation.enabled:
            with rs.timed(ctx, "validation"):
                tv.validate(ctx)
            advance()
    report = write_report(ctx, init, teacher, distill, notes)
    create_markdown_artifact(markdown=report.inline, key=t.artifact_key(ctx, "report"),
                             description=f"PFD report of run {ctx.run_id}")
    advance()
    student = distill["student"] if distill else None
    rs.set_run_status(ctx, "completed", teacher=teacher, student=student, warnings=notes)
    log.info("PFD run %s completed", ctx.run_id)
    return {"run_id": ctx.run_id, "store": ctx.store_url, "teacher": teacher,
            "student": student, "report": report.summary}
