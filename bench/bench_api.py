"""Benchmark of the HTTP API (`gridmap api`), by hand — the tests never assert timings.

    .venv/bin/gridmap --store /tmp/api_sample.gpkg demo --out /tmp/api_sample_files  # ~10 s
    .venv/bin/python bench/bench_api.py --store /tmp/api_sample.gpkg --workers 2

1. GET /route with random points inside Nantong's counties, driven by wrk (Debian package
   `wrk`; a Python thread pool if wrk is missing, and the report says so): sustained requests/s
   and latency percentiles at a fixed number of connections.
2. POST /open311/v2/requests.json: distinct complaints, each sent `--retries` times at once with
   the same client_request_id: cases/s, and a check in the store that every complaint became
   exactly one case (none lost, none duplicated) and that every retry named that case.

The store is copied first (a GeoPackage; a postgresql:// URL is used as it is), so the sample
keeps no benchmark cases. The server runs with no rate limit (GRIDMAP_API_RATE=off).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grids.access import Actor  # noqa: E402
from grids.service import Gridmap  # noqa: E402
from layers.store import IncidentQuery, is_postgres_url  # noqa: E402

ADMIN = Actor.local_admin()


def gridmap_exe() -> str:
    exe = Path(sys.executable).with_name("gridmap")
    return str(exe) if exe.exists() else "gridmap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_points(url: str, n: int, seed: int = 12) -> list[tuple[float, float]]:
    """`n` uniform random points inside the counties (CGCS2000 = WGS84 to centimetres)."""
    svc = Gridmap(url)
    try:
        counties = svc.map_router(ADMIN).snapshot["counties"]
    finally:
        svc.close()
    area = shapely.union_all(np.asarray(counties.geometry.values, dtype=object))
    shapely.prepare(area)
    minx, miny, maxx, maxy = area.bounds
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        x = rng.uniform(minx, maxx, n)
        y = rng.uniform(miny, maxy, n)
        keep = shapely.contains_xy(area, x, y)
        out += list(zip(np.round(x[keep], 6).tolist(), np.round(y[keep], 6).tolist(),
                        strict=True))
    return out[:n]


class Server:
    def __init__(self, url: str, workers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "GRIDMAP_API_RATE": "off"}
        self.proc = subprocess.Popen(
            [gridmap_exe(), "--store", url, "api", "--port", str(self.port), "--workers",
             str(workers)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gridmap api exited, see {log}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    self.base + "/health", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"gridmap api did not start, see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def warm(base: str, key: str, points, workers: int) -> None:
    """Every worker process loads its router before the clock starts."""
    with ThreadPoolExecutor(4 * workers) as pool:
        list(pool.map(lambda p: requests.get(f"{base}/route", params={"lon": p[0], "lat": p[1]},
                                             headers={"X-API-Key": key}, timeout=60),
                      points[: 50 * workers]))


def wrk_route(base: str, key: str, points, connections: int, seconds: int,
              work: Path) -> dict:
    script = work / "route.lua"
    paths = ",\n".join(f'"/route?lon={x}&lat={y}"' for x, y in points)
    script.write_text(
        f"local paths = {{\n{paths}\n}}\nlocal i = 0\n"
        f'wrk.headers["X-API-Key"] = "{key}"\n'
        "request = function()\n  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\nend\n')
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
           base]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    percentiles = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"tool": "wrk " + " ".join(cmd[1:5]), "rps": float(
        re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), "p50": percentiles["50"],
        "p90": percentiles["90"], "p99": percentiles["99"],
        "non_2xx": int(errors[1]) if errors else 0, "raw": out}


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text)[0])
    unit = text[len(re.match(r"[\d.]+", text)[0]):]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def pool_route(base: str, key: str, points, connections: int, seconds: int) -> dict:
    """The fallback when wrk is not installed: a closed loop of Python threads."""
    latencies: list[float] = []
    failures = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(offset: int) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = key
        i, mine = offset, []
        while time.monotonic() < stop:
            x, y = points[i % len(points)]
            t = time.perf_counter()
            r = session.get(f"{base}/route", params={"lon": x, "lat": y}, timeout=60)
            mine.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                failures[0] += 1
            i += connections
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    q = np.percentile(latencies, [50, 90, 99])
    return {"tool": f"Python thread pool, {connections} threads (wrk not installed)",
            "rps": len(latencies) / wall, "p50": q[0], "p90": q[1], "p99": q[2],
            "non_2xx": failures[0], "raw": ""}


def post_cases(base: str, key: str, url: str, points, complaints: int, retries: int,
               concurrency: int) -> dict:
    marker = f"bench-{time.time_ns()}"
    jobs = [(i, r) for i in range(complaints) for r in range(retries)]
    # Retries of one complaint go out together (at once, from different threads).
    random.Random(5).shuffle(jobs)
    jobs.sort(key=lambda j: j[0] // max(1, concurrency // retries))
    answers: dict[int, set[str]] = defaultdict(set)
    failures: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def send(job) -> None:
        i, _ = job
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        x, y = points[i % len(points)]
        r = session.post(f"{base}/open311/v2/requests.json", timeout=120, data={
            "api_key": key, "service_code": "air", "lat": y, "long": x,
            "description": f"{marker} 第 {i} 件", "client_request_id": f"{marker}-{i}"})
        with lock:
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
            else:
                answers[i].add(r.json()[0]["service_request_id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, jobs))
    wall = time.perf_counter() - started
    svc = Gridmap(url)
    try:
        cases = svc.cases(ADMIN, IncidentQuery(limit=None))
    finally:
        svc.close()
    mine = cases[cases["description"].str.startswith(marker)]
    named = [next(iter(ids)) for ids in answers.values() if len(ids) == 1]
    return {
        "complaints": complaints, "retries": retries, "concurrency": concurrency,
        "requests": len(jobs), "seconds": wall, "cases_per_s": complaints / wall,
        "requests_per_s": len(jobs) / wall, "failures": failures,
        "cases_in_store": len(mine), "distinct_ids": int(mine["id"].nunique()),
        "retries_named_one_case": all(len(ids) == 1 for ids in answers.values())
        and len(answers) == complaints,
        "answers_match_store": set(named) == set(mine["id"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/api_sample.gpkg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--complaints", type=int, default=500)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--only", choices=["route", "post"], help="run one part only")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    url = args.store
    if not is_postgres_url(url):
        if not Path(url).exists():
            raise SystemExit(f"{url} 不存在：先运行 .venv/bin/gridmap --store {url} demo "
                             f"--out {Path(url).with_suffix('')}_files")
        url = str(work / "bench.gpkg")
        shutil.copy(args.store, url)
    svc = Gridmap(url)
    try:
        viewer = svc.add_api_key(ADMIN, "bench-viewer", "viewer")[0]
        dispatcher = svc.add_api_key(ADMIN, "bench-dispatcher", "dispatcher")[0]
    finally:
        svc.close()
    points = random_points(url, args.points)
    server = Server(url, args.workers, work / "api.log")
    try:
        warm(server.base, viewer, points, args.workers)
        route = post = None
        if args.only != "post":
            if shutil.which("wrk"):
                route = wrk_route(server.base, viewer, points, args.connections, args.seconds,
                                  work)
            else:
                route = pool_route(server.base, viewer, points, args.connections,
                                   args.seconds)
        if args.only != "route":
            post = post_cases(server.base, dispatcher, url, points, args.complaints,
                              args.retries, args.concurrency)
    finally:
        server.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(f"store {args.store}, {args.workers} worker process(es), {os.cpu_count()} cores, "
          f"load average before: {load:.2f}")
    ok = True
    if route:
        print(f"GET /route ({route['tool']}, {args.seconds} s, {len(points):,} random points): "
              f"{route['rps']:.0f} requests/s, p50 {route['p50']:.1f} ms, "
              f"p90 {route['p90']:.1f} ms, p99 {route['p99']:.1f} ms, "
              f"non-2xx {route['non_2xx']}")
        ok = not route["non_2xx"]
    if post:
        ok = report_post(post) and ok
    return 0 if ok else 1


def report_post(post: dict) -> bool:
    ok = (not post["failures"] and post["cases_in_store"] == post["complaints"]
          and post["distinct_ids"] == post["complaints"] and post["retries_named_one_case"]
          and post["answers_match_store"])
    print(f"POST requests.json ({post['complaints']} complaints × {post['retries']} concurrent "
          f"retries, {post['concurrency']} threads): {post['cases_per_s']:.0f} cases/s "
          f"({post['requests_per_s']:.0f} requests/s); cases in store {post['cases_in_store']}, "
          f"distinct {post['distinct_ids']}, every retry named its one case: "
          f"{post['retries_named_one_case'] and post['answers_match_store']}, failures "
          f"{len(post['failures'])} → {'OK' if ok else 'LOST OR DUPLICATED CASES'}")
    for failure in post["failures"][:5]:
        print("  ", failure)
    return ok


if __name__ == "__main__":
    sys.exit(main())
