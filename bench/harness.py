"""The benchmark harness: contenders timed side by side, honestly.

- **Interleaved**: every round runs every contender once (round-robin, the order rotated from
  round to round), so a slow minute of the machine hits all of them alike; at least 3 rounds.
- **min and median** per contender, with every run kept; ratios are given for both.
- **The machine**: CPU count and load average (before, after, and at the start of every run)
  are printed with the figures and saved with them: this machine is shared, and a figure taken
  under a load of 6 on 2 cores is not the figure of an idle one.
- **Saved**: the whole report as JSON in bench/results/<name>-<YYYYmmdd-HHMM>.json, so that
  figures can be compared over time: `--compare bench/results/x.json` prints, for every
  contender measured in both runs, the new median against the old one.

A benchmark script builds `Contender`s, calls `measure` for each group (e.g. one per store),
and hands the groups to `Report`. Compare two saved runs without running anything:

    .venv/bin/python bench/harness.py bench/results/routing-A.json bench/results/routing-B.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BEIJING = timezone(timedelta(hours=8))
MIN_ROUNDS = 3


@dataclass
class Contender:
    """One way of doing the job. `run` does it once and is timed; `warm` (untimed, once before
    the rounds) loads code and caches as a long-running process would have them; `setup`
    (untimed, before every run) resets what must not carry over from one run to the next (a
    memo of earlier answers); `check` (untimed, on the first run's output) returns facts about
    the output to print and save, e.g. how many points it matched, so that a contender that
    does less is seen to."""

    name: str
    run: Callable[[], Any]
    warm: Callable[[], Any] | None = None
    check: Callable[[Any], dict] | None = None
    setup: Callable[[], Any] | None = None


@dataclass
class Timing:
    name: str
    runs_s: list[float] = field(default_factory=list)
    load_1min: list[float] = field(default_factory=list)  # at the start of each run
    facts: dict = field(default_factory=dict)

    @property
    def min_s(self) -> float:
        return min(self.runs_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    def as_dict(self) -> dict:
        return {"min_s": round(self.min_s, 4), "median_s": round(self.median_s, 4),
                "runs_s": [round(t, 4) for t in self.runs_s],
                "load_1min": [round(v, 2) for v in self.load_1min], "facts": self.facts}


def load() -> tuple[float, float, float]:
    return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]


def measure(contenders: list[Contender], rounds: int = MIN_ROUNDS,
            progress: bool = True) -> dict[str, Timing]:
    """Time every contender `rounds` times, interleaved: round r runs them all, starting
    with the r-th (so none is always first, right after a warm-up or a collection)."""
    if rounds < MIN_ROUNDS:
        raise ValueError(f"at least {MIN_ROUNDS} rounds, not {rounds}")
    timings = {c.name: Timing(c.name) for c in contenders}
    for c in contenders:
        if c.warm is not None:
            c.warm()
    for r in range(rounds):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            if c.setup is not None:
                c.setup()
            gc.collect()
            timing = timings[c.name]
            timing.load_1min.append(os.getloadavg()[0])
            start = time.perf_counter()
            out = c.run()
            took = time.perf_counter() - start
            timing.runs_s.append(took)
            if c.check is not None and not timing.facts:
                timing.facts = c.check(out)
            del out
            if progress:
                print(f"    round {r + 1}/{rounds}  {c.name:40s} {took:8.3f} s  "
                      f"(load {timing.load_1min[-1]:.2f})", flush=True)
    return timings


def machine() -> dict:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    for module in ("numpy", "pandas", "shapely", "geopandas", "pyogrio"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            continue
    try:
        import shapely

        info["geos"] = shapely.geos_version_string
    except ImportError:
        pass
    return info


def ratio_line(timings: dict[str, Timing], ours: str, other: str) -> dict:
    """How many times faster `ours` is than `other` (> 1: ours is faster), by median and min."""
    a, b = timings[ours], timings[other]
    return {"ours": ours, "other": other, "median_x": round(b.median_s / a.median_s, 3),
            "min_x": round(b.min_s / a.min_s, 3)}


class Report:
    """Groups of timings with the machine's details; printed, saved, compared."""

    def __init__(self, name: str, args: dict | None = None) -> None:
        self.name = name
        self.started = datetime.now(BEIJING)
        self.data: dict[str, Any] = {
            "benchmark": name, "at": self.started.isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "args": args or {}, "machine": machine(), "load_before": load(), "groups": {},
        }

    def add(self, group: str, timings: dict[str, Timing], info: dict | None = None,
            ratios: list[tuple[str, str]] = (), unit: tuple[str, float] | None = None) -> dict:
        """Record a measured group; `ratios` as (ours, other) pairs; `unit` = (label, count)
        to print a rate (e.g. ("M pts/s", 1e6 / points)). Prints the group's table."""
        entry = {"info": info or {},
                 "contenders": {n: t.as_dict() for n, t in timings.items()},
                 "ratios": [ratio_line(timings, a, b) for a, b in ratios]}
        self.data["groups"][group] = entry
        print_group(group, entry, unit)
        return entry

    def finish(self, save: bool = True, compare: str | None = None,
               extra: dict | None = None) -> Path | None:
        self.data["load_after"] = load()
        if extra:
            self.data.update(extra)
        m = self.data["machine"]
        print(f"\nmachine: {m['cpus']} CPUs, load average (1/5/15 min) before "
              f"{fmt_load(self.data['load_before'])}, after {fmt_load(self.data['load_after'])}")
        path = None
        if save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            path = RESULTS / f"{self.name}-{self.started:%Y%m%d-%H%M}.json"
            path.write_text(json.dumps(self.data, ensure_ascii=False, indent=1) + "\n",
                            encoding="utf-8")
            print(f"saved {path.relative_to(ROOT)}")
        if compare:
            print_comparison(read(compare), self.data)
        return path


def fmt_load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def print_group(group: str, entry: dict, unit: tuple[str, float] | None = None) -> None:
    info = entry["info"]
    print(f"\n[{group}] " + ", ".join(f"{k} {v}" for k, v in info.items()))
    rate = f"  {unit[0] + ' (median)':>18s}" if unit else ""
    print(f"  {'contender':44s} {'min s':>8s} {'median s':>9s}{rate}   load at runs")
    for name, t in entry["contenders"].items():
        line = f"  {name:44s} {t['min_s']:8.3f} {t['median_s']:9.3f}"
        if unit:
            line += f"  {unit[1] / t['median_s']:18.3f}"
        loads = " ".join(f"{v:.1f}" for v in t["load_1min"])
        print(line + f"   {loads}")
        if t["facts"]:
            print("      " + ", ".join(f"{k}: {v}" for k, v in t["facts"].items()))
    for r in entry["ratios"]:
        print(f"  speed {r['ours']} : {r['other']} = {r['median_x']:.2f}x by median, "
              f"{r['min_x']:.2f}x by min (> 1: the first is faster)")


def read(path: str | Path) -> dict:
    p = Path(path)
    for candidate in (p, ROOT / "bench" / p, RESULTS / p):
        if candidate.exists():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise SystemExit(f"no such results file: {path}")


def print_comparison(old: dict, new: dict) -> None:
    """Every contender of every group in both runs: old and new median, speed-up new/old."""
    print(f"\ncompared with {old['benchmark']} at {old['at']} "
          f"(load then {fmt_load(old.get('load_before', []))}, "
          f"now {fmt_load(new.get('load_before', []))}):")
    print(f"  {'group / contender':56s} {'old med s':>10s} {'new med s':>10s} {'speed-up':>9s}")
    found = False
    for group, entry in new["groups"].items():
        before = old.get("groups", {}).get(group)
        if not before:
            continue
        for name, t in entry["contenders"].items():
            o = before["contenders"].get(name)
            if not o:
                continue
            found = True
            print(f"  {group + ' / ' + name:56s} {o['median_s']:10.3f} {t['median_s']:10.3f} "
                  f"{o['median_s'] / t['median_s']:8.2f}x")
        old_ratios = {(r["ours"], r["other"]): r for r in before.get("ratios", [])}
        for r in entry.get("ratios", []):
            o = old_ratios.get((r["ours"], r["other"]))
            if o:
                print(f"  {group}: {r['ours']} vs {r['other']}: {o['median_x']:.2f}x then, "
                      f"{r['median_x']:.2f}x now")
    if not found:
        print("  (no contender in common)")


def add_arguments(parser: argparse.ArgumentParser, rounds: int = MIN_ROUNDS) -> None:
    """The options every harness benchmark takes."""
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"interleaved rounds (at least {MIN_ROUNDS}; default {rounds})")
    parser.add_argument("--compare", metavar="RESULTS_JSON",
                        help="an earlier results file to print speed-ups against")
    parser.add_argument("--no-save", dest="save", action="store_false",
                        help="do not write the results JSON")


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare two saved benchmark results.")
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    print_comparison(read(args.old), read(args.new))


if __name__ == "__main__":
    main()
