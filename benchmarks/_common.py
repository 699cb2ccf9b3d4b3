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
from pathlib import Path
from typing import Any

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
