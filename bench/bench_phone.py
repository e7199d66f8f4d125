"""The grid worker's phone page, weight and speed, through the production setup (run by hand):

    .venv/bin/python bench/bench_phone.py                     # a fresh sample store, N=3
    .venv/bin/python bench/bench_phone.py --runs 5 --ready "css=.gm-worker-ready"

Starts `gridmap serve --production` (ui/production.py: nginx from Debian in front of the app,
precompressed files waited for; over HTTPS and HTTP/2 with a throwaway self-signed certificate,
as phones need it — `--no-tls` for plain HTTP/1.1) against the store, and measures the same page
through nginx ("proxy") and straight from the app behind it ("direct", the same process: what
plain `gridmap serve` gives: HTTP/1.1, nothing compressed but the websocket), interleaved, in
Debian's headless Chromium as a phone: a 390×844 touch context
(is_mobile, has_touch, device scale 3), CPU slowed 4× (CDP Emulation.setCPUThrottlingRate) and
the network shaped (CDP Network.emulateNetworkConditions):

- **4g**  — the issue's "emulated 4G": 9 Mbps down, 1.5 Mbps up, 60 ms latency;
- **fast3g** — Chrome DevTools' "Fast 3G" preset (1.44 Mbps, 675 kbps, 562.5 ms), for reference.

Each run is a new browser context (empty cache):
- **first visit**: the login form is opened, `demo-worker` signs in (it lands on the worker
  page), and the page is timed from the form's submission (the navigation's start) until it is
  **usable**: the worker's content is rendered (`--ready`: CSS selectors or `text=…` found in
  the main area, all of them when joined by " && "; default the task list's heading "我的任务"
  and its first task's button "打开 …" — demo-worker has open cases), Streamlit's script run
  has ended (`.stApp[data-test-script-state=notRunning]`) and the map is drawn (`--map`: a
  selector in the page or inside a streamlit-folium map iframe: Leaflet's container with the
  app's data-gridmap=ready or drawn overlays; `--map ''` to ignore the map). Bytes are what
  crossed the network: the sum of CDP Network.loadingFinished encodedDataLength (headers
  included) of every request from the login form on, until the network has been quiet for 2 s;
  plus the websocket's bytes: through nginx as sent on the wire (nginx's access log,
  compressed), direct its payloads (Chromium reports no websocket's compressed size);
- **repeat visit**: the same page opened again in the same context (cache warm, still signed
  in), timed from navigation to usable. This second run of Streamlit's scripts is also when
  Chromium writes their compiled code to its code cache (V8 "produce", on the page's thread);
- **later visit** (reported, no target): the same page a third time — Chromium now reads the
  compiled code from its code cache, as on every visit after the second.

Prints min/median of `--runs` per profile and target, the largest transfers of one first visit,
and writes everything to bench/results/phone-<date>.json. Targets (issue 10): first visit ≤ 1.5 MB
and usable ≤ 8 s on 4g with 4× CPU, repeat visit ≤ 3 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ui import production  # noqa: E402

BJ = ZoneInfo("Asia/Shanghai")
RESULTS = ROOT / "bench" / "results"
LOGIN, PASSWORD = "demo-worker", "Demo#worker2026"
PROFILES = {
    "4g": {"latency": 60, "downloadThroughput": 9_000_000 / 8,
           "uploadThroughput": 1_500_000 / 8},
    "fast3g": {"latency": 562.5, "downloadThroughput": 1_440_000 / 8,
               "uploadThroughput": 675_000 / 8},
    # No shaping: with --cpu, what the phone's CPU alone costs (--profiles none --cpu 4).
    "none": {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
}
TARGETS = {"first_mb": 1.5, "first_s": 8.0, "repeat_s": 3.0}
PHONE = {
    "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
    "device_scale_factor": 3, "locale": "zh-CN",
    "user_agent": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                   "Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"),
}
MAP_IFRAME = "iframe[title='streamlit_folium.st_folium']"
DEFAULT_MAP = (".leaflet-container[data-gridmap=ready], .leaflet-overlay-pane path, "
               ".leaflet-overlay-pane canvas, .leaflet-marker-pane > *")
QUIET_S = 2.0

# In the top page, every 50 ms: when the worker's content, the end of the script run and the
# drawn map are all there, the time since the navigation started (performance.now()).
WATCH = """
(([ready, mapSel, iframe]) => {
  if (window.top !== window) return;
  const g0 = window.__gm = {usable: null, content: null, map: null, ws_open: null,
                            ws_first: null, ran: null};
  const W = window.WebSocket;  // when the websocket opens and its first message arrives
  window.WebSocket = class extends W {
    constructor(...a) {
      super(...a);
      this.addEventListener('open', () => { g0.ws_open ??= performance.now(); });
      this.addEventListener('message', () => { g0.ws_first ??= performance.now(); });
    }
  };
  const found = () => {
    const main = document.querySelector('[data-testid=stMain]') || document.body;
    if (!main) return false;
    return ready.split(' && ').every(r => r.startsWith('text=')
      ? main.textContent.includes(r.slice(5)) : !!document.querySelector(r.replace(/^css=/, '')));
  };
  const drawn = () => {
    if (!mapSel) return true;
    if (document.querySelector(mapSel)) return true;  // a map drawn in the page itself
    const f = document.querySelector(iframe);
    const d = f && f.contentDocument;
    return !!(d && d.querySelector(mapSel));
  };
  const tick = setInterval(() => {
    const g = window.__gm, now = performance.now();
    const idle = !!document.querySelector('.stApp[data-test-script-state=notRunning]');
    if (g.ran === null && document.querySelector('.stApp[data-test-script-state=running]'))
      g.ran = now;
    if (g.content === null && found()) g.content = now;
    if (g.map === null && drawn()) g.map = now;
    if (g.content !== null && g.map !== null && idle && found() && drawn()) {
      g.usable = now; clearInterval(tick);
    }
  }, 50);
})
"""


class Meter:
    """Bytes and requests seen by CDP on one page (its iframes included)."""

    def __init__(self, cdp) -> None:
        self.requests: dict[str, dict] = {}
        self.ws_in = self.ws_out = 0
        self.ws_frames = 0
        self.last = time.monotonic()
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.webSocketFrameReceived", lambda e: self._frame(e, True))
        cdp.on("Network.webSocketFrameSent", lambda e: self._frame(e, False))

    def _touch(self) -> None:
        self.last = time.monotonic()

    def _sent(self, e) -> None:
        self._touch()
        self.requests.setdefault(e["requestId"], {"url": e["request"]["url"], "bytes": 0})

    def _response(self, e) -> None:
        r = self.requests.setdefault(e["requestId"], {"url": e["response"]["url"], "bytes": 0})
        headers = {k.lower(): v for k, v in e["response"].get("headers", {}).items()}
        r.update(status=e["response"]["status"], mime=e["response"].get("mimeType", ""),
                 encoding=headers.get("content-encoding", ""),
                 cache=headers.get("cache-control", ""),
                 from_cache=bool(e["response"].get("fromDiskCache")
                                 or e["response"].get("fromMemoryCache")))

    def _finished(self, e) -> None:
        self._touch()
        r = self.requests.setdefault(e["requestId"], {"url": "?", "bytes": 0})
        r["bytes"] = int(e.get("encodedDataLength", 0))

    def _frame(self, e, received: bool) -> None:
        self._touch()
        payload = e["response"].get("payloadData", "")
        size = len(base64.b64decode(payload)) if e["response"].get("opcode") == 2 else len(
            payload.encode())
        self.ws_frames += 1
        if received:
            self.ws_in += size
        else:
            self.ws_out += size

    def mark(self) -> dict:
        return {"ids": set(self.requests), "ws_in": self.ws_in, "ws_out": self.ws_out}

    def since(self, mark: dict) -> dict:
        new = [r for k, r in self.requests.items() if k not in mark["ids"]]
        on_wire = [r for r in new if r.get("bytes")]
        return {"bytes": sum(r["bytes"] for r in new), "requests": len(new),
                "requests_on_network": len(on_wire),
                "ws_bytes_in": self.ws_in - mark["ws_in"],
                "ws_bytes_out": self.ws_out - mark["ws_out"], "transfers": new}


def wait_usable(page, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        g = page.evaluate("() => window.__gm || null")
        if g and g.get("usable") is not None:
            return g
        page.wait_for_timeout(100)
    g = page.evaluate("() => window.__gm || null") or {}
    raise TimeoutError(f"not usable after {timeout_s:.0f} s (content at {g.get('content')} ms, "
                       f"map at {g.get('map')} ms, url {page.url})")


def wait_quiet(page, meter: Meter, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and time.monotonic() - meter.last < QUIET_S:
        page.wait_for_timeout(200)


def timeline(page, g: dict) -> dict:
    """When things happened, seconds from the navigation's start: the page's HTML, its scripts
    run (DOMContentLoaded), the websocket open and first answered, the script run seen, the
    content, the map, usable."""
    nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                        " return n ? [n.responseEnd, n.domContentLoadedEventEnd] : [null, null];"
                        " }")
    points = {"html": nav[0], "dom_ready": nav[1], **{k: g.get(k) for k in (
        "ws_open", "ws_first", "ran", "content", "map", "usable")}}
    return {k: (round(v / 1000, 3) if v is not None else None) for k, v in points.items()}


class WsLog:
    """Websocket bytes on the wire, from nginx's access log ($bytes_sent of each /_stcore/stream
    line, written when the socket closes): what CDP cannot tell once permessage-deflate is on."""

    LINE = re.compile(r'"GET /_stcore/stream[^"]*" 101 (\d+)')

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = self._size()

    def _size(self) -> int:
        return self.path.stat().st_size if self.path and self.path.exists() else 0

    def take(self, wait_s: float = 5.0) -> int | None:
        """Bytes of the websockets closed since the last call (waits for at least one)."""
        if self.path is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                text = f.read().decode("utf-8", "replace")
            found = [int(m[1]) for m in self.LINE.finditer(text)]
            if found or time.monotonic() > deadline:
                self.offset += len(text.encode())
                return sum(found)
            time.sleep(0.1)


def one_run(browser, base: str, profile: str, args, log: Path | None = None) -> dict:
    context = browser.new_context(**PHONE, ignore_https_errors=True)
    wslog = WsLog(log)
    closed = False
    try:
        page = context.new_page()
        page.add_init_script(f"{WATCH}({json.dumps([args.ready, args.map, MAP_IFRAME])})")
        cdp = context.new_cdp_session(page)
        meter = Meter(cdp)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, **PROFILES[profile]})
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": args.cpu})
        start = meter.mark()
        page.goto(base + "login", wait_until="load", timeout=120_000)
        page.fill("#login", LOGIN)
        page.fill("#password", PASSWORD)
        with page.expect_navigation(timeout=120_000):
            page.click("button[type=submit]")
        g = wait_usable(page, args.timeout)
        landed = page.url
        wait_quiet(page, meter)
        first = {**meter.since(start), "usable_s": g["usable"] / 1000,
                 "timeline": timeline(page, g), "url": landed}
        # The repeat visit: the same page again, cache warm, still signed in.
        mark = meter.mark()
        page.goto(landed, wait_until="commit", timeout=120_000)
        first["ws_wire_bytes"] = wslog.take()  # the first visit's websocket has closed
        g = wait_usable(page, args.timeout)
        wait_quiet(page, meter)
        repeat = {**meter.since(mark), "usable_s": g["usable"] / 1000,
                  "timeline": timeline(page, g)}
        # A later visit: the third run of the scripts, from Chromium's code cache.
        mark = meter.mark()
        page.goto(landed, wait_until="commit", timeout=120_000)
        repeat["ws_wire_bytes"] = wslog.take()
        g = wait_usable(page, args.timeout)
        wait_quiet(page, meter)
        later = {**meter.since(mark), "usable_s": g["usable"] / 1000,
                 "timeline": timeline(page, g)}
        context.close()
        closed = True
        later["ws_wire_bytes"] = wslog.take()
        for visit in (first, repeat, later):
            # Through nginx the websocket's bytes on the wire; straight from the app (no
            # compression) its payloads.
            ws = visit["ws_wire_bytes"] if visit["ws_wire_bytes"] is not None else (
                visit["ws_bytes_in"] + visit["ws_bytes_out"])
            visit["total_bytes"] = visit["bytes"] + ws
        return {"first": first, "repeat": repeat, "later": later}
    finally:
        if not closed:
            context.close()


def summary(runs: list[dict]) -> dict:
    def stats(values):
        return {"min": min(values), "median": statistics.median(values), "all": values}

    return {
        "first_mb": stats([r["first"]["bytes"] / 1e6 for r in runs]),
        "first_requests": stats([r["first"]["requests"] for r in runs]),
        "first_ws_mb": stats([r["first"]["ws_bytes_in"] / 1e6 for r in runs]),
        "first_total_mb": stats([r["first"]["total_bytes"] / 1e6 for r in runs]),
        "first_s": stats([r["first"]["usable_s"] for r in runs]),
        "repeat_s": stats([r["repeat"]["usable_s"] for r in runs]),
        "repeat_mb": stats([r["repeat"]["bytes"] / 1e6 for r in runs]),
        "repeat_requests": stats([r["repeat"]["requests_on_network"] for r in runs]),
        "later_s": stats([r["later"]["usable_s"] for r in runs]),
    }


def kind_of(url: str) -> str:
    path = url.split("://", 1)[-1].split("/", 1)[-1]
    for prefix, kind in (("static/js/", "Streamlit JS"), ("static/css/", "Streamlit CSS"),
                         ("static/media/", "Streamlit fonts/media"),
                         ("component/", "map iframe (streamlit-folium)"),
                         ("app/static/vendor/", "vendored map libraries"),
                         ("app/static/gridmap/", "app's map script"),
                         ("app/static/cache/", "map data"), ("_stcore/", "Streamlit API"),
                         ("login", "login")):
        if path.startswith(prefix):
            return kind
    return "page/other"


def breakdown(transfers: list[dict]) -> tuple[dict, list[dict]]:
    kinds: dict[str, dict] = {}
    for r in transfers:
        k = kinds.setdefault(kind_of(r["url"]), {"bytes": 0, "requests": 0})
        k["bytes"] += r.get("bytes", 0)
        k["requests"] += 1
    top = sorted(transfers, key=lambda r: -r.get("bytes", 0))[:15]
    return (dict(sorted(kinds.items(), key=lambda kv: -kv[1]["bytes"])),
            [{"url": r["url"].split("/", 3)[-1][:90], "bytes": r.get("bytes", 0),
              "encoding": r.get("encoding", ""), "cache": r.get("cache", "")} for r in top])


def build_store(directory: Path) -> Path:
    store = directory / "phone.gpkg"
    exe = Path(sys.executable).with_name("gridmap")
    subprocess.run([str(exe), "--store", str(store), "demo"], check=True,
                   stdout=subprocess.DEVNULL)
    return store


def chromium_version() -> str:
    from tests.browser import CHROMIUM

    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return out.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="a store with demo-worker (default: a new sample store)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profiles", default="4g,fast3g",
                        help="network profiles: 4g, fast3g, none (default 4g,fast3g)")
    parser.add_argument("--targets", default="proxy,direct")
    parser.add_argument("--cpu", type=float, default=4.0, help="CPU slowdown (default 4)")
    parser.add_argument("--ready", default="text=我的任务 && text=打开 ",
                        help="the worker's content: CSS selectors or text=…, joined by ' && ' "
                             "(default: the task list's heading and a task's button)")
    parser.add_argument("--map", default=DEFAULT_MAP,
                        help="selector, in the page or inside the map iframe, once the map is "
                             "drawn ('' = no map)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                        help="the proxy over HTTPS and HTTP/2 with a self-signed certificate, as "
                             "phones need it (default; --no-tls: plain HTTP/1.1)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the proxy's address (Chromium offers brotli over plain HTTP only "
                             "to 127.0.0.1: give the machine's LAN address to see a phone's "
                             "plain-HTTP case)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print each visit's timeline")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    tmp = Path(tempfile.mkdtemp(prefix="bench-phone-"))
    store = Path(args.store) if args.store else build_store(tmp)
    setup = production.Setup(port=production.free_port(), host=args.host, run_dir=tmp / "run")
    if args.tls:
        setup.tls_cert, setup.tls_key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={args.host}", "-addext", f"subjectAltName=IP:{args.host}",
                        "-keyout", str(setup.tls_key),
                        "-out", str(setup.tls_cert)], check=True, capture_output=True)
    profiles = [p for p in args.profiles.split(",") if p]
    targets = [t for t in args.targets.split(",") if t]
    results: dict[str, dict[str, list[dict]]] = {p: {t: [] for t in targets} for p in profiles}
    with production.Production(str(store), setup) as prod:
        t0 = time.monotonic()
        prod.wait_precompressed()
        print(f"precompressed mirror ready ({time.monotonic() - t0:.1f} s)", flush=True)
        bases = {"proxy": setup.url, "direct": f"http://127.0.0.1:{setup.app_port}/"}
        access_log = setup.run_dir / "logs" / "access.log"
        with sync_playwright() as p:
            browser = launch(p)
            # One unmeasured visit: the app's first script run (imports, map data) is not the
            # phone's to pay.
            one_run(browser, bases["direct"], profiles[0], argparse.Namespace(
                **{**vars(args), "cpu": 1.0}))
            for profile in profiles:
                for i in range(args.runs):
                    for target in targets:
                        r = one_run(browser, bases[target], profile, args,
                                    log=access_log if target == "proxy" else None)
                        results[profile][target].append(r)
                        print(f"{profile:6} {target:6} run {i + 1}: first "
                              f"{r['first']['bytes'] / 1e6:.3f} MB + websocket "
                              f"{(r['first']['total_bytes'] - r['first']['bytes']) / 1e6:.3f}"
                              f" MB / {r['first']['requests']} req"
                              f" usable {r['first']['usable_s']:.2f} s; repeat "
                              f"{r['repeat']['usable_s']:.2f} s, "
                              f"{r['repeat']['bytes'] / 1e6:.3f} MB; later "
                              f"{r['later']['usable_s']:.2f} s", flush=True)
                        if args.verbose:
                            print(f"    first  {r['first']['timeline']}\n"
                                  f"    repeat {r['repeat']['timeline']}\n"
                                  f"    later  {r['later']['timeline']}", flush=True)
            browser.close()
        versions = {"nginx": nginx_version(setup.nginx), "chromium": chromium_version(),
                    "brotli_modules": bool(setup.brotli_modules)}

    import streamlit

    report = {"date": datetime.now(BJ).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(),
                          "python": platform.python_version(), "platform": platform.platform()},
              "versions": {**versions, "streamlit": streamlit.__version__},
              "settings": {"runs": args.runs, "cpu_slowdown": args.cpu, "profiles":
                           {p: PROFILES[p] for p in profiles}, "ready": args.ready,
                           "map": args.map, "tls": args.tls, "viewport": PHONE["viewport"],
                           "device_scale_factor": PHONE["device_scale_factor"]},
              "targets": TARGETS, "summary": {}, "breakdown": {}, "runs": {}}
    print(f"\n{'profile':7} {'target':7} {'first MB':>11} {'+ws MB':>11} {'req':>4} "
          f"{'usable s':>9} {'repeat s':>9} {'later s':>9}   (min/median of {args.runs}; +ws: "
          "with the websocket's bytes)")
    for profile in profiles:
        for target in targets:
            runs = results[profile][target]
            s = summary(runs)
            report["summary"][f"{profile}/{target}"] = s
            print(f"{profile:7} {target:7} "
                  f"{s['first_mb']['min']:5.3f}/{s['first_mb']['median']:5.3f} "
                  f"{s['first_total_mb']['min']:5.3f}/{s['first_total_mb']['median']:5.3f}"
                  f" {s['first_requests']['median']:4.0f} "
                  f"{s['first_s']['min']:4.1f}/{s['first_s']['median']:4.1f} "
                  f"{s['repeat_s']['min']:4.1f}/{s['repeat_s']['median']:4.1f} "
                  f"{s['later_s']['min']:4.1f}/{s['later_s']['median']:4.1f}")
            median_run = sorted(runs, key=lambda r: r["first"]["usable_s"])[len(runs) // 2]
            kinds, top = breakdown(median_run["first"]["transfers"])
            report["breakdown"][f"{profile}/{target}"] = {"by_kind": kinds, "top": top}
            report["runs"][f"{profile}/{target}"] = [
                {v: {k: x for k, x in r[v].items() if k != "transfers"} for v in r}
                for r in runs]
    for key in ("4g/proxy", "4g/direct"):
        if key in report["breakdown"]:
            print(f"\nfirst visit {key}, by kind:")
            for kind, k in report["breakdown"][key]["by_kind"].items():
                print(f"  {kind:32} {k['bytes'] / 1e3:8.1f} kB  {k['requests']:3} req")
            print(f"largest transfers ({key}):")
            for r in report["breakdown"][key]["top"][:10]:
                print(f"  {r['bytes'] / 1e3:8.1f} kB {r['encoding'] or '-':5} {r['url']}")
    if "4g/proxy" in report["summary"]:
        s = report["summary"]["4g/proxy"]
        verdict = {"first_mb": s["first_total_mb"]["median"] <= TARGETS["first_mb"],
                   "first_s": s["first_s"]["median"] <= TARGETS["first_s"],
                   "repeat_s": s["repeat_s"]["median"] <= TARGETS["repeat_s"]}
        report["meets_targets"] = verdict
        print("\ntargets (4g, proxy, medians):", ", ".join(
            f"{k} {'met' if v else 'MISSED'}" for k, v in verdict.items()))
    shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"phone-{datetime.now(BJ):%Y%m%d-%H%M}.json"
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
