"""CP2K labels: real runs (Debian's cp2k), custodian's CP2K handlers driven by the recorded
outputs in tests/data/custodian/cp2k, and the QE-vs-CP2K sanity check.

Real CP2K runs are kept to three: one converged-settings 8-atom frame with k-points
(shared by the label and cross-engine tests), and one cheap Γ-only frame run twice by the
SCF correction test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import GPa, Hartree
from custodian.cp2k.handlers import FrozenJobErrorHandler, NumericalPrecisionHandler
from custodian.cp2k.validators import Cp2kOutputValidator
from custodian.custodian import ErrorHandler
from pymatgen.io.cp2k.inputs import Cp2kInput
from requires import missing, needs

from pfd import frames as fr
from pfd.config import CP2KSpec, QESpec
from pfd.label.base import LabelError
from pfd.label.cache import label_frames
from pfd.label.cp2k import CP2KLabeller, JobDirStdErrHandler, LabelCp2kJob, ScfStepsHandler
from pfd.label.cp2k_inputs import gamma_grid_time_reversal, resolve_basis_and_potentials
from pfd.label.cp2k_output import diagnose, parse_cp2k_output
from pfd.label.custodian_run import PhysicsGuard
from pfd.label.qe import QELabeller
from pfd.store import LocalStore

FIX = Path(__file__).resolve().parent / "data/custodian/cp2k"  # see data/README.md
HAVE_CP2K = shutil.which("cp2k.psmp") is not None and Path("/usr/share/cp2k").is_dir()
needs_cp2k = needs(HAVE_CP2K, "cp2k (Debian cp2k + cp2k-data) missing")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def distorted_si() -> Atoms:
    """8-atom cubic Si, displaced and sheared: non-zero forces and all six stresses."""
    a = bulk("Si", "diamond", a=5.43, cubic=True)
    a.rattle(0.05, seed=1)
    a.set_cell(a.cell.array @ np.array([[1.0, 0.01, 0.0], [0.0, 0.99, 0.0], [0.0, 0.0, 1.0]]),
               scale_atoms=True)
    return a


# ----------------------------------------------------------------------------- real CP2K
@pytest.fixture(scope="module")
def cp2k_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Atoms, Path, CP2KLabeller]:
    """One real CP2K label (k-points 3x3x3, DZVP-MOLOPT-SR, 400 Ry), scratch kept."""
    if not HAVE_CP2K:
        missing("cp2k missing")
    tmp = tmp_path_factory.mktemp("cp2k")
    lab = CP2KLabeller(CP2KSpec(), elements=("Si",))
    res = label_frames(lab, [distorted_si()], LocalStore(tmp / "store").url,
                       scratch=str(tmp / "scratch"), keep_scratch=True)
    assert not res.failed, res.failed
    workdir = next((tmp / "scratch").rglob("cp2k.out")).parent
    return res.labelled[0], workdir, lab


@pytest.mark.slow
@needs_cp2k
def test_cp2k_label_matches_its_output(cp2k_label: tuple[Atoms, Path, CP2KLabeller]) -> None:
    out, workdir, lab = cp2k_label
    text = (workdir / "cp2k.out").read_text()
    e_ha = float(re.findall(r"Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", text)[-1])
    assert fr.energy(out) == pytest.approx(e_ha * Hartree, abs=1e-6)
    f = fr.forces(out)
    assert f.shape == (8, 3) and np.abs(f).max() > 0.1
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-3)
    s = fr.stress(out)
    assert s is not None and np.abs(s[3:]).max() > 1e-4  # the shear shows up
    assert out.info["labeller"] == lab.fingerprint() and out.info["engine_version"] == "CP2K 2023.1"
    inp = (workdir / "cp2k.inp").read_text()
    assert "PROJECT_NAME pfd" in inp and "UKS False" in inp
    assert "STRESS_TENSOR ANALYTICAL" in inp and "SCHEME GENERAL" in inp
    assert not any(p.suffix == ".cube" or "pdos" in p.name.lower() for p in workdir.iterdir())


@pytest.mark.slow
@needs_cp2k
def test_qe_and_cp2k_agree_on_a_distorted_frame(
        cp2k_label: tuple[Atoms, Path, CP2KLabeller], tmp_path: Path) -> None:
    """Two codes, two basis types, two pseudopotential families: same physics within
    0.1 eV/Å per force component and 1 GPa per stress component."""
    if shutil.which("pw.x") is None:
        missing("pw.x missing")
    cp2k, _, _ = cp2k_label
    qe = QELabeller(QESpec(ecutwfc_Ry=30, kspacing_invA=0.4), elements=("Si",))
    q = qe.label(distorted_si(), tmp_path)
    assert np.abs(fr.forces(q) - fr.forces(cp2k)).max() < 0.1
    ds = np.abs(fr.stress(q) - fr.stress(cp2k)).max() / GPa  # type: ignore[operator]
    assert ds < 1.0, f"stress differs by {ds:.2f} GPa"


@pytest.mark.slow
@needs_cp2k
def test_unconverged_scf_is_corrected_by_custodian(tmp_path: Path) -> None:
    """MAX_SCF too small: custodian lowers the mixing, we raise MAX_SCF, the rerun converges;
    the corrections travel with the label, and the fingerprint ignores them."""
    cheap = {"basis_set": "SZV-MOLOPT-SR-GTH", "cutoff_Ry": 120.0, "kspacing_invA": 5.0,
             "eps_default": 1e-10}
    lab = CP2KLabeller(CP2KSpec(**cheap, max_scf=10), elements=("Si",))
    assert lab.fingerprint() == CP2KLabeller(CP2KSpec(**cheap), elements=("Si",)).fingerprint()
    a = bulk("Si", "diamond", a=5.43, cubic=True)
    a.rattle(0.05, seed=2)
    res = label_frames(lab, [a], LocalStore(tmp_path / "store").url,
                       scratch=str(tmp_path / "scratch"), keep_scratch=True)
    assert not res.failed, res.failed[0].reason
    corr = json.loads(res.labelled[0].info["label_corrections"])
    assert [c["handler"] for c in corr] == ["ScfStepsHandler"]
    final = Cp2kInput.from_file(str(next((tmp_path / "scratch").rglob("cp2k.inp"))))
    scf = final.by_path("FORCE_EVAL/DFT/SCF")
    assert scf.get("MAX_SCF").values[0] == 20
    assert scf.by_path("MIXING").get("ALPHA").values[0] == pytest.approx(0.05)


# ----------------------------------------------------------------------------- no CP2K needed
def _fake_cp2k(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    exe = d / "cp2k.psmp"  # the name custodian's Cp2kJob.terminate would killall
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_terminate_kills_only_its_own_process(tmp_path: Path) -> None:
    exe = _fake_cp2k(tmp_path, "exec sleep 30")
    jobs, procs = [], []
    for i in range(2):
        d = tmp_path / f"job{i}"
        d.mkdir()
        job = LabelCp2kJob([str(exe)])
        procs.append(job.run(str(d)))
        jobs.append(job)
    time.sleep(0.2)
    jobs[0].terminate()
    assert procs[0].wait(timeout=10) is not None
    assert procs[1].poll() is None  # the other worker's CP2K still runs
    jobs[1].terminate()
    assert procs[1].wait(timeout=10) is not None


@needs_cp2k
def test_timeout_is_a_permanent_failure(tmp_path: Path) -> None:
    exe = _fake_cp2k(tmp_path, 'echo " CP2K| version string: CP2K version 0"; exec sleep 30')
    lab = CP2KLabeller(CP2KSpec(command=str(exe), timeout_s=1.0), elements=("Si",))
    t0 = time.perf_counter()
    with pytest.raises(LabelError) as err:
        lab.label(bulk("Si", "diamond", a=5.43), tmp_path / "run")
    assert time.perf_counter() - t0 < 15
    assert err.value.permanent and "exceeded timeout_s=1.0" in err.value.reason


def _fixture_dir(tmp_path: Path, out: str) -> Path:
    d = tmp_path / out
    d.mkdir()
    shutil.copy(FIX / "cp2k.inp", d / "cp2k.inp")
    shutil.copy(FIX / f"cp2k.out.{out}", d / "cp2k.out")
    return d


def _guarded(handler: ErrorHandler) -> PhysicsGuard:
    return PhysicsGuard(handler, "cp2k", ["cp2k.inp", "pfd.xyz"])


def test_fixture_unconverged_scf_gets_a_new_minimiser_and_more_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _fixture_dir(tmp_path, "unconverged")
    monkeypatch.chdir(tmp_path)  # handlers must work on the job directory, not the CWD
    h = _guarded(ScfStepsHandler())
    assert h.check(str(d))
    out = h.correct(str(d))
    ci = Cp2kInput.from_file(str(d / "cp2k.inp"))
    assert ci.by_path("FORCE_EVAL/DFT/SCF/OT").get("MINIMIZER").values[0] == "CG"
    assert ci.by_path("FORCE_EVAL/DFT/SCF").get("MAX_SCF").values[0] == 40
    assert out["actions"] and not h.refused
    assert diagnose(d) == ("SCF not converged", True)
    assert Cp2kOutputValidator().check(str(d))  # an unconverged run never validates


def test_fixture_stuck_scf_tightens_precision(tmp_path: Path) -> None:
    d = _fixture_dir(tmp_path, "imprecise")
    h = _guarded(NumericalPrecisionHandler(max_same=3))
    assert h.check(str(d))
    h.correct(str(d))
    qs = Cp2kInput.from_file(str(d / "cp2k.inp")).by_path("FORCE_EVAL/DFT/QS")
    assert qs.get("EPS_DEFAULT").values[0] == pytest.approx(1e-12)
    assert not h.refused  # precision is numerics, not physics


def test_fixture_frozen_preconditioner_is_switched(tmp_path: Path) -> None:
    d = _fixture_dir(tmp_path, "precondstuck")
    old = time.time() - 100
    os.utime(d / "cp2k.out", (old, old))
    h = _guarded(FrozenJobErrorHandler(timeout=10))
    assert h.check(str(d))
    out = h.correct(str(d))
    ot = Cp2kInput.from_file(str(d / "cp2k.inp")).by_path("FORCE_EVAL/DFT/SCF/OT")
    assert ot.get("PRECONDITIONER").values[0] == "FULL_ALL"
    assert out["errors"] == ["Frozen preconditioner"]


def test_fixture_stderr_is_read_from_the_job_directory(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "job"
    d.mkdir()
    shutil.copy(FIX / "std_err.txt", d / "std_err.txt")
    monkeypatch.chdir(tmp_path)  # no std_err.txt here
    h = JobDirStdErrHandler()
    assert h.check(str(d)) and h.errors == {"out_of_memory"}
    assert not JobDirStdErrHandler().check(str(tmp_path))


def test_fixture_incomplete_output_is_never_a_label(tmp_path: Path) -> None:
    d = _fixture_dir(tmp_path, "conv")  # SCF still running when the file was saved
    assert Cp2kOutputValidator().check(str(d))
    with pytest.raises(LabelError, match="incomplete"):
        parse_cp2k_output(d / "cp2k.out", bulk("Si", "diamond", a=5.43))


class _CutoffFix(ErrorHandler):
    is_monitor = False

    def check(self, directory: str = "./") -> bool:
        return True

    def correct(self, directory: str = "./") -> dict[str, Any]:
        p = Path(directory) / "cp2k.inp"
        p.write_text(p.read_text().replace("CUTOFF 1200", "CUTOFF 600"))
        return {"errors": ["cheaper"], "actions": [{"dict": "cp2k.inp", "action": "cutoff"}]}


def test_guard_refuses_a_cutoff_change(tmp_path: Path) -> None:
    d = _fixture_dir(tmp_path, "unconverged")
    before = (d / "cp2k.inp").read_bytes()
    h = _guarded(_CutoffFix())
    out = h.correct(str(d))
    assert out["actions"] == [] and "CUTOFF" in out["errors"][-1]
    assert (d / "cp2k.inp").read_bytes() == before


class _MixingFix(ErrorHandler):
    """A legitimate fix applied the way custodian's CP2K handlers do (parse, set, rewrite)."""

    is_monitor = False

    def check(self, directory: str = "./") -> bool:
        return True

    def correct(self, directory: str = "./") -> dict[str, Any]:
        from custodian.cp2k.interpreter import Cp2kModder

        act = {"dict": "cp2k.inp", "action": {"_set": {"FORCE_EVAL": {"DFT": {"SCF": {
            "MIXING": {"ALPHA": 0.05}}}}}}}
        Cp2kModder(filename="cp2k.inp", directory=directory).apply_actions([act])
        return {"errors": ["slow"], "actions": [act]}


