"""Validate the models of a run against each other and the run's DFT labeller.

``run_validation`` is the engine-agnostic core: named models (name → calculator
factory), an optional DFT calculator (:class:`pfd.validate.dft.LabellerCalculator`),
structures and labelled datasets in; typed results out. Every (property, model) result is
stored under a key with a digest of its settings and the model's identity, so a rerun
skips what is finished and a changed setting or model recomputes only what it touches;
DFT points go through the label cache on top, so none is ever paid for twice. One
property failing (a DFT frame that will not converge, an MD that blows up) is recorded
in ``errors`` and the others still run.

``validate_run`` reads a finished run from the store (teacher, student, config) and is
what ``pfd validate RUN`` and the flow's validation task call.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd import frames as fr
from pfd.config import MDGroup, PFDConfig, ValidationSpec
from pfd.store import ArtifactStore
from pfd.validate import diffusion as dif
from pfd.validate import eos, phonons, vacancy
from pfd.validate import parity as par
from pfd.validate import stability as stab
from pfd.validate.dft import DFTNotCached, LabellerCalculator
from pfd.validate.report import write_report
from pfd.validate.results import DFT, ValidationResults

CalculatorFactory = Callable[[], Calculator]
#: bumped when a stored result's content changes (2: uncertainties and the quantities
#: their checks read): a result stored by an older pfd is recomputed, not shown without
#: them (its DFT points come back from the label cache)
RESULT_VERSION = 2


@dataclass(frozen=True)
class Model:
    """A model to validate; ``identity`` (e.g. its store key) keys its stored results."""

    factory: CalculatorFactory
    identity: str


class ResultCache:
    """Stored results keyed by name; a result whose settings digest differs is stale."""

    def __init__(self, store: ArtifactStore | None, prefix: str) -> None:
        self.store, self.prefix = store, prefix.rstrip("/")
        self.hits: list[str] = []
        self.compute_s: dict[str, float] = {}  # what each result cost when it was computed

    def get_or_run(self, name: str, settings: dict[str, Any],
                   compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps({**settings, "result_version": RESULT_VERSION},
                                           sort_keys=True, default=str)
                                .encode()).hexdigest()[:16]
        key = f"{self.prefix}/{name}.json"
        if self.store is not None and self.store.exists(key):
            stored = self.store.get_json(key)
            if stored.get("digest") == digest:
                self.hits.append(name)
                self.compute_s[name] = float(stored.get("seconds") or 0.0)
                return dict(stored["result"])
        t0 = time.perf_counter()
        result = compute()
        self.compute_s[name] = round(time.perf_counter() - t0, 2)
        if self.store is not None:
            self.store.put_json(key, {"digest": digest, "settings": settings, "result": result,
                                      "seconds": self.compute_s[name]})
        return result


def bulk_structures(cfg: PFDConfig) -> list[str]:
    """Built structures without vacancies: the phases an E-V curve makes sense for."""
    return [n for n, s in cfg.structures.items() if s.build is not None
            and s.build.vacancies == 0]


def first_bulk(cfg: PFDConfig, what: str) -> str:
    names = bulk_structures(cfg)
    if not names:
        raise ValueError(f"validation.{what}.structure: no bulk (built, vacancy-free) "
                         f"structure in the config; name one of {sorted(cfg.structures)}")
    return names[0]


def _md_groups(cfg: PFDConfig) -> list[MDGroup]:
    """The MD the models were made from: the distillation's groups (the student learnt
    from them), or the stages' when the run has no distill block."""
    if cfg.distill is not None:
        return list(cfg.distill.groups)
    return [g for st in cfg.stages for g in st.groups]


def stability_temperature(cfg: PFDConfig) -> float:
    """``validation.stability.temperature_factor`` × the highest temperature of
    :func:`_md_groups`: hotter than anything the models were trained on."""
    top = max(t for g in _md_groups(cfg) for t in g.temperatures_K)
    return cfg.validation.stability.temperature_factor * top


def stability_structures(cfg: PFDConfig) -> list[str]:
    """``validation.stability.structures``, else every structure :func:`_md_groups` name
    (config order, once each): where the student is meant to run."""
    given = cfg.validation.stability.structures
    if given:
        return list(given)
    return list(dict.fromkeys(s for g in _md_groups(cfg) for s in g.structures))


