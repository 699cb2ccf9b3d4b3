"""``pfd labels export`` / ``import``: DFT labels move between stores and are found again
by the same labeller, never by another, and a bad file imports nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.io import read, write
from test_label_cache import ScriptedLabeller, cu
from typer.testing import CliRunner

from flows.cli import app
from pfd.label.cache import label_frames
from pfd.label.transfer import LabelImportError, cached_labels, import_labels
from pfd.store import LocalStore


def test_export_import_then_the_same_labeller_pays_nothing(tmp_path: Path) -> None:
    src, dst = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    frames = [cu(i, 2) for i in range(3)]
    first = ScriptedLabeller()
    paid = label_frames(first, frames, src.url, scratch=str(tmp_path / "s1"))
    assert len(first.seen) == 3
    out = tmp_path / "labels.extxyz"
    r = CliRunner().invoke(app, ["labels", "export", str(out), "--store", src.url])
    assert r.exit_code == 0, r.output
    assert "3 labels (scripted-1)" in r.output
    r = CliRunner().invoke(app, ["labels", "import", str(out), "--store", dst.url])
    assert r.exit_code == 0 and "3 labels imported, 0 already present" in r.output, r.output
    again = CliRunner().invoke(app, ["labels", "import", str(out), "--store", dst.url])
    assert "0 labels imported, 3 already present" in again.output
    second = ScriptedLabeller()
    got = label_frames(second, frames, dst.url, scratch=str(tmp_path / "s2"))
    assert second.seen == []  # every frame came from the imported cache
    for a, b in zip(paid.labelled, got.labelled, strict=True):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
        assert abs(a.get_forces() - b.get_forces()).max() < 1e-6

    class Other(ScriptedLabeller):
        def fingerprint(self) -> str:
            return "scripted-2"  # other settings: the imported labels are not theirs

    other = Other()
    label_frames(other, frames, dst.url, scratch=str(tmp_path / "s3"))
    assert len(other.seen) == 3


def test_an_edited_or_foreign_file_imports_nothing(tmp_path: Path) -> None:
    src, dst = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    label_frames(ScriptedLabeller(), [cu(1), cu(2)], src.url, scratch=str(tmp_path / "s"))
    frames = cached_labels(src)
    frames[1].positions[0, 0] += 0.01  # moved after labelling: its label is not its own
    with pytest.raises(LabelImportError, match="frame 1: its geometry does not match"):
        import_labels(dst, frames, "f.extxyz")
    assert dst.list("labels/") == []  # the good frame 0 was not imported either
    plain = tmp_path / "plain.extxyz"
    write(plain, [cu(3)])
    r = CliRunner().invoke(app, ["labels", "import", str(plain), "--store", dst.url])
    assert r.exit_code == 2 and "frame 0 has no labeller_fingerprint" in r.output
    assert "Traceback" not in r.output
    assert len(read(plain, ":")) == 1


def test_the_repositorys_si_phases_labels_import_cleanly(tmp_path: Path) -> None:
    """benchmarks/data/si_phases_labels.extxyz (a run's QE labels, carried to the next
    machine) is intact: every frame matches its hash and lands in one labeller's cache."""
    path = Path(__file__).resolve().parents[1] / "benchmarks/data/si_phases_labels.extxyz"
    frames = read(path, ":")
    st = LocalStore(tmp_path / "s")
    res = import_labels(st, frames, str(path))
    assert res.imported == len(frames) >= 48 and res.present == 0
    assert len({a.info["labeller_fingerprint"] for a in frames}) == 1
