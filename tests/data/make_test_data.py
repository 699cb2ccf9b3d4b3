"""Rebuild or check the third-party data the tests read (tests/data/si_paper, custodian).

    python tests/data/make_test_data.py --from SHARED   # copy from the shared data folder
    python tests/data/make_test_data.py --check            # check the copies in the repo

Each file is a byte-for-byte copy of its source, checked against the SHA-256 below, so
the result never depends on who runs this or where; see README.md in this folder for the
sources and licences. The whole Si set is kept (not a subset): the tests pick frames by
seeded permutations of it and the benchmark tests check its 515-frame split, so any subset
would change what they test. Only the custodian fixtures some test reads are copied.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: path here -> (path under the shared data folder, sha256)
FILES: dict[str, tuple[str, str]] = {
    "si_paper/train.extxyz": (
        "data/pfd-paper/Si/train.extxyz",
        "509a330cdc66bac0cad8adbb9e1859441408bc2c0b93c584e3b78e247c172ad2"),
    "custodian/vasp/io/vasprun.xml.gz": (
        "fixtures/custodian/vasp/io/vasprun.xml.gz",
        "1eaae2de2047e91430d845c90ae74f28531a5ca768049643fc8ff4e9aa9f231d"),
    "custodian/vasp/io/OUTCAR.gz": (
        "fixtures/custodian/vasp/io/OUTCAR.gz",
        "78bcb8cd4d2e39d2ef36c4012d8dc391091ee64c0acc669419266858a6ca03a2"),
    "custodian/vasp/unconverged/POSCAR": (
        "fixtures/custodian/vasp/unconverged/POSCAR",
        "bb63bcb831ace9beba8e3014461aa618a86feb79c6878786c36cb1854f319c1b"),
    "custodian/vasp/unconverged/INCAR": (
        "fixtures/custodian/vasp/unconverged/INCAR",
        "9927720985d8831dcc59837162ae434ee2cc7b07d7c05b770d6b936db5f7dd6f"),
    "custodian/vasp/unconverged/KPOINTS": (
        "fixtures/custodian/vasp/unconverged/KPOINTS",
        "5f8c904abb473d8d6f1ae65ea89c27ec54e164f720a7dde8fbaa600f2956618e"),
    "custodian/vasp/unconverged/vasprun.xml.unconverged_unfixable.gz": (
        "fixtures/custodian/vasp/unconverged/vasprun.xml.unconverged_unfixable.gz",
        "605c0951f2a8b9a3054c9ac6e6ceff7bd28bb88915fd0ef22e12330d56145a98"),
    "custodian/cp2k/cp2k.inp": (
        "fixtures/custodian/cp2k/cp2k.inp",
        "accaf97e4612e33842ddefd6e635d5ad8c610643b6f27f8ffaa2411722766dc2"),
    "custodian/cp2k/cp2k.out.conv": (
        "fixtures/custodian/cp2k/cp2k.out.conv",
        "3cfe8788d4abcb970ca64fc4a938cc3dc13a59f60e47b80834a07756ed7f53b4"),
    "custodian/cp2k/cp2k.out.imprecise": (
        "fixtures/custodian/cp2k/cp2k.out.imprecise",
        "f5464392004133c8c6330e0c79060a7b6b6be229cd23d5f321966629e404cfc3"),
    "custodian/cp2k/cp2k.out.precondstuck": (
        "fixtures/custodian/cp2k/cp2k.out.precondstuck",
        "cc06b24a0ee66bdb6aa4b7b0ecdfc638fccb2d776701732746f712de1330c962"),
    "custodian/cp2k/cp2k.out.unconverged": (
        "fixtures/custodian/cp2k/cp2k.out.unconverged",
        "1adda729e60867d9b8544552b60555e71037303352755d62853d53a38ce3268a"),
    "custodian/cp2k/std_err.txt": (
        "fixtures/custodian/cp2k/std_err.txt",
        "edfa141fde415d5b8de473411bc50db4c9d65e6787b48021f386898f89ab1fef"),
}

#: files kept beside the data that are not copies (notes, licences)
NOTES = {"custodian/LICENSE"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def problems(root: Path = HERE) -> list[str]:
    """Every copy missing, altered, or unlisted under the copied folders (empty: all good)."""
    out = []
    for rel, (_, digest) in FILES.items():
        p = root / rel
        if not p.is_file():
            out.append(f"missing: {p}")
        elif sha256(p) != digest:
            out.append(f"altered: {p} (sha256 {sha256(p)}, expected {digest})")
    out += [f"missing: {root / rel}" for rel in sorted(NOTES) if not (root / rel).is_file()]
    for top in sorted({rel.split("/")[0] for rel in FILES}):
        for p in sorted((root / top).rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel not in FILES and rel not in NOTES:
                out.append(f"unlisted: {p} (add it to FILES in {Path(__file__).name})")
    return out


def copy_from(shared: Path, root: Path = HERE) -> None:
    for rel, (src_rel, digest) in FILES.items():
        src = shared / src_rel
        if not src.is_file():
            sys.exit(f"not found: {src} (expected the shared data folder's layout, "
                     f"see {HERE / 'README.md'})")
        if sha256(src) != digest:
            sys.exit(f"{src} differs from the recorded version (sha256 {sha256(src)}, "
                     f"expected {digest}); update FILES and README.md deliberately")
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--from", dest="shared", type=Path,
                       help="the shared data folder (holds data/ and fixtures/)")
    group.add_argument("--check", action="store_true", help="only check the copies here")
    args = ap.parse_args()
    if args.shared:
        copy_from(args.shared)
    bad = problems()
    if bad:
        sys.exit("\n".join(bad))
    print(f"ok: {len(FILES)} files in {HERE} match their recorded sha256")


if __name__ == "__main__":
    main()
