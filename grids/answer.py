"""Routing answers as data: the JSON of `gridmap route` and the columns of `gridmap assign`."""

from __future__ import annotations

import functools
import json
import threading
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from grids.outcome import Outcome, Resolution
from grids.resolver import ExtentResolution, Resolver
from layers.schema import WORKER_ROLE_ZH

if TYPE_CHECKING:
    from grids.face_answers import FaceAnswers

# The answer columns of a batch, in their order (the registry's and the files').
ANSWER_COLUMNS = (
    "status", "county_code", "county_name", "township_code", "township_name", "grid_code",
    "grid_name", "grid_kind", "workers", "park_code", "park_name", "bureau_code", "bureau_name",
    "bureau_level", "chain", "flags", "reasons", "candidates", "generation",
)
# Those kept per face of the raster (grids/face_answers.py): the rest depend on the roster
# (workers) or are the version's own (generation).
PLACE_COLUMNS = tuple(c for c in ANSWER_COLUMNS if c not in ("workers", "generation"))
STATUS_ZH = {"ok": "明确", "ambiguous": "存在歧义", "outside": "不在辖区内"}
FLAG_ZH = {
    "sea": "海域",
    "swapped": "经纬度已对调",
    "no_township": "无乡镇",
    "no_grid": "无网格",
    "no_bureau": "无执法机构",
    "cross_county": "跨县（市）、区",
    "multi_bureau": "多个执法机构辖区",
    "partly_outside": "部分在辖区外",
    "crs_unstated": "坐标系未说明",
}


