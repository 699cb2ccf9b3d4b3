"""Real Quantum ESPRESSO labels, the content-addressed cache, and failure handling."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.units import Ry
from requires import needs

from pfd import frames as fr
from pfd.config import QESpec
from pfd.label.cache import failure_key, label_frames, label_key
from pfd.label.qe import QELabeller
from pfd.store import LocalStore

pytestmark = needs(shutil.which("pw.x") is not None, "pw.x not installed")

FAST = {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}, "ecutwfc_Ry": 16.0,
        "kspacing_invA": 0.7, "conv_thr_Ry": 1e-7}


def _si(seed: int) -> object:
    a = bulk("Si", "diamond", a=5.43)
    a.rattle(0.05, seed=seed)
    return a


def _counting_command(tmp_path: Path, body: str = 'exec pw.x "$@"') -> tuple[str, Path]:
    log = tmp_path / "calls.log"
    script = tmp_path / "pw-counting.sh"
    # only runs on an input count: the version probe (no arguments) is not a DFT run
    script.write_text(f"#!/usr/bin/env bash\n[ \"$1\" = -in ] && echo call >> {log}\n{body}\n")
    script.chmod(0o755)
    return str(script), log


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_qe_label_matches_pw_output(tmp_path: Path) -> None:
    lab = QELabeller(QESpec(**FAST), elements=("Si",))
    out = lab.label(_si(1), tmp_path)
    pw_out = next(tmp_path.rglob("pw.out")).read_text()
    e_ry = float(re.findall(r"!\s+total energy\s+=\s+(-?\d+\.\d+) Ry", pw_out)[-1])
    # energy in eV from QE's own Ry value (smearing: ASE reports the free energy... both
    # are within the -TS term, tiny for Si)
    assert abs(fr.energy(out) - e_ry * Ry) < 0.05
    f = fr.forces(out)
    assert f.shape == (2, 3) and np.abs(f).max() > 1e-3
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=2e-3)  # Newton's third law
    s = fr.stress(out)
    assert s is not None and s.shape == (6,) and np.all(np.isfinite(s))
    assert out.info["labeller"] == lab.fingerprint()


def test_fingerprint_tracks_physics_only() -> None:
    a = QELabeller(QESpec(**FAST), elements=("Si",))
    same_binary = str(shutil.which("pw.x"))
    assert a.fingerprint() == QELabeller(QESpec(**FAST, threads=2, mpi_ranks=2, mixing_beta=0.2,
                                                scf_fix_attempts=0, command=same_binary),
                                         elements=("Si",)).fingerprint()
    assert a.fingerprint() != QELabeller(QESpec(**{**FAST, "ecutwfc_Ry": 20.0}),
                                         elements=("Si",)).fingerprint()
    assert a.fingerprint() != QELabeller(QESpec(**{**FAST, "kspacing_invA": 0.5}),
                                         elements=("Si",)).fingerprint()


def test_version_probe_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pfd.label.versions import qe_version

    monkeypatch.chdir(tmp_path)
    qe_version.cache_clear()
    assert re.match(r"\d", qe_version("pw.x"))
    assert list(tmp_path.iterdir()) == []  # pw.x writes CRASH on empty input: not here


def test_fingerprint_tracks_code_version(tmp_path: Path) -> None:
    other = tmp_path / "pw-other.x"
    other.write_text("#!/bin/sh\necho '     Program PWSCF v.9.9 starts on 1Jan2030'\n")
    other.chmod(0o755)
    a = QELabeller(QESpec(**FAST), elements=("Si",))
    b = QELabeller(QESpec(**FAST, command=str(other)), elements=("Si",))
    assert a.fingerprint() != b.fingerprint()


def test_cache_never_pays_twice(tmp_path: Path) -> None:
    cmd, log = _counting_command(tmp_path)
    lab = QELabeller(QESpec(**FAST, command=cmd), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    first = label_frames(lab, [_si(1), _si(2)], store.url)
    assert (first.computed, first.cached, len(first.failed)) == (2, 0, 0)
    assert _calls(log) == 2
    # one old frame (re-created independently: same content hash), one new
    second = label_frames(lab, [_si(2), _si(3)], store.url)
    assert (second.computed, second.cached) == (1, 1)
    assert _calls(log) == 3
    assert fr.energy(second.labelled[0]) == fr.energy(first.labelled[1])
    assert store.exists(label_key(lab.fingerprint(), fr.frame_hash(_si(3))))


def test_unconverged_scf_is_retried_then_cached_as_failure(tmp_path: Path) -> None:
    cmd, log = _counting_command(tmp_path)
    lab = QELabeller(QESpec(**{**FAST, "electron_maxstep": 1}, command=cmd), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [_si(4)], store.url, scratch=str(tmp_path / "scratch"))
    assert res.labelled == [] and len(res.failed) == 1
    fail = res.failed[0]
    assert "SCF not converged" in fail.reason
    assert _calls(log) == 1 + lab.spec.scf_fix_attempts  # original + gentler-mixing retries
    # every correction custodian applied is in the failure record ...
    assert [c["handler"] for c in fail.corrections] == ["PwScfHandler"] * 2
    betas = [c["actions"][0]["action"]["_set"]["electrons"]["mixing_beta"]
             for c in fail.corrections]
    assert betas == [0.25, 0.125]
    # ... and the failed frame's directory is kept, holding the last corrected input
    assert fail.workdir is not None
    assert "mixing_beta = 0.125" in (Path(fail.workdir) / "pw.in").read_text()
    assert "convergence NOT achieved" in fail.tail
    assert store.exists(failure_key(lab.fingerprint(), fr.frame_hash(_si(4))))
    again = label_frames(lab, [_si(4)], store.url)
    assert len(again.failed) == 1 and _calls(log) == 3  # known failure: not paid again
    assert again.failed[0].reason == fail.reason


def test_transient_crash_is_retried_and_not_cached(tmp_path: Path) -> None:
    cmd, log = _counting_command(tmp_path, "echo 'MPI_Init failed' >&2; exit 1")
    lab = QELabeller(QESpec(**FAST, command=cmd), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [_si(5)], store.url)
    assert len(res.failed) == 1 and "exit 1" in res.failed[0].reason
    assert "MPI_Init failed" in res.failed[0].reason + res.failed[0].tail
    assert _calls(log) == 1 + lab.spec.crash_retries
    assert not store.exists(failure_key(lab.fingerprint(), fr.frame_hash(_si(5))))


def test_missing_command_is_explained(tmp_path: Path) -> None:
    lab = QELabeller(QESpec(**FAST, command="/nonexistent/pw.x"), elements=("Si",))
    res = label_frames(lab, [_si(6)], LocalStore(tmp_path / "s").url)
    assert "QE command not found" in res.failed[0].reason