@needs_cp2k
def test_guard_lets_a_mixing_fix_through_on_a_kpoint_input(tmp_path: Path) -> None:
    """custodian rewrites the whole input (the parser reorders KPOINT lines); only a change
    of physics may count as one."""
    from pfd.label.cp2k_inputs import build_input

    sp = CP2KSpec()
    inp, xyz = build_input(distorted_si(), sp, resolve_basis_and_potentials(["Si"], sp))
    (tmp_path / "cp2k.inp").write_text(inp)
    (tmp_path / "pfd.xyz").write_text(xyz)
    h = _guarded(_MixingFix())
    assert h.correct(str(tmp_path))["actions"] and not h.refused
    ci = Cp2kInput.from_file(str(tmp_path / "cp2k.inp"))
    assert ci.by_path("FORCE_EVAL/DFT/SCF/MIXING").get("ALPHA").values[0] == 0.05
    assert (tmp_path / "pfd.xyz").read_text() == xyz  # coordinates never rewritten


def test_time_reversal_grid_is_complete() -> None:
    for mesh in ((3, 3, 3), (4, 2, 1), (2, 2, 2)):
        kpts, w = gamma_grid_time_reversal(mesh)
        assert sum(w) == np.prod(mesh)
        assert [0.0, 0.0, 0.0] in kpts
        full = {tuple(np.round(np.array(k) * mesh).astype(int) % mesh) for k in kpts} | \
            {tuple(np.round(-np.array(k) * mesh).astype(int) % mesh) for k in kpts}
        assert len(full) == np.prod(mesh)


@needs_cp2k
def test_missing_basis_is_a_config_error() -> None:
    from pfd.config import LabellerSpec
    from pfd.label.registry import LabellerConfigError, check_labeller

    with pytest.raises(KeyError, match="available for Si"):
        resolve_basis_and_potentials(["Si"], CP2KSpec(basis_set="NOPE-GTH"))
    with pytest.raises(LabellerConfigError) as err:
        check_labeller(LabellerSpec(engine="cp2k", cp2k=CP2KSpec(potential="GTH-NOPE")),
                       ["Si"])
    assert "no potential 'GTH-NOPE' for element Si" in str(err.value)


def test_cp2k_version_probe_handles_a_missing_binary() -> None:
    from pfd.label.versions import cp2k_version

    assert cp2k_version("/nonexistent/cp2k.psmp") == "unknown"