class AnswerWriter:
    """Turns outcomes (rows of the snapshot) into named, coded answers."""

    def __init__(self, resolver: Resolver) -> None:
        self.r = resolver
        # The answer columns of every distinct answer met, column by column (see `ids`).
        self._ids: dict[object, int] = {}  # outcomes (or an extra row's key) -> answer id
        self._by_object: dict[int, int] = {}  # id() of the resolver's own outcome tuples
        self._held: list[tuple] = []  # ... kept alive, so that their id() stays theirs
        # Per column the values of answers base.. (Python), for answers 0..base-1 (a block of
        # the faces' answers, `face_ids`) the arrow words in _arrays and the statuses here.
        self._values: dict[str, list] = {}
        self._base = 0
        self._base_status = np.zeros(0, dtype=object)
        self.epoch = 0  # counts the times the registry was emptied (ids then name others)
        # Per column, the registry's words as arrow chunks, appended as answers come (never
        # concatenated: at 40k grids the reasons alone are 20 MB), or the numbers as an array.
        self._arrays: dict[str, pa.ChunkedArray | np.ndarray] = {}
        # Sessions share a router: hold this from `ids` to `table` (reentrant).
        self.lock = threading.RLock()
        # The answers per face registered as a block (`face_ids`), and each face's id.
        self._face_block: object | None = None
        self._face_map = np.zeros(0, dtype=np.int64)

    @functools.cached_property
    def workers_by_grid(self) -> dict[str, list[dict]]:
        """The roster by grid code, the workers before the leaders (built on first use: a
        batch by the faces' answers needs it for the grids it meets only)."""
        workers = self.r.snapshot["workers"]
        by_grid: dict[str, list[dict]] = {}
        # Column lists, not itertuples: a province's 80,000 worker rows in a tenth of the time.
        for wid, name, phone, grid, role in zip(
            *(workers[c].tolist() for c in ("id", "name", "phone", "grid_code", "role")),
            strict=True,
        ):
            by_grid.setdefault(grid, []).append(
                {"id": wid, "name": name, "phone": phone, "role": role}
            )
        for items in by_grid.values():
            items.sort(key=lambda w: (w["role"] != "worker", w["id"]))
        return by_grid

    # -- parts ---------------------------------------------------------------------------------
    @staticmethod
    def _ref(frame, row: int | None, *extra: str) -> dict | None:
        if row is None:
            return None
        out = {"code": frame["code"][row], "name": frame["name"][row]}
        for col in extra:
            out[col] = frame[col][row]
        return out

    def county(self, o: Outcome) -> dict | None:
        return self._ref(self.r.counties, o.county)

    def township(self, o: Outcome) -> dict | None:
        return self._ref(self.r.townships, o.township)

    def grid(self, o: Outcome) -> dict | None:
        return self._ref(self.r.grids, o.grid, "kind")

    def park(self, o: Outcome) -> dict | None:
        return self._ref(self.r.parks, o.park, "kind")

    def sea(self, o: Outcome) -> dict | None:
        return self._ref(self.r.seas, o.sea)

    def bureau(self, row: int | None) -> dict | None:
        return self._ref(self.r.bureaus, row, "level")

    def chain(self, o: Outcome) -> list[str]:
        if o.bureau is None:
            return []
        return [self.r.bureaus["code"][b] for b in self.r.chains[o.bureau]]

    def workers(self, o: Outcome) -> list[dict]:
        if o.grid is None:
            return []
        return self.workers_by_grid.get(self.r.grids["code"][o.grid], [])

    def outcome(self, o: Outcome) -> dict:
        return {
            "county": self.county(o),
            "township": self.township(o),
            "grid": self.grid(o),
            "workers": self.workers(o),
            "park": self.park(o),
            "parks": [self._ref(self.r.parks, p, "kind") for p in o.parks],
            "sea_area": self.sea(o),
            "bureau": self.bureau(o.bureau),
            "chain": self.chain(o),
            "co_bureaus": [self.bureau(b) for b in o.co_bureaus],
            "rules": dict(o.rules),
            "flags": list(o.flags),
            "reasons": list(o.reasons),
        }

    # -- whole answers --------------------------------------------------------------------------
    def answer(
        self, res: Resolution, point: dict | None = None, flags: tuple[str, ...] = ()
    ) -> dict:
        """The JSON answer of `gridmap route` (and of a click on the map)."""
        status = res.status
        parts = [self.outcome(o) for o in res.outcomes]
        if len(parts) == 1:
            body = parts[0]
            candidates: list[dict] = []
        else:
            # Fields every candidate agrees on are still certain; the rest is left open.
            body = {
                k: (parts[0][k] if all(p[k] == parts[0][k] for p in parts) else None)
                for k in parts[0]
            }
            for k in ("workers", "parks", "chain", "co_bureaus", "flags", "reasons"):
                body[k] = body[k] or []
            body["rules"] = body["rules"] or {}
            candidates = [
                {
                    k: p[k]
                    for k in (
                        "county",
                        "township",
                        "grid",
                        "workers",
                        "park",
                        "sea_area",
                        "bureau",
                        "chain",
                        "reasons",
                    )
                }
                for p in parts
            ]
            body["reasons"] = [
                f"位置存在歧义：共有 {len(parts)} 种可能的归属，请逐一核实，不能自动指定。"
            ]
        all_flags = list(dict.fromkeys([*flags, *body["flags"]]))
        out = {
            "status": status,
            "status_zh": STATUS_ZH[status],
            **({"point": point} if point else {}),
            "version": self.r.snapshot.generation.as_dict(),
            **{k: v for k, v in body.items() if k != "flags"},
            "flags": all_flags,
            "candidates": candidates,
        }
        if isinstance(res, ExtentResolution):
            self._extent_parts(res, out)
        return out

    def _extent_parts(self, res: ExtentResolution, out: dict) -> None:
        """What an extent adds to the answer: every township and every grid it touches (each
        grid with its workers, and whether it answers for some part of the extent by the
        grid-kind order); `workers` is then everyone of the responsible grids, once each, with
        `grid_codes` (the grids of the extent they serve)."""
        t, g = self.r.townships, self.r.grids
        town_row = {code: i for i, code in enumerate(t["code"])}
        out["townships"] = [self._ref(t, row) for row in res.townships]
        responsible = set(res.responsible)
        out["grids"] = [
            {
                "code": g["code"][row],
                "name": g["name"][row],
                "kind": g["kind"][row],
                "township": self._ref(t, town_row.get(g["township_code"][row])),
                "workers": self.workers_by_grid.get(g["code"][row], []),
                "responsible": row in responsible,
            }
            for row in res.grids
        ]
        workers: dict[str, dict] = {}  # one entry per person, with the grids they serve here
        for grid in out["grids"]:
            if not grid["responsible"]:
                continue
            for w in grid["workers"]:
                entry = workers.setdefault(w["id"], {**w, "grid_codes": []})
                entry["grid_codes"].append(grid["code"])
        out["workers"] = list(workers.values())

    # -- answer columns, once per distinct answer -----------------------------------------------
    # A batch's rows share few answers (a million points, tens of thousands of places): each
    # distinct answer gets an id and its columns are built once, kept as arrow arrays that grow
    # as new answers come; a batch's columns are then taken from them by id, in C++. A file's
    # chunks share most of their answers, so the registry lives as long as the writer (it is
    # emptied beyond MAX_ANSWERS, between two batches).
    MAX_ANSWERS = 200_000

    def ids(self, results: list[Resolution]) -> np.ndarray:
        """The answer id of each resolution (valid until the next call to `ids`: take the
        table under `lock` when others may route at the same time)."""
        with self.lock:
            return self._ids_of(results)

    def _room(self) -> None:
        """Empty the registry when it holds more than MAX_ANSWERS beyond the faces' block
        (which stays valid until then: `face_ids`)."""
        if len(self._ids) - self._base > self.MAX_ANSWERS:
            self._forget()

    def _ids_of(self, results: list[Resolution]) -> np.ndarray:
        self._room()
        by_object, held = self._by_object, self._held
        get = by_object.get
        # Known outcome tuples in one pass (a file's chunks meet the same ones again), the
        # others one by one.
        out = np.array([get(id(res.outcomes), -1) for res in results], dtype=np.int64)
        for k in np.flatnonzero(out < 0).tolist():
            res = results[k]
            outcomes = res.outcomes
            found = by_object.get(id(outcomes))  # met earlier in this same batch
            if found is None:  # another tuple equal to a known one, or a new answer
                found = self._ids.get(outcomes)
                if found is None:
                    found = self.add(outcomes, self._row(res))
                by_object[id(outcomes)] = found
                held.append(outcomes)
            out[k] = found
        return out

    def face_ids(self, answers: FaceAnswers) -> np.ndarray:
        """Per face of `answers` its answer id (-1: a face of several outcomes, answered the
        usual way). The faces' answers are registered at once on first use, and again after
        the registry was emptied: valid until the next `ids` or `face_ids` (take them under
        `lock`)."""
        with self.lock:
            self._room()
            if self._face_block is not answers:
                self._face_map = self._register_faces(answers)
                self._face_block = answers
            return self._face_map

    def _register_faces(self, answers: FaceAnswers) -> np.ndarray:
        """Register the answers of the single-outcome faces (their workers from the roster of
        the moment); each face's id. Into an empty registry as its first block, kept as arrow
        words only (tens of thousands of answers: no Python strings made for them), else one
        answer after another."""
        faces = np.flatnonzero(answers.single)
        grid = answers.grid[faces]
        count = len(faces)
        texts = {g: self.workers_text(g) for g in np.unique(grid[grid >= 0]).tolist()}
        columns = {name: answers.table.column(name).take(pa.array(faces)).combine_chunks()
                   for name in PLACE_COLUMNS}
        columns["workers"] = pa.array([texts[g] if g >= 0 else "" for g in grid.tolist()],
                                      pa.string())
        generation = self.r.snapshot.generation.id
        out = np.full(len(answers.single), -1, dtype=np.int64)
        if self._ids:  # answers met before: appended as they are (or found, if registered)
            rows = {name: columns[name].to_pylist() for name in columns}
            out[faces] = [self.add(("face", answers.key, f), {
                name: generation if name == "generation" else rows[name][k]
                for name in ANSWER_COLUMNS}) for k, f in enumerate(faces.tolist())]
        else:
            out[faces] = np.arange(count)
            for name in ANSWER_COLUMNS:
                self._values[name] = []
                self._arrays[name] = (np.full(count, generation, dtype=np.int64)
                                      if name == "generation"
                                      else pa.chunked_array([columns[name]], pa.string()))
            self._base = count
            self._base_status = np.asarray(columns["status"].to_numpy(zero_copy_only=False),
                                           dtype=object)
            self._ids.update(zip((("face", answers.key, f) for f in faces.tolist()),
                                 range(count), strict=True))
        return out

    def add(self, key: object, row: dict) -> int:
        """Register the answer columns `row` under `key` (an error row, a flagged copy …); the
        id of what is already registered under `key` if anything is."""
        with self.lock:
            found = self._ids.get(key)
            if found is None:
                found = self._ids[key] = len(self._ids)  # one key per answer: its index
                for name, value in row.items():
                    self._values.setdefault(name, []).append(value)
            return found

    def row(self, answer_id: int) -> dict:
        with self.lock:
            if answer_id < self._base:
                return {name: (int(self._arrays[name][answer_id]) if name == "generation"
                               else self._arrays[name][answer_id].as_py())
                        for name in self._values}
            return {name: values[answer_id - self._base]
                    for name, values in self._values.items()}

    def table(self, of_row: np.ndarray) -> pd.DataFrame:
        """The answer columns with row i showing answer of_row[i]."""
        with self.lock:
            return self._table(of_row)

    def _table(self, of_row: np.ndarray) -> pd.DataFrame:
        if not self._values:
            return pd.DataFrame(index=range(len(of_row)))
        take = pa.array(np.asarray(of_row, dtype=np.int64))
        columns = {}
        for name in self._values:
            array = self._array(name)
            if name == "generation":
                columns[name] = pd.Series(array[of_row], copy=False)
            else:
                columns[name] = taken_text(array, take)
        return pd.DataFrame(columns)

    def arrow_columns(self, of_row: np.ndarray) -> dict[str, pa.Array]:
        """The answer columns of `table` as arrow arrays for a file writer: each text column a
        dictionary array of the answers the rows show (taken from the registry once each), so
        nothing is copied per row here (the writer decodes the words: `spreadsheet.CsvWriter`)."""
        with self.lock:
            if not self._values:
                return {}
            used, inverse = np.unique(np.asarray(of_row, dtype=np.int64), return_inverse=True)
            indices = pa.array(inverse.reshape(-1).astype(np.int32))
            return {name: (pa.array(np.asarray(values)[inverse.reshape(-1)])
                           if name == "generation"
                           else pa.DictionaryArray.from_arrays(indices, values))
                    for name, values in self.columns_of(used).items()}

    def columns_of(self, ids: np.ndarray) -> dict[str, pa.Array]:
        """The answer columns of the answers `ids` (distinct, ascending), one row each: text
        as arrow words, the generation as numbers."""
        with self.lock:
            return {name: (pa.array(self._array(name)[ids]) if name == "generation"
                           else _take_sorted(self._array(name), ids))
                    for name in self._values}

    def _array(self, name: str) -> pa.ChunkedArray | np.ndarray:
        """The registry's column `name`, brought up to date (new answers appended as a chunk
        of their own)."""
        values = self._values[name]
        array = self._arrays.get(name)
        held = 0 if array is None else len(array)
        if held < self._base + len(values):
            new = values[max(held - self._base, 0):]
            if name == "generation":
                array = np.concatenate([np.zeros(0, np.int64) if array is None else array,
                                        np.asarray(new, dtype=np.int64)])
            else:
                array = _appended(array, pa.array(new, pa.string()))
            self._arrays[name] = array
        return array

    def statuses(self, ids: list[int]) -> list[str]:
        """The status (ok, outside …) of each answer id."""
        with self.lock:
            status, base = self._values.get("status", []), self._base
            return [self._base_status[a] if a < base else status[a - base] for a in ids]

    def frame(self, results: list[Resolution], index: np.ndarray) -> pd.DataFrame:
        """The answer columns of a batch: one row per location (results[index[i]])."""
        with self.lock:
            return self.table(self.ids(results)[index])

    def _forget(self) -> None:
        self.epoch += 1
        self._face_block = None
        self._base = 0
        self._base_status = np.zeros(0, dtype=object)
        self._ids.clear()
        self._by_object.clear()
        self._held.clear()
        self._values.clear()
        self._arrays.clear()

    def _row(self, res: Resolution) -> dict:
        """The answer columns of one resolution."""
        if len(res.outcomes) == 1:
            return self._row_of_one(res.outcomes[0])
        return self._row_of_answer(res)

    def _row_of_one(self, o: Outcome) -> dict:
        """`_row_of_answer` for a resolution of one outcome, without building the JSON answer
        first (a ×16 file has 74,000 distinct answers; tests/test_batch.py holds the two
        alike)."""
        place = self.place_columns(o)
        place["workers"] = self.workers_text(o.grid)
        place["generation"] = self.r.snapshot.generation.id
        return {name: place[name] for name in ANSWER_COLUMNS}

    def workers_text(self, grid: int | None) -> str:
        """The workers column of an answer whose grid is row `grid` (None: no grid)."""
        if grid is None:
            return ""
        return "；".join(
            f"{w['name']}（{WORKER_ROLE_ZH[w['role']]}）{w['phone']}"
            for w in self.workers_by_grid.get(self.r.grids["code"][grid], [])
        )

    def place_columns(self, o: Outcome) -> dict:
        """The answer columns of one outcome that depend on the layers and the rules only (all
        but the workers and the generation): what grids/face_answers.py keeps per face."""
        r = self.r
        c, t, g, p, b = r.counties, r.townships, r.grids, r.parks, r.bureaus
        county, township, grid, park, bureau = o.county, o.township, o.grid, o.park, o.bureau
        return {
            "status": "outside" if o.outside else "ok",
            "county_code": "" if county is None else c["code"][county],
            "county_name": "" if county is None else c["name"][county],
            "township_code": "" if township is None else t["code"][township],
            "township_name": "" if township is None else t["name"][township],
            "grid_code": "" if grid is None else g["code"][grid],
            "grid_name": "" if grid is None else g["name"][grid],
            "grid_kind": "" if grid is None else g["kind"][grid],
            "park_code": "" if park is None else p["code"][park],
            "park_name": "" if park is None else p["name"][park],
            "bureau_code": "" if bureau is None else b["code"][bureau],
            "bureau_name": "" if bureau is None else b["name"][bureau],
            "bureau_level": "" if bureau is None else b["level"][bureau],
            "chain": " > ".join(self.chain(o)),
            "flags": ",".join(dict.fromkeys(o.flags)),
            "reasons": "；".join(o.reasons),
            "candidates": "",
        }

    def _row_of_answer(self, res: Resolution) -> dict:
        a = self.answer(res)
        return {
            "status": a["status"],
            "county_code": _get(a["county"], "code"),
            "county_name": _get(a["county"], "name"),
            "township_code": _get(a["township"], "code"),
            "township_name": _get(a["township"], "name"),
            "grid_code": _get(a["grid"], "code"),
            "grid_name": _get(a["grid"], "name"),
            "grid_kind": _get(a["grid"], "kind"),
            "workers": "；".join(
                f"{w['name']}（{WORKER_ROLE_ZH[w['role']]}）{w['phone']}" for w in a["workers"]
            ),
            "park_code": _get(a["park"], "code"),
            "park_name": _get(a["park"], "name"),
            "bureau_code": _get(a["bureau"], "code"),
            "bureau_name": _get(a["bureau"], "name"),
            "bureau_level": _get(a["bureau"], "level"),
            "chain": " > ".join(a["chain"]),
            "flags": ",".join(a["flags"]),
            "reasons": "；".join(a["reasons"]),
            "candidates": json.dumps(
                [
                    {
                        k: _get(c[k], "code")
                        for k in ("county", "township", "grid", "bureau", "park")
                    }
                    for c in a["candidates"]
                ],
                ensure_ascii=False,
            )
            if a["candidates"]
            else "",
            "generation": a["version"]["generation"],
        }


