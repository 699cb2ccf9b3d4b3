"""Evaluates a TensorFlow-backend DeePMD model for a parent process (run as a script).

Runs under the LAMMPS environment's python (``.venv-lammps``), never imported by pfd:
pfd's own environment has deepmd built for PyTorch only. Protocol on stdin/stdout: one
length-prefixed pickle per message; requests ``{"numbers", "positions", "cell",
"pbc"}``, replies ``{"energy", "forces", "stress"}`` or ``{"error": traceback}``. The
process's fd 1 is pointed at stderr first, so that what TensorFlow and deepmd print can
never corrupt the replies.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback


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


def main() -> None:
    # Run by path, python puts this file's directory first on sys.path, where pfd's own
    # deepmd.py would shadow the deepmd package (the parent also passes -P).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    model = sys.argv[1]
    try:
        from ase import Atoms
        from deepmd.calculator import DP

        calc = DP(model=model)
        _write(replies, {"ready": True, "type_map": list(calc.type_dict)})
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
