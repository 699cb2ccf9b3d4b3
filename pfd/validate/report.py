"""The validation report: PNGs, markdown, self-contained HTML and ``validation.json``.

The report is built once as a list of blocks (heading, text, table, image) and rendered
twice, so the markdown (images linked next to it in the store) and the HTML (images
inline as base64, one file to mail or open anywhere) can never say different things.
``validation.json`` holds the numbers only, for scripts and ``pfd report``.

Every number in the summary carries its uncertainty and, when its own property module
says it is not meaningful, a ⚠ and the reason in the "Checks" section next to it; the
comparison with DFT says whether a difference is larger than the uncertainties and, for
quantities named in ``validation.targets``, whether it is within the user's tolerance.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pfd.store import ArtifactStore
from pfd.validate import diffusion as dif
from pfd.validate import eos, phonons
from pfd.validate import parity as par
from pfd.validate import quantities as qt
from pfd.validate import stability as stab
from pfd.validate.results import DFT, ValidationResults

MODEL_ORDER = ("teacher", "student", DFT)
T = TypeVar("T")


@dataclass(frozen=True)
class Block:
    kind: str  # "h2" | "p" | "table" | "img" | "pre"
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    png: bytes = b""


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pm(v: float, err: float, digits: int) -> str:
    """``value ± err`` as the summary writes it (no validity mark: the detail tables have
    their own note column)."""
    return qt.cell(qt.Quantity(v, err), digits)


def _order(names: Any) -> list[str]:
    names = list(names)
    return [n for n in MODEL_ORDER if n in names] + sorted(n for n in names
                                                           if n not in MODEL_ORDER)


def _ordered(by: Mapping[str, T]) -> dict[str, T]:
    """``by`` (model → result) in the report's model order: every table and plot uses it."""
    return {m: by[m] for m in _order(by)}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s).strip("_")


# --------------------------------------------------------------------------- numbers
def _models(res: ValidationResults) -> list[str]:
    return _order({m for d in res.eos.values() for m in d} | set(res.vacancy)
                  | set(res.phonons) | set(res.phonon_points) | set(res.diffusion)
                  | set(res.stability))


def summary_rows(res: ValidationResults, table: qt.Table | None = None) -> tuple[
        list[str], list[list[str]]]:
    """The one table a reader looks at first: each quantity, each model side by side,
    value ± uncertainty, ⚠ where the value is not meaningful (the reasons are listed in
    the report's Checks section)."""
    t = table or qt.table(res)
    models = _models(res)
    rows: list[list[str]] = []
    for name, by in t.values.items():
        text, digits = qt.label(name)
        rows.append([text] + [qt.cell(by.get(m), digits) for m in models])
    if res.phonons:
        rows.append(["imaginary modes"] + [_f(res.phonons[m].imaginary_modes)
                                           if m in res.phonons else "–" for m in models])
    for st, by in _stability_by_structure(res).items():
        r = next(iter(by.values()))
        rows.append([f"NVE {st} ({r.temperature_K:g} K, {r.n_steps * r.timestep_fs / 1000:g} ps)"]
                    + [stab.verdict(by[m]) if m in by else "–" for m in models])
    return ["property", *models], rows


def _stability_by_structure(res: ValidationResults) -> dict[str, dict[str, stab.StabilityRun]]:
    """structure → model → stability run (stored the other way round, per model)."""
    out: dict[str, dict[str, stab.StabilityRun]] = {}
    for m, by in _ordered(res.stability).items():
        for st, r in by.items():
            out.setdefault(st, {})[m] = r
    return out


def comparison_rows(table: qt.Table) -> list[tuple[str, ...]]:
    """quantity, model, difference from DFT (in σ), agreement, target."""
    rows = []
    for name, by in table.vs_dft.items():
        text, digits = qt.label(name)
        for m, c in _ordered(by).items():
            rows.append((text, m, qt.verdict(c, digits)))
    return rows


def problem_rows(table: qt.Table) -> list[tuple[str, str, str]]:
    """(quantity, model, why it is not meaningful), one row per reason."""
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for name, by in table.values.items():
        text, _ = qt.label(name)
        for m, q in _ordered(by).items():
            for why in q.problems:
                if (m, why) in seen:  # one E(V) reason covers its a0, V0, B0, B0'
                    continue
                seen.add((m, why))
                rows.append((text, m, why))
    return rows


