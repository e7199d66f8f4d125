"""The answers kept per face (grids/face_answers.py): a large file assigned through them is the
rules' file byte for byte (in both stores and on the sample), a new process reads them instead
of deciding again, a damaged or foreign file is never used, what they depend on names them, and
the workers always come from the roster of the moment."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from grids import batch, face_answers
from grids.answer import AnswerWriter
from grids.resolver import Resolver
from grids.routing import Router
from layers.faces import FaceIndex
from layers.finder import Queries
from layers.store import open_store
from tests.test_faces import boundary_points


def complaints(snapshot, path, rows: int, seed: int) -> None:
    """A CSV of random points over the counties, boundary points (vertices, points beside them,
    edge midpoints), rows with an accuracy radius, rows with lon/lat swapped and bad rows."""
    minx, miny, maxx, maxy = snapshot["counties"].total_bounds
    rng = np.random.default_rng(seed)
    blon, blat = boundary_points(snapshot, 300, seed=seed + 1)
    n = rows - len(blon)
    lon = np.concatenate([rng.uniform(minx - 0.02, maxx + 0.02, n), blon]).round(9)
    lat = np.concatenate([rng.uniform(miny - 0.02, maxy + 0.02, n), blat]).round(9)
    accuracy = np.where(rng.uniform(size=rows) < 0.02, 30.0, np.nan)
    swapped = rng.uniform(size=rows) < 0.02
    lon_text = np.where(swapped, lat, lon).astype(str).astype(object)
    lat_text = np.where(swapped, lon, lat).astype(str).astype(object)
    lon_text[:5] = ["", "abc", "1e999", "200", "-"]
    pd.DataFrame({"编号": [f"TS{i}" for i in range(rows)], "经度": lon_text, "纬度": lat_text,
                  "精度": accuracy}).sample(frac=1, random_state=seed).to_csv(path, index=False)


def assigned(router: Router, src, out, *, kept: bool, headers: str = "zh") -> bytes:
    """The output of `assign_file` with the answers per face (`kept`) or by the finder and the
    rules alone (no raster at all)."""
    router.resolver.forget()
    router.writer._forget()
    router.face_answers = None
    if kept:
        router.prepare_batch()
        assert router.face_answers is not None
    router.resolver.use_faces = kept
    try:
        batch.assign_file(router, src, out, crs="wgs84", chunk_rows=1500, headers=headers)
    finally:
        router.resolver.use_faces = True
    return out.read_bytes()


def test_a_file_by_the_kept_answers_is_the_rules_file(router: Router, tmp_path, monkeypatch):
    """In both stores, with every kind of row, machine and Chinese headers, CSV and Excel."""
    complaints(router.snapshot, tmp_path / "in.csv", 6000, seed=21)
    for headers, name in (("zh", "out.csv"), ("machine", "out.csv"), ("zh", "out.xlsx")):
        kept = assigned(router, tmp_path / "in.csv", tmp_path / f"kept-{name}", kept=True,
                        headers=headers)
        rules = assigned(router, tmp_path / "in.csv", tmp_path / f"rules-{name}", kept=False,
                         headers=headers)
        if name.endswith(".csv"):
            assert kept == rules, headers
        else:  # a workbook's zip differs in its timestamps: compare the sheets
            for sheet in (0, 1):
                assert pd.read_excel(tmp_path / f"kept-{name}", sheet_name=sheet).equals(
                    pd.read_excel(tmp_path / f"rules-{name}", sheet_name=sheet))


@pytest.fixture(scope="module")
def sample_router(sample_store):
    store = open_store(str(sample_store))
    yield Router(store)
    store.close()


def test_the_sample_by_the_kept_answers_decides_almost_nothing(sample_router: Router, tmp_path,
                                                               monkeypatch):
    """On the sample the kept answers give the rules' file, and a point away from any boundary
    — or near one, in a face's polygon sets — is answered with no decision: the rules run only
    for the few points on a boundary, in a disc or in an ambiguous face."""
    complaints(sample_router.snapshot, tmp_path / "in.csv", 20_000, seed=22)
    rules = assigned(sample_router, tmp_path / "in.csv", tmp_path / "rules.csv", kept=False)
    decided = []
    real = Resolver._decide
    monkeypatch.setattr(Resolver, "_decide", lambda self, sets: decided.append(sets)
                        or real(self, sets))
    sample_router.resolver.forget()
    sample_router.prepare_batch()  # read back: the first `assigned` above had none to keep
    decided.clear()
    kept = assigned(sample_router, tmp_path / "in.csv", tmp_path / "kept.csv", kept=True)
    assert kept == rules
    # Points of no boundary and no disc: only the faces of several outcomes are decided.
    minx, miny, maxx, maxy = sample_router.snapshot["counties"].total_bounds
    rng = np.random.default_rng(24)
    pd.DataFrame({"经度": rng.uniform(minx, maxx, 20_000),
                  "纬度": rng.uniform(miny, maxy, 20_000)}).to_csv(tmp_path / "plain.csv",
                                                                   index=False)
    decided.clear()
    assigned(sample_router, tmp_path / "plain.csv", tmp_path / "plain-kept.csv", kept=True)
    # (a point near a boundary among three polygons of a layer goes the rules' way too)
    faces = sample_router.resolver.faces()
    several = {faces.sets[f] for f in np.flatnonzero(~sample_router.face_answers.single)}
    assert all(sets in several or max(map(len, sets)) > 2 for sets in decided), decided
    assert len(decided) < 50
    decided.clear()
    assigned(sample_router, tmp_path / "plain.csv", tmp_path / "plain-rules.csv", kept=False)
    assert len(decided) > 1000  # what the rules alone decide for the same file
    assert (tmp_path / "plain-kept.csv").read_bytes() == (
        tmp_path / "plain-rules.csv").read_bytes()


def test_a_registry_emptied_within_a_file_gives_the_same_file(router: Router, tmp_path,
                                                              monkeypatch):
    """The answer registry is emptied past MAX_ANSWERS between two chunks: the faces' answers
    are registered again and the rows still show theirs."""
    complaints(router.snapshot, tmp_path / "in.csv", 5000, seed=23)
    rules = assigned(router, tmp_path / "in.csv", tmp_path / "rules.csv", kept=False)
    faces = router.resolver.faces()
    monkeypatch.setattr(AnswerWriter, "MAX_ANSWERS", len(faces.sets) // 2)
    registered = []
    real = AnswerWriter._register_faces
    monkeypatch.setattr(AnswerWriter, "_register_faces",
                        lambda self, answers: registered.append(1) or real(self, answers))
    assert assigned(router, tmp_path / "in.csv", tmp_path / "kept.csv", kept=True) == rules
    assert len(registered) > 1
    # Registered after other answers (a router of the app answers clicks before a file
    # comes): one answer after another, the same file.
    monkeypatch.setattr(AnswerWriter, "MAX_ANSWERS", 200_000)
    router.writer._forget()
    router.face_answers = None
    router.prepare_batch()
    minx, miny, maxx, maxy = router.snapshot["counties"].total_bounds
    rng = np.random.default_rng(25)
    router.writer.ids(router.resolver.resolve(Queries.build(rng.uniform(minx, maxx, 300),
                                                            rng.uniform(miny, maxy, 300))))
    assert router.writer._ids and router.writer._base == 0
    router.resolver.forget()
    batch.assign_file(router, tmp_path / "in.csv", tmp_path / "after.csv", crs="wgs84",
                      chunk_rows=1500, headers="zh")
    assert router.writer._base == 0  # not a block
    assert (tmp_path / "after.csv").read_bytes() == rules


def _fresh(router: Router) -> face_answers.FaceAnswers | None:
    FaceIndex._cache.clear()
    return face_answers.for_router(router.writer, router.resolver.faces())


def test_a_new_process_reads_the_answers_its_first_one_kept(sample_router: Router, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    built = _fresh(sample_router)
    files = list((tmp_path / "faces").glob("answers-*.arrow"))
    assert len(files) == 1 and built.key in files[0].name
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"  # names of places, owner only
    monkeypatch.setattr(face_answers, "build", lambda *a: pytest.fail("decided again"))
    loaded = _fresh(sample_router)
    assert loaded.table.equals(built.table)
    assert np.array_equal(loaded.grid, built.grid)
    assert np.array_equal(loaded.single, built.single)
    assert loaded.single.sum() > 0.95 * len(loaded.single)
    # The workers are not kept: no phone of the roster is in the file.
    phones = [p for p in sample_router.snapshot["workers"]["phone"].astype(str) if p]
    content = files[0].read_bytes()
    assert phones and not any(p.encode() in content for p in phones[:200])
    FaceIndex._cache.clear()


def test_a_damaged_or_foreign_answers_file_is_never_used(sample_router: Router, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    built = _fresh(sample_router)
    path = next((tmp_path / "faces").glob("answers-*.arrow"))
    whole = path.read_bytes()
    rebuilt = []
    real = face_answers.build
    monkeypatch.setattr(face_answers, "build", lambda *a: rebuilt.append(1) or real(*a))

    def stored(change) -> None:
        with pa.OSFile(str(path), "rb") as source:
            table = ipc.open_file(source).read_all()
        table = change(table)
        with open(path, "wb") as out, ipc.new_file(out, table.schema) as writer:
            writer.write_table(table)

    path.write_bytes(whole[: len(whole) // 2])  # cut short
    assert _fresh(sample_router).table.equals(built.table) and len(rebuilt) == 1
    stored(lambda t: t.replace_schema_metadata({"key": "0" * 40}))  # another version's
    assert _fresh(sample_router).table.equals(built.table) and len(rebuilt) == 2
    grids = len(sample_router.snapshot["grids"])

    def far_grid(t: pa.Table) -> pa.Table:
        rows = t.column("grid_row").to_numpy().copy()
        rows[0] = grids + 3
        return t.set_column(t.schema.get_field_index("grid_row"), "grid_row", pa.array(rows))

    stored(far_grid)  # a grid the layer does not have
    assert _fresh(sample_router).table.equals(built.table) and len(rebuilt) == 3
    stored(lambda t: t.slice(0, t.num_rows - 1))  # a face short
    assert _fresh(sample_router).table.equals(built.table) and len(rebuilt) == 4
    assert _fresh(sample_router).table.equals(built.table) and len(rebuilt) == 4  # kept again
    FaceIndex._cache.clear()


def _with(snapshot, name: str, frame):
    layers = dict(snapshot.layers)
    layers[name] = frame
    return type(snapshot)(snapshot.generation, layers)


def test_what_the_answers_depend_on_names_them(sample_router: Router):
    """Another bureau name, another grid kind or other precedence rules: another key. Another
    roster: the same key, and the answers registered show the new phone."""
    snap, finder = sample_router.snapshot, sample_router.resolver.finder
    faces = sample_router.resolver.faces()

    def key(snapshot) -> str:
        return face_answers.content_key(AnswerWriter(Resolver(snapshot, finder)), faces)

    base = key(snap)
    assert key(snap) == base
    bureaus = snap["bureaus"].copy()
    bureaus.loc[bureaus.index[0], "name"] = bureaus["name"].iloc[0] + "（新）"
    assert key(_with(snap, "bureaus", bureaus)) != base
    grids = snap["grids"].copy()
    grids.loc[grids.index[0], "kind"] = "park" if grids["kind"].iloc[0] != "park" else "dedicated"
    assert key(_with(snap, "grids", grids)) != base
    from grids.precedence import default_frame

    rules = default_frame()
    rules.loc[rules.index[0], "rank"] = rules["rank"].iloc[0] + 7
    assert key(_with(snap, "precedence", rules)) != base

    workers = snap["workers"].copy()
    served = workers["grid_code"].iloc[0]
    workers.loc[workers["grid_code"] == served, "phone"] = "13900000000"
    moved = _with(snap, "workers", workers)
    assert key(moved) == base
    writer = AnswerWriter(Resolver(moved, finder))
    answers = face_answers.for_router(writer, faces)
    ids = writer.face_ids(answers)
    row = int(np.flatnonzero(answers.table.column("grid_code").to_numpy(
        zero_copy_only=False) == served)[0])
    assert "13900000000" in writer.row(int(ids[row]))["workers"]


def test_no_cache_folder_means_no_kept_answers(sample_router: Router, monkeypatch):
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", "off")
    FaceIndex._cache.clear()
    assert face_answers.for_router(sample_router.writer, sample_router.resolver.faces()) is None
    FaceIndex._cache.clear()


def test_answers_written_as_pieces_are_the_tables_cells(router: Router, tmp_path, monkeypatch):
    """A CSV's answer columns are rendered once per answer and joined to the rows
    (`batch._AnswerPieces`): the same file as the arrow table written cell by cell, with input
    cells that are formulas, quotes, commas and line breaks, in both header styles — and with
    the registry emptied between chunks."""
    complaints(router.snapshot, tmp_path / "plain.csv", 3000, seed=26)
    frame = pd.read_csv(tmp_path / "plain.csv", dtype=str, keep_default_na=False)
    hostile = ["=1+1", '说 "你好"', "甲,乙", "两行\r\n文字", "@SUM(A1)", "", "-2+3"]
    frame["备注"] = [hostile[i % len(hostile)] for i in range(len(frame))]
    frame["route_answers"] = "an input column of that name"
    frame.to_csv(tmp_path / "in.csv", index=False)
    for headers in ("zh", "machine"):
        pieces = assigned(router, tmp_path / "in.csv", tmp_path / "pieces.csv", kept=True,
                          headers=headers)
        with monkeypatch.context() as m:
            m.setattr(batch, "_AnswerPieces", lambda *a: None)
            cells = assigned(router, tmp_path / "in.csv", tmp_path / "cells.csv", kept=True,
                             headers=headers)
        assert pieces == cells, headers
        assert b'"\'=1+1"' in pieces and b'"\xe4\xb8\xa4\xe8\xa1\x8c\r\n' in pieces
    monkeypatch.setattr(AnswerWriter, "MAX_ANSWERS", 5)
    assert assigned(router, tmp_path / "in.csv", tmp_path / "small.csv", kept=False,
                    headers="machine") == cells


def test_a_cache_folder_others_may_write_in_is_not_used(sample_router: Router, tmp_path,
                                                       monkeypatch):
    """Kept answers decide who is responsible: in a folder another user could write in (a
    shared folder named by GRIDMAP_CACHE_DIR) nothing is read or kept — the raster is built
    and the faces are decided in the process instead."""
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    built = _fresh(sample_router)  # kept in tmp_path/faces
    assert built is not None
    folder = tmp_path / "faces"
    folder.chmod(0o777)
    monkeypatch.setattr(face_answers, "build", lambda *a: pytest.fail("must not be asked"))
    assert _fresh(sample_router) is None
    assert not FaceIndex.for_snapshot(sample_router.snapshot, sample_router.resolver.finder
                                      ).loaded
    folder.chmod(0o700)
    assert _fresh(sample_router).table.equals(built.table)  # its own again: read back
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path / "via"))
    (tmp_path / "via").mkdir()
    (tmp_path / "via" / "faces").symlink_to(folder)
    assert _fresh(sample_router) is None  # a link, not a folder of its own
    FaceIndex._cache.clear()


def test_temporary_files_a_killed_process_left_are_removed(sample_router: Router, tmp_path,
                                                          monkeypatch):
    """A process killed while writing leaves its temporary file (the kept file appears only
    whole, by a rename): the next file kept removes those older than an hour, not a fresh one
    another process is writing now."""
    monkeypatch.setenv("GRIDMAP_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "faces"
    folder.mkdir(mode=0o700)
    old, fresh = folder / ".answers-killed.tmp", folder / ".answers-writing.tmp"
    old_raster = folder / ".faces-killed.tmp"
    for path in (old, fresh, old_raster):
        path.write_bytes(b"half a file")
    for path in (old, old_raster):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    _fresh(sample_router)  # builds and keeps a raster and the answers
    assert not old.exists() and not old_raster.exists() and fresh.exists()
    assert len(list(folder.glob("answers-*.arrow"))) == 1
    FaceIndex._cache.clear()


def test_the_same_faces_registered_twice_keep_their_ids(sample_router: Router):
    """Another FaceAnswers object of the same key (a router's answers made again) meeting a
    registry that already holds them: each face keeps the id it has, no second copy."""
    writer = sample_router.writer
    writer._forget()
    faces = sample_router.resolver.faces()
    first = face_answers.for_router(writer, faces)
    minx, miny, maxx, maxy = sample_router.snapshot["counties"].total_bounds
    rng = np.random.default_rng(27)
    writer.ids(sample_router.resolver.resolve(Queries.build(rng.uniform(minx, maxx, 50),
                                                            rng.uniform(miny, maxy, 50))))
    ids = writer.face_ids(first).copy()  # one after another: the registry was not empty
    size = len(writer._ids)
    again = face_answers.for_router(writer, faces)
    assert again is not first and again.key == first.key
    assert np.array_equal(writer.face_ids(again), ids) and len(writer._ids) == size
    some = int(np.flatnonzero(ids >= 0)[0])
    assert writer.row(int(ids[some]))["grid_code"] == first.table.column("grid_code")[some].as_py()
    writer._forget()
