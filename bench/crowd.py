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
import re
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookiejar import CookieJar

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
    """One person's session, with its own cookies."""

    def __init__(self, base: str, login: str, password: str) -> None:
        self.base = base.rstrip("/")
        self.login = login
        self.password = password
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.bytes = 0

    def _get(self, path: str, data: bytes | None = None, compressed: bool = True) -> bytes:
        # Compressed as a browser asks (nginx's brotli/gzip work is part of the load); the
        # login form is read uncompressed (its CSRF field is needed).
        headers = {"User-Agent": "gridmap-bench-visitor"}
        if compressed:
            headers["Accept-Encoding"] = "br, gzip"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with self.opener.open(request, timeout=120) as response:
            body = response.read()
        self.bytes += len(body)
        return body

    async def get(self, path: str, data: bytes | None = None, compressed: bool = True) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(_POOL, self._get, path, data,
                                                                compressed)

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
        # The POST answers 303 to "/"; urllib follows it (the page shell) with the new cookie.
        await self.get("/login", data=body)
        if not any(c.name == "gridmap_session" for c in self.jar):
            raise RuntimeError(f"sign-in of {self.login} gave no session cookie")

    async def run_page(self) -> int:
        """The page script run over the websocket, as the browser's first BackMsg asks it;
        returns the number of messages received until the script finished."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.asyncio.client import connect

        back = BackMsg()
        info = back.rerun_script.context_info
        info.timezone, info.locale, info.url = "Asia/Shanghai", "zh-CN", self.base + "/"
        info.color_scheme = "light"
        back.rerun_script.widget_states.SetInParent()
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        url = "ws" + self.base[len("http"):] + "/_stcore/stream"
        received = 0
        async with connect(url, subprotocols=["streamlit"], max_size=None,
                           additional_headers={"Cookie": cookie, "Origin": self.base},
                           open_timeout=120) as ws:
            await ws.send(back.SerializeToString())
            async for raw in ws:
                received += 1
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                if (msg.WhichOneof("type") == "script_finished"
                        and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY):
                    self.bytes += len(raw)
                    return received
                self.bytes += len(raw)
        raise RuntimeError("the websocket closed before the page script finished")


async def visit(base: str, login: str, password: str, recorded: Recorded, start: float) -> float:
    """One emulated person: seconds from the common start until their page is complete."""
    visitor = Visitor(base, login, password)
    await visitor.sign_in()
    await visitor.get_all(recorded.shell)
    await visitor.run_page()
    await visitor.get_all(recorded.after_run)
    return time.monotonic() - start
