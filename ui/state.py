"""What the pages share across runs and sessions, cached by store and generation.

A store connection (sqlite) belongs to the thread that opened it, and Streamlit runs each script
run in its own thread: so each run opens a store for its few queries (which generation is
current, the open incidents) and closes it, while everything derived from a generation's layers
(the router with its snapshot, search index, map files, entity assignment) is built once and
shared. A new import (a new generation) is picked up at the next run.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from grids import portfolio
from grids.routing import Router
from layers import search
from layers.store import StoreError, open_store, store_url


def current_generation(url: str) -> int:
    store = open_store(url)
    try:
        gens = store.generations()
    finally:
        store.close()
    if not gens:
        raise StoreError(
            f"数据库 {url} 中还没有任何图层，请先运行 `gridmap demo` 或 `gridmap import`。")
    return gens[-1].id


@st.cache_resource(show_spinner="正在读取图层…", max_entries=4)
def router(url: str, generation: int) -> Router:
    return Router(open_store(url), generation)


@st.cache_resource(show_spinner=False, max_entries=4)
def search_index(url: str, generation: int) -> search.SearchIndex:
    return search.index_for(router(url, generation).snapshot)


@st.cache_data(show_spinner=False, max_entries=4)
def worker_index(url: str, generation: int) -> pd.DataFrame:
    return portfolio.worker_index(router(url, generation).snapshot)


@st.cache_data(show_spinner=False, ttl=30, max_entries=4)
def open_incidents(url: str, generation: int) -> pd.DataFrame:
    """Open incidents (re-read at most every 30 s; they change without a new generation)."""
    store = open_store(url)
    try:
        return portfolio.open_incidents(store)
    finally:
        store.close()


@st.cache_data(show_spinner=False, max_entries=4)
def bureau_names(url: str, generation: int) -> dict[str, str]:
    b = router(url, generation).snapshot["bureaus"]
    return dict(zip(b["code"].astype(str), b["name"].astype(str), strict=True))


def load() -> tuple[str, Router]:
    """The store URL and the router of its current generation; stops the page with a message
    (in Chinese) when there is no usable store."""
    url = store_url()
    try:
        return url, router(url, current_generation(url))
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
        raise  # unreachable; for type checkers
