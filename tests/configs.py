"""Smallest valid raw config, shared by the config tests that each break one field of it."""

from __future__ import annotations

from typing import Any


def base() -> dict[str, Any]:
    return {
        "structures": {"d": {"build": {"element": "Si", "crystal": "diamond", "a_A": 5.43}}},
        "init": {"structures": ["d"]},
        "labeller": {"qe": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}},
        "stages": [{"name": "s1", "groups": [{"structures": ["d"], "temperatures_K": [300]}]}],
    }
