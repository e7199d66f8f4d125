"""The answer of every face of the raster, kept on disk per layer version and rules.

A large batch (`gridmap assign`) meets tens of thousands of places; deciding each by the rules
and writing its answer columns was a third of a ×16 file's time, and every new process did it
again. The faces of the raster (layers/faces.py) are those places: their answer columns depend
only on the layers' content, the precedence rules and this code, so they are decided once, for
every face, and kept in the cache folder beside the raster, named by a hash of all of that. A
new process reads them (an Arrow file, tens of milliseconds) and a batch takes each point's
answer by its face, with no decision at all.

What is kept is the place columns (`answer.PLACE_COLUMNS`) and the grid row of each face whose
sets make one outcome; the workers are not kept (names and phones stay in the store only) but
taken from the roster of the process when the answers are registered, so that a roster change
needs no new file. A face of several outcomes (ambiguous) is answered the usual way.

A file that does not read back whole and consistent is ignored and built again; a folder that
cannot be written costs only the building.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from grids.answer import PLACE_COLUMNS, AnswerWriter
from grids.precedence import DEFAULT_TABLE
from grids.resolver import frame_columns
from layers import faces as faces_mod
from layers.schema import ROUTING_LAYERS

# What a file holds; a change here makes a new file name (as does a change of the code that
# decides and words the answers: its source is part of the name).
FORMAT = 1
# The source files whose words and rules the kept columns are made by.
_SOURCES = ("grids/resolver.py", "grids/answer.py", "grids/outcome.py", "grids/precedence.py",
            "grids/face_answers.py", "layers/schema.py")
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FaceAnswers:
    """Per face of one raster: the place columns (`table`, one row per face), the grid row
    whose workers the answer names (-1: none) and whether the face makes one outcome."""

    key: str
    table: pa.Table
    grid: np.ndarray  # int64 per face
    single: np.ndarray  # bool per face


def for_router(writer: AnswerWriter, faces: faces_mod.FaceIndex) -> FaceAnswers | None:
    """The answers of every face of `faces` for the router of `writer`: read from the cache
    folder, else decided and kept there. None when there is no cache folder (the raster's
    content hash is then unknown, and deciding every face for one process saves nothing)."""
    folder = faces_mod.cache_dir()
    if folder is None or not faces.content:
        return None
    key = content_key(writer, faces)
    name = f"answers-{key}.arrow"
    found = _load(folder / name, key, faces.count, len(writer.r.grids["code"]))
    if found is None:
        found = build(writer, faces, key)
        _save(found, folder, name)
    return found


def content_key(writer: AnswerWriter, faces: faces_mod.FaceIndex) -> str:
    """A hash of everything the kept columns depend on: the raster's content (the routing
    polygons), every attribute of the routing layers and the bureaus, the precedence rules (the
    store's or the default table) and the source of the code that decides and words them."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((FORMAT, faces.content, PLACE_COLUMNS)).encode())
    r = writer.r
    tables = {"counties": r.counties, "townships": r.townships, "grids": r.grids,
              "parks": r.parks, "sea_areas": r.seas, "jurisdictions": r.jurisdictions,
              "bureaus": r.bureaus}
    for name in (*ROUTING_LAYERS, "bureaus"):  # the resolver's own columns: what it reads
        for column, values in tables[name].items():
            h.update(f"|{name}.{column}:{len(values)}|".encode())
            h.update(repr(values).encode("utf-8", "surrogatepass"))
    precedence = r.snapshot.layers.get("precedence")
    h.update(b"|precedence|" + (b"" if precedence is None else
                                 repr(frame_columns(precedence)).encode("utf-8", "surrogatepass")))
    h.update(DEFAULT_TABLE.read_bytes())
    for source in _SOURCES:
        h.update((_ROOT / source).read_bytes())
    return h.hexdigest()


def build(writer: AnswerWriter, faces: faces_mod.FaceIndex, key: str) -> FaceAnswers:
    """Decide every face once and word its answer (`AnswerWriter.place_columns`)."""
    n = faces.count
    columns: dict[str, list[str]] = {name: [] for name in PLACE_COLUMNS}
    grid = np.full(n, -1, dtype=np.int64)
    single = np.zeros(n, dtype=bool)
    decide = writer.r.decide
    for f, sets in enumerate(faces.sets):
        outcomes = decide(sets)
        if len(outcomes) == 1:
            o = outcomes[0]
            place = writer.place_columns(o)
            single[f] = True
            grid[f] = -1 if o.grid is None else o.grid
        else:  # answered the usual way (several candidates)
            place = dict.fromkeys(PLACE_COLUMNS, "")
        for name in PLACE_COLUMNS:
            columns[name].append(place[name])
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return FaceAnswers(key, table, grid, single)


def _load(path: Path, key: str, faces: int, grids: int) -> FaceAnswers | None:
    """The answers kept at `path` when they are whole and are those of `key` (`faces` faces,
    grid rows below `grids`); None otherwise (a damaged or foreign file is removed)."""
    try:
        # Read into memory, not mapped: a file cut or rewritten in place under a mapping
        # would kill the process (SIGBUS) at the next touch of its pages.
        with pa.OSFile(str(path), "rb") as source:
            table = ipc.open_file(source).read_all()
        meta = table.schema.metadata or {}
        if meta.get(b"key", b"").decode() != key or table.num_rows != faces:
            raise ValueError("another raster's answers")
        for name in PLACE_COLUMNS:
            if table.schema.field(name).type != pa.string() or table.column(name).null_count:
                raise ValueError(f"column {name} is not whole text")
        if table.column("single").null_count or table.column("grid_row").null_count:
            raise ValueError("missing values")
        grid = table.column("grid_row").to_numpy().astype(np.int64)
        single = table.column("single").to_numpy().astype(bool)
        if len(grid) and (grid.min() < -1 or grid.max() >= grids):
            raise ValueError("grid rows the layer does not have")
    except FileNotFoundError:
        return None
    except Exception:  # a damaged or foreign file is built again, never trusted
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept by _save's pruning
    return FaceAnswers(key, table.select(list(PLACE_COLUMNS)), grid, single)


def _save(found: FaceAnswers, folder: Path, name: str) -> None:
    table = found.table.append_column("grid_row", pa.array(found.grid)).append_column(
        "single", pa.array(found.single))
    table = table.replace_schema_metadata({"key": found.key})

    def write(out) -> None:
        with ipc.new_file(out, table.schema) as writer:
            writer.write_table(table)

    faces_mod.keep_file(folder, name, write)
