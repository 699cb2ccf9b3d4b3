"""An ASE calculator whose model runs in another Python environment.

Some models cannot share pfd's environment: LAMMPS-ready DeePMD students need the
TensorFlow build of deepmd-kit (``.venv-lammps``), MACE needs the e3nn its checkpoints
were made with (``.venv-mace``). One long-lived worker process per calculator
(``_env_worker.py`` under that environment's python) evaluates the model; a pickle round
trip per call costs far less than the model evaluation for any cell worth simulating.
MD, labelling and testing use it like any other calculator.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from pfd.threads import thread_env

WORKER = Path(__file__).with_name("_env_worker.py")


class WorkerCalculator(Calculator):
    """Energies, forces and stress of ``model`` from a ``kind`` worker run by ``python``.

    ``info`` is what the worker said when it loaded the model (its ``type_map`` and any
    backend facts, e.g. MACE's E0s).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, python: Path, kind: str, model: Path, threads: int = 1,
                 env: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label = f"{kind} worker ({python})"
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [str(python), "-P", str(WORKER), kind, str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env={**os.environ, **thread_env(threads), **(env or {})})
        self.info: dict[str, Any] = self._receive()
        self.type_map: list[str] = list(self.info["type_map"])

    def _worker_log(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]

    def _receive(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        head = self._proc.stdout.read(8)
        if len(head) < 8:
            raise RuntimeError(f"{self._label} died; its log:\n{self._worker_log()}")
        (size,) = struct.unpack("<Q", head)
        msg = pickle.loads(self._proc.stdout.read(size))
        if "error" in msg:
            raise RuntimeError(f"{self._label} failed:\n{msg['error']}")
        return msg

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None and self._proc.stdin is not None
        req = {"numbers": self.atoms.numbers, "positions": self.atoms.positions,
               "cell": np.asarray(self.atoms.cell), "pbc": self.atoms.pbc}
        data = pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self._proc.stdin.flush()
        reply = self._receive()
        self.results = {"energy": reply["energy"], "free_energy": reply["energy"],
                        "forces": np.asarray(reply["forces"])}
        if reply.get("stress") is not None:
            self.results["stress"] = np.asarray(reply["stress"])

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