def _appended(words: pa.ChunkedArray | None, new: pa.Array) -> pa.ChunkedArray:
    """`words` with `new` after them, as a new chunk; the last two chunks joined while the older
    is at most twice the newer: a few chunks, each word copied a few times however many
    appends."""
    chunks = [*(() if words is None else words.chunks), new]
    while len(chunks) > 1 and len(chunks[-2]) <= 2 * len(chunks[-1]):
        chunks[-2:] = [pa.concat_arrays(chunks[-2:])]
    return pa.chunked_array(chunks, new.type)


class GrowingText:
    """An append-only text column whose `words` is always one arrow array (a take from it is
    one copy, not one per chunk), without copying what it holds at every append: the bytes
    and offsets live in numpy buffers that double when full, and `words` is a zero-copy view
    of what was appended so far. Later appends write only past that view's end (or into new
    buffers), so a view handed to another thread never changes under it."""

    def __init__(self) -> None:
        # Room for a province's pieces from the start (a ×16 million rows: 160,000 pieces,
        # 90 MB): pages never written are never given memory, so room costs nothing until
        # used, and growing (a copy of all held) is rare.
        self._data = np.empty(1 << 27, dtype=np.uint8)
        self._offsets = np.zeros(1 << 18, dtype=np.int64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, new: pa.Array) -> None:
        """Append the texts of `new` (text or large text, no nulls)."""
        if new.null_count:
            raise ValueError("GrowingText holds no nulls")
        new = new.cast(pa.large_string())
        _validity, offsets, data = new.buffers()
        at = np.frombuffer(offsets, dtype=np.int64)[new.offset:new.offset + len(new) + 1]
        body = (np.frombuffer(data, dtype=np.uint8)[int(at[0]):int(at[-1])] if data is not None
                else np.zeros(0, dtype=np.uint8))
        used = int(self._offsets[self._count])
        self._data = _room(self._data, used, len(body))
        self._offsets = _room(self._offsets, self._count + 1, len(new))
        self._data[used:used + len(body)] = body
        self._offsets[self._count + 1:self._count + 1 + len(new)] = at[1:] - at[0] + used
        self._count += len(new)

    @property
    def words(self) -> pa.Array:
        end = int(self._offsets[self._count])
        return pa.Array.from_buffers(pa.large_string(), self._count, [
            None, pa.py_buffer(self._offsets[:self._count + 1]), pa.py_buffer(self._data[:end])])


