"""Every number the validation reports, as one flat table: value, uncertainty, validity.

Each property module computes its own results, uncertainties and :func:`problems`; this
module is the one place that turns them into named quantities (``eos.diamond.B0_GPa``,
``vacancy.E_f_eV``, ``phonons.gamma_optical_THz``, ``diffusion.Si.Ea_eV``...), so the
summary table, the comparison with DFT and the property targets
(``validation.targets``) all read the same numbers under the same names.

"Agrees with DFT" is judged against the uncertainties: a difference within two combined
standard errors is not a difference the calculation can resolve. A target adds the
user's tolerance: it holds when the difference is within it and the quantity is
meaningful (a B0 from a curve with an unphysical B0' passes nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pfd.config import parse_tolerance
from pfd.config import quantity_label as label
from pfd.validate import diffusion as dif
from pfd.validate import eos, phonons, vacancy
from pfd.validate.results import DFT, ValidationResults

__all__ = ["AGREE_SIGMAS", "Comparison", "Quantity", "Table", "cell", "compare", "label",
           "table", "to_json", "verdict"]

#: how many combined standard errors a difference must exceed to be resolved
AGREE_SIGMAS = 2.0


@dataclass(frozen=True)
class Quantity:
    value: float
    err: float = math.nan  # one standard uncertainty; nan = not known
    problems: tuple[str, ...] = ()

    @property
    def meaningful(self) -> bool:
        return not self.problems and math.isfinite(self.value)


@dataclass(frozen=True)
class Comparison:
    """A model's quantity against DFT's."""

    diff: float
    sigma: float  # combined uncertainty (nan when either side has none)
    agrees: bool | None  # within AGREE_SIGMAS·sigma; None when sigma is unknown
    target: str | None = None  # the tolerance asked for, as written
    target_met: bool | None = None


@dataclass
class Table:
    """quantity name → model → value; comparisons with DFT where DFT has the quantity."""

    values: dict[str, dict[str, Quantity]] = field(default_factory=dict)
    vs_dft: dict[str, dict[str, Comparison]] = field(default_factory=dict)

    def add(self, name: str, model: str, q: Quantity) -> None:
        self.values.setdefault(name, {})[model] = q


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _eos(t: Table, res: ValidationResults) -> None:
    for st, by in res.eos.items():
        for m, r in by.items():
            why = tuple(eos.problems(r))
            f = r.fit
            if f is None:
                for k in ("a0_A", "V0_A3_atom", "B0_GPa", "B0_prime"):
                    t.add(f"eos.{st}.{k}", m, Quantity(math.nan, problems=why))
                continue
            t.add(f"eos.{st}.a0_A", m, Quantity(f.a0_A, f.a0_err_A, why))
            t.add(f"eos.{st}.V0_A3_atom", m, Quantity(f.v0_A3_atom, f.v0_err_A3_atom, why))
            t.add(f"eos.{st}.B0_GPa", m, Quantity(f.b0_GPa, f.b0_err_GPa, why))
            t.add(f"eos.{st}.B0_prime", m, Quantity(f.b0_prime, f.b0_prime_err, why))
    _phase_energies(t, res)


def _phase_energies(t: Table, res: ValidationResults) -> None:
    """E0 of each phase minus E0 of the first (the config's order: the ground state a
    user lists first), per model: what decides which phase a model thinks is stable, and
    what fine-tuning on one phase can spoil for the others while every single-phase
    figure looks fine."""
    names = list(res.eos)
    if len(names) < 2:
        return
    ref_name = names[0]
    for st in names[1:]:
        for m, r in res.eos[st].items():
            ref = res.eos[ref_name].get(m)
            if ref is None or ref.fit is None or r.fit is None:
                continue
            why = tuple(eos.problems(r)) + tuple(f"{ref_name}: {w}" for w in eos.problems(ref))
            t.add(f"eos.{st}.dE0_meV_atom", m, Quantity(
                1000 * (r.fit.e0_eV_atom - ref.fit.e0_eV_atom),
                1000 * math.hypot(r.fit.e0_err_eV_atom, ref.fit.e0_err_eV_atom), why))


def _phonons(t: Table, res: ValidationResults) -> None:
    for m in sorted(set(res.phonons) | set(res.phonon_points)):
        src: phonons.PhononResult | phonons.PointPhonons = (res.phonons.get(m)
                                                            or res.phonon_points[m])
        why = tuple(phonons.problems(src))
        t.add("phonons.gamma_optical_THz", m,
              Quantity(src.gamma_optical_THz, src.gamma_optical_err_THz, why))
        for p, fs in src.special_THz.items():
            if p != "Γ" and fs:
                t.add(f"phonons.{p}_max_THz", m,
                      Quantity(max(fs), _nan(src.special_err_THz.get(p)), why))


def _diffusion(t: Table, res: ValidationResults) -> None:
    for m, d in res.diffusion.items():
        for s, fit in d.arrhenius.items():
            if fit is None:
                t.add(f"diffusion.{s}.Ea_eV", m, Quantity(math.nan, problems=(
                    d.notes.get(s, "no Arrhenius fit"),)))
            else:
                t.add(f"diffusion.{s}.Ea_eV", m, Quantity(fit.ea_eV, fit.ea_err_eV,
                                                          tuple(dif.fit_problems(fit))))


def table(res: ValidationResults, targets: dict[str, str | float] | None = None) -> Table:
    """Every quantity of ``res`` per model, and each model's comparison with DFT."""
    t = Table()
    _eos(t, res)
    for m, r in res.vacancy.items():
        t.add("vacancy.E_f_eV", m, Quantity(r.formation_eV, r.formation_err_eV,
                                            tuple(vacancy.problems(r))))
    for st, by in res.vacancy_phases.items():
        for m, r in by.items():
            t.add(f"vacancy.{st}.E_f_eV", m, Quantity(r.formation_eV, r.formation_err_eV,
                                                      tuple(vacancy.problems(r))))
    _phonons(t, res)
    _diffusion(t, res)
    targets = targets or {}
    for name, by in t.values.items():
        ref = by.get(DFT)
        if ref is None or not math.isfinite(ref.value):
            continue
        for m, q in by.items():
            if m == DFT or not math.isfinite(q.value):
                continue
            t.vs_dft.setdefault(name, {})[m] = compare(q, ref, targets.get(name))
    return t