def numbers(res: ValidationResults, run_id: str, models: dict[str, str],
            plots: dict[str, str], table: qt.Table | None = None) -> dict[str, Any]:
    """``validation.json``: every figure of the report, no arrays of raw data."""
    t = table or qt.table(res)
    header, rows = summary_rows(res, t)
    return {
        "run_id": run_id, "models": models,
        "summary": {"header": header, "rows": rows},
        "quantities": qt.to_json(t),
        "checks": [list(r) for r in problem_rows(t)],
        "vs_dft": [list(r) for r in comparison_rows(t)],
        "eos": {st: {m: {"fit": r.fit.__dict__ if r.fit else None, "error": r.error,
                         "n_points": len(r.volumes_A3_atom)} for m, r in by.items()}
                for st, by in res.eos.items()},
        "vacancy": {m: r.to_dict() for m, r in res.vacancy.items()},
        "vacancy_phases": {st: {m: r.to_dict() for m, r in by.items()}
                           for st, by in res.vacancy_phases.items()},
        "phonons": {m: {k: v for k, v in r.to_dict().items()
                        if k not in ("segments_distance", "segments_THz", "dos",
                                     "dos_frequency_THz")} for m, r in res.phonons.items()},
        "phonon_points": {m: r.to_dict() for m, r in res.phonon_points.items()},
        "diffusion": {m: {"structure": d.structure,
                          "arrhenius": {s: (f.to_dict() if f else None)
                                        for s, f in d.arrhenius.items()},
                          "notes": d.notes,
                          "temperatures": [{"temperature_K": r.temperature_K,
                                            "mean_temperature_K": r.mean_temperature_K,
                                            "d_A2_ps": r.d_A2_ps, "d_err_A2_ps": r.d_err_A2_ps}
                                           for r in d.runs]}
                      for m, d in res.diffusion.items()},
        "stability": {m: {st: {**{k: v for k, v in r.to_dict().items() if k not in stab.SERIES},
                               "problems": stab.problems(r)} for st, r in by.items()}
                      for m, by in res.stability.items()},
        "parity": {ds: {m: r.summary() for m, r in by.items()} for ds, by in res.parity.items()},
        "dft": {"computed": res.dft_computed, "cached": res.dft_cached},
        "errors": res.errors, "skipped": res.skipped, "timings_s": res.timings_s,
        "compute_s": res.compute_s,
        "reused": res.reused,
        "plots": plots,
    }


