"""Validation that checks itself: each property's checks, on cases built to fail them, and
uncertainties that contain the truth as often as they claim. Fast: EMT and synthetic data,
no DFT, no trained model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa

from pfd.config import ValidationSpec
from pfd.validate import diffusion as dif
from pfd.validate import eos, phonons, vacancy
from pfd.validate import quantities as qt
from pfd.validate.report import blocks, to_markdown
from pfd.validate.results import DFT, ValidationResults

V0, E0, B0, BP = 20.0, -5.0, 90 * GPa, 4.2


def _eos(v: np.ndarray, e: np.ndarray) -> eos.EOSResult:
    fit = eos.fit_birch_murnaghan(v, e, 5.43, 20.0)
    return eos.EOSResult("diamond", 8, v.tolist(), e.tolist(), fit)


# --------------------------------------------------------------------------- E(V)
def test_eos_standard_errors_contain_the_truth() -> None:
    """Noisy energies (σ = 0.3 meV/atom, 9 points): B0 and V0 within 2 standard errors
    of the truth in ~95 % of trials; the errors are the fit's, not decoration."""
    rng = np.random.default_rng(3)
    v = np.linspace(0.94 * V0, 1.06 * V0, 9)
    exact = eos.birch_murnaghan(v, E0, B0, BP, V0)
    inside_b0 = inside_v0 = 0
    n = 200
    for _ in range(n):
        f = eos.fit_birch_murnaghan(v, exact + rng.normal(0, 3e-4, v.size))
        inside_b0 += abs(f.b0_GPa - 90) < 2 * f.b0_err_GPa
        inside_v0 += abs(f.v0_A3_atom - V0) < 2 * f.v0_err_A3_atom
    assert 0.85 < inside_b0 / n <= 1.0 and 0.85 < inside_v0 / n <= 1.0
    clean = _eos(v, exact)
    assert clean.fit is not None and clean.fit.b0_err_GPa < 1e-3
    assert eos.problems(clean) == []


def test_eos_flags_unphysical_b0_prime() -> None:
    v = np.linspace(0.94 * V0, 1.06 * V0, 9)
    r = _eos(v, eos.birch_murnaghan(v, E0, B0, 17.4, V0))  # the demo student's B0'
    why = eos.problems(r)
    assert len(why) == 1 and "B0' = 17.40" in why[0] and "2-8" in why[0]


def test_eos_flags_a_minimum_at_the_window_edge() -> None:
    v = np.linspace(0.90 * V0, 1.005 * V0, 9)  # V0 within half a step of the last point
    r = _eos(v, eos.birch_murnaghan(v, E0, B0, BP, V0))
    assert any("edge of the sampled" in w for w in eos.problems(r))
    inside = np.linspace(0.90 * V0, 1.02 * V0, 9)  # bracketed by more than half a step
    assert eos.problems(_eos(inside, eos.birch_murnaghan(inside, E0, B0, BP, V0))) == []


def test_eos_flags_noisy_points_and_undetermined_b0_prime() -> None:
    rng = np.random.default_rng(1)
    v = np.linspace(0.98 * V0, 1.02 * V0, 5)  # narrow window, five points: B0' is free
    e = eos.birch_murnaghan(v, E0, B0, BP, V0) + rng.normal(0, 2e-4, v.size)
    why = eos.problems(_eos(v, e))
    assert any("not determined" in w or "2-8" in w for w in why), why
    v = np.linspace(0.94 * V0, 1.06 * V0, 9)
    e = eos.birch_murnaghan(v, E0, B0, BP, V0) + rng.normal(0, 3e-3, v.size)
    assert any("smooth E(V)" in w for w in eos.problems(_eos(v, e)))


