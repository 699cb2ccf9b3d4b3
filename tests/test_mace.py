"""``finetune.backend: mace``: a MACE foundation fine-tuned by mace-torch in ``.venv-mace``.

No MACE weights can be downloaded here, so the module first trains a small MACE from
scratch with ``mace_run_train`` on DFT frames of the PFD paper's Si set, in an energy
reference 1.3 eV/atom away from the labeller's, and saves it as the "foundation": the
same kind of file (a pickled ``ScaleShiftMACE``) a user's MACE-MP-0 is, taking the same
code path. Its frames are not the ones the fine-tunes below train or are tested on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from procs import kill_tree, wait_for
from requires import missing, needs

from pfd import frames as fr
from pfd.config import ConfigError, FinetuneSpec, parse_config
from pfd.models import mace
from pfd.models.registry import load_calculator

ROOT = Path(__file__).resolve().parents[1]
SI_DATA = ROOT / "tests/data/si_paper/train.extxyz"  # see data/README.md
PFD = str(Path(sys.executable).with_name("pfd"))
OFFSET_EV = 1.3  # the foundation's energy reference, per atom, away from the labeller's

pytestmark = needs(mace.default_env_dir().joinpath("bin", "mace_run_train").exists(),
                   "the MACE environment (.venv-mace, scripts/install-mace-env.sh) is missing")


@pytest.fixture(scope="module")
def si() -> dict[str, list]:
    small = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16]
    order = np.random.default_rng(5).permutation(len(small))
    picked = [small[i] for i in order]
    return {"foundation": picked[:30], "train": picked[30:36], "valid": picked[36:38],
            "test": picked[38:46]}


@pytest.fixture(scope="module")
def foundation(tmp_path_factory: pytest.TempPathFactory, si: dict[str, list]) -> Path:
    """A small MACE trained from scratch, in another energy reference."""
    frames = [fr.attach_labels(a, fr.energy(a) + OFFSET_EV * len(a), fr.forces(a), None)
              for a in si["foundation"]]
    try:
        return mace.train_new(frames, tmp_path_factory.mktemp("mace-foundation"))
    except RuntimeError as err:
        missing(f"mace_run_train could not build the test foundation: {err}")


def _settings(foundation: Path, epochs: int = 3) -> FinetuneSpec:
    return FinetuneSpec(backend="mace", foundation=str(foundation), epochs=epochs,
                        batch_size=2, patience_epochs=10, learning_rate=0.005)


def _errors(calc, frames: list) -> tuple[float, float]:  # noqa: ANN001 - any calculator
    """(mean per-atom energy error eV/atom, force RMSE eV/Å) against the DFT labels."""
    de, df = [], []
    for a in frames:
        probe = fr.strip_labels(a)
        probe.calc = calc
        de.append((probe.get_potential_energy() - fr.energy(a)) / len(a))
        df.append(probe.get_forces() - fr.forces(a))
    return float(np.mean(de)), float(np.sqrt(np.mean(np.concatenate(df) ** 2)))


def test_foundation_is_read_through_the_mace_environment(foundation: Path) -> None:
    assert mace.foundation_elements(str(foundation)) == ["Si"]
    calc = mace.foundation_calculator(str(foundation))
    try:
        assert calc.info["e0_eV"].keys() == {"Si"}
        assert calc.info["r_max_A"] == pytest.approx(4.5)
    finally:
        calc.close()


def test_finetune_speaks_the_labellers_energies_and_keeps_its_best_epoch(
        tmp_path: Path, foundation: Path, si: dict[str, list]) -> None:
    base = mace.foundation_calculator(str(foundation))
    before = _errors(base, si["train"])
    base.close()
    assert before[0] > 0.5  # the foundation's own reference: far from the labeller's

    rows: list[dict] = []
    model_dir = mace.finetune(si["train"], si["valid"], tmp_path / "ft",
                              _settings(foundation), progress=rows.append)
    assert [r["step"] for r in rows] == [1, 2, 3]  # one progress row per epoch
    meta = mace.read_model_json(model_dir)
    assert meta["backend"] == "mace" and meta["kind"] == "finetuned"
    assert (model_dir / meta["checkpoint"]).is_file()
    assert meta["energy_shift_eV"]["Si"] == pytest.approx(-before[0], abs=0.05)
    history = meta["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # row 0: the shifted start
    losses = [h["valid_loss"] for h in history]
    assert meta["best_epoch"] == int(np.argmin(losses))  # the start counts as epoch 0

    calc = load_calculator(model_dir)  # through the registry, as MD and labelling load it
    after = _errors(calc, si["train"])
    test = _errors(calc, si["test"])
    calc.close()
    assert abs(after[0]) < 0.05  # now in the labeller's reference
    assert after[1] < before[1]  # and the forces it trained on are better
    assert np.isfinite(test[1])


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pfd import frames as fr
    from pfd.config import FinetuneSpec
    from pfd.models.backends import finetune
    wd = Path(sys.argv[1])
    finetune(FinetuneSpec(backend="mace", foundation=sys.argv[4], epochs=30, batch_size=2,
                          patience_epochs=40, learning_rate=0.005),
             fr.read_frames(sys.argv[2]), fr.read_frames(sys.argv[3]), wd)
""")


