"""Streaming trajectories to the store, and continuing a killed one exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from pfd.explore.md import MDState, TrajectorySpec, run_md
from pfd.explore.stream import checkpoint_key, record_key, run_streamed
from pfd.store import LocalStore

ENSEMBLES = [("nvt", None), ("nvt-nhc", None), ("npt", 0.5), ("npt-aniso", 0.5)]


class Interrupted(Exception):
    """Stands in for a worker killed mid-trajectory."""


def _cu() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))


def _spec(ensemble: str = "nvt", pressure: float | None = None, **kw: object) -> TrajectorySpec:
    args: dict[str, object] = dict(
        traj_id="t", structure="cu", temperature_K=600, pressure_GPa=pressure,
        ensemble=ensemble, steps=60, sample_every=10, samples_per_part=2, timestep_fs=2.0,
        barostat_damping_fs=100.0 if pressure is not None else None, seed=3)
    args.update(kw)
    return TrajectorySpec(**args)  # type: ignore[arg-type]


def _interrupt_after(n: int):  # noqa: ANN202
    seen = [0]

    def hook(_frame: Atoms) -> None:
        seen[0] += 1
        if seen[0] == n:
            raise Interrupted

    return hook


@pytest.mark.parametrize("ensemble, pressure", ENSEMBLES)
def test_resume_from_checkpoint_is_exact(ensemble: str, pressure: float | None) -> None:
    """Positions, momenta, cell, RNG and thermostat/barostat variables all survive JSON.

    Equal to round-off only: EMT's neighbour list, built at a different step, sums in a
    different order (1e-15 Å differences); dropping any state variable moves atoms by far
    more than the tolerance (checked below).
    """
    spec = _spec(ensemble, pressure)
    states: list[MDState] = []
    full = run_md(_cu(), EMT(), spec, on_part=lambda _f, s: states.append(s))
    assert [s.step for s in states] == [20, 40, 60] and len(full.frames) == 6
    state = MDState.from_dict(json.loads(json.dumps(states[0].to_dict())))
    rest = run_md(_cu(), EMT(), spec, resume=state)
    assert rest.resumed_from_step == 20 and rest.record()["n_frames"] == 6
    assert [f.info["step"] for f in rest.frames] == [30, 40, 50, 60]
    for a, b in zip(full.frames[2:], rest.frames, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b.cell.array, a.cell.array, rtol=0, atol=1e-10)
    # the saved variables matter: without them the path leaves the tolerance at once
    if ensemble == "nvt":
        state.integrator = {"rng": np.random.default_rng(99).bit_generator.state}
    else:
        state.integrator = {k: np.zeros_like(np.asarray(v)).tolist()
                            if k.startswith("_thermostat") else v
                            for k, v in state.integrator.items()}
    other = run_md(_cu(), EMT(), spec, resume=state)
    assert np.abs(other.frames[-1].positions - full.frames[-1].positions).max() > 1e-6


def test_interrupted_trajectory_leaves_parts_and_resumes_identically(tmp_path: Path) -> None:
    spec = _spec("nvt")
    clean, broken = LocalStore(tmp_path / "clean"), LocalStore(tmp_path / "broken")
    done = run_streamed(clean, "ex", _cu(), EMT(), spec, context="model-a")
    assert done["n_frames"] == 6 and done["stopped"] is None
    assert done["parts"] == [f"ex/t.part-{i:04d}.extxyz" for i in range(3)]
    assert not clean.exists(checkpoint_key("ex", "t"))  # tidied once finished

    with pytest.raises(Interrupted):  # dies while sampling frame 5 (part 2 not yet written)
        run_streamed(broken, "ex", _cu(), EMT(), spec, context="model-a",
                     on_sample=_interrupt_after(5))
    assert not broken.exists(record_key("ex", "t"))
    assert broken.list("ex/t.part-") == ["ex/t.part-0000.extxyz", "ex/t.part-0001.extxyz"]
    partial = [f for k in broken.list("ex/t.part-") for f in broken.get_frames(k)]
    assert [f.info["step"] for f in partial] == [10, 20, 30, 40]
    ck = broken.get_json(checkpoint_key("ex", "t"))
    assert ck["state"]["step"] == 40 and len(ck["parts"]) == 2

    resumed = run_streamed(broken, "ex", _cu(), EMT(), spec, context="model-a")
    assert resumed["resumed_from_step"] == 40 and resumed["n_frames"] == 6
    assert resumed["parts"] == done["parts"]
    for k in done["parts"]:  # the frames an uninterrupted run gives
        for a, b in zip(clean.get_frames(k), broken.get_frames(k), strict=True):
            assert a.info["step"] == b.info["step"]
            np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-7)
    assert not broken.exists(checkpoint_key("ex", "t"))
    # finished: a rerun only reads the record
    assert run_streamed(broken, "ex", _cu(), EMT(), spec, context="model-a") == resumed


def test_checkpoint_of_another_model_is_not_continued(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    spec = _spec("nvt", steps=80)
    with pytest.raises(Interrupted):
        run_streamed(store, "ex", _cu(), EMT(), spec, context="model-a",
                     on_sample=_interrupt_after(7))
    assert len(store.list("ex/t.part-")) == 3
    rec = run_streamed(store, "ex", _cu(), EMT(), _spec("nvt", steps=40), context="model-b")
    assert rec["resumed_from_step"] == 0 and rec["n_frames"] == 4
    # the stale third part of the other run is gone; only this run's parts remain
    assert store.list("ex/t.part-") == rec["parts"] == ["ex/t.part-0000.extxyz",
                                                         "ex/t.part-0001.extxyz"]


def test_blown_up_trajectory_streams_frames_before_the_cut(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    spec = _spec("npt", -20.0, steps=200, sample_every=2, samples_per_part=3,
                 temperature_K=300)
    rec = run_streamed(store, "ex", _cu(), EMT(), spec)
    assert rec["stopped"].startswith("cell explosion") and rec["steps_done"] < 200
    frames = [f for k in rec["parts"] for f in store.get_frames(k)]
    assert len(frames) == rec["n_frames"] > 0
    assert max(f.info["step"] for f in frames) < rec["steps_done"]


def test_explore_keys_are_loadable_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfd import run_store, steps
    from pfd.config import PFDConfig

    cfg = PFDConfig.model_validate({
        "run_id": "stream", "structures": {"cu": {"build": {
            "element": "Cu", "crystal": "fcc", "a_A": 3.61, "supercell": [2, 1, 1]}}},
        "init": {"structures": ["cu"]},
        "stages": [{"name": "s", "groups": [
            {"structures": ["cu"], "temperatures_K": [300, 900], "steps": 50,
             "sample_every": 10, "samples_per_part": 2},
            {"structures": ["cu"], "temperatures_K": [500], "pressures_GPa": [1.0],
             "ensemble": "npt-aniso", "steps": 20, "sample_every": 10}]}]})
    monkeypatch.setattr(steps, "cached_calculator", lambda *a: EMT())
    monkeypatch.setattr(steps, "pin_threads", lambda *a, **k: None)
    ctx = run_store.make_context(cfg, store_url=str(tmp_path / "store"), workdir=tmp_path / "w")
    prefix = ctx.key("stage-01", "iter-00", "explore")
    ex = steps.explore(ctx, "models/emt", cfg.stages[0].groups, prefix)
    assert ex["trajectories"] == 3 and ex["ran"] == 3 and ex["frames"] == 5 + 5 + 2
    assert all(k.startswith(prefix) and ".part-" in k for k in ex["keys"])
    assert len(ex["keys"]) == 3 + 3 + 1
    frames = steps.load_datasets(ctx.store, ex["keys"])
    assert len(frames) == ex["frames"]
    assert {f.info["traj_id"] for f in frames} == {"g0-cu-0-300K", "g0-cu-0-900K",
                                                   "g1-cu-0-500K-1GPa"}
    again = steps.explore(ctx, "models/emt", cfg.stages[0].groups, prefix)
    assert again["ran"] == 0 and again["keys"] == ex["keys"]