# --------------------------------------------------------------------------- vacancy
def test_vacancy_checks_and_relaxation_uncertainty() -> None:
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    done = vacancy.vacancy_formation(cu, EMT(), "fcc", (2, 2, 2), 0.005, 100)
    tight = vacancy.vacancy_formation(cu, EMT(), "fcc", (2, 2, 2), 1e-5, 200)
    assert done.relax_converged and vacancy.problems(done) == []
    assert 0 <= done.formation_err_eV < 1e-3
    assert abs(done.formation_eV - tight.formation_eV) < 10 * done.formation_err_eV
    assert done.nn_distance_A == pytest.approx(3.61 / math.sqrt(2), rel=1e-6)
    cut = vacancy.vacancy_formation(cu, EMT(), "fcc", (2, 2, 2), 1e-5, 1)
    assert not cut.relax_converged
    assert any("not converged" in w for w in vacancy.problems(cut))
    # a stopped relaxation knows it had energy left to gain, and about how much
    left = cut.formation_eV - tight.formation_eV
    assert cut.formation_err_eV > 5 * done.formation_err_eV
    assert left / 10 < cut.formation_err_eV < left * 10  # an order-of-magnitude estimate
    negative = replace(done, formation_eV=-0.4)
    assert any("not positive" in w for w in vacancy.problems(negative))
    hopped = replace(done, max_displacement_A=0.8 * done.nn_distance_A)
    assert any("hopped" in w for w in vacancy.problems(hopped))


def test_remaining_energy_is_exact_on_a_quadratic() -> None:
    k = np.diag([10.0, 4.0, 2.5])
    x = np.array([0.1, -0.2, 0.05])
    f = -k @ x
    assert vacancy.remaining_energy(f, k) == pytest.approx(0.5 * x @ k @ x)


# --------------------------------------------------------------------------- phonons
def test_phonon_checks_unstable_and_anharmonic() -> None:
    fcc = bulk("Cu", "fcc", a=3.61, cubic=True)
    good = phonons.point_phonons(fcc, EMT(), "fcc", 0.01)
    assert phonons.problems(good) == [] and good.n_displacements == 2
    assert good.special_err_THz["X"] < 0.01
    big = phonons.point_phonons(fcc, EMT(), "fcc", 0.3)  # far outside the harmonic range
    assert big.special_err_THz["X"] > 10 * good.special_err_THz["X"]
    assert any("u and 2u" in w for w in phonons.problems(big))
    bcc = bulk("Cu", "bcc", a=2.87, cubic=True)  # bcc Cu is unstable under EMT
    r = phonons.phonon_bands(bcc, EMT(), "bcc", (2, 2, 2), 0.01, band_points=30,
                             dos_mesh=(6, 6, 6))
    assert r.imaginary_modes and any("imaginary" in w for w in phonons.problems(r))


# --------------------------------------------------------------------------- diffusion
def test_vibration_is_not_reported_as_diffusion() -> None:
    """A crystal at 300 K: the MSD plateaus; no Arrhenius fit, and the note says why."""
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    runs = [dif.md_at_temperature(cu, EMT(), t, 400, 2.0, 10, 100, 5.0, 50, seed=k)
            for k, t in enumerate((300.0, 400.0))]
    for r in runs:
        assert r.coordination_start == pytest.approx(12.0)
        assert r.msd_exponent["Cu"] < dif.MIN_MSD_EXPONENT
        assert any("vibration, not hops" in w for w in dif.run_problems(r, "Cu"))
    fits, notes = dif.arrhenius_by_species(runs)
    assert fits["Cu"] is None and "diffusive regime" in notes["Cu"]


def _run(t: float, d: float, *, mean_t: float | None = None, expo: float = 1.0,
         coord: tuple[float, float] = (4.0, 4.0), msd_max: float = 30.0) -> dif.TemperatureRun:
    return dif.TemperatureRun(
        t, mean_t or t, 64, [0.1, 1.0], {"Si": [0.1, msd_max]}, {"Si": d}, {"Si": 0.02 * d},
        [1.0], {"Si-Si": [0.0]}, msd_exponent={"Si": expo}, nn_distance_A=2.35,
        coordination_start=coord[0], coordination_md=coord[1])


def test_melted_and_unthermostatted_runs_are_flagged() -> None:
    assert dif.run_problems(_run(1000, 1e-1), "Si") == []
    melted = dif.run_problems(_run(1600, 1e-1, coord=(4.0, 5.6)), "Si")
    assert len(melted) == 1 and "melted or transformed" in melted[0]
    hot = dif.run_problems(_run(1000, 1e-1, mean_t=1250), "Si")
    assert len(hot) == 1 and "thermostat" in hot[0]


