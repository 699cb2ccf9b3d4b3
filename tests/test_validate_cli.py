"""``pfd validate RUN`` / ``pfd report RUN`` on a small run built here: real models
(SevenNet-0 as the teacher, a DeePMD student distilled from it for a few steps), real QE
labels through the run's labeller, a LocalStore laid out as a finished PFD run."""

from __future__ import annotations

import base64
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ase.build import bulk
from requires import needs
from typer.testing import CliRunner

from pfd.cli import app
from pfd.config import parse_config
from pfd.store import LocalStore

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]

ROOT = Path(__file__).resolve().parents[1]
RUN = "val-fake"
PNG = b"\x89PNG\r\n\x1a\n"


def _config() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    raw["run_id"] = RUN
    raw["validation"] = {
        "eos": {"n_points": 5, "dft_points": 5},
        "vacancy": {"dft": False, "max_steps": 10},
        "phonons": {"supercell": [1, 1, 1], "band_points": 30, "dos_mesh": [4, 4, 4]},
        "diffusion": {"structure": "vacancy", "temperatures_K": [1500, 3000], "steps": 60,
                      "equilibration_steps": 10, "sample_every": 5},
        "stability": {"time_ps": 0.3},
        "parity": {"max_frames_per_dataset": 10}}
    return raw


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pfd.config import StudentSpec
    from pfd.model_cache import upload_model
    from pfd.models import deepmd, sevennet
    from pfd.perturb import perturb
    from pfd.steps import make_labeller
    from pfd.validate.dft import LabellerCalculator

    tmp = tmp_path_factory.mktemp("valcli")
    store = LocalStore(tmp / "store")
    cfg = parse_config(_config())
    store.put_json(f"runs/{RUN}/config.json", cfg.model_dump(mode="json"))
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    frames = perturb([si], 3, 0.05, 0.02, seed=5)
    # DFT labels of the "init" set, through the run's labeller and cache
    dft = LabellerCalculator(make_labeller(cfg), store.url, scratch=str(tmp / "work"))
    labelled = dft.label(frames)
    store.put_frames(f"runs/{RUN}/init/labelled.extxyz", labelled)
    # teacher: SevenNet-0 in the labeller's energy reference
    shift = sevennet.fit_energy_shift(labelled, sevennet.foundation_calculator())
    teacher_dir = sevennet.save_foundation(tmp / "teacher", "7net-0", shift)
    upload_model(store, f"runs/{RUN}/models/teacher", teacher_dir)
    store.put_json(f"runs/{RUN}/teacher.json", {"model": f"runs/{RUN}/models/teacher"})
    # student: distilled from teacher labels of perturbed diamond and vacancy cells
    teacher = sevennet.load_calculator(teacher_dir)
    vac = si.copy()
    del vac[0]
    synth = []
    for a in perturb([si, vac], 12, 0.1, 0.03, seed=9):
        a.calc = teacher
        from pfd.frames import attach_labels

        synth.append(attach_labels(a, a.get_potential_energy(), a.get_forces(),
                                   a.get_stress()))
    store.put_frames(f"runs/{RUN}/distill/synthetic_test.extxyz", synth[:4])
    student = StudentSpec(compress=False, descriptor_neuron=[8, 16], axis_neuron=4,
                          fitting_neuron=[32, 32], rcut_A=4.5, steps=60, start_lr=2e-3,
                          stop_lr=1e-4, disp_freq=30)
    student_dir = deepmd.train_student(synth[4:], synth[:4], tmp / "student", student)
    upload_model(store, f"runs/{RUN}/distill/student", student_dir)
    args = [RUN, "--store", store.url, "--workdir", str(tmp / "work")]
    t0 = time.perf_counter()
    first = CliRunner().invoke(app, ["validate", *args])
    first_s = time.perf_counter() - t0
    key = f"runs/{RUN}/report/validation.json"
    nums = store.get_json(key) if store.exists(key) else {}
    t0 = time.perf_counter()
    second = CliRunner().invoke(app, ["validate", *args])
    print(f"validate: first {first_s:.1f} s, rerun {time.perf_counter() - t0:.1f} s")
    return {"store": store, "first": first, "nums": nums, "second": second}


