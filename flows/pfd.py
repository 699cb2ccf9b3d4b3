"""The parent flow: init → stages (each a subflow of fine-tune iterations) → distill → report.

Stages run in sequence because each starts from everything the previous ones labelled.
Inside an iteration the semantics are the paper's: M_i is tested on the fresh D_i
*before* D_i joins the training set; converged ⇒ the stage ends with M_i.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pfd import steps
from pfd.config import PFDConfig, load_config, parse_config
from pfd.iteration_budget import skipped_stage_note, stage_iterations, stage_note
from pfd.models.deepmd import read_lcurve
from pfd.report import (
    data_uri_png,
    iteration_curve_png,
    lcurve_png,
    parity_png,
    status_table,
    summary_markdown,
)
from pfd.steps import STATUS_COLUMNS, RunContext
from tasks import steps as t
from tasks import validate as tv
from tasks.cluster import dask_cluster


def publish_status(ctx: RunContext) -> list[dict[str, Any]]:
    rows = steps.status_rows(ctx.store, ctx.run_id)
    table = [dict(zip(STATUS_COLUMNS, r, strict=True)) for r in status_table(rows)]
    create_table_artifact(table=table, key=t.artifact_key(ctx, "iterations"),
                          description=f"PFD iterations of run {ctx.run_id}")
    return rows


def _phase(ctx: RunContext, name: str, t0: float) -> None:
    timings = ctx.store.get_json(ctx.key("timings.json")) if ctx.store.exists(
        ctx.key("timings.json")) else {}
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)
    ctx.store.put_json(ctx.key("timings.json"), timings)


@flow(name="pfd-stage")
def stage_flow(ctx: RunContext, stage_idx: int, datasets: list[str],
               iterations_left: int) -> dict[str, Any]:
    """Fine-tune / explore / select / label / test until converged or out of iterations."""
    log = get_run_logger()
    stage = ctx.cfg.stages[stage_idx]
    datasets = list(datasets)
    model_key: str | None = None
    conv = False
    it = 0
    for it in range(stage_iterations(stage.max_iterations, iterations_left)):
        prefix = steps.iteration_prefix(ctx, stage_idx, it)
        t0 = time.perf_counter()
        ft = t.finetune(ctx, datasets)
        model_key = ft["model"]
        _phase(ctx, "finetune", t0)
        t0 = time.perf_counter()
        ex = t.explore(ctx, model_key, stage.groups, f"{prefix}/explore")
        _phase(ctx, "explore", t0)
        sel = t.filter_select(ctx, ex["keys"], datasets, stage, prefix)
        t0 = time.perf_counter()
        lab = t.label(ctx, sel["candidates"], prefix)
        _phase(ctx, "dft", t0)
        test = t.test_model(ctx, model_key, [lab["dataset"]], f"{prefix}/test.json")
        conv = lab["labelled"] > 0 and steps.is_converged(test, stage)
        row = {"stage": stage_idx + 1, "stage_name": stage.name, "iter": it,
               "model": model_key, "explored": ex["frames"], "filtered": sel["filtered"],
               "selected": sel["selected"], "labelled": lab["labelled"],
               "failed": lab["failed"], "energy_rmse_meV_atom": test.get("energy_rmse_meV_atom"),
               "force_rmse_eV_A": test.get("force_rmse_eV_A"), "converged": conv,
               "stopped_early": ex["stopped_early"], "dataset": lab["dataset"]}
        steps.write_iteration_record(ctx, stage_idx, it, row)
        publish_status(ctx)
        log.info("stage %s iter %d: F RMSE %.4f eV/Å, E RMSE %.2f meV/atom, converged=%s",
                 stage.name, it, row["force_rmse_eV_A"] or float("nan"),
                 row["energy_rmse_meV_atom"] or float("nan"), conv)
        if conv:
            break
        if lab["labelled"]:
            datasets.append(lab["dataset"])
    return {"model": model_key, "converged": conv, "datasets": datasets,
            "iterations": it + 1}


@flow(name="pfd-distill")
def distill_flow(ctx: RunContext, teacher_key: str) -> dict[str, Any]:
    d = ctx.cfg.distill
    assert d is not None
    t0 = time.perf_counter()
    ex = t.explore(ctx, teacher_key, d.groups, ctx.key("distill", "explore"))
    syn = t.synthetic(ctx, ex["keys"])
    student = t.train_student(ctx, syn)
    dft = steps.all_dft_keys(ctx)
    tests = {
        "student_vs_teacher": t.test_model(ctx, student["model"], [syn["test"]],
                                           ctx.key("distill", "test_student_vs_teacher.json")),
        "student_vs_dft": t.test_model(ctx, student["model"], dft,
                                       ctx.key("distill", "test_student_vs_dft.json")),
        "teacher_vs_dft": t.test_model(ctx, teacher_key, dft,
                                       ctx.key("distill", "test_teacher_vs_dft.json")),
    }
    _phase(ctx, "distill", t0)
    table = [{"model": name.split("_vs_")[0], "data": name.split("_vs_")[1],
              **{k: rec[k] for k in ("n_frames", "energy_rmse_meV_atom", "force_rmse_eV_A")}}
             for name, rec in tests.items()]
    record = {"student": student["model"], "teacher": teacher_key, "synthetic": syn,
              "table": table}
    ctx.store.put_json(ctx.key("distill", "record.json"), record)
    return record | {"tests": tests}


def _report_images(ctx: RunContext, rows: list[dict[str, Any]],
                   distill: dict[str, Any] | None) -> dict[str, bytes]:
    """The report's plots, by file name; each also goes into the store under report/."""
    images: dict[str, bytes] = {}
    if rows:
        images["iterations.png"] = iteration_curve_png(rows, ctx.run_id)
    if distill:
        tests = distill["tests"]
        series = {name.replace("_vs_dft", ""): (tests[name]["parity"]["f_ref"],
                                                tests[name]["parity"]["f_pred"])
                  for name in ("teacher_vs_dft", "student_vs_dft")}
        images["force_parity.png"] = parity_png(
            series, "DFT force component (eV/Å)", "model (eV/Å)",
            f"Forces on all DFT frames — {ctx.run_id}")
        lcurve_key = ctx.key("distill", "student", "lcurve.out")
        if ctx.store.exists(lcurve_key):
            with tempfile.TemporaryDirectory() as tmp:
                path = ctx.store.get_file(lcurve_key, Path(tmp) / "lcurve.out")
                images["student_lcurve.png"] = lcurve_png(
                    read_lcurve(path), f"Student training — {ctx.run_id}")
    return images


