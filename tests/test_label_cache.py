"""Engine-independent labelling: cache, failures as data, scratch directories, batching
(the ASE-calculator labeller), and the failure-fraction stop of a labelling step."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from pfd import frames as fr
from pfd.config import parse_config
from pfd.label.base import LabelError
from pfd.label.cache import failure_key, label_frames, label_key
from pfd.label.calculator import CalculatorLabeller
from pfd.store import LocalStore


def cu(seed: int, n: int = 1) -> Atoms:
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((n, 1, 1))
    a.rattle(0.05, seed=seed)
    return a


@dataclass
class ScriptedLabeller:
    """Labels with EMT, except frames whose hash is in ``fail`` (permanent or not)."""

    fail: dict[str, bool] = field(default_factory=dict)
    crash: set[str] = field(default_factory=set)
    seen: list[Path] = field(default_factory=list)
    name: str = "scripted"

    def fingerprint(self) -> str:
        return "scripted-1"

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        self.seen.append(workdir)
        (workdir / "engine.out").write_text("engine output\nlast line\n")
        h = fr.frame_hash(atoms)
        if h in self.crash:
            raise ZeroDivisionError("parser bug")
        if h in self.fail:
            raise LabelError("SCF not converged", permanent=self.fail[h], tail="last line")
        a = atoms.copy()
        a.calc = EMT()
        return fr.attach_labels(atoms, a.get_potential_energy(), a.get_forces(), a.get_stress())


def test_failures_are_data_and_scratch_is_kept_only_for_them(tmp_path: Path) -> None:
    frames = [cu(i) for i in range(4)]
    h = [fr.frame_hash(a) for a in frames]
    lab = ScriptedLabeller(fail={h[1]: True, h[2]: False}, crash={h[3]})
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, frames, store.url, scratch=str(tmp_path / "scratch"))
    assert [fr.frame_hash(a) for a in res.labelled] == [h[0]]
    by_idx = {f.index: f for f in res.failed}
    assert set(by_idx) == {1, 2, 3}
    assert by_idx[1].reason == "SCF not converged" and by_idx[1].tail == "last line"
    assert "unexpected ZeroDivisionError: parser bug" in by_idx[3].reason
    # the successful frame's directory is gone, each failed one kept with its output
    assert not lab.seen[0].exists()
    for i in (1, 2, 3):
        assert Path(str(by_idx[i].workdir)) == lab.seen[i]
        assert (lab.seen[i] / "engine.out").is_file()
    # only the permanent failure is cached
    assert store.exists(failure_key("scripted-1", h[1]))
    assert not store.exists(failure_key("scripted-1", h[2]))
    assert store.exists(label_key("scripted-1", h[0]))


def test_keep_scratch_keeps_successes_too(tmp_path: Path) -> None:
    lab = ScriptedLabeller()
    label_frames(lab, [cu(1)], LocalStore(tmp_path / "s").url, scratch=str(tmp_path / "x"),
                 keep_scratch=True)
    assert (lab.seen[0] / "engine.out").is_file()


def test_duplicates_are_labelled_once_but_returned_per_input(tmp_path: Path) -> None:
    lab = ScriptedLabeller()
    a = cu(7)
    a.info["source"] = "first"
    b = cu(7)
    b.info["source"] = "second"
    res = label_frames(lab, [a, b], LocalStore(tmp_path / "s").url)
    assert (res.computed, res.cached, len(lab.seen)) == (1, 0, 1)
    assert [x.info["source"] for x in res.labelled] == ["first", "second"]
    assert res.labelled[0] is not res.labelled[1]
    assert fr.energy(res.labelled[0]) == fr.energy(res.labelled[1])


# ----------------------------------------------------------------------------- calculator
FACTORY_CALLS: list[str] = []


def counting_emt() -> Calculator:
    FACTORY_CALLS.append("emt")
    return EMT()


class FailsOnThreeAtoms(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[no-untyped-def]
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) == 3:
            raise RuntimeError("model cannot do 3 atoms")
        n = len(self.atoms)
        self.results = {"energy": -1.0 * n, "forces": np.zeros((n, 3)), "stress": np.zeros(6)}


def test_calculator_labeller_batches_and_caches(tmp_path: Path) -> None:
    FACTORY_CALLS.clear()
    lab = CalculatorLabeller(counting_emt, identity="emt-test-1", batch_size=2)
    frames = [cu(i) for i in range(5)]
    calls: list[int] = []

    def recording_map(fn, *iterables):  # type: ignore[no-untyped-def]
        calls.append(len(iterables[2]))
        return map(fn, *iterables)

    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, frames, store.url, map_fn=recording_map)
    assert calls == [3] and res.computed == 5  # 3 batch tasks (2+2+1), not 5 frame tasks
    assert FACTORY_CALLS == ["emt"]  # the model is loaded once per process
    for a, out in zip(frames, res.labelled, strict=True):
        ref = a.copy()
        ref.calc = EMT()
        assert fr.energy(out) == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(fr.forces(out), ref.get_forces())
        np.testing.assert_allclose(fr.stress(out), ref.get_stress())  # type: ignore[arg-type]
    again = label_frames(lab, frames + [cu(9)], store.url)
    assert (again.cached, again.computed) == (5, 1)
    other = CalculatorLabeller(counting_emt, identity="emt-test-2", batch_size=2)
    assert other.fingerprint() != lab.fingerprint()


def test_calculator_failure_hits_only_its_frame(tmp_path: Path) -> None:
    lab = CalculatorLabeller(functools.partial(FailsOnThreeAtoms), identity="fails-on-3",
                             batch_size=8)
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]),
              Atoms("H3", positions=[[0, 0, 0], [0, 0, 0.7], [0, 0.7, 0]]),
              Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.7], [0, 0.7, 0], [0.7, 0, 0]])]
    res = label_frames(lab, frames, LocalStore(tmp_path / "s").url)
    assert [len(a) for a in res.labelled] == [2, 4]
    assert len(res.failed) == 1 and res.failed[0].index == 1
    assert "model cannot do 3 atoms" in res.failed[0].reason
    assert fr.stress(res.labelled[0]) is None  # not periodic: no stress asked for
    with pytest.raises(ValueError, match="identity"):
        CalculatorLabeller(counting_emt, identity=" ")


# ----------------------------------------------------------------------------- label_set stop
def _ctx(tmp_path: Path, max_fail: float):  # type: ignore[no-untyped-def]
    from pfd.run_store import make_context

    raw = {"structures": {"d": {"build": {"element": "Cu", "crystal": "fcc", "a_A": 3.6}}},
           "init": {"structures": ["d"]},
           "labeller": {"max_failure_fraction": max_fail,
                        "qe": {"pseudo_dir": str(tmp_path / "pseudo"),
                               "pseudopotentials": {"Cu": "Cu.UPF"}}},
           "stages": [{"name": "s", "groups": [{"structures": ["d"],
                                                "temperatures_K": [300]}]}]}
    (tmp_path / "pseudo").mkdir(exist_ok=True)
    (tmp_path / "pseudo/Cu.UPF").write_text("fake")
    cfg = parse_config(raw)
    return make_context(cfg, store_url=str(tmp_path / "store"), workdir=tmp_path / "work")


def test_label_set_stops_above_the_failure_fraction(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pfd import steps

    ctx = _ctx(tmp_path, 0.25)
    frames = [cu(i) for i in range(4)]
    h = [fr.frame_hash(a) for a in frames]
    ctx.store.put_frames("cand.extxyz", frames)
    lab = ScriptedLabeller(fail={h[1]: False, h[2]: True})
    monkeypatch.setattr(steps, "make_labeller", lambda cfg: lab)
    with pytest.raises(steps.LabellingStopped) as err:
        steps.label_set(ctx, "cand.extxyz", "it1")
    msg = str(err.value)
    assert "2 of 4 frames failed (50% > labeller.max_failure_fraction=25%)" in msg
    assert "it1/failed.json" in msg and "will not be paid for again" in msg
    # the labels already paid for are in the cache; the step is not marked done
    assert ctx.store.exists(label_key("scripted-1", h[0]))
    assert ctx.store.exists(label_key("scripted-1", h[3]))
    assert len(ctx.store.get_json("it1/failed.json")) == 2
    assert not ctx.store.exists("it1/label.json")
    # rerun after the transient failure clears: 1 of 4 failed (25%) is within the limit
    lab.fail.pop(h[1])
    n_before = len(lab.seen)
    rec = steps.label_set(ctx, "cand.extxyz", "it1")
    assert (rec["labelled"], rec["failed"], rec["dft_cached"], rec["dft_computed"]) == \
        (3, 1, 2, 1)
    assert len(lab.seen) == n_before + 1  # only the transient failure was run again


def test_engine_command_uses_mpirun_only_for_several_ranks() -> None:
    from pfd.label.custodian_run import build_command, engine_env

    assert build_command("pw.x -nk 1", 1, "mpirun -np {ranks}") == ["pw.x", "-nk", "1"]
    assert build_command("cp2k.psmp", 4, "srun -n {ranks} --exact") == \
        ["srun", "-n", "4", "--exact", "cp2k.psmp"]
    env = engine_env(1)
    assert env["OMP_NUM_THREADS"] == "1" and env["OMPI_MCA_ess_singleton_isolated"] == "1"


def test_corrections_survive_the_extxyz_round_trip() -> None:
    import json

    from pfd.label.custodian_run import corrections_info

    corr = [{"handler": "PwScfHandler", "errors": ['SCF "not" converged \\ in 100 steps, ü'],
             "actions": [{"dict": "pw.in", "action": {"_set": {"electrons": {
                 "mixing_beta": 0.25, "electron_maxstep": 200}}}}]}]
    a = fr.attach_labels(cu(1), 1.0, np.zeros((4, 3)), np.zeros(6))
    a.info["label_corrections"] = corrections_info(corr)
    back = json.loads(fr.from_extxyz(fr.to_extxyz([a]))[0].info["label_corrections"])
    assert back[0]["errors"] == ["SCF 'not' converged   in 100 steps,  "]
    assert back[0]["actions"] == corr[0]["actions"]
