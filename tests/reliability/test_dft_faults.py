"""Guarantee 2: DFT faults are fixed by a handler or recorded as failures with a reason;
nothing unconverged or unparsable is ever stored as a label.

Each fault is injected for real: real pw.x runs with a starved SCF, or a wrapper on the
engine command crashes, hangs, or corrupts pw.x's real output.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from ase import Atoms
from ase.build import bulk
from helpers import Fault, cli_env, mini_config, pfd, record, write_script
from requires import needs

from pfd import frames as fr
from pfd.config import QESpec
from pfd.label.cache import failure_key, label_frames, label_key
from pfd.label.qe import QELabeller
from pfd.store import LocalStore

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]

FAST = {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}, "ecutwfc_Ry": 12.0,
        "kspacing_invA": 0.8, "conv_thr_Ry": 1e-6}


def _si(seed: int) -> Atoms:
    a = bulk("Si", "diamond", a=5.43)
    a.rattle(0.05, seed=seed)
    return a


def _label(tmp: Path, frames: list[Atoms], **spec: object) -> tuple[QELabeller, LocalStore,
                                                                     object]:
    lab = QELabeller(QESpec(**{**FAST, **spec}), elements=("Si",))  # type: ignore[arg-type]
    store = LocalStore(tmp / "store")
    res = label_frames(lab, frames, store.url, scratch=str(tmp / "scratch"))
    return lab, store, res


def _no_label_stored(lab: QELabeller, store: LocalStore, a: Atoms) -> bool:
    return not store.exists(label_key(lab.fingerprint(), fr.frame_hash(a)))


def test_unconverged_scf_is_fixed_by_the_handler(tmp_path: Path) -> None:
    """3 SCF steps are too few; PwScfHandler's gentler mixing + doubled steps converge."""
    lab, store, res = _label(tmp_path, [_si(1)], electron_maxstep=3)
    assert len(res.labelled) == 1 and not res.failed
    out = res.labelled[0]
    assert '"handler":"PwScfHandler"' in out.info["label_corrections"]
    assert np.all(np.isfinite(fr.forces(out)))
    assert store.exists(label_key(lab.fingerprint(), fr.frame_hash(_si(1))))
    record(Fault("test_unconverged_scf_is_fixed_by_the_handler",
                 "SCF not converged (electron_maxstep 3)", outcome="fixed by PwScfHandler"))


def test_unconverged_scf_beyond_fixes_is_a_permanent_failure(tmp_path: Path) -> None:
    lab, store, res = _label(tmp_path, [_si(2)], electron_maxstep=1, scf_fix_attempts=1)
    assert res.labelled == [] and len(res.failed) == 1
    assert "SCF not converged" in res.failed[0].reason
    assert _no_label_stored(lab, store, _si(2))
    assert store.exists(failure_key(lab.fingerprint(), fr.frame_hash(_si(2))))
    record(Fault("test_unconverged_scf_beyond_fixes_is_a_permanent_failure",
                 "SCF never converges (electron_maxstep 1)",
                 outcome="failure recorded + cached"))


def test_crash_once_is_rerun_by_the_handler(tmp_path: Path) -> None:
    """The first call per frame dies like a segfault, with no output; the rerun succeeds."""
    cmd = write_script(tmp_path / "pw-crash-once.sh", """
if [ "$1" = -in ] && [ ! -e crashed-once ]; then
  touch crashed-once; echo 'Segmentation fault (core dumped)' >&2; exit 139
fi
exec pw.x "$@"
""")
    lab, store, res = _label(tmp_path, [_si(3)], command=cmd)
    assert len(res.labelled) == 1 and not res.failed
    assert '"handler":"PwCrashHandler"' in res.labelled[0].info["label_corrections"]
    record(Fault("test_crash_once_is_rerun_by_the_handler", "engine crash (exit 139), once",
                 outcome="fixed by PwCrashHandler rerun"))


def test_engine_that_always_crashes_is_a_transient_failure(tmp_path: Path) -> None:
    cmd = write_script(tmp_path / "pw-crash.sh", """
[ "$1" = -in ] || exec pw.x "$@"
echo 'MPI_ABORT was invoked on rank 0' >&2; exit 134
""")
    lab, store, res = _label(tmp_path, [_si(4)], command=cmd)
    assert res.labelled == [] and len(res.failed) == 1
    f = res.failed[0]
    assert "exit 134" in f.reason and "MPI_ABORT" in f.reason + f.tail
    assert _no_label_stored(lab, store, _si(4))
    # a crash is not the physics: not cached, so the next run tries again
    assert not store.exists(failure_key(lab.fingerprint(), fr.frame_hash(_si(4))))
    record(Fault("test_engine_that_always_crashes_is_a_transient_failure",
                 "engine crash (exit 134), every time",
                 outcome="failure recorded, retried next run"))


def test_garbage_output_is_never_a_label(tmp_path: Path) -> None:
    cmd = write_script(tmp_path / "pw-garbage.sh", """
[ "$1" = -in ] || exec pw.x "$@"
head -c 3000 /dev/urandom | base64
exit 0
""")
    lab, store, res = _label(tmp_path, [_si(5)], command=cmd)
    assert res.labelled == [] and len(res.failed) == 1
    assert res.failed[0].reason.startswith("QE:")
    assert _no_label_stored(lab, store, _si(5))
    record(Fault("test_garbage_output_is_never_a_label", "engine writes garbage, exit 0",
                 outcome="failure recorded"))