def _links(ctx: RunContext, teacher_key: str | None, distill: dict[str, Any] | None) -> str:
    """Where the run's products live, as store URIs (what `pfd fetch` copies)."""
    items = [("run", ctx.store.uri(ctx.key("run.json")).removesuffix("/run.json"))]
    if teacher_key:
        items.append(("teacher model", ctx.store.uri(teacher_key)))
    if distill:
        items.append(("student model", ctx.store.uri(distill["student"])))
    items += [(f"DFT dataset {k.split('/', 2)[2]}", ctx.store.uri(k))
              for k in steps.all_dft_keys(ctx)]
    lines = ["## Where things are", ""] + [f"- {name}: `{uri}`" for name, uri in items]
    lines += ["", f"Copy them out with `pfd fetch {ctx.run_id} --to DIR` "
              f"(`--store {ctx.store_url}`)."]
    return "\n".join(lines) + "\n"


def write_report(ctx: RunContext, init: dict[str, Any], teacher_key: str | None,
                 distill: dict[str, Any] | None, notes: list[str]) -> str:
    rows = steps.status_rows(ctx.store, ctx.run_id)
    md = summary_markdown(ctx.run_id, rows, init,
                          {k: v for k, v in (distill or {}).items() if k != "tests"} or None,
                          teacher_key, notes)
    images = _report_images(ctx, rows, distill)
    stored, inline = md, md  # the store's copy links files; the artifact inlines them
    for name, png in images.items():
        ctx.store.put_bytes(ctx.key("report", name), png)
        title = name.removesuffix(".png").replace("_", " ")
        stored += f"\n![{title}]({name})\n"
        inline += f"\n![{title}]({data_uri_png(png)})\n"
    links = _links(ctx, teacher_key, distill)
    ctx.store.put_text(ctx.key("report", "summary.md"), stored + "\n" + links)
    create_markdown_artifact(markdown=inline + "\n" + links, key=t.artifact_key(ctx, "report"),
                             description=f"PFD report of run {ctx.run_id}")
    return md


def _flow_run_info() -> dict[str, str]:
    """Which Prefect flow run is working on the run, for `pfd status` and the UI link."""
    from prefect.runtime import flow_run

    return {"id": str(flow_run.id or ""), "name": str(flow_run.name or "")}


def _load(config: str | dict[str, Any]) -> PFDConfig:
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(Path(config))


@flow(name="pfd")
def pfd_flow(config: str | dict[str, Any], store: str | None = None,
             workdir: str | None = None) -> dict[str, Any]:
    """Run (or resume) a whole PFD job described by a config file path or mapping."""
    log = get_run_logger()
    cfg = _load(config)
    ctx = steps.make_context(cfg, store, Path(workdir) if workdir else None)
    ctx.store.put_json(ctx.key("config.json"), cfg.model_dump(mode="json"))
    ctx = steps.claim_generation(ctx)
    steps.set_run_status(ctx, "running", flow_run=_flow_run_info())
    log.info("PFD run %s → store %s", ctx.run_id, ctx.store_url)
    # init, each stage, distillation, validation, report
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
    with dask_cluster(cfg.cluster):
        t0 = time.perf_counter()
        init = t.init_dataset(ctx)
        _phase(ctx, "dft", t0)
        advance()
        datasets = [init["dataset"]]
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
            res = stage_flow(ctx, k, datasets, left)
            note = stage_note(stage.name, res["iterations"], res["converged"],
                              stage.max_iterations, cfg.max_total_iterations, left)
            left -= res["iterations"]
            datasets, teacher, converged = res["datasets"], res["model"], res["converged"]
            if note is not None:
                notes.append(note)
                log.warning(note)
            advance()
        if not converged or teacher is None:
            # the last D_i joined the data without a model trained on it: train one
            ft = t.finetune(ctx, datasets)
            teacher = ft["model"]
        ctx.store.put_json(ctx.key("teacher.json"), {"model": teacher, "datasets": datasets})
        distill = distill_flow(ctx, teacher) if with_distill else None
        if with_distill:
            advance()
        if cfg.validation.enabled:  # properties of teacher/student vs DFT: report/validation.*
            t0 = time.perf_counter()
            tv.validate(ctx)
            _phase(ctx, "validation", t0)
            advance()
    md = write_report(ctx, init, teacher, distill, notes)
    advance()
    steps.set_run_status(ctx, "completed", teacher=teacher,
                         student=distill["student"] if distill else None, warnings=notes)
    log.info("PFD run %s completed", ctx.run_id)
    return {"run_id": ctx.run_id, "store": ctx.store_url, "teacher": teacher,
            "student": distill["student"] if distill else None, "report": md}
