"""The third-party data in tests/data is there, complete, and byte-for-byte its source."""

from __future__ import annotations

from pathlib import Path

from ase.io import read
from procs import load_module

DATA = Path(__file__).resolve().parent / "data"


def test_data_files_match_their_recorded_sha256() -> None:
    mod = load_module(DATA / "make_test_data.py")
    assert mod.problems() == []


def test_si_set_is_the_whole_paper_set() -> None:
    frames = read(DATA / "si_paper/train.extxyz", index=":")
    assert len(frames) == 515
    assert {len(a) for a in frames} >= {2, 4, 8, 16, 64}
    assert all("energy" in a.info or a.calc is not None for a in frames)
