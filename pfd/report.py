"""Human-readable results: the iteration table, a markdown summary and parity plots."""

from __future__ import annotations

from typing import Any

import numpy as np

from pfd.plotting import png, pyplot
from pfd.run_store import STATUS_COLUMNS, STATUS_FIELDS


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def status_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[fmt(r.get(k)) for _, k in STATUS_FIELDS] for r in rows]


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def status_markdown(rows: list[dict[str, Any]]) -> str:
    return markdown_table(STATUS_COLUMNS, status_table(rows))


def status_records(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The status table as one mapping per iteration (column title → cell)."""
    return [dict(zip(STATUS_COLUMNS, r, strict=True)) for r in status_table(rows)]


def parity_png(series: dict[str, tuple[list[float], list[float]]], xlabel: str,
               ylabel: str, title: str) -> bytes:
    """One parity panel with a series per model (e.g. teacher and student vs DFT)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5), dpi=120)
    lo, hi = np.inf, -np.inf
    for label, (ref, pred) in series.items():
        r, p = np.asarray(ref), np.asarray(pred)
        if r.size == 0:
            continue
        rmse = float(np.sqrt(np.mean((p - r) ** 2)))
        ax.scatter(r, p, s=4, alpha=0.5, label=f"{label} (RMSE {rmse:.3f})")
        lo, hi = min(lo, r.min(), p.min()), max(hi, r.max(), p.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return png(fig)


def distill_markdown(distill: dict[str, Any]) -> str:
    """The distillation record for people: test table, the frames of each kind the
    student trained on, its refinement rounds and its DFT audit (``pfd status`` and the
    report both print this)."""
    out = [markdown_table(["model", "tested on", "frames", "E RMSE meV/atom", "F RMSE eV/Å"],
                          [[r["model"], r["data"], fmt(r["n_frames"]),
                            fmt(r["energy_rmse_meV_atom"]), fmt(r["force_rmse_eV_A"])]
                           for r in distill["table"]])]
    kinds = distill.get("kinds") or {}
    if kinds:
        out += ["", "Student training frames by kind: " + ", ".join(
            f"{k} {v}" for k, v in kinds.items()) + "."]
    trainings = distill.get("trainings") or []
    if trainings:
        out += ["", "Student trainings: " + "; ".join(
            f"round {x['round']} {fmt(x['steps_trained'])} of {fmt(x['steps_ceiling'])} steps "
            f"in {fmt(None if x['train_seconds'] is None else round(x['train_seconds']))} s"
            + (f" ({x['stopped_early'].split(':')[0]})" if x.get("stopped_early") else "")
            for x in trainings) + "."]
    rounds = distill.get("rounds") or []
    if rounds:
        out += ["", "Student MD judged by the teacher (force disagreement on the student's "
                "own frames; the frames added train the next round's student):", "",
                markdown_table(
                    ["round", "MD frames", "stopped early", "F student−teacher eV/Å",
                     "E meV/atom", "bound eV/Å", "within", "frames added"],
                    [[fmt(r["round"] - 1), fmt(r["frames"]), fmt(len(r["stopped_early"])),
                      fmt(r["force_rmse_eV_A"]), fmt(r["energy_rmse_meV_atom"]),
                      fmt(r["bound_force_eV_A"]), fmt(r["converged"]),
                      fmt(r["n_added"] if i < len(rounds) - 1 else 0)]
                     for i, r in enumerate(rounds)])]
    audit = distill.get("audit")
    if audit and audit.get("student"):
        st, te = audit["student"], audit["teacher"]
        out += ["", f"DFT audit on {audit['n_frames']} frames of the final student's own MD: "
                f"student E {fmt(st['energy_rmse_meV_atom'])} meV/atom, F "
                f"{fmt(st['force_rmse_eV_A'])} eV/Å; teacher E "
                f"{fmt(te['energy_rmse_meV_atom'])} meV/atom, F "
                f"{fmt(te['force_rmse_eV_A'])} eV/Å."]
    return "\n".join(out)


def summary_markdown(run_id: str, rows: list[dict[str, Any]], init: dict[str, Any],
                     distill: dict[str, Any] | None, teacher_key: str | None,
                     notes: list[str]) -> str:
    out = [f"# PFD run `{run_id}`", ""]
    out += [f"Initial set: {init.get('labelled')} DFT frames "
            f"({init.get('failed')} failed).", "", "## Fine-tune iterations", "",
            status_markdown(rows), ""]
    if any(r.get("retention_force_drift_eV_A") is not None for r in rows):
        out += ["F/E drift: each M_i against its foundation on replay frames no stage "
                "labels (other volumes, rattled; energies after per-element offsets); "
                "drift / found. DFT err: the force drift over the foundation's own force "
                "error on the DFT frames M_i trained on — near 1, the model moved about as "
                "far as DFT says the foundation is off; far above 1, where no label asked "
                "it to.", ""]
    dft_total = int(init.get("labelled", 0)) + sum(int(r.get("labelled") or 0) for r in rows)
    out += [f"DFT frames in total: **{dft_total}**.", ""]
    if teacher_key:
        out += [f"Teacher model: `{teacher_key}`", ""]
    if distill:
        out += ["## Distillation", "", distill_markdown(distill), ""]
        out += [f"Student model: `{distill.get('student')}`", ""]
    if notes:
        out += ["## Warnings", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def curves_png(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
               title: str, logy: bool = False) -> bytes:
    """Lines on one panel: training curves, or an error per iteration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    for label, (x, y) in series.items():
        pts = [(a, b) for a, b in zip(x, y, strict=True)
               if b is not None and np.isfinite(b) and (b > 0 or not logy)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o" if len(pts) < 30 else None, ms=3,
                    lw=1.2, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return png(fig)


def iteration_curve_png(rows: list[dict[str, Any]], run_id: str) -> bytes:
    """Force RMSE of M_i on the fresh D_i, iteration after iteration, one line per stage."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for n, r in enumerate(rows):
        x, y = series.setdefault(f"stage {r.get('stage')} {r.get('stage_name', '')}".strip(),
                                 ([], []))
        x.append(n)
        y.append(r.get("force_rmse_eV_A"))
    return curves_png(series, "iteration (all stages)", "F RMSE of M_i on D_i (eV/Å)",
                      f"Fine-tune loop — {run_id}")


def lcurve_png(rows: list[dict[str, float]], title: str) -> bytes:
    """Student training: validation/training force and energy RMSE against step."""
    steps = [r["step"] for r in rows]
    series = {name: (steps, [r.get(col, float("nan")) for r in rows])
              for name, col in (("F RMSE val (eV/Å)", "rmse_f_val"),
                                ("F RMSE train (eV/Å)", "rmse_f_trn"),
                                ("E RMSE val (eV/atom)", "rmse_e_val"))
              if any(col in r for r in rows)}
    return curves_png(series, "training step", "RMSE", title, logy=True)


def data_uri_png(image: bytes) -> str:
    """Inline image for markdown artifacts: the Prefect UI cannot read our store's files."""
    import base64

    return "data:image/png;base64," + base64.b64encode(image).decode()
