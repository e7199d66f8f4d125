"""What `gridmap validate`, the data-quality page and the service check: a layer set, as it is
(the current layers), as an import would leave it (a folder or zip in the import format, its
layers replacing the current ones of the same name) or as a draft would (grids/publishing.py).

The checks themselves are grids/checks.py; this module gathers the layers and reports.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from grids import checks
from grids.checks import Finding
from layers.schema import LAYER_ORDER, LAYERS
from layers.store import Snapshot


@dataclass
class CheckReport:
    """The findings over one layer set and what was checked."""

    findings: list[Finding]
    subject_zh: str  # what was checked, for the page and the terminal
    generation: int  # the current generation the layer set starts from
    replaced: tuple[str, ...] = ()  # layers that replace the current ones
    files: dict[str, str] = field(default_factory=dict)  # layer -> file read (validate DIR)
    notes: list[str] = field(default_factory=list)  # files ignored and the like
    seconds: float = 0.0

    @property
    def has_errors(self) -> bool:
        return checks.has_errors(self.findings)

    def counts(self) -> dict[str, int]:
        return checks.counts(self.findings)

    def as_dict(self) -> dict:
        return {
            "subject": self.subject_zh,
            "generation": self.generation,
            "replaced": list(self.replaced),
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "findings": [f.as_dict() for f in self.findings],
        }


def check_snapshot(snapshot: Snapshot, replacements: Mapping[str, pd.DataFrame] | None = None,
                   *, settings=None, subject_zh: str | None = None,
                   extra: list[Finding] | None = None) -> CheckReport:
    """The current layers of `snapshot`, some replaced by `replacements`, checked."""
    started = time.perf_counter()
    replacements = dict(replacements or {})
    layers = {**snapshot.layers, **replacements}
    findings = list(extra or []) + checks.check_layers(layers, settings=settings)
    gen = snapshot.generation.id
    if subject_zh is None:
        subject_zh = (f"当前图层（版本 {gen}）" if not replacements else
                      f"当前图层（版本 {gen}）中的 {'、'.join(sorted(replacements))} "
                      "替换为新数据后")
    return CheckReport(findings, subject_zh, gen, tuple(sorted(replacements)),
                       seconds=time.perf_counter() - started)


def check_path(snapshot: Snapshot, path: Path, *, crs: str | None = None,
               encoding: str | None = None, settings=None) -> CheckReport:
    """A folder or zip in the import format, checked as it would be published over the
    current layers. A file the importer would refuse (missing columns, bad values …) is a
    `format` error and its layer is checked as it is now."""
    from layers.importer import _nothing_found, _read, _staged, check_layer, find_sources
    from layers.problems import ImportFailed, Problem
    from layers.readers import ReadError

    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise ImportFailed([Problem(str(path), "文件或目录不存在")])
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    problems: list[Finding] = []
    with _staged(path) as root:
        sources, found_problems, notes = find_sources(root)
        problems += [_format(p.file, str(p)) for p in found_problems]
        if not sources and not found_problems:
            raise ImportFailed([Problem(path.name, _nothing_found(path, notes))])
        for name in LAYER_ORDER:
            if name not in sources:
                continue
            src = sources[name]
            try:
                raw = _read(src, encoding)
            except ReadError as exc:
                problems.append(_format(name, str(exc.problem)))
                continue
            frame, layer_problems, described = check_layer(LAYERS[name], raw, crs,
                                                           topology=False)
            problems += [_format(name, str(p)) for p in layer_problems]
            if frame is not None:
                frames[name] = frame
                files[name] = f"{src.display}（{described}）" if described else src.display
    report = check_snapshot(snapshot, frames, settings=settings, extra=problems,
                            subject_zh=f"{path.name} 中的图层（{'、'.join(frames) or '无'}）"
                            f"替换当前图层（版本 {snapshot.generation.id}）后")
    report.files, report.notes = files, list(notes)
    report.seconds = time.perf_counter() - started
    return report


def _format(layer: str, message: str) -> Finding:
    """An import-format problem as a finding (an error: the importer would refuse it)."""
    layer = layer if layer in LAYERS else next(
        (n for n in LAYERS if str(layer).lower().startswith(n)), layer)
    digest = hashlib.sha1(f"format|{layer}|{message}".encode()).hexdigest()[:12]
    return Finding(kind="format", severity="error", layer=str(layer), codes=[],
                   message_zh=message, id=f"format-{digest}", check="format")
