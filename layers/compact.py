"""Layer rows read whole from a store, held with each repeated text once.

A province's million supervised entities are read whole into a served process twice at most
(the map's files of a version, the search index) and then let go. Their text columns are
arrow strings already (pandas' `str`); their attributes are dicts, and decoded row by row
every row brought its own copy of the same keys and of the same few values (inspection class,
township code). Sharing them changes no value: equal strings stay equal, only their copies go.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

# Rows turned into a frame at a time (reading a layer whole).
BATCH_ROWS = 100_000
# Attribute values up to this long are shared (codes and classes; not addresses or notes).
_SHORT = 24


def frame_of_batches(batches: Iterable[list[tuple]], columns: list[str],
                     geometry: Callable[[list], np.ndarray] | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The frame (and, with `geometry`, the geometries decoded from each row's last field) of
    a layer's rows fetched in batches, `attrs` decoded by `attrs_of`.

    One batch at a time, not every row first: a million rows as Python tuples were 2 GB at
    their peak, and the allocator could not give most of it back (the rows kept were spread
    over all of it). Batch by batch, each batch reuses what the one before freed."""
    parts: list[pd.DataFrame] = []
    shapes: list[np.ndarray] = []
    width = len(columns)
    for rows in batches:
        part = pd.DataFrame([r[:width] for r in rows], columns=columns)
        part["attrs"] = attrs_of(part["attrs"].tolist())
        parts.append(part)
        if geometry is not None:
            shapes.append(geometry([r[-1] for r in rows]))
        del rows
    if not parts:
        frame = pd.DataFrame([], columns=columns)
        frame["attrs"] = attrs_of([])
    elif len(parts) == 1:
        frame = parts[0]
    else:
        frame = pd.concat(parts, ignore_index=True)
        # A column read as text in one batch and as nothing but NULLs in another: its type
        # inferred over the whole column, as a single read would.
        for col in columns:
            if len({str(p[col].dtype) for p in parts}) > 1:
                frame[col] = pd.Series(frame[col].tolist(), index=frame.index)
            else:
                _one_chunk(frame, col)
    if geometry is None:
        return frame, None
    return frame, (np.concatenate(shapes) if shapes else np.array([], dtype=object))


def _one_chunk(frame: pd.DataFrame, col: str) -> None:
    """An arrow text column of one piece, not one per batch: arrow's `take` on a column of
    several pieces joins them first, so each page taking a few rows copied the whole column
    (2,000 details files of a province's entities: 25 s more)."""
    dtype = frame[col].dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        whole = pa.array(frame[col].array).combine_chunks()
        frame[col] = pd.Series(pd.array(whole, dtype=dtype), index=frame.index)


def batches_of(cursor) -> Iterator[list[tuple]]:
    """A DB-API cursor's rows, BATCH_ROWS at a time."""
    while rows := cursor.fetchmany(BATCH_ROWS):
        yield rows


def attrs_of(texts: Sequence[object]) -> list[dict]:
    """The attribute dicts of rows stored as JSON text (empty or NULL: {}).

    All rows are decoded in one call, so that the decoder keeps one copy of each key for all
    of them, and short values (codes, classes) are then shared too. Texts the store wrote are
    JSON objects each, and then the one call gives exactly their objects in order; if it does
    not (a file edited by hand), each row is decoded on its own, and a bad one fails as it
    always did."""
    objects = [t if isinstance(t, str) and t else "{}" for t in texts]
    try:
        found = json.loads("[" + ",".join(objects) + "]")
    except ValueError:
        found = None
    if (found is None or len(found) != len(objects)
            or not all(type(d) is dict for d in found)):
        found = [json.loads(t) for t in objects]
    seen: dict[str, str] = {}
    for attrs in found:
        if type(attrs) is not dict:
            continue
        for key, value in attrs.items():
            if type(value) is str and len(value) <= _SHORT:
                attrs[key] = seen.setdefault(value, value)
    return found