@pytest.mark.slow
def test_killed_finetune_continues_from_its_checkpoint(tmp_path: Path, foundation: Path,
                                                       si: dict[str, list]) -> None:
    paths = [tmp_path / n for n in ("train.extxyz", "valid.extxyz")]
    fr.write_frames(paths[0], si["train"])
    fr.write_frames(paths[1], si["valid"])
    wd = tmp_path / "killed" / "wd"
    wd.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(wd), *map(str, paths),
                             str(foundation)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    results = wd / "mace" / "results"

    def epochs_done() -> int:
        return max((h["epoch"] for h in mace._history(mace._read_results(results))), default=0)

    # mace's own results file, not the progress rows (polled every 2 s): an epoch on six
    # frames takes well under a second
    wait_for(lambda: epochs_done() >= 2, proc, "two finished epochs", timeout=300)
    assert kill_tree(proc) >= 1
    killed_at = epochs_done()
    assert killed_at < 30  # it really died before the end
    assert any((wd / "mace" / "checkpoints").glob("*.pt"))

    rows: list[dict] = []
    settings = FinetuneSpec(backend="mace", foundation=str(foundation), epochs=30,
                            batch_size=2, patience_epochs=40, learning_rate=0.005)
    model_dir = mace.finetune(si["train"], si["valid"], wd, settings, progress=rows.append)
    meta = mace.read_model_json(model_dir)
    assert meta["resumed_after_epoch"] == killed_at
    assert rows and rows[0]["step"] <= killed_at + 1 and rows[-1]["step"] == 30
    assert [h["epoch"] for h in meta["history"]] == list(range(31))

    # other frames: the checkpoints of this training are not theirs
    other = mace.finetune(si["test"][:6], si["valid"], wd, _settings(foundation, epochs=1))
    assert mace.read_model_json(other)["resumed_after_epoch"] is None


def test_config_needs_a_mace_model_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"finetune.foundation is 'unset': backend 'mace' "
                                         r"needs the foundation's MACE model file"):
        FinetuneSpec(backend="mace")
    with pytest.raises(ValueError, match=r"finetune.foundation is 'mace-mp-0'"):
        FinetuneSpec(backend="mace", foundation="mace-mp-0")
    spec = FinetuneSpec(backend="mace", foundation="m.model")
    assert (spec.force_weight, spec.stress_weight, spec.huber_delta) == (100.0, 1.0, 0.01)
    assert "model_branch" not in spec.backend_dump() and "foundation" in spec.backend_dump()


def _config(tmp_path: Path, foundation: str, element: str = "Si") -> Path:
    cfg = yaml.safe_load((ROOT / "tests/reliability/data/mini.yaml").read_text())
    cfg["structures"]["diamond"]["build"]["element"] = element
    cfg["finetune"] = {"backend": "mace", "foundation": foundation, "epochs": 2,
                       "batch_size": 2, "patience_epochs": 2}
    path = tmp_path / "mace.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_names_what_the_foundation_cannot_do(tmp_path: Path, foundation: Path) -> None:
    from pfd.preflight import check_config_file

    bad = tmp_path / "broken.model"
    bad.write_bytes(b"not a model")
    cases = [(str(tmp_path / "absent.model"), "Si", r"is not a MACE model file"),
             (str(bad), "Si", r"could not be loaded by mace-torch"),
             (str(foundation), "Ge", r"has no element\(s\) \['Ge'\]")]
    for model, element, why in cases:
        with pytest.raises(ConfigError, match=r"^finetune.foundation: .*" + why):
            check_config_file(_config(tmp_path, model, element))
    cfg = parse_config(yaml.safe_load(_config(tmp_path, str(foundation)).read_text()))
    assert cfg.finetune.backend == "mace"


@pytest.mark.slow
@needs(__import__("shutil").which("pw.x") is not None, "pw.x not installed")
def test_a_pfd_run_fine_tunes_explores_and_checks_forgetting_with_mace(
        tmp_path: Path, foundation: Path) -> None:
    """The whole fine-tune loop on a MACE foundation: real pw.x labels, mace-torch
    fine-tuning, MD on Dask workers with the mace worker calculator, the forgetting
    check against the foundation."""
    path = _config(tmp_path, str(foundation))
    cfg = yaml.safe_load(path.read_text())
    cfg["retention"] = {"copies": 1}
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    store = tmp_path / "store"
    out = subprocess.run([PFD, "run", str(path), "--store", str(store), "--workdir",
                          str(tmp_path / "work")], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    from pfd.store import LocalStore

    st = LocalStore(store)
    it = "runs/mini/stage-01/iter-00"
    model_key = st.get_json(f"{it}/record.json")["model"]
    meta = st.get_json(f"{model_key}/pfd_model.json")
    assert meta["backend"] == "mace" and meta["energy_shift_eV"]["Si"] < -0.5
    assert st.get_frames(f"{it}/labelled.extxyz")  # M_i's MD frames went to DFT
    retention = st.get_json(f"{it}/retention.json")
    assert np.isfinite(retention["force_drift_eV_A"]) and retention["force_drift_eV_A"] > 0