# --------------------------------------------------------------------------- blocks
def blocks(res: ValidationResults, run_id: str, models: dict[str, str],
           table: qt.Table | None = None) -> tuple[list[Block], dict[str, bytes]]:
    t = table or qt.table(res)
    out: list[Block] = [Block("h1", f"Validation of run `{run_id}`")]
    out.append(Block("p", "Models: " + ", ".join(f"**{m}** `{k}`" for m, k in models.items())
                     + f". DFT frames: {res.dft_computed} computed, {res.dft_cached} from "
                     "the label cache. Values are ± one standard uncertainty; ⚠ marks a "
                     "value its own check finds not meaningful (see Checks)."))
    header, rows = summary_rows(res, t)
    out.append(Block("table", header=tuple(header), rows=tuple(tuple(r) for r in rows)))
    checks = problem_rows(t)
    out.append(Block("h2", "Checks"))
    if checks:
        out.append(Block("table", header=("quantity", "model", "why it is not meaningful"),
                         rows=tuple(checks)))
    else:
        out.append(Block("p", "Every reported value passed its own checks."))
    cmp_rows = comparison_rows(t)
    if cmp_rows:
        out.append(Block("h2", "Against DFT"))
        out.append(Block("p", f"Difference from the labeller's value, in combined standard "
                         f"uncertainties (σ); within {qt.AGREE_SIGMAS:g}σ it agrees (the "
                         "calculations cannot tell the two apart)."))
        out.append(Block("table", header=("quantity", "model", "model − DFT"),
                         rows=tuple(cmp_rows)))
    pngs: dict[str, bytes] = {}

    def img(name: str, data: bytes, caption: str) -> None:
        pngs[name] = data
        out.append(Block("img", caption, png=data, header=(name,)))

    if res.eos:
        out.append(Block("h2", "Energy–volume curves (Birch–Murnaghan)"))
        body = []
        for st, by in res.eos.items():
            for m, r in _ordered(by).items():
                f = r.fit
                body.append((st, m, str(len(r.volumes_A3_atom)),
                             _pm(f.a0_A, f.a0_err_A, 4) if f else "–",
                             _pm(f.v0_A3_atom, f.v0_err_A3_atom, 3) if f else "–",
                             _pm(f.b0_GPa, f.b0_err_GPa, 1) if f else "–",
                             _pm(f.b0_prime, f.b0_prime_err, 2) if f else "–",
                             _f(f.rms_residual_meV_atom if f else None, 2),
                             "; ".join(eos.problems(r)) or r.error or ""))
            img(f"eos-{_slug(st)}.png", eos.plot(_ordered(by), f"E(V) {st} — {run_id}"),
                f"E(V) of {st}")
        out.insert(len(out) - len(res.eos), Block(
            "table", header=("structure", "model", "points", "a0 (Å)", "V0 (Å³/atom)",
                             "B0 (GPa)", "B0'", "fit rms (meV/atom)", "note"),
            rows=tuple(body)))
    if res.vacancy or res.vacancy_phases:
        out.append(Block("h2", "Vacancy formation energy (relaxed ions, fixed cell)"))
        by_structure = ([(next(iter(res.vacancy.values())).structure, res.vacancy)]
                        if res.vacancy else []) + list(res.vacancy_phases.items())
        out.append(Block("table", header=("structure", "model", "atoms", "a (Å)",
                                          "E_f unrelaxed (eV)", "E_f relaxed (eV)", "steps",
                                          "converged", "max |F| (eV/Å)", "max move (Å)"),
                         rows=tuple((st, m, str(r.n_atoms_bulk), _f(r.a_A, 4),
                                     _f(r.formation_unrelaxed_eV),
                                     _pm(r.formation_eV, r.formation_err_eV, 4),
                                     str(r.relax_steps), _f(r.relax_converged),
                                     _f(r.max_force_eV_A), _f(r.max_displacement_A))
                                    for st, by in by_structure
                                    for m, r in _ordered(by).items())))
        out.append(Block("p", "± is the energy the relaxation had still to gain (½ fᵀH⁻¹f "
                         "with the optimiser's Hessian)."))
    if res.phonons or res.phonon_points:
        out.append(Block("h2", "Phonons (phonopy, finite displacements)"))
        rows_p = []
        for m in _order(set(res.phonons) | set(res.phonon_points)):
            src: Any = res.phonons.get(m) or res.phonon_points[m]
            pts = "; ".join(f"{k}: " + ", ".join(f"{x:.2f}" for x in v)
                            for k, v in src.special_THz.items())
            pr = res.phonons.get(m)
            rows_p.append((m, _f(src.a_A, 4), _pm(src.gamma_optical_THz,
                                                  src.gamma_optical_err_THz, 3),
                           _f(pr.min_frequency_THz, 3) if pr else "–",
                           _f(pr.imaginary_modes) if pr else "–", pts))
        out.append(Block("table", header=("model", "a (Å)", "Γ optical (THz)",
                                          "min frequency (THz)", "imaginary", "exact points "
                                          "(THz)"), rows=tuple(rows_p)))
        if res.phonons:
            img("phonons.png", phonons.plot(_ordered(res.phonons), res.phonon_points,
                                            f"Phonons — {run_id}"),
                "Phonon dispersion and DOS")
    for m, d in _ordered(res.diffusion).items():
        out.append(Block("h2", f"MD with the {m}: RDF, MSD, diffusion ({d.structure})"))
        rows_d = []
        for r in d.runs:
            for s in r.d_A2_ps:
                rows_d.append((f"{r.temperature_K:g}", f"{r.mean_temperature_K:.0f}", s,
                               f"{r.d_A2_ps[s] * dif.A2_PS_TO_CM2_S:.3e}",
                               f"{r.d_err_A2_ps[s] * dif.A2_PS_TO_CM2_S:.1e}",
                               _f(r.msd_exponent.get(s), 2),
                               f"{_f(r.coordination_start, 2)} → {_f(r.coordination_md, 2)}",
                               "; ".join(x.split(": ", 1)[-1] for x in dif.run_problems(r, s))
                               or "ok"))
        out.append(Block("table", header=("T (K)", "mean T (K)", "species", "D (cm²/s)",
                                          "± (cm²/s)", "MSD exponent", "coordination",
                                          "check"), rows=tuple(rows_d)))
        for s, fit in d.arrhenius.items():
            if fit is not None:
                why = dif.fit_problems(fit)
                out.append(Block("p", f"{s}: Ea = {fit.ea_eV:.3f} ± {fit.ea_err_eV:.3f} eV, "
                                      f"D0 = {fit.d0_cm2_s:.3e} cm²/s, R² {_f(fit.r2, 3)}"
                                      + (f" — ⚠ {'; '.join(why)}" if why else "")))
        for s, note in d.notes.items():
            out.append(Block("p", f"{s}: {note}."))
        img(f"diffusion-{_slug(m)}.png", dif.plot(d, f"{m} — {run_id}"), f"MD with the {m}")
    if res.stability:
        out.append(Block("h2", "Stability: NVE MD above the training temperatures"))
        out.append(Block("p", "Velocity Verlet without a thermostat, from Maxwell–Boltzmann "
                         "velocities at twice the target (equipartition brings it to T). "
                         "Drift: slope of the total energy ± its least-squares error; a "
                         f"blow-up is a force above {stab.MAX_FORCE_EV_A:g} eV/Å, a "
                         "non-finite energy or atoms closer than "
                         f"{stab.MIN_DISTANCE_FRACTION:g} × the starting shortest distance."))
        rows_s = [(st, m, str(r.n_atoms), f"{r.temperature_K:g}",
                   _f(r.mean_temperature_K, 0),
                   f"{r.time_done_ps:g} / {r.n_steps * r.timestep_fs / 1000:g}",
                   _pm(r.drift_meV_atom_ps, r.drift_err_meV_atom_ps, 3),
                   _f(r.max_energy_dev_meV_atom, 2),
                   f"{_f(r.min_distance_start_A, 2)} → {_f(r.min_distance_A, 2)}",
                   _f(r.max_force_eV_A, 1), "; ".join(stab.problems(r)) or "ok")
                  for st, by in _stability_by_structure(res).items()
                  for m, r in by.items()]
        out.append(Block("table", header=("structure", "model", "atoms", "T (K)",
                                          "mean T (K)", "time (ps)",
                                          "drift (meV/atom/ps)",
                                          "max deviation from E0 (meV/atom)",
                                          "shortest distance (Å)", "max force (eV/Å)",
                                          "check"), rows=tuple(rows_s)))
        for m, by in _ordered(res.stability).items():
            img(f"stability-{_slug(m)}.png", stab.plot(by, f"NVE with the {m} — {run_id}"),
                f"NVE stability with the {m}")
    if res.parity:
        out.append(Block("h2", "Parity on the labelled datasets"))
        rows_q = [(ds, m, str(r.n_frames), _f(r.energy_rmse_meV_atom, 2),
                   _f(r.force_rmse_eV_A, 4), _f(r.stress_rmse_GPa, 3))
                  for ds, by in res.parity.items() for m, r in _ordered(by).items()]
        out.append(Block("table", header=("dataset", "model", "frames", "E RMSE (meV/atom)",
                                          "F RMSE (eV/Å)", "S RMSE (GPa)"), rows=tuple(rows_q)))
        for ds, by in res.parity.items():
            img(f"parity-{_slug(ds)}.png", par.plot(_ordered(by), ds), f"parity on {ds}")
    if res.skipped:
        out.append(Block("p", "Skipped (DFT off, labels not in the cache): "
                         + ", ".join(f"`{k}`" for k in res.skipped) + "."))
    if res.errors:
        out.append(Block("h2", "Failed properties"))
        for k, v in res.errors.items():
            out.append(Block("pre", f"{k}: {v}"))
    return out, pngs


