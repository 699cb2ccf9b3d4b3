"""Evaluates a model for a parent pfd process, inside another environment (run as a script).

Runs under a second environment's python, never imported by pfd: ``deepmd-tf`` under
``.venv-lammps`` (pfd's own deepmd is built for PyTorch only), ``mace`` under
``.venv-mace`` (mace-torch pins an e3nn that SevenNet cannot run with). Usage:
``python -P _env_worker.py KIND MODEL``. Protocol on stdin/stdout: one length-prefixed
pickle per message. The first reply is ``{"ready": True, "type_map": [...], **info}``;
then requests ``{"numbers", "positions", "cell", "pbc"}`` get ``{"energy", "forces",
"stress"}`` or ``{"error": traceback}``. The process's fd 1 is pointed at stderr first,
so that what the libraries print can never corrupt the replies.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback
from typing import Any


def _read(stream) -> object | None:  # noqa: ANN001 - binary stream
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def _write(stream, obj: object) -> None:  # noqa: ANN001 - binary stream
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _deepmd_tf(model: str) -> tuple[Any, dict[str, Any]]:
    from deepmd.calculator import DP

    calc = DP(model=model)
    return calc, {"type_map": list(calc.type_dict)}


def _mace(model: str) -> tuple[Any, dict[str, Any]]:
    """A MACE model file; ``info`` carries its elements and E0s (eV), what a fine-tune
    refits to the labeller."""
    from ase.data import chemical_symbols
    from mace.calculators import MACECalculator

    device = os.environ.get("PFD_MACE_DEVICE", "cpu")
    calc = MACECalculator(model_paths=model, device=device, default_dtype="float64")
    net = calc.models[0]
    zs = [int(z) for z in net.atomic_numbers]
    e0 = net.atomic_energies_fn.atomic_energies.detach().cpu().double().reshape(-1, len(zs))[0]
    return calc, {"type_map": [chemical_symbols[z] for z in zs],
                  "e0_eV": {chemical_symbols[z]: float(e) for z, e in zip(zs, e0, strict=True)},
                  "r_max_A": float(net.r_max)}


KINDS = {"deepmd-tf": _deepmd_tf, "mace": _mace}


def main() -> None:
    # Run by path, python puts this file's directory first on sys.path, where pfd's own
    # deepmd.py / mace.py would shadow the real packages (the parent also passes -P).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    kind, model = sys.argv[1], sys.argv[2]
    try:
        from ase import Atoms

        calc, info = KINDS[kind](model)
        _write(replies, {"ready": True, **info})
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        _write(replies, {"error": traceback.format_exc()})
        return
    while True:
        req = _read(requests)
        if req is None:
            return
        try:
            atoms = Atoms(numbers=req["numbers"], positions=req["positions"],
                          cell=req["cell"], pbc=req["pbc"])
            atoms.calc = calc
            reply = {"energy": float(atoms.get_potential_energy()),
                     "forces": atoms.get_forces(),
                     "stress": atoms.get_stress() if any(req["pbc"]) else None}
        except Exception:  # noqa: BLE001
            reply = {"error": traceback.format_exc()}
        _write(replies, reply)


if __name__ == "__main__":
    main()
