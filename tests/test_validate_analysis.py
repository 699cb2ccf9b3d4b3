"""Validation analysis on synthetic data with known answers: Arrhenius, Birch-Murnaghan,
MSD/diffusion, RDF, and the report's rendering. Fast: no model, no DFT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import GPa

from pfd.validate import diffusion as dif
from pfd.validate import eos

KB = dif.KB_EV_K
TEMPS = [900.0, 1100.0, 1300.0, 1500.0, 1700.0]


def _d(t: np.ndarray, ea: float = 0.8, d0: float = 2e-3) -> np.ndarray:
    return d0 * np.exp(-ea / (KB * t))


def test_arrhenius_recovers_exact_activation_energy() -> None:
    t = np.array(TEMPS)
    fit = dif.arrhenius_fit(t, _d(t))
    assert fit.ea_eV == pytest.approx(0.8, abs=1e-10)
    assert fit.d0_cm2_s == pytest.approx(2e-3, rel=1e-9)
    assert fit.ea_err_eV < 1e-8  # exact data: residual-based uncertainty vanishes


def test_arrhenius_uncertainty_contains_truth_and_shrinks() -> None:
    rng = np.random.default_rng(7)
    t = np.array(TEMPS)

    def trial(rel_noise: float, temps: np.ndarray) -> tuple[float, float]:
        d = _d(temps)
        sig = rel_noise * d
        noisy = d + rng.normal(0, sig)
        fit = dif.arrhenius_fit(temps, noisy, sig)
        return fit.ea_eV, fit.ea_err_eV

    inside, errs = 0, []
    for _ in range(300):
        ea, err = trial(0.05, t)
        inside += abs(ea - 0.8) < 2 * err
        errs.append(err)
    # ~95 % of 2-sigma intervals contain the truth when the errors are right
    assert 0.88 < inside / 300 < 0.995
    # ten times less noise: ten times smaller uncertainty (errors are propagated, not fitted)
    assert trial(0.005, t)[1] == pytest.approx(np.mean(errs) / 10, rel=0.1)
    # more temperatures over the same range: smaller uncertainty
    assert trial(0.05, np.linspace(900, 1700, 20))[1] < 0.6 * np.mean(errs)
    # residual-based errors (no per-point sigma) also bracket the truth
    noisy = _d(t) * (1 + rng.normal(0, 0.05, t.size))
    fit = dif.arrhenius_fit(t, noisy)
    assert abs(fit.ea_eV - 0.8) < 4 * fit.ea_err_eV and fit.ea_err_eV > 0


def test_arrhenius_rejects_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="positive"):
        dif.arrhenius_fit([1000, 1200], [1e-5, -1e-6])
    two = dif.arrhenius_fit([1000, 1200], [1e-6, 1e-5])
    assert math.isnan(two.ea_err_eV) and two.note and "two temperatures" in two.note


def _run(temperature: float, d: float, err: float) -> dif.TemperatureRun:
    return dif.TemperatureRun(temperature, temperature, 8, [0.1], {"Si": [0.0]}, {"Si": d},
                              {"Si": err}, [1.0], {"Si-Si": [0.0]})


def test_arrhenius_by_species_skips_noise() -> None:
    runs = [_run(1000, 1e-4, 1e-3), _run(1300, 2e-3, 1e-4), _run(1600, 1e-2, 1e-4)]
    fits, notes = dif.arrhenius_by_species(runs)
    assert fits["Si"] is not None and fits["Si"].temperatures_K == [1300, 1600]
    fits, notes = dif.arrhenius_by_species(runs[:1] + [_run(1300, -1e-4, 1e-4)])
    assert fits["Si"] is None and "no Arrhenius fit" in notes["Si"]


def test_birch_murnaghan_fit_recovers_parameters() -> None:
    v0, e0, b0, bp = 20.0, -5.4, 90 * GPa, 4.2
    v = np.linspace(18.8, 21.2, 9)
    fit = eos.fit_birch_murnaghan(v, eos.birch_murnaghan(v, e0, b0, bp, v0), 5.43, 20.0)
    assert fit.v0_A3_atom == pytest.approx(v0, rel=1e-6)
    assert fit.b0_GPa == pytest.approx(90, rel=1e-4)
    assert fit.b0_prime == pytest.approx(bp, rel=1e-3)
    assert fit.a0_A == pytest.approx(5.43, rel=1e-6)
    shifted = np.linspace(21.0, 23.0, 9)  # minimum outside the sampled volumes
    with pytest.raises(ValueError, match="outside|convex"):
        eos.fit_birch_murnaghan(shifted, eos.birch_murnaghan(shifted, e0, b0, bp, v0))


def test_eos_frames_scale_volume_not_fractions() -> None:
    a = bulk("Si", "diamond", a=5.43, cubic=True)
    frames = eos.eos_frames(a, 0.06, 5)
    ratios = [f.get_volume() / a.get_volume() for f in frames]
    assert ratios == pytest.approx([0.94, 0.97, 1.0, 1.03, 1.06])
    assert np.allclose(frames[0].get_scaled_positions(), a.get_scaled_positions())


def test_msd_recovers_diffusion_of_a_random_walk() -> None:
    rng = np.random.default_rng(3)
    n_atoms, n_steps, dt_ps, d_true = 200, 400, 0.02, 0.5  # Å²/ps
    steps = rng.normal(0, math.sqrt(2 * d_true * dt_ps), (n_steps, n_atoms, 3))
    pos = np.cumsum(steps, axis=0)
    cell = np.eye(3) * 10.0
    wrapped = pos % 10.0  # what a wrapping MD code would hand over
    traj = dif.unwrap(list(wrapped), cell)
    assert np.allclose(traj - traj[0], pos - pos[0])
    lags, per = dif.msd_by_species(traj, ["Si"] * n_atoms)
    d, err = dif.diffusion_coefficient(lags * dt_ps, per["Si"])
    assert d == pytest.approx(d_true, rel=0.1)
    assert 0 < err < 0.1 * d_true


def test_rdf_of_fcc_counts_twelve_neighbours() -> None:
    a = 3.6
    cu = bulk("Cu", "fcc", a=a, cubic=True)
    r, g = dif.rdf([cu], 3.0, 300)
    first = a / math.sqrt(2)
    assert r[np.argmax(g["Cu-Cu"])] == pytest.approx(first, abs=0.02)
    rho = len(cu) / cu.get_volume()
    dr = r[1] - r[0]
    coordination = float(np.sum(g["Cu-Cu"] * 4 * np.pi * r**2 * rho * dr))
    assert coordination == pytest.approx(12, rel=0.02)
    # two species: cross pair present, normalised by the partner's density
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    _, g2 = dif.rdf([nacl], 4.5, 200)
    assert set(g2) == {"Cl-Cl", "Cl-Na", "Na-Na"}
    assert 0 < np.argmax(g2["Cl-Na"]) < np.argmax(g2["Na-Na"])


@pytest.mark.slow
def test_md_at_temperature_with_emt() -> None:
    from ase.calculators.emt import EMT

    cu: Atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    run = dif.md_at_temperature(cu, EMT(), 600, steps=100, timestep_fs=2, sample_every=5,
                                equilibration_steps=20, seed=2)
    assert len(run.time_ps) == 10 and run.msd_A2["Cu"][-1] > 0
    assert 300 < run.mean_temperature_K < 1000
    assert max(run.msd_A2["Cu"]) < 0.5  # a solid well below melting: vibrations only
    assert set(run.rdf) == {"Cu-Cu"} and max(run.rdf["Cu-Cu"]) > 2
    assert max(run.rdf_r_A) < 3.6  # half the 7.2 Å cell: no self-image spike
