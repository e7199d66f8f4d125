"""Layers read whole, held compactly (layers/compact.py): read in batches they are the layer
read at once, and attributes decoded together are the attributes decoded row by row."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from geopandas.testing import assert_geodataframe_equal

from layers import compact
from layers.importer import import_path
from tests import world
from tests.browser import world_entities
from tests.conftest import STORES


@pytest.fixture(scope="module", params=STORES)
def entity_store(request, new_store, tmp_path_factory):
    files = world.write(tmp_path_factory.mktemp("compact") / "files")
    world_entities().to_csv(files / "entities.csv", index=False)
    store = new_store(request.param)
    import_path(store, files)
    return store


def test_a_layer_read_in_batches_is_the_layer_read_at_once(entity_store, monkeypatch):
    everywhere, gen = (-180.0, -90.0, 180.0, 90.0), entity_store.generations()[-1].id
    monkeypatch.setattr(compact, "BATCH_ROWS", 10**9)
    whole = entity_store.entities_in(everywhere, gen)
    monkeypatch.setattr(compact, "BATCH_ROWS", 3)
    batched = entity_store.entities_in(everywhere, gen)
    assert batched is not whole and len(whole) > 2 * 3
    assert_geodataframe_equal(batched, whole)
    assert [a for a in batched["attrs"]] == [a for a in whole["attrs"]]
    for col in ("id", "name", "industry", "permit_class"):
        assert str(batched[col].dtype) == str(whole[col].dtype) == "str"
        # One piece, as one read gives: arrow's take joins pieces on every call.
        assert getattr(pa.array(batched[col].array), "num_chunks", 1) == 1


def test_a_column_null_in_one_batch_is_typed_over_the_whole_column():
    rows = [(1, "a", None, "{}"), (2, "b", None, None), (3, "c", "x", '{"k": "v"}')]
    frame, geoms = compact.frame_of_batches([rows[:2], rows[2:]], ["fid", "name", "note", "attrs"])
    once, _ = compact.frame_of_batches([rows], ["fid", "name", "note", "attrs"])
    assert geoms is None
    assert str(frame["note"].dtype) == str(once["note"].dtype)
    assert frame["note"].isna().tolist() == [True, True, False]
    assert frame["attrs"].tolist() == [{}, {}, {"k": "v"}]


def test_attributes_decoded_together_share_their_keys_and_short_values():
    texts = [json.dumps({"inspection_class": "一般监管对象", "address": f"工农路{i}号" * 5},
                        ensure_ascii=False) for i in range(50)]
    attrs = compact.attrs_of([*texts, None, ""])
    assert attrs == [json.loads(t) for t in texts] + [{}, {}]
    keys = {id(k) for a in attrs[:50] for k in a if k == "address"}
    assert len(keys) == 1
    assert len({id(a["inspection_class"]) for a in attrs[:50]}) == 1
    assert len({id(a["address"]) for a in attrs[:50]}) == 50  # long texts are not looked up


def test_texts_that_only_decode_together_fail_as_they_do_alone():
    # Hand-edited rows: neither is an object, but joined they read as two — never misplaced.
    with pytest.raises(ValueError):
        compact.attrs_of(['{"a": 1}, {"b":', '2}'])
    with pytest.raises(ValueError):
        compact.attrs_of(['{"a": "x', 'y"}', "{}"])
    # A row that is JSON but not an object stays what it is, as it always was.
    assert compact.attrs_of(["[1, 2]", '{"a": 1}']) == [[1, 2], {"a": 1}]
