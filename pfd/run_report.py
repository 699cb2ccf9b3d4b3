"""The run's report: summary, plots and where the products are, written under ``report/``.

``write_report`` stores ``report/summary.md`` (linking the plots stored beside it) and
returns the same report with the plots inlined, for a workflow engine's UI (the Prefect
UI cannot read the store's files).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfd import run_store as rs
from pfd.report import (
    data_uri_png,
    iteration_curve_png,
    lcurve_png,
    parity_png,
    summary_markdown,
)
from pfd.run_store import RunContext


@dataclass(frozen=True)
class RunReport:
    #: the summary (tables, warnings), without plots or links
    summary: str
    #: summary, plots inlined as data URIs and the links: for a UI artifact
    inline: str


def report_images(ctx: RunContext, rows: list[dict[str, Any]],
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
        lcurve_key = f"{rs.student_key(ctx.run_id)}/lcurve.out"
        if ctx.store.exists(lcurve_key):
            from pfd.models.deepmd_run import read_lcurve

            with tempfile.TemporaryDirectory() as tmp:
                path = ctx.store.get_file(lcurve_key, Path(tmp) / "lcurve.out")
                images["student_lcurve.png"] = lcurve_png(
                    read_lcurve(path), f"Student training — {ctx.run_id}")
    return images


def links_markdown(ctx: RunContext, teacher_key: str | None,
                   distill: dict[str, Any] | None) -> str:
    """Where the run's products live, as store URIs (what `pfd fetch` copies)."""
    store = ctx.store
    items = [("run", store.uri(rs.run_info_key(ctx.run_id)).removesuffix("/run.json"))]
    if teacher_key:
        items.append(("teacher model", store.uri(teacher_key)))
    if distill:
        items.append(("student model", store.uri(distill["student"])))
    items += [(f"DFT dataset {k.split('/', 2)[2]}", store.uri(k))
              for k in rs.all_dft_keys(store, ctx.run_id)]
    lines = ["## Where things are", ""] + [f"- {name}: `{uri}`" for name, uri in items]
    lines += ["", f"Copy them out with `pfd fetch {ctx.run_id} --to DIR` "
              f"(`--store {ctx.store_url}`)."]
    return "\n".join(lines) + "\n"


def theory_markdown(ctx: RunContext, teacher_key: str | None) -> str:
    """The level-of-theory section (and ``report/level_of_theory.json``): the labeller's
    physics against the foundation's, and the element energies the teacher refitted."""
    from pfd import frames as fr
    from pfd import level_of_theory
    from pfd.models.meta import MODEL_JSON

    store = ctx.store
    elements = fr.species([a for k in rs.all_dft_keys(store, ctx.run_id)
                           for a in store.get_frames(k)])
    meta_key = f"{teacher_key}/{MODEL_JSON}" if teacher_key else None
    shift = (store.get_json(meta_key).get("energy_shift_eV")
             if meta_key and store.exists(meta_key) else None)
    rec = level_of_theory.report(ctx.cfg, elements, shift)
    store.put_json(rs.report_key(ctx.run_id, "level_of_theory.json"), rec)
    return "## Level of theory\n\n" + level_of_theory.markdown(rec)


def write_report(ctx: RunContext, init: dict[str, Any], teacher_key: str | None,
                 distill: dict[str, Any] | None, notes: list[str]) -> RunReport:
    """Write ``report/summary.md`` and its plots; ``distill`` carries its ``tests``."""
    store = ctx.store
    rows = rs.status_rows(store, ctx.run_id)
    md = summary_markdown(ctx.run_id, rows, init,
                          {k: v for k, v in (distill or {}).items() if k != "tests"} or None,
                          teacher_key, notes)
    md += "\n" + theory_markdown(ctx, teacher_key)
    images = report_images(ctx, rows, distill)
    stored, inline = md, md  # the store's copy links files; the artifact inlines them
    for name, png in images.items():
        store.put_bytes(rs.report_key(ctx.run_id, name), png)
        title = name.removesuffix(".png").replace("_", " ")
        stored += f"\n![{title}]({name})\n"
        inline += f"\n![{title}]({data_uri_png(png)})\n"
    links = links_markdown(ctx, teacher_key, distill)
    store.put_text(rs.report_key(ctx.run_id, "summary.md"), stored + "\n" + links)
    return RunReport(summary=md, inline=inline + "\n" + links)