def test_validate_writes_report_plots_and_numbers(run: dict[str, Any]) -> None:
    out = run["first"]
    assert out.exit_code == 0, out.output + repr(out.exception)
    assert "| a0 diamond (Å) |" in out.output
    st: LocalStore = run["store"]
    nums = run["nums"]
    assert set(nums["models"]) == {"teacher", "student"}
    fit = nums["eos"]["diamond"]
    assert fit["dft"]["n_points"] == 5 and fit["dft"]["fit"]["a0_A"] > 5
    assert fit["teacher"]["fit"]["a0_A"] == pytest.approx(fit["dft"]["fit"]["a0_A"], rel=0.02)
    assert nums["phonon_points"]["dft"]["gamma_optical_THz"] > 5
    assert nums["phonons"]["teacher"]["imaginary_modes"] is False
    assert nums["vacancy"]["teacher"]["formation_eV"] > 1
    assert "dft" not in nums["vacancy"]  # vacancy.dft: false
    assert [t["temperature_K"] for t in nums["diffusion"]["student"]["temperatures"]] == [
        1500, 3000]
    # NVE with the student in each distilled structure at 1.2 × the hottest group (1000 K)
    stab = nums["stability"]["student"]
    assert set(stab) == {"diamond", "vacancy"} and "teacher" not in nums["stability"]
    assert all(r["temperature_K"] == 1200 and r["steps_done"] > 0 for r in stab.values())
    # parity on every labelled set; the teacher is not tested on its own labels
    assert set(nums["parity"]) == {"init/labelled.extxyz", "distill/synthetic_test.extxyz"}
    assert set(nums["parity"]["distill/synthetic_test.extxyz"]) == {"student"}
    assert nums["parity"]["init/labelled.extxyz"]["teacher"]["n_frames"] == 4
    # 5 E-V volumes + 2 displaced cells (u and 2u, the phonon uncertainty); the E-V point
    # at the given volume is the init set's unperturbed cell, already in the label cache
    assert nums["dft"]["computed"] == 6 and nums["dft"]["cached"] == 1
    # every reported number carries its uncertainty and its checks
    q = nums["quantities"]["values"]
    b0 = q["eos.diamond.B0_GPa"]
    assert set(b0) == {"teacher", "student", "dft"}
    assert b0["teacher"]["err"] > 0 and b0["dft"]["err"] > 0, b0
    # the 60-step student's curve is not meaningful, and the report says why
    assert b0["student"]["err"] is not None or b0["student"]["problems"], b0
    assert q["phonons.gamma_optical_THz"]["dft"]["err"] is not None
    assert q["vacancy.E_f_eV"]["teacher"]["err"] is not None
    assert "teacher" in nums["quantities"]["vs_dft"]["eos.diamond.B0_GPa"]
    assert " ± " in out.output  # the summary printed by the CLI shows them too
    assert not nums["errors"], nums["errors"]
    # plots: every one a real, non-trivial PNG, each inline in the HTML
    assert len(nums["plots"]) >= 5
    html = st.get_text(f"runs/{RUN}/report/validation.html")
    inline = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(inline) == len(nums["plots"])
    for key in nums["plots"].values():
        data = st.get_bytes(key)
        assert data[:8] == PNG and len(data) > 10_000
        assert base64.b64encode(data).decode() in inline
    md = st.get_text(f"runs/{RUN}/report/validation.md")
    assert "](validation/eos-diamond.png)" in md and "## Phonons" in md


def test_rerun_reuses_every_stored_result(run: dict[str, Any]) -> None:
    out = run["second"]
    assert out.exit_code == 0, out.output
    nums = run["store"].get_json(f"runs/{RUN}/report/validation.json")
    assert nums["dft"]["computed"] == 0
    stored = [k for k in nums["timings_s"]]
    assert sorted(nums["reused"]) == sorted(stored)


def test_report_prints_summary_and_validation(run: dict[str, Any]) -> None:
    st: LocalStore = run["store"]
    out = CliRunner().invoke(app, ["report", RUN, "--store", st.url])
    assert out.exit_code == 0, out.output
    assert "## Validation" in out.output and "| vacancy formation (eV) |" in out.output
    assert "validation.html" in out.output
    missing = CliRunner().invoke(app, ["report", "nope", "--store", st.url])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output


def test_validate_names_the_problem(run: dict[str, Any], tmp_path: Path) -> None:
    st: LocalStore = run["store"]
    cfg_file = ROOT / "tests/data/tiny.yaml"
    hint = CliRunner().invoke(app, ["validate", str(cfg_file)])
    assert hint.exit_code == 2 and "pfd check" in hint.output
    missing = CliRunner().invoke(app, ["validate", "nope", "--store", st.url])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("validation: {eos: {dft_points: 3}}\n")
    out = CliRunner().invoke(app, ["validate", RUN, "--store", st.url, "--config", str(bad)])
    assert out.exit_code == 2 and "at least 5" in out.output


def test_benchmark_quick_writes_table(run: dict[str, Any], tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    st: LocalStore = run["store"]
    out = subprocess.run([sys.executable, "benchmarks/validation_si.py", "--quick",
                          "--store", st.url, "--run-id", RUN, "--out-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    res = json.loads((tmp_path / "benchmarks/results/validation_si_quick.json").read_text())
    assert res["machine"] and res["date"] and "validation_si.py --quick" in res["command"]
    # a committed result names no path of this machine: a user's clone has none of them
    assert st.url not in res["command"] and res["store"] == "DIR/" + Path(st.url).name
    a0 = res["table"]["a0_A"]
    assert 5.3 < a0["teacher"] < 5.6 and 5.3 < a0["dft"] < 5.6  # DFT from the stored result
    assert res["table"]["gamma_optical_THz"]["teacher"] > 5
    md = (tmp_path / "docs/benchmarks.md").read_text()
    assert "<!-- validation_si_quick:start -->" in md and "| a0 (Å) |" in md


def test_no_dft_serves_the_cache_and_skips_the_rest(run: dict[str, Any],
                                                    tmp_path: Path) -> None:
    st: LocalStore = run["store"]
    cfg = tmp_path / "more.yaml"
    more = dict(_config()["validation"])
    more["eos"] = {"n_points": 5, "dft_points": 7}  # two volumes nobody has paid for
    cfg.write_text(yaml.safe_dump({"validation": more}))
    out = CliRunner().invoke(app, ["validate", RUN, "--store", st.url, "--config", str(cfg),
                                   "--no-dft"])
    assert out.exit_code == 0, out.output
    nums = st.get_json(f"runs/{RUN}/report/validation.json")
    assert "eos/diamond/dft" in nums["skipped"] and "dft" not in nums["eos"]["diamond"]
    assert nums["dft"]["computed"] == 0 and not nums["errors"]
    # the DFT Γ point is computed at the DFT E-V minimum, which is now missing: its cell
    # differs from the one paid for, so it is skipped too, never computed
    assert "phonons/dft" in nums["skipped"] and "dft" not in nums["phonon_points"]
    assert nums["eos"]["diamond"]["teacher"]["fit"]["a0_A"] > 5
