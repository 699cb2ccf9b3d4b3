"""Edits a MACE model file for pfd, inside the MACE environment (run as a script).

Never imported by pfd (mace needs its own e3nn; see :mod:`pfd.models.mace`). Commands:

* ``shift IN OUT SHIFT_JSON`` — add per-element energies (``{"Si": -0.12}``, eV) to the
  model's E0s and save it as OUT: the foundation made to speak the labeller's energies,
  which a fine-tune with ``--E0s foundation`` then keeps.
"""

from __future__ import annotations

import json
import os
import sys


def shift(src: str, dst: str, shifts_json: str) -> None:
    import torch
    from ase.data import atomic_numbers

    model = torch.load(src, map_location="cpu", weights_only=False)
    zs = [int(z) for z in model.atomic_numbers]
    e0 = model.atomic_energies_fn.atomic_energies
    with torch.no_grad():
        for el, value in json.loads(shifts_json).items():
            z = atomic_numbers[el]
            if z not in zs:
                raise SystemExit(f"element {el} is not in the model's elements {zs}")
            e0[..., zs.index(z)] += float(value)
    tmp = dst + ".tmp"
    torch.save(model, tmp)
    os.replace(tmp, dst)


def main() -> None:
    # Run by path, python puts this file's directory first on sys.path, where pfd's own
    # mace.py would shadow the mace package (the parent also passes -P).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    command, args = sys.argv[1], sys.argv[2:]
    if command == "shift":
        shift(*args)
    else:
        raise SystemExit(f"unknown command {command!r} (allowed: shift)")


if __name__ == "__main__":
    main()