def test_negative_activation_energy_is_flagged() -> None:
    """The demo's student: D falling with T (1.0e-5 → 5.4e-6 → 4.3e-6 cm²/s)."""
    d = [1.0e-5, 5.4e-6, 4.3e-6]
    runs = [_run(t, x / dif.A2_PS_TO_CM2_S) for t, x in zip((1000, 1300, 1600), d,
                                                            strict=True)]
    fits, _ = dif.arrhenius_by_species(runs)
    fit = fits["Si"]
    assert fit is not None and fit.ea_eV < 0
    assert any("not positive" in w for w in dif.fit_problems(fit))
    # a scattered set: R² flags it
    scattered = dif.arrhenius_fit([1000, 1200, 1400, 1600], [1e-6, 1e-4, 2e-6, 1e-4])
    assert scattered.r2 < dif.MIN_ARRHENIUS_R2
    assert any("R²" in w for w in dif.fit_problems(scattered))
    clean = dif.arrhenius_fit([1000, 1300, 1600], [1e-7, 1e-6, 4e-6])
    assert clean.r2 > 0.9 and dif.fit_problems(clean) == []


# --------------------------------------------------------------------------- table, report
def _results(student_bp: float = 17.4) -> ValidationResults:
    v = np.linspace(0.94 * V0, 1.06 * V0, 9)
    rng = np.random.default_rng(0)
    res = ValidationResults()
    res.eos["diamond"] = {
        "teacher": _eos(v, eos.birch_murnaghan(v, E0, 95 * GPa, BP, V0)
                        + rng.normal(0, 1e-4, v.size)),
        "student": _eos(v, eos.birch_murnaghan(v, E0, 92 * GPa, student_bp, V0)),
        DFT: _eos(v[::2], eos.birch_murnaghan(v[::2], E0, 87 * GPa, BP, V0)
                  + rng.normal(0, 1e-4, 5)),
    }
    return res


def test_agreement_is_judged_against_the_uncertainty() -> None:
    a, ref = qt.Quantity(100.0, 3.0), qt.Quantity(95.0, 4.0)
    c = qt.compare(a, ref, "10%")
    assert c.sigma == pytest.approx(5.0) and c.agrees and c.target_met
    far = qt.compare(qt.Quantity(120.0, 1.0), ref, "10%")
    assert far.agrees is False and far.target_met is False
    assert qt.compare(qt.Quantity(1.0), qt.Quantity(1.1)).agrees is None  # no σ: no verdict
    # a value its own check rejects meets no target, however close it is
    flagged = qt.Quantity(95.0, 1.0, ("B0' outside 2-8",))
    assert qt.compare(flagged, ref, "10%").target_met is False
    assert qt.compare(qt.Quantity(3.0, 0.01), qt.Quantity(3.05, 0.01), 0.1).target_met


def test_report_shows_uncertainties_checks_and_targets() -> None:
    res = _results()
    t = qt.table(res, {"eos.diamond.B0_GPa": "10%"})
    b0 = t.values["eos.diamond.B0_GPa"]
    assert b0["student"].problems and not b0["teacher"].problems
    assert t.vs_dft["eos.diamond.B0_GPa"]["teacher"].target_met is True  # 95 vs 87: 9 %
    assert t.vs_dft["eos.diamond.B0_GPa"]["student"].target_met is False  # B0' 17
    md = to_markdown(blocks(res, "r", {"teacher": "t", "student": "s"}, t)[0], "img")
    assert "## Checks" in md and "B0' = 17.40" in md and " ⚠" in md
    assert "target ±10%: met" in md and "target ±10%: missed" in md
    row = next(line for line in md.splitlines() if line.startswith("| B0 diamond (GPa) |"))
    assert row.count(" ± ") == 3
    good = to_markdown(blocks(_results(4.0), "r", {}, None)[0], "img")
    assert "Every reported value passed its own checks." in good