def _no_temperature() -> None:
    raise ValueError("validation.stability: no temperature given (run_validation's "
                     "stability_temperature_K; validate_run takes it from the run's MD)")


def _tb(err: Exception) -> str:
    return f"{type(err).__name__}: {err}".strip() + "\n" + "".join(
        traceback.format_exception(err)[-3:])[-1500:]


class _Runner:
    def __init__(self, spec: ValidationSpec, structures: dict[str, Atoms],
                 models: dict[str, Model], dft: LabellerCalculator | None,
                 cache: ResultCache, log: Callable[[str], None]) -> None:
        self.spec, self.structures, self.models, self.dft = spec, structures, models, dft
        self.cache, self.log = cache, log
        self._calcs: dict[str, Calculator] = {}
        self.res = ValidationResults()

    def calc(self, name: str) -> Calculator:
        if name == DFT:
            assert self.dft is not None
            return self.dft
        if name not in self._calcs:
            self._calcs[name] = self.models[name].factory()
        return self._calcs[name]

    def identity(self, name: str) -> str:
        if name == DFT:
            assert self.dft is not None
            return self.dft.labeller.fingerprint()
        return self.models[name].identity

    def step(self, key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except DFTNotCached as err:
            self.res.skipped[key] = str(err)
            return None
        except Exception as err:  # noqa: BLE001 - one property must not sink the report
            self.res.errors[key] = _tb(err)
            self.log(f"validation {key} failed: {type(err).__name__}: {err}")
            return None
        finally:
            self.res.timings_s[key] = round(time.perf_counter() - t0, 2)

    def equilibrium(self, structure: str, model: str) -> Atoms:
        """The structure at ``model``'s own E-V minimum when it has one, else as given."""
        atoms = self.structures[structure]
        r = self.res.eos.get(structure, {}).get(model)
        if r is None or r.fit is None:
            return atoms.copy()
        return eos.scaled(atoms, r.fit.v0_A3_atom * len(atoms) / atoms.get_volume())

    @staticmethod
    def _geom(atoms: Atoms) -> list[float]:
        return [round(float(x), 6) for x in atoms.cell.array.ravel()]

    # ------------------------------------------------------------------ properties
    def run_eos(self, names: list[str]) -> None:
        s = self.spec.eos
        for st in names:
            atoms = self.structures[st]
            out = self.res.eos.setdefault(st, {})
            for m in self.models:
                settings = {"structure": st, "geom": self._geom(atoms), "model":
                            self.identity(m), "strain": s.volume_strain, "n": s.n_points}
                r = self.step(f"eos/{st}/{m}", lambda m=m, settings=settings, atoms=atoms,
                              st=st: self.cache.get_or_run(
                    f"eos/{st}/{m}", settings, lambda: eos.energy_volume(
                        atoms, self.calc(m), st, s.volume_strain, s.n_points).to_dict()))
                if r is not None:
                    out[m] = eos.EOSResult.from_dict(r)
            if self.dft is not None and s.dft_points:
                settings = {"structure": st, "geom": self._geom(atoms), "model":
                            self.identity(DFT), "strain": s.volume_strain, "n": s.dft_points}
                def dft_eos(atoms: Atoms = atoms, st: str = st) -> dict[str, Any]:
                    assert self.dft is not None
                    labelled = self.dft.label(eos.eos_frames(atoms, s.volume_strain, s.dft_points))
                    return eos.from_labelled(atoms, st, labelled).to_dict()

                r = self.step(f"eos/{st}/{DFT}", lambda settings=settings, st=st, f=dft_eos:
                              self.cache.get_or_run(f"eos/{st}/{DFT}", settings, f))
                if r is not None:
                    out[DFT] = eos.EOSResult.from_dict(r)

    def run_vacancy(self, st: str, phase: bool = False) -> None:
        """The vacancy in ``st``: the validation's own (``vacancy.E_f_eV``), or one of
        ``vacancy.phases`` (``phase``: ``vacancy.<st>.E_f_eV``, stored apart)."""
        s = self.spec.vacancy
        names = list(self.models) + ([DFT] if s.dft and self.dft is not None else [])
        out = self.res.vacancy_phases.setdefault(st, {}) if phase else self.res.vacancy
        where = f"vacancy/{st}" if phase else "vacancy"
        for m in names:
            atoms = self.equilibrium(st, m)
            settings = {"structure": st, "geom": self._geom(atoms), "model": self.identity(m),
                        "supercell": list(s.supercell), "fmax": s.fmax_eV_A,
                        "steps": s.max_steps}
            r = self.step(f"{where}/{m}", lambda m=m, atoms=atoms, settings=settings:
                          self.cache.get_or_run(f"{where}/{m}", settings, lambda: (
                              vacancy.vacancy_formation(atoms, self.calc(m), st, s.supercell,
                                                        s.fmax_eV_A, s.max_steps).to_dict())))
            if r is not None:
                out[m] = vacancy.VacancyResult(**r)

    def run_phonons(self, st: str) -> None:
        s = self.spec.phonons
        for m in self.models:
            atoms = self.equilibrium(st, m)
            settings = {"structure": st, "geom": self._geom(atoms), "model": self.identity(m),
                        **s.model_dump(mode="json", exclude={"enabled", "dft_gamma"})}

            def bands(m: str = m, atoms: Atoms = atoms) -> dict[str, Any]:
                return phonons.phonon_bands(
                    atoms, self.calc(m), st, s.supercell, s.displacement_A, s.band_path,
                    s.band_points, s.dos_mesh, s.imaginary_tolerance_THz).to_dict()

            r = self.step(f"phonons/{m}", lambda m=m, settings=settings, f=bands:
                          self.cache.get_or_run(f"phonons/{m}", settings, f))
            if r is not None:
                self.res.phonons[m] = phonons.PhononResult(**r)
        if s.dft_gamma and self.dft is not None:
            dft = self.dft
            atoms = self.equilibrium(st, DFT)
            settings = {"structure": st, "geom": self._geom(atoms), "model": self.identity(DFT),
                        "displacement": s.displacement_A}

            def points() -> dict[str, Any]:
                return phonons.point_phonons(
                    atoms, None, st, s.displacement_A,
                    forces=lambda cells: [fr.forces(a) for a in dft.label(cells)]).to_dict()

            r = self.step(f"phonons/{DFT}", lambda: self.cache.get_or_run(
                f"phonons/{DFT}", settings, points))
            if r is not None:
                self.res.phonon_points[DFT] = phonons.PointPhonons(**r)

    def run_diffusion(self, st: str) -> None:
        s = self.spec.diffusion
        base = self.structures[st].repeat(s.supercell)
        for m in [m for m in s.models if m in self.models]:
            runs = []
            for k, t in enumerate(s.temperatures_K):
                settings = {"structure": st, "geom": self._geom(base), "model":
                            self.identity(m), "T": t, **s.model_dump(
                                mode="json", exclude={"enabled", "temperatures_K", "species",
                                                      "models"})}

                def md(m: str = m, t: float = t, k: int = k) -> dict[str, Any]:
                    return dif.md_at_temperature(
                        base, self.calc(m), t, s.steps, s.timestep_fs, s.sample_every,
                        s.equilibration_steps, s.rdf_rmax_A, s.rdf_bins,
                        seed=s.seed + k).to_dict()

                name = f"diffusion/{m}/T{t:g}"
                r = self.step(name, lambda name=name, settings=settings, f=md:
                              self.cache.get_or_run(name, settings, f))
                if r is not None:
                    runs.append(dif.TemperatureRun(**r))
            if runs:
                fits, notes = dif.arrhenius_by_species(runs, s.species)
                self.res.diffusion[m] = dif.DiffusionResult(st, runs, fits, notes)

    def run_stability(self, names: list[str], temperature_K: float | None) -> None:
        """NVE runs of ``validation.stability.models`` in each of ``names`` at
        ``temperature_K`` (the caller's: it depends on the run's MD, not on the spec)."""
        s = self.spec.stability
        for m in [m for m in s.models if m in self.models]:
            for st in names:
                atoms = self.structures[st].repeat(s.supercell)
                name = f"stability/{m}/{st}"
                if temperature_K is None:
                    self.step(name, _no_temperature)
                    continue
                settings = {"structure": st, "geom": self._geom(atoms), "model":
                            self.identity(m), "T": temperature_K, **s.model_dump(
                                mode="json", exclude={"enabled", "structures", "models",
                                                      "temperature_factor"})}

                def md(m: str = m, st: str = st, atoms: Atoms = atoms,
                       t: float = temperature_K) -> dict[str, Any]:
                    return stab.nve_stability(atoms, self.calc(m), st, t, s.time_ps,
                                              s.timestep_fs, s.seed).to_dict()

                r = self.step(name, lambda name=name, settings=settings, f=md:
                              self.cache.get_or_run(name, settings, f))
                if r is not None:
                    self.res.stability.setdefault(m, {})[st] = stab.StabilityRun(**r)

    def run_parity(self, datasets: dict[str, Callable[[], list[Atoms]]],
                   skip: dict[str, list[str]]) -> None:
        n = self.spec.parity.max_frames_per_dataset
        for ds, load in datasets.items():
            frames: list[Atoms] | None = None
            for m in self.models:
                if m in skip.get(ds, ()):
                    continue  # a model against its own labels is zero by construction
                settings = {"dataset": ds, "model": self.identity(m), "max_frames": n}

                def compute(m: str = m, ds: str = ds,
                            load: Callable[[], list[Atoms]] = load) -> dict[str, Any]:
                    nonlocal frames
                    if frames is None:
                        frames = par.subsample(load(), n)
                    return par.parity(frames, self.calc(m), ds).to_dict()

                name = f"parity/{ds.replace('/', '_')}/{m}"
                r = self.step(name, lambda name=name, settings=settings, f=compute:
                              self.cache.get_or_run(name, settings, f))
                if r is not None:
                    self.res.parity.setdefault(ds, {})[m] = par.ParityResult(**r)


def run_validation(spec: ValidationSpec, structures: dict[str, Atoms], models: dict[str, Model],
                   dft: LabellerCalculator | None = None,
                   datasets: dict[str, Callable[[], list[Atoms]]] | None = None,
                   cache: ResultCache | None = None, eos_structures: list[str] | None = None,
                   vacancy_structure: str | None = None, phonon_structure: str | None = None,
                   diffusion_structure: str | None = None,
                   stability_structures: list[str] | None = None,
                   stability_temperature_K: float | None = None,
                   parity_skip: dict[str, list[str]] | None = None,
                   log: Callable[[str], None] = print) -> ValidationResults:
    """Every enabled property for every model (and DFT where the spec affords it).

    Structure names left None fall back to the spec's own, then to the first structure.
    ``stability_temperature_K`` is the stability MD's target (:func:`stability_temperature`
    of the run's config); without it the stability runs are recorded as errors.
    """
    if DFT in models:
        raise ValueError(f"model name {DFT!r} is reserved for the labeller")
    first = next(iter(structures))
    r = _Runner(spec, structures, models, dft, cache or ResultCache(None, ""), log)
    if spec.eos.enabled:
        r.run_eos(eos_structures or spec.eos.structures or [first])
    if spec.vacancy.enabled:
        r.run_vacancy(vacancy_structure or spec.vacancy.structure or first)
        for st in spec.vacancy.phases:
            r.run_vacancy(st, phase=True)
    if spec.phonons.enabled:
        r.run_phonons(phonon_structure or spec.phonons.structure or first)
    if spec.diffusion.enabled:
        r.run_diffusion(diffusion_structure or spec.diffusion.structure or first)
    if spec.stability.enabled:
        r.run_stability(stability_structures or spec.stability.structures or [first],
                        stability_temperature_K)
    if spec.parity.enabled and datasets:
        r.run_parity(datasets, parity_skip or {})
    if dft is not None:
        r.res.dft_computed, r.res.dft_cached = dft.computed, dft.cached
    r.res.reused = list(r.cache.hits)
    r.res.compute_s = dict(r.cache.compute_s)
    return r.res


# --------------------------------------------------------------------------- a stored run
#: the model name of the raw foundation (``validation.foundation``)
FOUNDATION = "foundation"


def foundation_model(cfg: PFDConfig) -> Model:
    """The run's foundation model as given (no fine-tune, no energy shift)."""
    ft = cfg.finetune

    def load() -> Calculator:
        from pfd.models.backends import foundation_calculator

        return foundation_calculator(ft, threads=1)

    return Model(load, f"foundation:{ft.foundation}")


def model_factory(store_url: str, key: str, cache_root: str) -> CalculatorFactory:
    def load() -> Calculator:
        from pathlib import Path

        from pfd.model_cache import fetch_model
        from pfd.models.registry import load_calculator

        return load_calculator(fetch_model(store_url, key, Path(cache_root)), threads=1)

    return load


def run_models(store: ArtifactStore, run_id: str) -> dict[str, str]:
    """name → store key of the run's teacher and (when trained) student."""
    from pfd import run_store as rs
    from pfd.model_cache import model_ready

    out: dict[str, str] = {}
    teacher = rs.read_teacher_model(store, run_id)
    if teacher is not None:
        out["teacher"] = teacher
    if model_ready(store, rs.student_key(run_id)):
        out["student"] = rs.student_key(run_id)
    return out


def labelled_datasets(store: ArtifactStore, run_id: str) -> dict[str, str]:
    """Every labelled dataset of a run: the DFT sets and the teacher-labelled test set."""
    from pfd import run_store as rs

    keys = [k for k in rs.all_dft_keys(store, run_id) if "/validation/" not in k]
    test = rs.run_key(run_id, rs.SYNTHETIC_DATASETS[1])
    if store.exists(test):
        keys.append(test)
    return {k.removeprefix(rs.run_key(run_id, "")): k for k in keys}


def validate_run(ctx: Any, map_fn: Any = None, log: Callable[[str], None] = print,
                 with_dft: bool = True) -> dict[str, Any]:
    """Validate a finished run (``ctx`` is a :class:`pfd.run_store.RunContext`): results under
    ``runs/<id>/validation/``, report under ``runs/<id>/report/``. Returns the report's
    record (keys, summary table, errors)."""
    from pfd.steps import make_labeller
    from pfd.structures import load_structures
    from pfd.threads import pin_threads

    pin_threads(1, torch=True)
    cfg: PFDConfig = ctx.cfg
    spec = cfg.validation
    store = ctx.store
    keys = run_models(store, ctx.run_id)
    if not keys:
        raise ValueError(f"run {ctx.run_id!r} has no teacher.json and no student in "
                         f"{ctx.store_url}: nothing to validate (has the run finished?)")
    models = {m: Model(model_factory(ctx.store_url, k, str(ctx.workdir)), k)
              for m, k in keys.items()}
    if spec.foundation:
        models[FOUNDATION] = foundation_model(cfg)
    dft = None
    if spec.eos.dft_points or spec.vacancy.dft or spec.phonons.dft_gamma:
        # without DFT, labels (and stored results) already paid for are still shown
        dft = LabellerCalculator(make_labeller(cfg), ctx.store_url, scratch=str(ctx.workdir),
                                 map_fn=map_fn, cache_only=not with_dft)
    structures = {n: fs[0] for n, fs in load_structures(cfg).items()}
    data_keys = labelled_datasets(store, ctx.run_id)
    datasets = {name: (lambda k=k: store.get_frames(k)) for name, k in data_keys.items()}
    skip = {n: ["teacher"] for n in data_keys if n.startswith("distill/")}
    for n in data_keys:  # the foundation's energies are in its own reference
        skip.setdefault(n, []).append(FOUNDATION)
    default_bulk = bulk_structures(cfg)
    res = run_validation(
        spec, structures, models, dft, datasets,
        ResultCache(store, ctx.key("validation")),
        eos_structures=spec.eos.structures or default_bulk or None,
        vacancy_structure=spec.vacancy.structure or first_bulk(cfg, "vacancy"),
        phonon_structure=spec.phonons.structure or first_bulk(cfg, "phonons"),
        diffusion_structure=spec.diffusion.structure,
        stability_structures=stability_structures(cfg),
        stability_temperature_K=stability_temperature(cfg), parity_skip=skip, log=log)
    # the stages' property targets are judged on the final models too (student included)
    targets = {n: tol for st in cfg.stages for n, tol in st.converge.targets.items()}
    return write_report(store, ctx.key("report"), res, ctx.run_id, keys,
                        {**targets, **spec.targets})