def to_markdown(bl: list[Block], image_dir: str) -> str:
    lines: list[str] = []
    for b in bl:
        if b.kind == "h1":
            lines += [f"# {b.text}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "pre":
            lines += ["```", b.text, "```", ""]
        elif b.kind == "table":
            lines += ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(r) + " |" for r in b.rows] + [""]
        elif b.kind == "img":
            lines += [f"![{b.text}]({image_dir}/{b.header[0]})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """The little markdown the blocks use: **bold** and `code`."""
    out, parts = [], html.escape(text).split("`")
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f"<code>{p}</code>")
        else:
            bold = p.split("**")
            out.append("".join(f"<b>{x}</b>" if j % 2 else x for j, x in enumerate(bold)))
    return "".join(out)


def to_html(bl: list[Block], title: str) -> str:
    body = []
    for b in bl:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "pre":
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                           for r in b.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b.kind == "img":
            data = base64.b64encode(b.png).decode()
            body.append(f'<figure><img alt="{html.escape(b.text)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{html.escape(b.text)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_report(store: ArtifactStore, report_prefix: str, res: ValidationResults,
                 run_id: str, models: dict[str, str],
                 targets: dict[str, str | float] | None = None) -> dict[str, Any]:
    """PNGs under ``<prefix>/validation/``, then validation.md/.html, then
    validation.json last (the completion marker ``pfd report`` reads)."""
    t = qt.table(res, targets)
    bl, pngs = blocks(res, run_id, models, t)
    plots = {}
    for name, data in pngs.items():
        key = f"{report_prefix}/validation/{name}"
        store.put_bytes(key, data)
        plots[name] = key
    md = to_markdown(bl, "validation")
    store.put_text(f"{report_prefix}/validation.md", md)
    store.put_text(f"{report_prefix}/validation.html", to_html(bl, f"Validation {run_id}"))
    nums = numbers(res, run_id, models, plots, t)
    store.put_json(f"{report_prefix}/validation.json", nums)
    return {"markdown": md, "json": f"{report_prefix}/validation.json",
            "html": f"{report_prefix}/validation.html", "plots": plots,
            "summary": nums["summary"], "errors": res.errors,
            "checks": nums["checks"]}
