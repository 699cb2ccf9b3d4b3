"""The labeller's physics against the foundation's, as the report and `pfd check` say it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from configs import base

from pfd import level_of_theory as lot
from pfd.config import parse_config

DEBIAN_SI = Path("/usr/share/espresso/pseudo/Si.pbe-rrkj.UPF")


@pytest.mark.parametrize(("tokens", "name"), [
    ("SLA PW PBE PBE", "PBE"), (" SLA  PW   PSX  PSC", "PBEsol"), ("SLA PZ NOGX NOGC", "LDA"),
    ("SLA LYP B88 BLYP", "BLYP"), ("SLA PW TPSS TPSS", "TPSS"),
    ("SLA PW XYZ ABC", "SLA PW XYZ ABC"),
])
def test_qe_functional_names(tokens: str, name: str) -> None:
    assert lot.qe_functional(tokens) == name


def test_upf_header_gives_functional_and_type(tmp_path: Path) -> None:
    upf = tmp_path / "Fe.x.UPF"
    upf.write_text('<UPF version="2.0.1">\n<PP_HEADER element="Fe" pseudo_type="PAW" '
                   'functional=" SLA  PW   PSX  PSC" z_valence="16"/>\n')
    assert lot.upf_info(upf) == {"functional": "PBEsol", "type": "PAW"}
    assert lot.upf_info(tmp_path / "missing.UPF")["functional"] == "unknown"
    if DEBIAN_SI.is_file():  # the demo's pseudopotential (install-system-deps.sh)
        assert lot.upf_info(DEBIAN_SI) == {"functional": "PBE", "type": "NC"}


def _theory(**labeller: object) -> dict:
    raw = base()
    raw["labeller"] = {**raw["labeller"], **labeller}
    return lot.report(parse_config(raw), ["Si"], {"Si": -101.7})


def test_same_functional_other_code_is_a_constant_the_shift_absorbs(tmp_path: Path) -> None:
    (tmp_path / "Si.pbe.UPF").write_text('<PP_HEADER functional="SLA PW PBE PBE" '
                                         'pseudo_type="NC"/>')
    rec = _theory(qe={"pseudopotentials": {"Si": "Si.pbe.UPF"}, "pseudo_dir": str(tmp_path)})
    assert rec["foundation"]["functional"] == "PBE(+U)" and rec["labeller"]["functional"] == "PBE"
    (diff,) = rec["differences"]
    assert diff.startswith("code and potentials: foundation VASP") and "constant" in diff
    md = lot.markdown(rec)
    assert "| labeller | PBE | Quantum ESPRESSO |" in md and "Si -101.7000" in md


def test_other_functional_and_missing_u_are_physics(tmp_path: Path) -> None:
    (tmp_path / "Si.ps.UPF").write_text('<PP_HEADER functional="SLA PW PSX PSC"/>')
    rec = _theory(qe={"pseudopotentials": {"Si": "Si.ps.UPF"}, "pseudo_dir": str(tmp_path)})
    assert any(d.startswith("functional: foundation PBE(+U), labeller PBEsol")
               for d in rec["differences"])
    cp2k = parse_config({**base(), "labeller": {"engine": "cp2k"}})
    diffs = lot.differences(lot.FOUNDATIONS[("sevennet", "7net-0")],
                            lot.labeller_theory(cp2k), ["Fe", "O"])
    assert any(d.startswith("+U: the foundation used +U on ['Fe']") for d in diffs)
    assert not any(d.startswith("+U") for d in lot.differences(
        lot.FOUNDATIONS[("sevennet", "7net-0")], lot.labeller_theory(cp2k), ["Fe", "Si"]))
    vasp = parse_config({**base(), "labeller": {"engine": "vasp", "vasp": {
        "input_set": "MPStaticSet"}}})
    assert lot.labeller_theory(vasp).functional == "PBE"
    assert not any(d.startswith("+U") for d in lot.differences(
        lot.FOUNDATIONS[("chgnet", "0.3.0")], lot.labeller_theory(vasp), ["Fe", "O"]))


def test_unknown_foundation_is_said_not_guessed(tmp_path: Path) -> None:
    ckpt = tmp_path / "mine.pth"
    raw = base()
    raw["finetune"] = {"foundation": str(ckpt)}
    ckpt.write_bytes(b"x")
    rec = lot.report(parse_config(raw), ["Si"], None)
    assert rec["foundation"]["functional"] == "unknown"
    assert rec["differences"] == ["foundation's training theory unknown to pfd: compare it "
                                  "yourself"]


@pytest.mark.skipif(not DEBIAN_SI.is_file() or shutil.which("pw.x") is None,
                    reason="Debian QE data not installed (install-system-deps.sh)")
def test_pfd_check_prints_what_differs() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([str(Path(sys.executable).parent / "pfd"), "check",
                          "examples/si/pfd.yaml"], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "note: code and potentials: foundation VASP" in out.stdout
