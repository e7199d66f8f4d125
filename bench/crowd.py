"""Emulated visitors for bench/bench_sessions.py: what one person's browser asks of the server,
without the browser's own rendering.

Twenty people in an office open gridmap on twenty computers; the server is the one machine they
share. On this 2-core machine twenty headless Chromium pages would also render on the server's
cores (each Streamlit page costs Chromium about as much CPU as the server spends on it), so the
benchmark lets most of the crowd be these visitors and keeps one real browser per role, whose
ready time is what its user sees while the server serves everyone else.

A visit replays, request for request, what a real browser fetched on its first visit (recorded
once per role from Chromium's resource timing): the login form, the sign-in POST, the page shell
and Streamlit's scripts, the websocket run of the page script (the same BackMsg a browser sends,
read until the script has finished), then the map component and the layer files the map loads.
Every byte comes from the production server (nginx, the app processes) as for a browser.
"""

from __future__ import annotations

import asyncio
import http.client
import queue
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Imported here, not at the first visit: a visitor's browser has its code loaded before it
# opens the page, and an import inside the timed crowd would hold this process's GIL while
# the other visitors wait to send their requests.
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect

# Requests a browser sends at once to one host (Chromium: six per host over HTTP/1.1).
PER_HOST = 6
_POOL = ThreadPoolExecutor(max_workers=96, thread_name_prefix="visitor")
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Recorded:
    """What a browser fetched on its first visit, in the order a browser needs it."""

    shell: list[str] = field(default_factory=list)  # page shell, Streamlit's scripts and fonts
    after_run: list[str] = field(default_factory=list)  # the map component and layer files


def record(urls: list[str], base: str) -> Recorded:
    """Split one real visit's resource list (absolute URLs) into the two phases."""
    out = Recorded()
    seen: set[str] = set()
    for url in urls:
        if not url.startswith(base) or "/_stcore/" in url or url in seen:
            continue
        seen.add(url)
        path = url[len(base) - 1:]
        if path.startswith("/login") or path.startswith("/logout"):
            continue
        late = "/component/" in path or path.startswith("/app/static/")
        (out.after_run if late else out.shell).append(path)
    return out


class Visitor:
    """One person's session: its own cookies and, as a browser, up to PER_HOST kept-alive
    connections to the server."""

    def __init__(self, base: str, login: str, password: str) -> None:
        self.base = base.rstrip("/")
        self.host = urllib.parse.urlsplit(self.base).netloc
        self.login = login
        self.password = password
        self.cookies: dict[str, str] = {}
        self.idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()
        self.bytes = 0

    def _request(self, path: str, data: bytes | None = None, compressed: bool = True,
                 redirects: int = 3) -> bytes:
        # Compressed as a browser asks (nginx's brotli/gzip work is part of the load); the
        # login form is read uncompressed (its CSRF field is needed).
        headers = {"User-Agent": "gridmap-bench-visitor", "Host": self.host}
        if compressed:
            headers["Accept-Encoding"] = "br, gzip"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = http.client.HTTPConnection(self.host, timeout=120)
        try:
            conn.request("POST" if data is not None else "GET", path, body=data,
                         headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        self.idle.put(conn)
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        self.bytes += len(body)
        if response.status in (301, 302, 303) and redirects:
            target = urllib.parse.urlsplit(response.headers["Location"])
            return self._request(target.path + (f"?{target.query}" if target.query else ""),
                                 compressed=compressed, redirects=redirects - 1)
        if response.status >= 400:
            raise RuntimeError(f"{path}: HTTP {response.status}")
        return body

    async def get(self, path: str, data: bytes | None = None, compressed: bool = True) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(_POOL, self._request, path,
                                                                data, compressed)

    async def get_all(self, paths: list[str]) -> None:
        gate = asyncio.Semaphore(PER_HOST)

        async def one(path: str) -> None:
            async with gate:
                await self.get(path)

        await asyncio.gather(*(one(p) for p in paths))

    async def sign_in(self) -> None:
        form = (await self.get("/login", compressed=False)).decode("utf-8", "replace")
        found = _CSRF.search(form)
        if found is None:
            raise RuntimeError("login form without its CSRF field")
        body = urllib.parse.urlencode({"login": self.login, "password": self.password,
                                       "csrf": found.group(1), "next": "/"}).encode()
        # The POST answers 303 to "/": followed (the page shell) with the new cookie.
        await self.get("/login", data=body)
        if "gridmap_session" not in self.cookies:
            raise RuntimeError(f"sign-in of {self.login} gave no session cookie")

    async def run_page(self) -> int:
        """The page script run over the websocket, as the browser's first BackMsg asks it;
        returns the number of messages received until the script finished."""
        back = BackMsg()
        info = back.rerun_script.context_info
        info.timezone, info.locale, info.url = "Asia/Shanghai", "zh-CN", self.base + "/"
        info.color_scheme = "light"
        back.rerun_script.widget_states.SetInParent()
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        url = "ws" + self.base[len("http"):] + "/_stcore/stream"
        received = 0
        async with connect(url, subprotocols=["streamlit"], max_size=None,
                           additional_headers={"Cookie": cookie, "Origin": self.base},
                           open_timeout=120) as ws:
            await ws.send(back.SerializeToString())
            async for raw in ws:
                received += 1
                self.bytes += len(raw)
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                if (msg.WhichOneof("type") == "script_finished"
                        and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY):
                    return received
        raise RuntimeError("the websocket closed before the page script finished")


async def visit(base: str, login: str, password: str, recorded: Recorded, start: float) -> float:
    """One emulated person: seconds from the common start until their page is complete."""
    visitor = Visitor(base, login, password)
    await visitor.sign_in()
    await visitor.get_all(recorded.shell)
    await visitor.run_page()
    await visitor.get_all(recorded.after_run)
    return time.monotonic() - start