def test_truncated_output_is_never_a_label(tmp_path: Path) -> None:
    """Real pw.x output cut in the middle (a full disk, a killed writer), exit status 0."""
    cmd = write_script(tmp_path / "pw-truncate.sh", """
[ "$1" = -in ] || exec pw.x "$@"
pw.x "$@" > full.out
head -c $(( $(wc -c < full.out) / 2 )) full.out
exit 0
""")
    lab, store, res = _label(tmp_path, [_si(6)], command=cmd)
    assert res.labelled == [] and len(res.failed) == 1
    assert _no_label_stored(lab, store, _si(6))
    kept = Path(res.failed[0].workdir or "")
    assert "JOB DONE" in (kept / "full.out").read_text()  # the real run did finish
    assert "JOB DONE" not in (kept / "pw.out").read_text()
    record(Fault("test_truncated_output_is_never_a_label", "output truncated, exit 0",
                 outcome="failure recorded"))


def test_corrupt_forces_in_a_finished_output_are_never_a_label(tmp_path: Path) -> None:
    """The nastiest garbage: a complete output (JOB DONE, forces, stress) whose force
    values are NaN. Only the parser's finiteness check stands between it and a label."""
    cmd = write_script(tmp_path / "pw-nan.sh", """
[ "$1" = -in ] || exec pw.x "$@"
pw.x "$@" | sed -E 's/(force = +)[-0-9.]+/\\1NaN/'
""")
    lab, store, res = _label(tmp_path, [_si(7)], command=cmd)
    assert res.labelled == [] and len(res.failed) == 1
    assert "non-finite" in res.failed[0].reason
    assert "NaN" in (Path(res.failed[0].workdir or "") / "pw.out").read_text()
    assert _no_label_stored(lab, store, _si(7))
    record(Fault("test_corrupt_forces_in_a_finished_output_are_never_a_label",
                 "finished output with NaN forces", outcome="failure recorded"))


def test_unconverged_marker_in_a_finished_output_is_never_a_label(tmp_path: Path) -> None:
    """pw.x with scf_must_converge=.false. prints forces after an unconverged SCF."""
    cmd = write_script(tmp_path / "pw-unconv.sh", """
[ "$1" = -in ] || exec pw.x "$@"
pw.x "$@" | sed 's/convergence has been achieved/convergence NOT achieved after   3 iterations/'
""")
    lab, store, res = _label(tmp_path, [_si(8)], command=cmd, scf_fix_attempts=0)
    assert res.labelled == [] and len(res.failed) == 1
    assert "SCF not converged" in res.failed[0].reason
    assert _no_label_stored(lab, store, _si(8))
    record(Fault("test_unconverged_marker_in_a_finished_output_is_never_a_label",
                 "forces printed after an unconverged SCF", outcome="failure recorded"))


def test_hung_engine_is_killed_at_its_wall_time(tmp_path: Path) -> None:
    pidfile = tmp_path / "hung.pid"
    cmd = write_script(tmp_path / "pw-hang.sh", f"""
[ "$1" = -in ] || exec pw.x "$@"
sleep 600 &
echo $! > {pidfile}
wait
""")
    t0 = time.perf_counter()
    lab, store, res = _label(tmp_path, [_si(9)], command=cmd, timeout_s=3.0)
    took = time.perf_counter() - t0
    assert res.labelled == [] and len(res.failed) == 1
    assert "exceeded timeout_s=3" in res.failed[0].reason
    assert took < 30, f"a 3 s wall time took {took:.0f} s to enforce"
    pid = int(pidfile.read_text())
    # the engine's whole process group is gone, not just the wrapper
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _no_label_stored(lab, store, _si(9))
    assert store.exists(failure_key(lab.fingerprint(), fr.frame_hash(_si(9))))
    record(Fault("test_hung_engine_is_killed_at_its_wall_time", "engine hangs (timeout_s 3)",
                 outcome="killed, failure recorded + cached"))


def test_failures_over_the_limit_stop_the_run_with_a_clear_message(tmp_path: Path) -> None:
    """`pfd run` whose engine always crashes: it stops at the initial set, exit 1, naming
    the limit and the reason; failures are on record and no label is stored."""
    cmd = write_script(tmp_path / "pw-dead.sh", """
[ "$1" = -in ] || exec pw.x "$@"
echo 'cannot allocate memory' >&2; exit 1
""")
    cfg = mini_config(tmp_path, cmd, max_failure_fraction=0.25)
    store = tmp_path / "store"
    out = pfd(["run", str(cfg), "--store", str(store), "--workdir", str(tmp_path / "work")],
              tmp_path, cli_env(tmp_path), timeout=400)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    stops = [ln for ln in out.stderr.splitlines() if ln.startswith("pfd run stopped:")]
    assert len(stops) == 1, out.stderr[-3000:]
    last = stops[0]
    assert last.startswith("pfd run stopped: labelling stopped: 4 of 4 frames failed"), last
    assert "labeller.max_failure_fraction=25%" in last and "cannot allocate memory" in last
    st = LocalStore(store)
    failed = st.get_json("runs/mini/init/failed.json")
    assert len(failed) == 4 and all("exit 1" in f["reason"] for f in failed)
    assert not [k for k in st.list("labels/") if k.endswith(".extxyz")]
    assert not st.exists("runs/mini/init/labelled.extxyz")
    record(Fault("test_failures_over_the_limit_stop_the_run_with_a_clear_message",
                 "every DFT call crashes (pfd run)", injected=4,
                 outcome="run stopped over max_failure_fraction, exit 1"))
