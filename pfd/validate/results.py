"""What a validation produces: the typed results that :mod:`pfd.validate.run` computes and
:mod:`pfd.validate.report` renders (both import them from here, so the two never import
each other in a circle)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pfd.validate import diffusion as dif
from pfd.validate import eos, phonons, vacancy
from pfd.validate import parity as par
from pfd.validate import stability as stab

#: the model name the run's DFT labeller goes by in every result
DFT = "dft"


@dataclass
class ValidationResults:
    eos: dict[str, dict[str, eos.EOSResult]] = field(default_factory=dict)  # structure→model
    vacancy: dict[str, vacancy.VacancyResult] = field(default_factory=dict)  # model→
    # validation.vacancy.phases: structure → model → result
    vacancy_phases: dict[str, dict[str, vacancy.VacancyResult]] = field(default_factory=dict)
    phonons: dict[str, phonons.PhononResult] = field(default_factory=dict)
    phonon_points: dict[str, phonons.PointPhonons] = field(default_factory=dict)
    diffusion: dict[str, dif.DiffusionResult] = field(default_factory=dict)
    # validation.stability: model → structure → NVE run
    stability: dict[str, dict[str, stab.StabilityRun]] = field(default_factory=dict)
    parity: dict[str, dict[str, par.ParityResult]] = field(default_factory=dict)  # data→model
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # DFT off and not in the cache
    timings_s: dict[str, float] = field(default_factory=dict)
    dft_computed: int = 0
    dft_cached: int = 0
    reused: list[str] = field(default_factory=list)  # results read back from the store
    compute_s: dict[str, float] = field(default_factory=dict)  # cost when first computed
