"""One scratch directory per frame: kept when the frame fails, removed when it succeeds.

A failed DFT run is only debuggable with its inputs and outputs next to each other, so a
failure keeps its directory and the failure record points at it; successful frames are
already in the store, and thousands of their directories would only fill the disk.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def scratch_root(scratch: str | Path | None) -> Path:
    return Path(scratch) if scratch is not None else Path(tempfile.gettempdir()) / "pfd-scratch"


@contextmanager
def frame_scratch(scratch: str | Path | None, fingerprint: str, fhash: str,
                  keep: bool = False) -> Iterator[Path]:
    """A fresh directory ``<scratch>/labels/<fingerprint>/<frame hash>-XXXX``.

    The random suffix lets a retried frame (next run, other worker) never reuse or clobber
    the kept directory of an earlier failed attempt. Removed on normal exit unless ``keep``;
    left in place when the body raises.
    """
    parent = scratch_root(scratch) / "labels" / fingerprint
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{fhash[:16]}-", dir=parent))
    yield path
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
