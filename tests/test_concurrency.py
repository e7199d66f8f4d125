"""Several dispatchers registering cases at the same moment, from separate processes, on
both stores: every registration succeeds and gets its own number, with no gap (the number is
allocated inside the write transaction)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from layers.importer import import_path
from tests.browser import ROOT
from tests.conftest import STORES
from tests.signin import add_world_users

WORKER = r"""
import sys, time
from pathlib import Path
from grids.access import Actor
from grids.service import Gridmap
from tests.world import P
url, go, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
svc = Gridmap(url)
me = Actor("t-dispatcher", "dispatcher", "调度员甲")
answer = svc.route(me, *P["a2_plain"])
while time.time() < go:  # start together
    time.sleep(0.005)
for k in range(n):
    print(svc.create_case(me, answer, {"category": "air", "description": f"并发 {k}"}),
          flush=True)
"""


@pytest.mark.parametrize("kind", STORES)
def test_concurrent_case_creation_gets_distinct_numbers(kind, new_store, world_dir):
    store = new_store(kind)
    import_path(store, world_dir)
    add_world_users(store.url)
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, store.url, str(go), "6"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    ids = [line for out, _ in outs for line in out.split()]
    assert len(ids) == 18 and len(set(ids)) == 18
    numbers = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
    assert numbers == list(range(1, 19))  # no clash, no gap
    found = store.query_incidents()
    assert set(ids) <= set(found["id"])
    created = store.audit_rows()
    assert (created["action"] == "case.create").sum() == 18


THREADS = r"""
import sys, threading
import numpy as np
from grids.publishing import _DraftFinder
from layers.finder import MemoryFinder, Queries
from layers.store import open_store
snap = open_store(sys.argv[1]).snapshot()
minx, miny, maxx, maxy = snap["counties"].total_bounds
rng = np.random.default_rng(1)
for _ in range(3):
    base = MemoryFinder(snap)  # fresh: GEOS builds its prepared indexes lazily, on first use
    finders = [base, base, _DraftFinder(snap, base, {"parks"}), base]
    queries = [Queries.build(rng.uniform(minx, maxx, 3000), rng.uniform(miny, maxy, 3000),
                             np.full(3000, 300.0)) for k in range(4)]
    got = [None] * 4

    def find(k):
        got[k] = finders[k].find(queries[k])

    threads = [threading.Thread(target=find, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = [MemoryFinder(snap).find(q) for q in queries]
    for a, b in zip(got, alone):
        assert (np.array_equal(a.query, b.query) and np.array_equal(a.row, b.row)
                and np.array_equal(a.edge, b.edge) and a.parts.keys() == b.parts.keys())
print("ok")
"""


def test_sessions_testing_the_same_polygons_at_once_do_not_crash(sample_store):
    """Four threads (the app's sessions, a planner's draft beside them) routing accuracy discs
    through one snapshot's fresh finder at once: GEOS's prepared polygons are
    not thread-safe (their indexes are built on first use), and without the finder's lock this
    killed the process with a segfault in every run. Run in a child process, which a crash
    cannot take the test run down with."""
    done = subprocess.run([sys.executable, "-c", THREADS, str(sample_store)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode,
                                                                  done.stderr[-2000:])