def compare(q: Quantity, ref: Quantity, tolerance: str | float | None = None) -> Comparison:
    diff = q.value - ref.value
    sigma = math.hypot(q.err, ref.err)
    agrees = None if not math.isfinite(sigma) else abs(diff) <= AGREE_SIGMAS * sigma
    met = None
    if tolerance is not None:
        tol, relative = parse_tolerance(tolerance)
        bound = tol * abs(ref.value) if relative else tol
        met = q.meaningful and ref.meaningful and abs(diff) <= bound
    return Comparison(diff, sigma, agrees, None if tolerance is None else str(tolerance), met)


def cell(q: Quantity | None, digits: int) -> str:
    """``113.2 ± 0.8`` (``⚠`` when the value is not meaningful; ``–`` when absent)."""
    if q is None:
        return "–"
    if not math.isfinite(q.value):
        return "⚠ none" if q.problems else "–"
    s = f"{q.value:.{digits}f}"
    if math.isfinite(q.err):
        s += f" ± {q.err:.{digits}f}"
    return s + (" ⚠" if q.problems else "")


def verdict(c: Comparison, digits: int) -> str:
    s = f"{c.diff:+.{digits}f}"
    if math.isfinite(c.sigma) and c.sigma > 0:
        s += f" ({abs(c.diff) / c.sigma:.1f}σ)"
    s += {True: ", agrees", False: ", differs", None: ""}[c.agrees]
    if c.target is not None:
        s += f"; target ±{c.target}: " + ("met" if c.target_met else "missed")
    return s


def to_json(t: Table) -> dict[str, Any]:
    def q(x: Quantity) -> dict[str, Any]:
        return {"value": None if not math.isfinite(x.value) else x.value,
                "err": None if not math.isfinite(x.err) else x.err,
                "meaningful": x.meaningful, "problems": list(x.problems)}

    def c(x: Comparison) -> dict[str, Any]:
        return {"diff": x.diff, "sigma": None if not math.isfinite(x.sigma) else x.sigma,
                "agrees": x.agrees, "target": x.target, "target_met": x.target_met}

    return {"values": {n: {m: q(v) for m, v in by.items()} for n, by in t.values.items()},
            "vs_dft": {n: {m: c(v) for m, v in by.items()} for n, by in t.vs_dft.items()}}
