"""The labeller contract: DFT engines and the teacher model are interchangeable.

A labeller turns an unlabelled frame into one carrying energy, forces and (when the
engine gives it) stress, or raises :class:`LabelError` with a reason a user can act on.
Its fingerprint hashes everything that changes the physics of a label, so the cache in
:mod:`pfd.label.cache` never serves a label computed with other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ase import Atoms


class LabelError(RuntimeError):
    """A frame could not be labelled; ``reason`` is stored with the failure record.

    ``permanent`` failures (the physics will not converge with these settings) are cached
    so they are never paid for again; transient ones (a crashed or killed process, a
    full disk) are recorded for this iteration only and retried on the next run.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@runtime_checkable
class Labeller(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def label(self, atoms: Atoms, workdir: Path) -> Atoms: ...


@dataclass
class FailedFrame:
    frame_hash: str
    reason: str
    index: int

    def to_dict(self) -> dict[str, object]:
        return {"frame_hash": self.frame_hash, "reason": self.reason, "index": self.index}


@dataclass
class LabelResult:
    labelled: list[Atoms] = field(default_factory=list)
    failed: list[FailedFrame] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
