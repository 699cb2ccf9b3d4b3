"""The one ``to_dict`` of every validation result (a frozen dataclass stored as JSON)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Record:
    """Mixin for the result dataclasses: ``to_dict`` is what the result cache stores and
    ``validation.json`` reports (nested results become dicts too)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
