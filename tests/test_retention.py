"""The forgetting check: each fine-tuned M_i against its foundation on replay frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk
from configs import base

from pfd import frames as fr
from pfd.config import ConfigError, RetentionSpec, parse_config
from pfd.retention import drift, exceeded, replay_configurations

ROOT = Path(__file__).resolve().parents[1]
PFD = str(Path(sys.executable).parent / "pfd")


def _labelled(atoms, energy: float, forces: np.ndarray):
    return fr.attach_labels(atoms, energy, forces, None)


def test_replay_frames_are_each_structure_at_each_volume_rattled() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    spec = RetentionSpec(volume_ratios=[0.9, 1.1], copies=3, rattle_A=0.1)
    frames = replay_configurations({"d": [si], "v": [si[1:]]}, spec)
    assert len(frames) == 2 * 2 * 3
    assert [a.info["structure"] for a in frames] == ["d"] * 6 + ["v"] * 6
    for a in frames:
        ratio = a.get_volume() / si.get_volume()
        assert ratio == pytest.approx(a.info["volume_ratio"], rel=1e-9)
    moved = [np.sqrt(((a.get_scaled_positions() - frames[0].get_scaled_positions()) ** 2)
                     .sum()) for a in frames[1:3]]
    assert min(moved) > 0  # copies differ
    again = replay_configurations({"d": [si], "v": [si[1:]]}, spec)
    assert [fr.frame_hash(a) for a in again] == [fr.frame_hash(a) for a in frames]


def test_drift_ignores_an_energy_reference_and_sees_physics() -> None:
    rng = np.random.default_rng(0)
    ref, same_physics, changed = [], [], []
    for i in range(6):
        a = bulk("Si", "diamond", a=5.43, cubic=True)
        a.info["structure"] = "d" if i < 3 else "e"
        e, f = float(rng.normal(-40, 0.1)), rng.normal(0, 0.5, (len(a), 3))
        ref.append(_labelled(a, e, f))
        # the labeller's reference: -100 eV/atom away, same physics
        same_physics.append(_labelled(a, e - 100.0 * len(a), f))
        changed.append(_labelled(a, e - 100.0 * len(a) + (0.08 * len(a) if i == 5 else 0),
                                 f + (0.2 if i >= 3 else 0.0)))
    d0 = drift(ref, same_physics)
    assert d0["energy_drift_meV_atom"] < 1e-6 and d0["force_drift_eV_A"] < 1e-12
    d1 = drift(ref, changed)
    assert d1["by_structure"]["d"]["force_drift_eV_A"] < 1e-12
    assert d1["by_structure"]["e"]["force_drift_eV_A"] == pytest.approx(0.2)
    assert d1["force_drift_eV_A"] == pytest.approx(0.2 / np.sqrt(2))
    assert d1["energy_drift_meV_atom"] > 20  # one frame 80 meV/atom off the others
    spec = RetentionSpec(max_force_drift_eV_A=0.1, max_energy_drift_meV_atom=500)
    assert exceeded(d1, spec) == ["force drift 0.141 eV/Å > 0.1"]
    assert exceeded(d0, spec) == []
    assert exceeded(d1, RetentionSpec()) == []  # no bounds: measured only
    ratio = RetentionSpec(max_force_drift_ratio=2.0)
    assert exceeded({**d1, "force_drift_ratio": 2.5}, ratio) == [
        "force drift 2.50× the foundation's own error on the run's DFT frames > 2×"]
    assert exceeded({**d1, "force_drift_ratio": 1.2}, ratio) == []
    assert exceeded({**d1, "force_drift_ratio": None}, ratio) == []  # no DFT yet: no ratio


def test_retention_needs_a_foundation_calculator() -> None:
    raw = base()
    raw["finetune"] = {"backend": "deepmd", "checkpoint": "x.pt"}
    assert parse_config(raw).retention_active is False  # default: skipped for deepmd
    raw["retention"] = {"max_force_drift_eV_A": 0.2}
    with pytest.raises(ConfigError, match=r"retention: the forgetting check needs"):
        parse_config(raw)
    raw = base()
    raw["retention"] = {"on_exceed": "explode"}
    with pytest.raises(ConfigError, match=r"retention.on_exceed"):
        parse_config(raw)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_stops_on_a_drift_past_its_bound_before_paying_for_dft(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "tests/reliability/data/mini.yaml").read_text())
    cfg["run_id"] = "drift"
    cfg["cluster"] = {"n_workers": 1}
    cfg["retention"] = {"copies": 1, "max_force_drift_eV_A": 1e-6, "on_exceed": "stop"}
    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump(cfg))
    store = tmp_path / "store"
    env = {k: v for k, v in __import__("os").environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    out = subprocess.run([PFD, "run", str(path), "--store", str(store), "--workdir",
                          str(tmp_path / "work")], env=env, capture_output=True, text=True,
                         timeout=840)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
    last = next(ln for ln in out.stderr.splitlines() if ln.startswith("pfd run stopped:"))
    assert last.startswith("pfd run stopped: stage cold iter 0: the fine-tuned model drifted")
    assert "force drift" in last and "> 1e-06" in last
    from pfd.store import LocalStore

    st = LocalStore(store)
    rec = st.get_json("runs/drift/stage-01/iter-00/retention.json")
    assert rec["exceeded"] and rec["force_drift_eV_A"] > 1e-6
    replay = st.get_frames(rec["replay"])
    assert len(replay) == 2  # one structure × two volumes × one copy, foundation-labelled
    assert st.exists("runs/drift/init/labelled.extxyz")  # what was paid for is kept
    assert not st.list("runs/drift/stage-01/iter-00/explore")  # no MD, no DFT after it