def _room(buffer: np.ndarray, used: int, more: int) -> np.ndarray:
    """`buffer`, or a copy twice as large or more, with room for `more` after `used`: the old
    one is left as it is (views of it stay valid)."""
    if used + more <= len(buffer):
        return buffer
    grown = np.empty(max(2 * len(buffer), used + more), dtype=buffer.dtype)
    grown[:used] = buffer[:used]
    return grown


def _take_sorted(words: pa.ChunkedArray, at: np.ndarray) -> pa.Array:
    """words[at] for ascending positions `at`, chunk by chunk (arrow's take of a chunked array
    would join the chunks first: the whole registry copied at every batch)."""
    if words.num_chunks == 1:
        return words.chunk(0).take(pa.array(at))
    ends = np.cumsum([len(c) for c in words.chunks])
    cut = np.searchsorted(at, ends)
    parts, start, begin = [], 0, 0
    for chunk, end, stop in zip(words.chunks, ends.tolist(), cut.tolist(), strict=True):
        if stop > start:
            parts.append(chunk.take(pa.array(at[start:stop] - begin)))
        start, begin = stop, end
    return pa.concat_arrays(parts) if parts else pa.array([], words.type)


def taken_text(words: pa.Array, take: pa.Array, index: pd.Index | None = None) -> pd.Series:
    """words[take[i]] for each i, as pandas' own (arrow-backed) text, without Python objects."""
    text = pd.StringDtype("pyarrow", na_value=np.nan)  # what pandas reads text as
    return pd.Series(pd.arrays.ArrowStringArray(words.take(take), dtype=text), index=index,
                     copy=False)


def _get(d: dict | None, key: str) -> str:
    return "" if d is None else d[key]