def test_targets_config_names_the_problem() -> None:
    spec = ValidationSpec(targets={"eos.diamond.B0_GPa": "10%", "vacancy.E_f_eV": 0.1})
    assert spec.structure_refs()[0] == ("validation.targets.eos.diamond.B0_GPa", "diamond")
    with pytest.raises(ValueError, match="unknown quantity 'eos.B0'"):
        ValidationSpec(targets={"eos.B0": "10%"})
    with pytest.raises(ValueError, match="targets.vacancy.E_f_eV"):
        ValidationSpec(targets={"vacancy.E_f_eV": "-5%"})


def test_phase_energies_are_relative_to_the_first_phase_and_carry_both_errors() -> None:
    """β-Sn 250 meV/atom above diamond by DFT, 265 by the model: the table holds the
    difference of minima (not of the points), with both fits' errors; the first phase has
    no relative energy of its own."""
    v = np.linspace(0.94, 1.06, 9) * V0
    res = ValidationResults()
    for st, e_dft, e_model in (("diamond", E0, E0), ("beta-sn", E0 + 0.250, E0 + 0.265)):
        res.eos[st] = {DFT: _eos(v, eos.birch_murnaghan(v, e_dft, B0, BP, V0)),
                       "teacher": _eos(v * 0.98, eos.birch_murnaghan(v * 0.98, e_model, B0,
                                                                      BP, V0 * 0.98))}
    t = qt.table(res, {"eos.beta-sn.dE0_meV_atom": 10})
    assert "eos.diamond.dE0_meV_atom" not in t.values
    de = t.values["eos.beta-sn.dE0_meV_atom"]
    assert de[DFT].value == pytest.approx(250.0, abs=1e-3)
    assert de["teacher"].value == pytest.approx(265.0, abs=1e-3)
    assert math.isfinite(de["teacher"].err)
    c = t.vs_dft["eos.beta-sn.dE0_meV_atom"]["teacher"]
    assert c.diff == pytest.approx(15.0, abs=1e-3) and c.target_met is False
    assert qt.label("eos.beta-sn.dE0_meV_atom")[0] == "E0 beta-sn − E0 first phase (meV/atom)"


def test_vacancy_phases_are_reported_per_phase_beside_the_main_one() -> None:
    """EMT copper: the validation's vacancy (fcc) keeps its name, the extra phase (a
    strained-c/a hcp cell) gets its own, and the report's table names both structures."""
    from ase.build import bulk as ase_bulk

    from pfd.validate.run import Model, run_validation

    spec = ValidationSpec(eos={"enabled": False}, phonons={"enabled": False},
                          diffusion={"enabled": False}, parity={"enabled": False},
                          vacancy={"structure": "fcc", "phases": ["hcp"], "dft": False,
                                   "supercell": [2, 2, 2], "max_steps": 30})
    structures = {"fcc": ase_bulk("Cu", "fcc", a=3.61, cubic=True),
                  "hcp": ase_bulk("Cu", "hcp", a=2.55, c=4.16)}
    res = run_validation(spec, structures, {"emt": Model(EMT, "emt")}, log=lambda _: None)
    assert set(res.vacancy) == {"emt"} and set(res.vacancy_phases) == {"hcp"}
    assert res.vacancy["emt"].structure == "fcc" and res.vacancy["emt"].n_atoms_bulk == 32
    assert res.vacancy_phases["hcp"]["emt"].n_atoms_bulk == 16
    t = qt.table(res)
    fcc, hcp = (t.values[n]["emt"].value for n in ("vacancy.E_f_eV", "vacancy.hcp.E_f_eV"))
    assert 0.5 < fcc < 2.0 and 0.5 < hcp < 2.0 and fcc != pytest.approx(hcp, abs=1e-3)
    md = to_markdown(blocks(res, "r", {}, t)[0], "img")
    rows = [ln for ln in md.splitlines() if ln.startswith("| fcc | emt") or
            ln.startswith("| hcp | emt")]
    assert len(rows) == 2
    assert "vacancy formation hcp (eV)" in md
