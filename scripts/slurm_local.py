#!/usr/bin/env python3
"""A real one-node SLURM cluster on this machine, for the tests and for trying pfd's
``cluster.jobqueue`` before a real cluster: Debian's ``slurmctld``/``slurmd``/``munge``
(scripts/install-system-deps.sh), no systemd, everything under one directory.

    slurm_local.py start DIR [--cpus N] [--partition NAME]   # configure, start, wait idle
    slurm_local.py stop DIR                                  # cancel jobs, stop daemons
    slurm_local.py status DIR                                # sinfo + squeue

``start`` writes ``DIR/env`` (``export SLURM_CONF=...``): source it, or pass the variable
on, and ``sbatch``/``squeue``/dask-jobqueue talk to this cluster only. Each instance has
its own munge key and socket, its own ports and its own state, so two can run at once and
none touches ``/etc``. It must run as root (slurmd starts jobs as their user); munged runs
as the ``munge`` user, as it insists.

Why a real one and not a rendered job script: the tests submit, cancel and time out real
jobs and check that a PFD run survives each (docs/hpc.md, docs/reliability.md).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order
#: the node is this host: slurmctld starts only on the host its config names
NODE = socket.gethostname().split(".")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def available() -> str | None:
    """None when this machine can run the cluster, else what is missing."""
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")
               if shutil.which(c) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): run "
                "scripts/install-system-deps.sh (Debian slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd starts jobs as their user)"
    return None


def _start_munge(root: Path) -> Path:
    # munged runs as the munge user, who must reach its directory: not under a root-only
    # path like pytest's, hence a directory of its own in the system temp dir
    mdir = Path(tempfile.mkdtemp(prefix="pfd-munge-"))
    mdir.chmod(0o755)  # munged wants its socket directory searchable by all
    (root / "munge-dir").write_text(str(mdir))
    key = mdir / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    munge = pwd.getpwnam("munge")
    for p in (mdir, key):
        os.chown(p, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    sock = mdir / "munge.socket"
    cmd = ["setpriv", "--reuid", "munge", "--regid", "munge", "--clear-groups",
           "munged", "--foreground", f"--key-file={key}", f"--socket={sock}",
           f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
           f"--seed-file={mdir / 'munged.seed'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    (root / "munged.daemon.pid").write_text(str(proc.pid))
    _wait(lambda: sock.exists(), 10, "munged did not create its socket", root)
    return sock


def _write_conf(root: Path, cpus: int, partition: str, sock: Path) -> Path:
    for d in ("state", "spool", "log"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=pfdlocal
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName={partition} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(ok, timeout: float, what: str, root: Path) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((root / "log").glob("*.log")) if p.exists())
    raise SystemExit(f"{what} within {timeout:.0f} s\n{logs}")


def _env(root: Path) -> dict[str, str]:
    return dict(os.environ, SLURM_CONF=str(root / "slurm.conf"))


def start(root: Path, cpus: int, partition: str) -> None:
    why = available()
    if why:
        raise SystemExit(why)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / "slurm.conf").exists():
        raise SystemExit(f"{root} already holds a cluster: stop it first")
    try:
        _start(root, cpus, partition)
    except BaseException:
        stop(root)
        raise


def _start(root: Path, cpus: int, partition: str) -> None:
    sock = _start_munge(root)
    conf = _write_conf(root, cpus, partition, sock)
    env = _env(root)
    for name, cmd in (("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)]),
                      ("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(conf)])):
        log = (root / "log" / f"{name}.stderr").open("wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        (root / f"{name}.daemon.pid").write_text(str(proc.pid))

    def idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True,
                             text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    _wait(idle, 30, "the SLURM node did not become idle", root)
    (root / "env").write_text(f"export SLURM_CONF={conf}\n")
    print(f"export SLURM_CONF={conf}")


def _pid(root: Path, name: str) -> int | None:
    f = root / f"{name}.daemon.pid"
    try:
        return int(f.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(root: Path) -> None:
    root = root.resolve()
    env = _env(root)
    if (root / "slurm.conf").exists() and _pid(root, "slurmctld"):
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        subprocess.run(["scancel", "--state=PENDING"], env=env, capture_output=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            q = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(0.5)
    for name in DAEMONS:
        pid = _pid(root, name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        end = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.2)
            try:  # reap our own child when stop follows start in one process
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    mdir = root / "munge-dir"
    if mdir.exists():
        shutil.rmtree(mdir.read_text().strip(), ignore_errors=True)


def status(root: Path) -> None:
    env = _env(root.resolve())
    for cmd in (["sinfo"], ["squeue"]):
        subprocess.run(cmd, env=env, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("dir", type=Path)
    s.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    s.add_argument("--partition", default="debug")
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("dir", type=Path)
    args = ap.parse_args()
    if args.cmd == "start":
        start(args.dir, args.cpus, args.partition)
    elif args.cmd == "stop":
        stop(args.dir)
    else:
        status(args.dir)


if __name__ == "__main__":
    sys.exit(main())
