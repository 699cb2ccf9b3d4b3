"""The VASP labeller's whole custodian loop, with a stand-in ``vasp`` that replays real VASP
outputs (custodian's own test files, tests/data/custodian/vasp).

VASP cannot run here and POTCARs are licensed, so the tests build a POTCAR tree of fake
files with just the headers pymatgen parses, in the layout PMG_VASP_PSP_DIR uses: the
labeller's real POTCAR path runs unchanged.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.io import read
from ase.units import GPa
from custodian.custodian import ErrorHandler
from pymatgen.io.vasp.inputs import Incar

from pfd import frames as fr
from pfd.config import VaspSpec
from pfd.label.cache import failure_key, label_frames, label_key
from pfd.label.custodian_run import PhysicsGuard
from pfd.label.vasp import VaspLabeller, vasp_handlers
from pfd.label.vasp_inputs import build_incar
from pfd.store import LocalStore

FIX = Path(__file__).resolve().parent / "data/custodian/vasp"  # see data/README.md
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ZVAL = {"Si": 4, "Na": 7, "Fe": 8, "Ni": 10, "O": 6}


def fake_potcar(symbol: str, zval: int, date: str = "01Jan2000") -> str:
    el = symbol.split("_")[0]
    return (f"  PAW_PBE {symbol} {date}\n {zval:.10f}\n parameters from PSCTR are:\n"
            f"   VRHFIN ={el}: fake\n   LEXCH  = PE\n   TITEL  = PAW_PBE {symbol} {date}\n"
            f"   POMASS =   28.085; ZVAL   =    {zval:.3f}    mass and valenz\n"
            "   ENMAX  =  245.345; ENMIN  =  184.009 eV\n END of PSCTR-controll parameters\n"
            " local part\n   98.0000000000000\n  0.1 0.2 0.3 0.4 0.5\n End of Dataset\n")


@pytest.fixture
def psp_dir(tmp_path: Path) -> Path:
    root = tmp_path / "psp"
    d = root / "POT_PAW_PBE_64"
    d.mkdir(parents=True)
    for el, z in ZVAL.items():
        sym = {"Na": "Na_pv", "Fe": "Fe_pv", "Ni": "Ni_pv"}.get(el, el)
        (d / f"POTCAR.{sym}").write_text(fake_potcar(sym, z))
    return root


STANDIN = '''#!{python}
"""Stand-in vasp: replays recorded VASP outputs, one scenario step per call."""
import gzip, json, os, shutil, sys
from pathlib import Path
root = Path(os.environ["VASP_STANDIN_DIR"])
calls = root / "calls.log"
n = len(calls.read_text().splitlines()) + 1 if calls.exists() else 1
with calls.open("a") as fh:
    fh.write(os.getcwd() + "\\n")
shutil.copy("INCAR", root / f"INCAR.{{n}}")
steps = json.loads((root / "scenario.json").read_text())
step = steps[min(n, len(steps)) - 1]
Path("vasp.out").write_text(step.get("stdout", " running on 1 total cores\\n"))
for name, src in step.get("files", {{}}).items():
    data = Path(src).read_bytes()
    data = gzip.decompress(data) if src.endswith(".gz") else data
    if name == "vasprun.xml" and step.get("truncate"):
        data = data[: len(data) // 2]
    Path(name).write_bytes(data)
sys.exit(step.get("exit", 0))
'''


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "standin"
    root.mkdir()
    exe = root / "vasp_std"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("VASP_STANDIN_DIR", str(root))
    return root


def scenario(root: Path, steps: list[dict[str, Any]]) -> None:
    (root / "scenario.json").write_text(json.dumps(steps))


def n_calls(root: Path) -> int:
    log = root / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


SUCCESS = {"files": {"vasprun.xml": str(FIX / "io/vasprun.xml.gz"),
                     "OUTCAR": str(FIX / "io/OUTCAR.gz")}}
EDDDAV = {"stdout": " running on 1 total cores\n Error EDDDAV: Call to ZHEGV failed. "
          "Returncode = 7 1 8\n", "exit": 1}


def si_frame() -> Atoms:
    """The geometry of the recorded run (its first ionic step)."""
    a = read(FIX / "io/vasprun.xml.gz", index=0)
    return Atoms(a.get_chemical_symbols(), positions=a.positions, cell=a.cell, pbc=True)


def first_calculation(path: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """Free energy, forces, stress (kBar) of the first ionic step, read from the XML text."""
    text = gzip.decompress(path.read_bytes()).decode()
    calc = text[text.index("<calculation>"):text.index("</calculation>")]

    def varray(name: str) -> np.ndarray:
        block = re.search(rf'<varray name="{name}" >(.*?)</varray>', calc, re.S)
        assert block is not None
        return np.array([[float(x) for x in v.split()]
                         for v in re.findall(r"<v>(.*?)</v>", block.group(1))])

    energy = float(re.findall(r'<i name="e_fr_energy">\s*(\S+)', calc)[-1])
    return energy, varray("forces"), varray("stress")


def spec(standin: Path, psp_dir: Path, **kw: Any) -> VaspSpec:
    return VaspSpec(command=str(standin / "vasp_std"), psp_dir=psp_dir, timeout_s=60, **kw)


def test_success_labels_match_the_recorded_outputs(tmp_path: Path, standin: Path,
                                                   psp_dir: Path) -> None:
    scenario(standin, [SUCCESS])
    lab = VaspLabeller(spec(standin, psp_dir), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [si_frame()], store.url, scratch=str(tmp_path / "scratch"))
    assert not res.failed and res.computed == 1 and n_calls(standin) == 1
    out = res.labelled[0]
    e, f, s_kbar = first_calculation(FIX / "io/vasprun.xml.gz")
    assert fr.energy(out) == pytest.approx(e, abs=1e-8)
    np.testing.assert_allclose(fr.forces(out), f, atol=1e-8)
    s = -s_kbar * 0.1 * GPa  # VASP's kBar, compression positive -> ASE's sign in eV/Å³
    np.testing.assert_allclose(fr.stress(out), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2],
                                                s[0, 1]], atol=1e-10)
    assert out.info["engine_version"].startswith("VASP 6.4.2")
    assert json.loads(out.info["label_corrections"]) == []
    # the INCAR VASP saw: static, stress on, label settings, nothing written back
    incar = Incar.from_file(standin / "INCAR.1")
    assert (incar["NSW"], incar["IBRION"], incar["ISIF"]) == (0, -1, 2)
    assert (incar["ENCUT"], incar["KSPACING"], incar["ISMEAR"], incar["SIGMA"]) == \
        (520.0, 0.25, 0, 0.05)
    assert incar["LWAVE"] is False and incar["LCHARG"] is False and incar["ISPIN"] == 1
    assert "MAGMOM" not in incar and "LORBIT" not in incar
    # success: label in the cache, scratch removed; asking again costs no VASP call
    assert store.exists(label_key(lab.fingerprint(), fr.frame_hash(si_frame())))
    assert not any((tmp_path / "scratch").rglob("INCAR"))
    again = label_frames(lab, [si_frame()], store.url)
    assert again.cached == 1 and n_calls(standin) == 1
    back = again.labelled[0]  # read from the store: the label's record survived extxyz
    assert back.info["engine_version"] == out.info["engine_version"]
    assert back.info["labeller"] == lab.fingerprint()
    assert json.loads(back.info["label_corrections"]) == []
    np.testing.assert_allclose(fr.forces(back), fr.forces(out), atol=1e-6)


def test_edddav_is_corrected_and_the_rerun_sees_the_fix(tmp_path: Path, standin: Path,
                                                        psp_dir: Path) -> None:
    scenario(standin, [EDDDAV, SUCCESS])
    lab = VaspLabeller(spec(standin, psp_dir), elements=("Si",))
    res = label_frames(lab, [si_frame()], LocalStore(tmp_path / "store").url)
    assert not res.failed and n_calls(standin) == 2
    first, second = (Incar.from_file(standin / f"INCAR.{i}") for i in (1, 2))
    assert first["ALGO"] != "All"
    assert second["ALGO"] == "All"  # custodian's EDDDAV fix reached the second run
    corrections = json.loads(res.labelled[0].info["label_corrections"])
    assert [c["handler"] for c in corrections] == ["VaspErrorHandler"]
    assert "edddav" in corrections[0]["errors"]
    assert {"dict": "INCAR", "action": {"_set": {"ALGO": "All", "ISEARCH": 1}}} in \
        corrections[0]["actions"]
    # physics untouched by the fix
    for key in ("ENCUT", "ISMEAR", "SIGMA", "KSPACING"):
        assert first[key] == second[key]


def test_unfixable_scf_is_a_recorded_permanent_failure(tmp_path: Path, standin: Path,
                                                       psp_dir: Path) -> None:
    unconv = FIX / "unconverged"
    frame = read(unconv / "POSCAR")
    scenario(standin, [{"files": {"vasprun.xml":
                                  str(unconv / "vasprun.xml.unconverged_unfixable.gz")}}])
    lab = VaspLabeller(spec(standin, psp_dir, max_corrections=3),
                       elements=("Fe", "Na", "Ni", "O"))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [frame], store.url, scratch=str(tmp_path / "scratch"))
    assert res.labelled == [] and len(res.failed) == 1
    fail = res.failed[0]
    assert "SCF not converged" in fail.reason
    assert fail.corrections and all(c["handler"] == "UnconvergedErrorHandler"
                                    for c in fail.corrections)
    assert store.exists(failure_key(lab.fingerprint(), fr.frame_hash(frame)))  # permanent
    assert fail.workdir and (Path(fail.workdir) / "vasprun.xml").is_file()  # kept


def test_truncated_vasprun_fails_validation_and_is_retried_later(
        tmp_path: Path, standin: Path, psp_dir: Path) -> None:
    scenario(standin, [{**SUCCESS, "truncate": True}])
    lab = VaspLabeller(spec(standin, psp_dir), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [si_frame()], store.url)
    assert len(res.failed) == 1 and "VasprunXMLValidator" in res.failed[0].reason
    assert not store.exists(failure_key(lab.fingerprint(), fr.frame_hash(si_frame())))
    scenario(standin, [SUCCESS])  # a transient failure is tried again on the next run
    assert label_frames(lab, [si_frame()], store.url).computed == 1


def test_nonzero_exit_is_a_transient_failure(tmp_path: Path, standin: Path,
                                             psp_dir: Path) -> None:
    scenario(standin, [{**SUCCESS, "exit": 3}])
    lab = VaspLabeller(spec(standin, psp_dir), elements=("Si",))
    store = LocalStore(tmp_path / "store")
    res = label_frames(lab, [si_frame()], store.url)
    assert len(res.failed) == 1 and "exit 3" in res.failed[0].reason
    assert not store.exists(failure_key(lab.fingerprint(), fr.frame_hash(si_frame())))


class _SmearingFix(ErrorHandler):
    """A handler whose 'fix' changes SIGMA: what the guard exists to refuse."""

    is_monitor = False

    def check(self, directory: str = "./") -> bool:
        return True

    def correct(self, directory: str = "./") -> dict[str, Any]:
        incar = Incar.from_file(Path(directory) / "INCAR")
        incar["SIGMA"] = 0.2
        incar.write_file(Path(directory) / "INCAR")
        return {"errors": ["smearing"], "actions": [{"dict": "INCAR",
                                                     "action": {"_set": {"SIGMA": 0.2}}}]}


def test_guard_refuses_a_physics_changing_fix(tmp_path: Path, standin: Path,
                                              psp_dir: Path) -> None:
    from pfd.label.vasp_inputs import resolve_potcars, write_inputs

    sp = spec(standin, psp_dir)
    write_inputs(tmp_path, si_frame(), sp, resolve_potcars(["Si"], sp))
    before = (tmp_path / "INCAR").read_bytes()
    guard = PhysicsGuard(_SmearingFix(), "vasp", ["INCAR", "POSCAR", "POTCAR", "KPOINTS"])
    out = guard.correct(str(tmp_path))
    assert out["actions"] == [] and "SIGMA" in out["errors"][-1]
    assert (tmp_path / "INCAR").read_bytes() == before
    # physics-changing custodian handlers are off unless asked for, and then not guarded
    names = [type(getattr(h, "handler", h)).__name__ for h in vasp_handlers(sp)]
    assert "IncorrectSmearingHandler" not in names
    extra = vasp_handlers(spec(standin, psp_dir, extra_handlers=["IncorrectSmearingHandler"]))
    assert type(extra[-1]).__name__ == "IncorrectSmearingHandler"


def test_fingerprint_covers_potcars_settings_and_version(tmp_path: Path, standin: Path,
                                                         psp_dir: Path) -> None:
    base = VaspLabeller(spec(standin, psp_dir), elements=("Si",)).fingerprint()
    same = VaspLabeller(spec(standin, psp_dir, threads=4, mpi_ranks=2, max_corrections=9),
                        elements=("Si",)).fingerprint()
    assert base == same
    for kw in ({"encut_eV": 600}, {"sigma_eV": 0.1}, {"kspacing_invA": 0.3},
               {"version": "6.4.2"}, {"incar": {"GGA": "PS"}}):
        assert VaspLabeller(spec(standin, psp_dir, **kw), elements=("Si",)).fingerprint() \
            != base, kw
    (psp_dir / "POT_PAW_PBE_64/POTCAR.Si").write_text(fake_potcar("Si", 4, "02Feb2002"))
    assert VaspLabeller(spec(standin, psp_dir), elements=("Si",)).fingerprint() != base


def test_incar_template_keeps_its_physics_and_gets_label_keys(tmp_path: Path, standin: Path,
                                                              psp_dir: Path) -> None:
    tpl = tmp_path / "INCAR.tpl"
    tpl.write_text("ENCUT = 450\nGGA = PS\nISMEAR = 1\nSIGMA = 0.1\nNSW = 50\nIBRION = 2\n"
                   "LWAVE = .TRUE.\n")
    incar = build_incar(si_frame(), spec(standin, psp_dir, incar_template=tpl,
                                         sigma_eV=0.02))
    assert (incar["ENCUT"], incar["GGA"], incar["ISMEAR"]) == (450, "Ps", 1)
    assert incar["SIGMA"] == 0.02  # a label setting the user did set wins over the template
    assert (incar["NSW"], incar["IBRION"], incar["ISIF"], incar["LWAVE"]) == (0, -1, 2, False)


def test_config_errors_name_the_field(tmp_path: Path, psp_dir: Path) -> None:
    from pydantic import ValidationError

    from pfd.config import LabellerSpec
    from pfd.label.registry import LabellerConfigError, check_labeller

    with pytest.raises(ValidationError, match="set by pfd"):
        VaspSpec(incar={"NSW": 5})
    ok = LabellerSpec(engine="vasp", vasp=VaspSpec(psp_dir=psp_dir))
    check_labeller(ok, ["Si", "O"])
    with pytest.raises(LabellerConfigError, match=r"no POTCAR 'Xe_GW' for element Xe") as e:
        check_labeller(ok, ["Si", "Xe"])
    assert e.value.field == "vasp.potcar_symbols"
    with pytest.raises(LabellerConfigError, match="does not exist"):
        check_labeller(LabellerSpec(engine="vasp", vasp=VaspSpec(psp_dir=tmp_path / "no")),
                       ["Si"])
