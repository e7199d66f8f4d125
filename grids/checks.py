"""Data-quality checks over a whole layer set (work in progress: the API is fixed).

`check_layers(layers)` -> list[Finding]. Pure: no store, no I/O beyond the rules table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("error", "warning")


@dataclass
class Finding:
    kind: str
    severity: str
    layer: str
    codes: list[str] = field(default_factory=list)
    area_m2: float | None = None
    location: tuple[float, float] | None = None
    message_zh: str = ""
    id: str = ""
    bbox: tuple[float, float, float, float] | None = None
    wkt: str | None = None


def check_layers(layers: dict, *, settings=None) -> list[Finding]:
    return []
