"""Helpers for the web map's tests: a map world (the hand-drawn world of tests/world.py plus
supervised entities — one named like an XSS attack — and incidents), a `streamlit run` server on
a free port against it, and headless Debian Chromium driven by Playwright (never downloaded)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from layers.credit_code import generate
from layers.importer import import_path
from layers.store import open_store
from tests import world

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("GRIDMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
XSS_NAME = "<img src=x onerror=alert(1)>"
FORMULA_NAME = '=HYPERLINK("http://example.invalid","点我")'

# (name, point of tests/world.P, industry, permit class)
ENTITIES = [
    ("甲二镇印染有限公司", "a2_plain", "纺织印染", "重点管理"),
    ("甲一镇机械制造厂", "a1_numbered", "机械制造", "简化管理"),
    ("甲化工园区化学有限公司", "chemical", "化工", "重点管理"),
    ("甲开发区电子有限公司", "national", "电子", "登记管理"),
    ("某化工厂", "dedicated", "化工", "重点管理"),
    ("乙飞地餐饮店", "enclave", "餐饮", "登记管理"),
    ("乙一镇食品有限公司", "b1", "食品加工", "简化管理"),
    ("界线上的汽修厂", "border_ab", "汽修", "登记管理"),
    (XSS_NAME, "a2_strip", "印刷包装", "简化管理"),
    (FORMULA_NAME, "near_border", "建材", "登记管理"),
]


def world_entities() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for name, point, industry, permit in ENTITIES:
        lon, lat = world.P[point]
        rows.append({"id": generate(rng, "320600"), "name": name, "lon": lon, "lat": lat,
                     "crs": "wgs84", "industry": industry, "permit_class": permit,
                     "inspection_class": "重点监管对象" if permit == "重点管理" else "一般监管对象",
                     "address": f"测试地址 {point}"})
    return pd.DataFrame(rows)


def world_incidents() -> pd.DataFrame:
    rows = [
        ("T0001", "a2_plain", "air", "有刺鼻异味<script>alert(2)</script>", "dispatched"),
        ("T0002", "b1", "water", "河道有不明废水", "reported"),
        ("T0003", "a1_numbered", "noise", "夜间施工噪声", "closed"),
    ]
    return pd.DataFrame([
        {"id": i, "reported_at": "2026-11-01T08:00:00+08:00", "source": "12369热线",
         "category": cat, "description": text, "lon": world.P[p][0], "lat": world.P[p][1],
         "crs": "wgs84", "accuracy_m": 0, "status": status}
        for i, p, cat, text, status in rows
    ])


_BUILT: dict[str, Path] = {}  # the plain world's directory, built once per test process


def build_map_world(directory: Path, overrides: dict | None = None) -> Path:
    """A GeoPackage store of the hand-drawn world with entities, incidents and one account
    per role (tests/signin.py); its path. The plain world (no overrides) is built once per test
    process and copied (a file copy, not 1–2 s of import and sign-up per test module)."""
    directory = Path(directory)
    if overrides is None:
        built = _BUILT.get("plain")
        if built is None or not built.exists():  # kept apart: the tests change their copies
            pristine = directory.parent / f"{directory.name}-pristine-world"
            _BUILT["plain"] = built = _build_map_world(pristine)
        shutil.copytree(built.parent / "files", directory / "files", dirs_exist_ok=True)
        shutil.copy2(built, directory / built.name)
        return directory / built.name
    return _build_map_world(directory, overrides)


def _build_map_world(directory: Path, overrides: dict | None = None) -> Path:
    files = world.write(directory / "files", overrides)
    world_entities().to_csv(files / "entities.csv", index=False)
    path = directory / "mapworld.gpkg"
    store = open_store(str(path), create=True)
    try:
        import_path(store, files)
        if hasattr(store, "add_incidents"):
            from grids.cases import load_incident_file
            from grids.routing import Router

            world_incidents().to_csv(directory / "incidents.csv", index=False)
            load_incident_file(store, Router(store), directory / "incidents.csv", actor="测试")
    finally:
        store.close()
    from tests.signin import add_world_users

    add_world_users(path)
    return path


def map_config(script: str) -> dict:
    """The configuration the city map's script is called with: `})(map_div, {…});`."""
    start = re.search(r"\}\)\(map_div, (?=\{)", script).end()
    return json.JSONDecoder().raw_decode(script, start)[0]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Debian chromium 未安装（make test 会自动安装：apt-get install chromium）"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright 未安装"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`gridmap serve` (the sign-in gate in front of the Streamlit app) on a free port against
    `store`; stopped (with its process group) on exit. The log is kept in test-artifacts/."""

    def __init__(self, store: Path, env: dict[str, str] | None = None, cwd: Path = ROOT,
                 start_s: float = 60) -> None:
        self.store = store
        self.start_s = start_s  # a served process loads the layers and map files first
        self.cwd = cwd  # where app.py (and its static/) is
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**os.environ, "GRIDMAP_STORE": str(store), **(env or {})}
        self.proc: subprocess.Popen | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"streamlit-{self.port}.log"

    def __enter__(self) -> AppServer:
        log = self.log_path.open("wb")
        from tests.conftest import gridmap_exe

        self.proc = subprocess.Popen(
            [gridmap_exe(), "--store", str(self.store), "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    self.url + "_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"streamlit did not answer within {self.start_s:.0f} s: "
                           f"see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class ProductionServer:
    """`gridmap --store S serve --production` as a user starts it; stopped with Ctrl-C (SIGINT
    to that one process, as a terminal sends it)."""

    def __init__(self, store: Path, run_dir: Path, *extra: str) -> None:
        self.store = store
        self.run_dir = run_dir
        self.port = free_port()
        self.app_port = free_port()
        self.extra = extra
        scheme = "https" if "--tls-cert" in extra else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/"
        self.app_url = f"http://127.0.0.1:{self.app_port}/"
        self.proc: subprocess.Popen | None = None
        self.output = run_dir.parent / f"production-{self.port}.out"

    def __enter__(self) -> ProductionServer:
        from tests.conftest import gridmap_exe

        self.proc = subprocess.Popen(
            [gridmap_exe(), "--store", str(self.store), "serve", "--production",
             "--port", str(self.port), "--app-port", str(self.app_port),
             "--run-dir", str(self.run_dir), *self.extra],
            cwd=ROOT, stdout=self.output.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gridmap serve --production exited: {self.log()}")
            if "生产模式已启动" in self.output.read_text(encoding="utf-8", errors="replace"):
                return self
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"gridmap serve --production did not start: {self.log()}")

    def log(self) -> str:
        text = self.output.read_text(encoding="utf-8", errors="replace")
        for name in ("error.log", "app.log"):
            with contextlib.suppress(OSError):
                text += f"\n--- {name}\n" + (self.run_dir / "logs" / name).read_text()[-3000:]
        return text

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C; the command's exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.interrupt()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


MAP_IFRAME = "iframe[title='streamlit_folium.st_folium']"
MAP_STATE = ("() => { const c = document.querySelector('.leaflet-container');"
             " return c ? c.getAttribute('data-gridmap') : null; }")


def wait_for_map(page, timeout_s: float = 30.0):
    """(iframe element, frame) once the map says its layers are drawn; raises on an error.
    Polls with page.wait_for_timeout: Playwright's sync API sees no frames during time.sleep."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        element = page.query_selector(MAP_IFRAME)
        frame = element.content_frame() if element else None
        if frame is not None:
            with contextlib.suppress(Exception):
                state = frame.evaluate(MAP_STATE)
            if state == "ready":
                return element, frame
            if state == "error":
                raise AssertionError(frame.evaluate("() => window.gridmapStats.error"))
        page.wait_for_timeout(25)
    raise AssertionError(f"map not ready after {timeout_s} s (state {state})")


