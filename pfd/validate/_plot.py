"""Validation plots' shared pieces: one colour per model, and pfd.plotting's helpers."""

from __future__ import annotations

from pfd.plotting import png, pyplot  # noqa: F401 - the validation plots import them here

# one colour per model everywhere, so a reader matches curves across plots
COLOURS = {"dft": "black", "teacher": "tab:blue", "student": "tab:orange"}


def colour(name: str) -> str | None:
    return COLOURS.get(name)
