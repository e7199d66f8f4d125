"""Batch assignment gives exactly the answers of single routing, row by row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grids.batch import assign
from tests.world import P


def sample_points(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    lon = rng.uniform(120.45, 121.05, n)
    lat = rng.uniform(31.95, 32.25, n)
    # Points exactly on borders and vertices, where shortcuts go wrong.
    edges = np.array(
        [
            P["border_ab"],
            (120.6, 32.1),
            (120.62, 32.05),
            (120.6, 32.13),
            (120.55, 32.05),
            (120.7, 32.0),
            (120.9, 32.1),
        ]
    )
    lon = np.concatenate([lon, edges[:, 0]])
    lat = np.concatenate([lat, edges[:, 1]])
    acc = np.where(rng.random(len(lon)) < 0.2, rng.choice([30.0, 300.0, 2000.0], len(lon)), 0.0)
    return pd.DataFrame({"编号": np.arange(len(lon)), "经度": lon, "纬度": lat, "精度": acc})


def key(answer: dict) -> tuple:
    def code(d):
        return "" if d is None else d["code"]

    cands = sorted(
        (code(c["county"]), code(c["township"]), code(c["grid"]), code(c["bureau"]))
        for c in answer["candidates"]
    )
    return (
        answer["status"],
        code(answer["county"]),
        code(answer["township"]),
        code(answer["grid"]),
        code(answer["bureau"]),
        code(answer["park"]),
        tuple(cands),
    )


def test_batch_equals_route_for_every_row(router):
    frame = sample_points()
    result = assign(router, frame, crs="wgs84").table
    assert (result["route_status"] != "error").all()
    statuses = set(result["route_status"])
    assert {"ok", "ambiguous", "outside"} <= statuses  # the sample exercises every branch
    for row in result.itertuples(index=False):
        single = router.route(row.经度, row.纬度, accuracy_m=row.精度)
        s = key(single)
        assert (
            row.route_status,
            row.route_county_code,
            row.route_township_code,
            row.route_grid_code,
            row.route_bureau_code,
            row.route_park_code,
        ) == s[:6], row
        if s[6]:
            import json

            got = sorted(
                (c["county"], c["township"], c["grid"], c["bureau"])
                for c in json.loads(row.route_candidates)
            )
            assert got == sorted(s[6])


def test_bad_rows_are_kept_with_reasons(router):
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "lon": [P["a2_plain"][0], "", "x", P["a2_plain"][1], 120.6],
            "lat": [P["a2_plain"][1], 32.0, 32.0, P["a2_plain"][0], 32.1],
            "crs": ["wgs84", "wgs84", "wgs84", "wgs84", "EPSG:99999"],
        }
    )
    t = assign(router, frame).table
    assert list(t["id"]) == ["a", "b", "c", "d", "e"]
    assert list(t["route_status"]) == ["ok", "error", "error", "ok", "error"]
    assert "swapped" in t.loc[3, "route_flags"]
    assert t.loc[3, "route_grid_code"] == t.loc[0, "route_grid_code"]
    assert "99999" in t.loc[4, "route_error"]
    assert "数字" in t.loc[1, "route_error"]


def test_coordinate_cells_read_as_pandas_reads_them():
    """batch._numbers (arrow's cast for plain decimal columns) gives pd.to_numeric's numbers,
    bit for bit, and NaN where pandas gives NaN — whether arrow casts the column or hands it on."""
    from grids.batch import _numbers

    rng = np.random.default_rng(5)
    plain = [*(f"{v:.6f}" for v in rng.uniform(-180, 180, 2000)),
             "", "1e3", "-0.0", ".5", "5.", "inf", "nan", "+7"]
    messy = [*plain, "abc", "1,5", "１２３", "0x10", "120°30′", "1_000"]
    for cells in (plain, messy, ["", ""], []):
        column = pd.Series(cells, dtype="str")
        ours = _numbers(column)
        theirs = pd.to_numeric(column, errors="coerce").to_numpy(float)
        assert ours.dtype == np.float64 and len(ours) == len(cells)
        assert ours.flags.writeable  # _given fills in the accuracy column's blanks
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        finite = ~np.isnan(theirs)
        assert np.array_equal(ours[finite].view(np.int64), theirs[finite].view(np.int64))


def test_answer_columns_survive_a_full_registry_and_sessions_at_once(router, monkeypatch):
    """The writer keeps each distinct answer's columns once (grids/answer.AnswerWriter.ids):
    emptied when it holds too many, and shared by sessions routing at the same time — neither
    may put one row's answer on another row."""
    import threading

    from grids.answer import AnswerWriter

    frame = sample_points().astype(str)
    frame.loc[::7, ["经度", "纬度"]] = frame.loc[::7, ["纬度", "经度"]].to_numpy()  # swapped
    frame.loc[5, "经度"] = "不是数字"  # an error row
    expected = assign(router, frame, crs="wgs84").table
    assert expected["route_flags"].str.contains("swapped").any()
    assert (expected["route_status"] == "error").sum() == 1
    monkeypatch.setattr(AnswerWriter, "MAX_ANSWERS", 3)  # emptied at almost every batch
    router.writer._forget()
    parts = [frame.iloc[k::4] for k in range(4)]
    alone = [assign(router, part, crs="wgs84").table for part in parts]
    for part, table in zip(parts, alone, strict=True):
        pd.testing.assert_frame_equal(table, expected.iloc[part.index].reset_index(drop=True))
    got: dict[int, list] = {}

    def work(k: int) -> None:
        got[k] = [assign(router, parts[k], crs="wgs84").table for _ in range(10)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for table in got[k]:
            pd.testing.assert_frame_equal(table, alone[k])
    router.writer._forget()


def test_answer_columns_of_one_outcome_are_those_of_the_json_answer(router):
    """The short way to a resolution's answer columns (one outcome) gives what the JSON answer
    flattened gives, for every kind of place the test world has."""
    from layers.finder import Queries

    frame = sample_points(2000)
    results = router.resolver.resolve(Queries.build(frame["经度"].to_numpy(float),
                                                    frame["纬度"].to_numpy(float)))
    single = {r.outcomes: r for r in results if len(r.outcomes) == 1}
    assert len(single) > 10
    assert {r.status for r in single.values()} == {"ok", "outside"}
    writer = router.writer
    for res in single.values():
        assert writer._row_of_one(res.outcomes[0]) == writer._row_of_answer(res)
