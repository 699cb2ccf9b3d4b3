"""Property targets as a convergence criterion of a fine-tune stage.

A stage may declare ``converge.targets`` (``{eos.diamond.B0_GPa: 10%, vacancy.E_f_eV:
0.1}``, the names of ``pfd.config.QUANTITY_PATTERNS``). After each iteration the model M_i is
validated on just those properties, against the run's labeller through the label cache
(the DFT reference is paid for once per run; its frames never join the training data, so
the check stays a check). A target is met when the difference is within its tolerance
and the value passes its own property checks. A missed target is treated like a missed
RMSE criterion, and the iteration also labels frames where that property is sensitive:
strained, lightly rattled cells between the E–V check's volumes (E–V targets), rattled
defect cells at the structure's lattice (vacancy targets) and randomly displaced cells
(phonon targets). Those join D_i.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms

from pfd.config import PFDConfig, ValidationSpec
from pfd.config import quantity_structure as structure_of
from pfd.validate import eos, vacancy
from pfd.validate import quantities as qt
from pfd.validate.results import DFT

#: the property families a stage target can name (diffusion has no DFT reference)
FAMILIES = ("eos", "vacancy", "phonons")
#: frames labelled per missed target and iteration, and how they are made
N_STRAINED = 4
STRAIN_RATTLE_A = 0.02
N_DEFECT = 3
DEFECT_RATTLE_A = 0.05
N_DISPLACED = 2
PHONON_RATTLE_A = 0.03
MODEL = "model"


def families(targets: dict[str, Any]) -> set[str]:
    return {name.split(".", 1)[0] for name in targets}


def named(targets: dict[str, Any] | list[str], family: str) -> list[str]:
    """The structures the ``family`` targets name (``eos.<s>.*``, ``vacancy.<s>.E_f_eV``),
    in a stable order."""
    return sorted({s for n in targets if n.split(".", 1)[0] == family
                   and (s := structure_of(n)) is not None})


def eos_reference(cfg: PFDConfig) -> str:
    """The phase ``eos.<s>.dE0_meV_atom`` is relative to: the first of the validation's
    E–V structures, as in the full validation."""
    from pfd.validate.run import first_bulk

    return (cfg.validation.eos.structures or [first_bulk(cfg, "eos")])[0]


def check_spec(cfg: PFDConfig, targets: dict[str, Any]) -> ValidationSpec:
    """The run's validation settings with only the targeted properties on, DFT included
    (a relative phase energy brings the reference phase's E–V along, first)."""
    v, fam = cfg.validation, families(targets)
    eos_structures = named(targets, "eos")
    if any(n.endswith(".dE0_meV_atom") for n in targets):
        ref = eos_reference(cfg)
        eos_structures = [ref, *(s for s in eos_structures if s != ref)]
    phases = named(targets, "vacancy")
    return v.model_copy(update={
        "eos": v.eos.model_copy(update={"enabled": "eos" in fam or bool(eos_structures),
                                        "structures": eos_structures or v.eos.structures,
                                        "dft_points": max(5, v.eos.dft_points)}),
        "vacancy": v.vacancy.model_copy(update={"enabled": "vacancy" in fam, "dft": True,
                                                "phases": phases}),
        "phonons": v.phonons.model_copy(update={"enabled": "phonons" in fam,
                                                "dft_gamma": True}),
        "diffusion": v.diffusion.model_copy(update={"enabled": False}),
        "stability": v.stability.model_copy(update={"enabled": False}),
        "parity": v.parity.model_copy(update={"enabled": False}),
    })


def summarise(table: qt.Table, targets: dict[str, Any]) -> dict[str, Any]:
    """Per target: the model's and DFT's values, the difference, met or missed."""
    rows: dict[str, Any] = {}
    for name, tol in targets.items():
        by = table.values.get(name, {})
        model, ref = by.get(MODEL), by.get(DFT)
        c = table.vs_dft.get(name, {}).get(MODEL)
        rows[name] = {
            "tolerance": str(tol),
            "model": None if model is None else _finite(model.value),
            "model_err": None if model is None else _finite(model.err),
            "dft": None if ref is None else _finite(ref.value),
            "diff": None if c is None else c.diff,
            "met": bool(c is not None and c.target_met),
            "problems": [] if model is None else list(model.problems),
        }
    met = sum(r["met"] for r in rows.values())
    return {"targets": rows, "met": met == len(rows), "summary": f"{met}/{len(rows)} met"}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def check_model(ctx: Any, model_key: str, targets: dict[str, Any], prefix: str,
                map_fn: Callable[..., Any] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate M_i on the targeted properties; results stored under ``prefix`` (a rerun
    reads them back; DFT points come from the label cache)."""
    from pfd.steps import make_labeller
    from pfd.structures import load_structures
    from pfd.validate.dft import LabellerCalculator
    from pfd.validate.run import Model, ResultCache, first_bulk, model_factory, run_validation

    cfg: PFDConfig = ctx.cfg
    spec = check_spec(cfg, targets)
    structures = {n: fs[0] for n, fs in load_structures(cfg).items()}
    dft = LabellerCalculator(make_labeller(cfg), ctx.store_url, scratch=str(ctx.workdir),
                             map_fn=map_fn)
    models = {MODEL: Model(model_factory(ctx.store_url, model_key, str(ctx.workdir)),
                           model_key)}
    res = run_validation(
        spec, structures, models, dft, cache=ResultCache(ctx.store, prefix),
        eos_structures=spec.eos.structures,
        vacancy_structure=spec.vacancy.structure or first_bulk(cfg, "vacancy"),
        phonon_structure=spec.phonons.structure or first_bulk(cfg, "phonons"), log=log)
    out = summarise(qt.table(res, targets), targets)
    out.update(errors=res.errors, dft_computed=res.dft_computed, dft_cached=res.dft_cached)
    return out


def sensitive_frames(cfg: PFDConfig, missed: list[str], seed: int) -> list[Atoms]:
    """Unlabelled frames where the missed targets' properties are decided (module doc)."""
    from pfd.structures import load_structures
    from pfd.validate.run import first_bulk

    structures = {n: fs[0] for n, fs in load_structures(cfg).items()}
    rng = np.random.default_rng(seed)
    v = cfg.validation
    out: list[Atoms] = []
    fam = families(dict.fromkeys(missed))
    for st in named(missed, "eos"):
        grid = eos.volume_ratios(v.eos.volume_strain, max(5, v.eos.dft_points))
        mids = [(a + b) / 2 for a, b in zip(grid[:-1], grid[1:], strict=True)]
        picks = np.linspace(0, len(mids) - 1, min(N_STRAINED, len(mids))).round()
        for i in sorted({int(k) for k in picks}):
            a = eos.scaled(structures[st], mids[i])
            a.positions += rng.normal(0, STRAIN_RATTLE_A, a.positions.shape)
            out.append(_plain(a, f"target-eos-{st}"))
    defects = named(missed, "vacancy")
    if "vacancy.E_f_eV" in missed:
        defects.insert(0, v.vacancy.structure or first_bulk(cfg, "vacancy"))
    for st in defects:
        cell = vacancy.make_vacancy(structures[st].repeat(v.vacancy.supercell))
        for _ in range(N_DEFECT):
            a = cell.copy()
            a.positions += rng.normal(0, DEFECT_RATTLE_A, a.positions.shape)
            out.append(_plain(a, f"target-vacancy-{st}"))
    if "phonons" in fam:
        st = v.phonons.structure or first_bulk(cfg, "phonons")
        for _ in range(N_DISPLACED):
            a = structures[st].copy()
            a.positions += rng.normal(0, PHONON_RATTLE_A, a.positions.shape)
            out.append(_plain(a, f"target-phonons-{st}"))
    return out


def _plain(a: Atoms, source: str) -> Atoms:
    b = Atoms(a.get_chemical_symbols(), positions=a.positions, cell=a.cell, pbc=True)
    b.info["source"] = source
    return b


def label_target_frames(ctx: Any, missed: list[str], out_prefix: str, seed: int,
                        map_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """DFT labels of :func:`sensitive_frames` for the missed targets, stored as a dataset
    under ``out_prefix``; a rerun reads the finished record back."""
    from pfd.steps import label_set, serial_map

    store, frames_key = ctx.store, f"{out_prefix}/candidates.extxyz"
    if not store.exists(f"{out_prefix}/label.json") and not store.exists(frames_key):
        store.put_frames(frames_key, sensitive_frames(ctx.cfg, missed, seed))
    return label_set(ctx, frames_key, out_prefix, map_fn or serial_map)
