"""Helpers shared by the benchmark scripts: where they ran, and how their results are kept.

Every result records machine, date and command, because a timing without them cannot be
compared with anything; docs/benchmarks.md holds one section per benchmark, delimited by
``<!-- name:start -->`` / ``<!-- name:end -->`` so each script rewrites only its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()}"


def portable(arg: str) -> str:
    """A command-line argument as a committed result may show it: an absolute path of
    this machine becomes ``DIR/<its last part>`` (a user's clone has no such path)."""
    return f"DIR/{Path(arg).name}" if arg.startswith("/") else arg


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def update_markdown(md: Path, section: str, body: str) -> None:
    text = md.read_text() if md.exists() else "# Benchmarks\n\nFigures measured on this " \
        "project's machines; each section is rewritten by the benchmark named in it.\n"
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)


def write_result(out_dir: Path, name: str, result: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json under ``out_dir`` (the repository by default)."""
    out = Path(out_dir) / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def kill_tree(proc: subprocess.Popen[Any] | psutil.Process | int, timeout: float = 30) -> int:
    """SIGKILL a process and every descendant (Dask workers, pw.x in its own session, the
    flow run a worker spawned, LAMMPS under its launcher): what a node crash or an OOM kill
    of the whole job does. Returns how many died; 0 when the process was already gone.

    The one copy: the benchmarks use it to stop a case over its caps, the kill/resume tests
    (through ``tests/procs.py``) to simulate a crash.
    """
    import psutil

    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=timeout)
    if isinstance(proc, subprocess.Popen):
        proc.wait()
    return len(victims)
