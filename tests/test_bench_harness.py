"""The benchmark harness (bench/harness.py): interleaved rounds, min/median, the machine's load,
results saved as JSON and compared with an earlier run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import harness


def contenders(calls: list[str]) -> list[harness.Contender]:
    def job(name: str, out):
        def run():
            calls.append(name)
            return out
        return run

    return [
        harness.Contender("a", job("a", [1, 2, 3]), warm=lambda: calls.append("warm a"),
                          check=lambda out: {"items": len(out)}),
        harness.Contender("b", job("b", []), setup=lambda: calls.append("setup b")),
        harness.Contender("c", job("c", [])),
    ]


def test_rounds_are_interleaved_and_rotated():
    calls: list[str] = []
    timings = harness.measure(contenders(calls), rounds=3, progress=False)
    assert calls == ["warm a", "a", "setup b", "b", "c", "setup b", "b", "c", "a", "c", "a",
                     "setup b", "b"]
    for t in timings.values():
        assert len(t.runs_s) == 3 and len(t.load_1min) == 3
        assert t.min_s <= t.median_s
    assert timings["a"].facts == {"items": 3}
    with pytest.raises(ValueError):
        harness.measure(contenders([]), rounds=2)


def test_report_saves_json_and_compares(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    timings = {name: harness.Timing(name, runs_s=runs, load_1min=[1.0, 1.5, 2.0])
               for name, runs in (("ours", [1.0, 2.0, 3.0]), ("theirs", [3.0, 4.0, 9.0]))}
    report = harness.Report("demo", {"points": 10})
    report.add("sample", timings, info={"points": 10}, ratios=[("ours", "theirs")],
               unit=("pts/s", 10))
    path = report.finish()
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert path.name.startswith("demo-") and path.suffix == ".json"
    assert saved["machine"]["cpus"] >= 1
    assert len(saved["load_before"]) == 3 and len(saved["load_after"]) == 3
    group = saved["groups"]["sample"]
    assert group["contenders"]["ours"]["median_s"] == 2.0
    assert group["contenders"]["theirs"]["min_s"] == 3.0
    assert group["ratios"] == [{"ours": "ours", "other": "theirs", "median_x": 2.0,
                                "min_x": 3.0}]
    out = capsys.readouterr().out
    assert "2.00x by median, 3.00x by min" in out and "load average" in out

    # A later run, twice as fast: --compare prints the speed-up against the saved one.
    faster = {n: harness.Timing(n, runs_s=[r / 2 for r in t.runs_s], load_1min=[1.0] * 3)
              for n, t in timings.items()}
    again = harness.Report("demo")
    again.add("sample", faster, ratios=[("ours", "theirs")])
    again.finish(save=False, compare=str(path))
    out = capsys.readouterr().out
    assert "sample / ours" in out and "2.00x" in out
    assert "ours vs theirs: 2.00x then, 2.00x now" in out
