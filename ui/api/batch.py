"""A batch body of POST /route, read a chunk at a time (memory stays that of one chunk): the body
is spooled to a temporary file as it arrives, then read back as tables of `CHUNK_ROWS` rows for
`grids.batch.assign`, the routing core of `gridmap assign`.

- CSV (`text/csv`, UTF-8 or GBK): read by `grids.batch.iter_rows`, columns as `gridmap assign`
  knows them (id, lon/lat or 经度/纬度, crs/坐标系 per row, accuracy_m/精度). A row is named by its
  line in the file (the header is line 1).
- GeoJSON (`application/geo+json` or `application/json`): a FeatureCollection of points, parsed
  one feature at a time. Coordinates are WGS84 (RFC 7946) unless a feature's `crs` property,
  the collection's old-style `crs` member (before `features`, as GDAL writes it) or the query
  parameter `crs` says otherwise. A feature is named by its number (1 = the first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from grids.batch import ACCURACY_NAMES, CRS_NAMES, ID_NAMES, BatchInputError, header_key, iter_rows

CHUNK_ROWS = 2000
MAX_FEATURE_CHARS = 1 << 20  # one feature's text
_BLOCK = 1 << 16
_SPACE = re.compile(r"[ \t\n\r]*")


# How messages name a request's body (not by the temporary file it is spooled to).
BODY_NAME = "请求正文"


def csv_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pd.DataFrame, dict]]:
    """(rows, {row number: reason it cannot be routed}) per chunk; rows keep their columns."""
    for chunk in iter_rows(path, chunk_rows, name=BODY_NAME):
        yield chunk, {}


def id_column(frame: pd.DataFrame) -> str | None:
    keys = {header_key(c): c for c in reversed(list(frame.columns))}
    return next((keys[n] for n in ID_NAMES if n in keys), None)


def geojson_chunks(path: Path, crs: str | None,
                   chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pd.DataFrame, dict]]:
    """(rows with id, lon, lat, crs, accuracy_m; {feature number: reason}) per chunk."""
    rows, bad, index = [], {}, []
    reader = _FeatureReader(path)
    try:
        for number, feature in enumerate(reader.features(), start=1):
            row, why = _feature_row(feature, reader.crs or crs or "wgs84")
            rows.append(row)
            index.append(number)
            if why:
                bad[number] = why
            if len(rows) >= chunk_rows:
                yield pd.DataFrame(rows, index=index, dtype=str), bad
                rows, bad, index = [], {}, []
    except BatchInputError:
        if rows:  # the features read before the broken part are answered first
            yield pd.DataFrame(rows, index=index, dtype=str), bad
        raise
    if rows or not index:
        yield pd.DataFrame(rows, index=index, columns=["id", "lon", "lat", "crs", "accuracy_m"],
                           dtype=str), bad


def _property(props: dict, names: tuple[str, ...]):
    keys = {header_key(k): v for k, v in props.items()}
    return next((keys[n] for n in names if n in keys and keys[n] not in (None, "")), None)


def _feature_row(feature, crs: str) -> tuple[dict, str | None]:
    empty = {"id": "", "lon": "", "lat": "", "crs": crs, "accuracy_m": ""}
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return empty, "不是 GeoJSON 要素（type 应为 Feature）"
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        props = {}
    ident = feature.get("id")
    if ident is None:
        ident = _property(props, ID_NAMES)
    row = {**empty, "id": "" if ident is None else str(ident)}
    row["crs"] = str(_property(props, CRS_NAMES) or crs)
    accuracy = _property(props, ACCURACY_NAMES)
    row["accuracy_m"] = "" if accuracy is None else str(accuracy)
    geom = feature.get("geometry")
    if not isinstance(geom, dict):
        return row, "要素没有几何（geometry）"
    if geom.get("type") != "Point":
        return row, f"只能分派点要素，该要素是 {str(geom.get('type'))[:30]}"
    coords = geom.get("coordinates")
    if (not isinstance(coords, list) or len(coords) < 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool)
                       for c in coords[:2])):
        return row, "点的坐标（coordinates）无效"
    row["lon"], row["lat"] = repr(float(coords[0])), repr(float(coords[1]))
    return row, None


def crs_of_member(member) -> str | None:
    """An old-style GeoJSON `crs` member ({"type": "name", "properties": {"name": …}})."""
    try:
        name = str(member["properties"]["name"])
    except (KeyError, TypeError):
        raise BatchInputError("GeoJSON 的 crs 成员无法识别（应为 {\"type\": \"name\", "
                              "\"properties\": {\"name\": \"EPSG:4549\"}}）") from None
    if name.upper().endswith("CRS84"):
        return "wgs84"
    m = re.search(r"EPSG:+(\d+)$", name, re.IGNORECASE)
    return f"EPSG:{m[1]}" if m else name


class _FeatureReader:
    """A FeatureCollection read from a file one value at a time (json's raw_decode on a sliding
    window of the text), so a big collection never sits in memory as objects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.crs: str | None = None
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        block = self.file.read(_BLOCK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + block
        self.pos = 0
        return True

    def _peek(self) -> str | None:
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return None

    def _expect(self, chars: str, what: str) -> str:
        c = self._peek()
        if c is None or c not in chars:
            found = "文件结尾" if c is None else f"“{c}”"
            raise BatchInputError(f"GeoJSON 格式错误：此处应为{what}，实为{found}")
        self.pos += 1
        return c

    def _value(self):
        self._peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > MAX_FEATURE_CHARS:
                    raise BatchInputError("GeoJSON 中单个要素过大（超过 1 MB）") from exc
                if self._fill():
                    continue
                raise BatchInputError("GeoJSON 格式错误：内容不完整或不是有效的 JSON") from exc
            if end == len(self.buf) and not self.eof and self._fill():
                continue  # a number may go on in the next block
            self.pos = end
            return value

    def features(self) -> Iterator:
        with open(self.path, encoding="utf-8-sig", errors="strict") as self.file:
            try:
                yield from self._collection()
            except UnicodeDecodeError as exc:
                raise BatchInputError("GeoJSON 须为 UTF-8 编码") from exc

    def _collection(self) -> Iterator:
        self._expect("{", "“{”（FeatureCollection 对象）")
        seen_features = kind_ok = False
        if self._peek() == "}":
            raise BatchInputError("GeoJSON 中没有 features")
        while True:
            key = self._value()
            if not isinstance(key, str):
                raise BatchInputError("GeoJSON 格式错误：对象的键应为字符串")
            self._expect(":", "“:”")
            if key == "features":
                seen_features = True
                self._expect("[", "“[”（要素数组）")
                if self._peek() == "]":
                    self.pos += 1
                else:
                    while True:
                        yield self._value()
                        if self._expect(",]", "“,”或“]”") == "]":
                            break
            else:
                value = self._value()
                if key == "type":
                    if value != "FeatureCollection":
                        raise BatchInputError("GeoJSON 的 type 应为 FeatureCollection")
                    kind_ok = True
                elif key == "crs":
                    if seen_features:
                        raise BatchInputError("GeoJSON 的 crs 成员须写在 features 之前")
                    self.crs = crs_of_member(value)
            if self._expect(",}", "“,”或“}”") == "}":
                break
        if self._peek() is not None:
            raise BatchInputError("GeoJSON 格式错误：FeatureCollection 之后还有内容")
        if not seen_features or not kind_ok:
            raise BatchInputError("GeoJSON 须为 FeatureCollection（含 type 与 features）")
