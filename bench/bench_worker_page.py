"""What a grid worker's page asks of the domain, per visit (run by hand):

    .venv/bin/python bench/bench_worker_page.py                        # the cached sample
    .venv/bin/python bench/bench_worker_page.py --scale 16
    .venv/bin/python bench/bench_worker_page.py --store big.gpkg --workers 50

In process, through the service layer as pages/1_网格员.py calls it (the people the actor may
open, their portfolio with its open cases, the case list by deadline, the visit coverage), for
--workers grid workers of the store signed in as themselves: the first visit of each (nothing
kept yet for them in this process) and a repeat visit, min / median / max in milliseconds. The
Streamlit side (elements, the websocket) is not in it: bench/bench_sessions.py measures whole
visits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_routing import DEFAULT_CACHE, cached_store  # noqa: E402

from grids.access import Actor  # noqa: E402
from grids.cases import CaseFilter  # noqa: E402
from grids.flow import load_flow  # noqa: E402
from grids.service import Gridmap  # noqa: E402


def visit(svc: Gridmap, actor: Actor, open_states: tuple[str, ...]) -> float:
    """One page's domain calls, in the page's order; milliseconds."""
    start = time.perf_counter()
    now = datetime.now(UTC)
    workers = svc.workers(actor)
    worker_id = str(workers["id"].iat[0])
    mine = svc.worker_portfolio(actor, worker_id)
    codes = tuple(mine.grids["code"].astype(str))
    svc.case_page(actor, CaseFilter(statuses=open_states, grids=codes), now=now, size=100)
    svc.coverage(actor, worker_id, 30, now)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store (default: the cached sample ×--scale)")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--workers", type=int, default=30)
    args = parser.parse_args()
    url = args.store or str(cached_store(args.cache, args.scale))
    svc = Gridmap(url)
    start = time.perf_counter()
    roster = svc._router().snapshot["workers"]
    print(f"{url}: {len(roster):,} roster rows; layers read in "
          f"{time.perf_counter() - start:.1f} s")
    ids = roster[roster["role"] == "worker"]["id"].astype(str).unique()
    chosen = ids[:: max(1, len(ids) // args.workers)][: args.workers]
    open_states = tuple(s for s in load_flow().states if s != "closed")
    first, repeat = [], []
    for worker_id in chosen:
        actor = Actor(login=f"w{worker_id}", role="grid_worker", worker_id=worker_id)
        first.append(visit(svc, actor, open_states))
        repeat.append(visit(svc, actor, open_states))
    for name, times in (("first visit", first), ("repeat visit", repeat)):
        print(f"  {name} of {len(times)} workers: min {min(times):.1f} ms, median "
              f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms")
    svc.close()


if __name__ == "__main__":
    main()