def page_point(element, frame, lon: float, lat: float) -> tuple[float, float]:
    """Where (lon, lat) is on the page, for mouse clicks."""
    p = frame.evaluate("([lat, lon]) => { const q = window.map.latLngToContainerPoint([lat, lon]);"
                       " return [q.x, q.y]; }", [lat, lon])
    box = element.bounding_box()
    return box["x"] + p[0], box["y"] + p[1]


def is_local(url: str, port: int) -> bool:
    """A request to the app itself (or one that never touches the network)."""
    if url.startswith(("data:", "blob:", "about:")):
        return True
    from urllib.parse import urlparse

    parts = urlparse(url)
    return parts.hostname in ("127.0.0.1", "localhost") and parts.port == port


# Streamlit shows its status widget while a script run is on (from a moment after it starts).
SCRIPT_IDLE = "() => !document.querySelector('[data-testid=stStatusWidget]')"


def wait_idle(page, settle_ms: int = 400, timeout: int = 60_000) -> None:
    """Until the page's script run (and the one a click just started) is over."""
    page.wait_for_timeout(settle_ms)
    page.wait_for_function(SCRIPT_IDLE, timeout=timeout)


class Tab:
    """A page in a fresh browser context that keeps every request (websocket included), every
    message sent on the websocket (each one a script rerun), every dialog (a script run from
    the data) and every script error, so a test can prove none of them happened."""

    def __init__(self, browser, server: AppServer, shots: Path, height: int = 1000,
                 role: str | None = "dispatcher") -> None:
        self.server = server
        self.shots = shots
        self.context = browser.new_context(viewport={"width": 1440, "height": height},
                                           locale="zh-CN", accept_downloads=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.sent: list[float] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", self._websocket)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        if role is not None:
            self.sign_in(role)

    def sign_in(self, role: str, password: str | None = None) -> None:
        """Through the real login form, as the world's account of `role`."""
        from tests.signin import PASSWORD, WORLD_USERS

        self.page.goto(self.server.url + "login")
        self.page.fill("#login", WORLD_USERS[role][0])
        self.page.fill("#password", password or PASSWORD)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def _websocket(self, ws) -> None:
        self.requests.append(ws.url)
        ws.on("framesent", lambda _payload: self.sent.append(time.monotonic()))

    def _dialog(self, d) -> None:
        self.dialogs.append(d.message)
        d.dismiss()

    def open(self, path: str = ""):
        self.page.goto(self.server.url + path)
        return wait_for_map(self.page, timeout_s=60)

    def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    def check_clean(self) -> None:
        outside = [u for u in self.requests if not is_local(u, self.server.port)]
        assert not outside, f"requests leaving the host: {outside}"
        assert not self.dialogs, f"a script ran from the data: {self.dialogs}"
        assert not self.errors, self.errors
