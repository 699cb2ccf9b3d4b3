"""The labeller contract: DFT engines and the teacher model are interchangeable.

A labeller turns an unlabelled frame into one carrying energy, forces and (when the
engine gives it) stress, or raises :class:`LabelError` with a reason a user can act on.
Its fingerprint hashes everything that changes the physics of a label, so the cache in
:mod:`pfd.label.cache` never serves a label computed with other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ase import Atoms

# what a labeller writes into ``atoms.info``: the label's own record, which travels with it
LABEL_INFO_KEYS = ("labeller", "engine_version", "label_corrections", "label_wall_s",
                   "frame_hash")


class LabelError(RuntimeError):
    """A frame could not be labelled; ``reason`` is stored with the failure record.

    ``permanent`` failures (the physics will not converge with these settings) are cached
    so they are never paid for again; transient ones (a crashed or killed process, a
    full disk) are recorded for this iteration only and retried on the next run.
    """

    def __init__(self, reason: str, *, permanent: bool = False, tail: str = "",
                 corrections: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        # the last lines of the engine's own output: what a user reads first to see why
        self.tail = tail
        # what custodian tried before giving up, so a failure never looks untried
        self.corrections = list(corrections or [])


@runtime_checkable
class Labeller(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def label(self, atoms: Atoms, workdir: Path) -> Atoms: ...


@runtime_checkable
class BatchLabeller(Labeller, Protocol):
    """A labeller that pays a fixed cost per call (loading a model), so frames go in batches."""

    batch_size: int

    def label_batch(self, frames: list[Atoms], workdir: Path) -> list[Atoms | LabelError]: ...


@dataclass
class FailedFrame:
    frame_hash: str
    reason: str
    index: int
    tail: str = ""
    corrections: list[dict[str, Any]] = field(default_factory=list)
    workdir: str | None = None  # scratch kept for inspection

    def to_dict(self) -> dict[str, object]:
        return {"frame_hash": self.frame_hash, "reason": self.reason, "index": self.index,
                "tail": self.tail, "corrections": self.corrections, "workdir": self.workdir}


@dataclass
class LabelResult:
    labelled: list[Atoms] = field(default_factory=list)
    failed: list[FailedFrame] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
