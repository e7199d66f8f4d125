"""The pages' side of signing in: who is using this page, and what they may open.

The session cookie is set by the login form of ui/server.py (never by a page) and checked in
the store on every script run, so a logout, an expiry or a disabled account ends the page at
its next run. The checks here only decide what to show; the service layer checks again.
"""

from __future__ import annotations

import contextlib
import os

import streamlit as st

from grids.access import Actor, PermissionDenied, can
from grids.service import Gridmap
from layers.store import StoreError
from ui import cards, server

# The pages and the permission that opens each (the sidebar shows only what may be opened).
PAGES = (
    ("app.py", "网格地图", ":material/map:", "map.city"),
    ("pages/1_网格员.py", "网格员工作台", ":material/badge:", "worker.view"),
    ("pages/2_受理.py", "投诉受理（12369）", ":material/support_agent:", "case.create"),
    ("pages/3_案件.py", "案件办理", ":material/assignment:", "case.read"),
    ("pages/4_批量分派.py", "批量分派", ":material/upload_file:", "batch.assign"),
    ("pages/5_用户管理.py", "用户管理", ":material/manage_accounts:", "users.manage"),
    ("pages/6_审计记录.py", "审计记录", ":material/policy:", "audit.read"),
    ("pages/7_绩效考评.py", "绩效考评", ":material/leaderboard:", "stats.read"),
    ("pages/8_数据质检.py", "数据质检", ":material/rule:", "layers.check"),
    ("pages/9_规划调整.py", "规划调整", ":material/edit_location_alt:", "layers.publish"),
)


def session_token() -> str | None:
    return st.context.cookies.get(server.SESSION_COOKIE)


def signed_in(action: str | None = None) -> tuple[Gridmap, Actor]:
    """The service and the signed-in actor; stops the page (showing nothing of the data)
    when there is no live session, or when the actor may not `action`."""
    if os.environ.get(server.SERVED_FLAG) != "1":
        st.error("请用 `gridmap serve`（或 `make run`）启动本系统：它在页面前提供登录。")
        st.stop()
    svc = server.service()
    try:
        actor = svc.actor_for(session_token())
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
    if actor is None:
        st.warning("未登录或登录已过期（30 分钟无操作自动退出）。")
        same_tab_link("/login", "重新登录")
        st.stop()
    if action is not None and not can(actor, action):
        with contextlib.suppress(PermissionDenied, StoreError):
            svc.require(actor, action, "page")  # the refusal, into the audit trail
        st.warning(f"{cards.md(actor.label)} 无权打开此页面。")
        first = landing(actor)
        if first:
            st.page_link(first[0], label=f"打开{first[1]}", icon=first[2])
        st.stop()
    return svc, actor


def landing(actor: Actor) -> tuple[str, str, str] | None:
    """The first page the actor may open (a grid worker lands on their own units)."""
    for path, label, icon, action in PAGES:
        if can(actor, action):
            return path, label, icon
    return None


def sidebar_links(actor: Actor) -> None:
    """Who is signed in, the pages they may open, and logout."""
    st.caption(f"当前用户：{cards.md(actor.label)}")
    for path, label, icon, action in PAGES:
        if can(actor, action):
            st.page_link(path, label=label, icon=icon)
    same_tab_link("/logout", "退出登录")
    _SESSION_WATCH(key="gm_session_watch")


# A page whose connection drops (a phone asleep past the 30-minute idle limit, a server
# restarted) reconnects on its own; when the session has ended meanwhile the sign-in gate
# refuses, and Streamlit would only say "Connection failed with status 401" in English, with
# no way out. When its connection-error box appears, the page asks the gate whether the
# session still lives (only then: asking touches the session, and a timer would keep an idle
# one alive) and, if not, goes to the login form, which brings the person back here.
_SESSION_WATCH_JS = """
export default function() {
  if (window.__gmSessionWatch) return;
  window.__gmSessionWatch = true;
  let asking = false;
  const ask = async () => {
    if (asking) return;
    asking = true;
    try {
      const r = await fetch('ALIVE', {credentials: 'same-origin', cache: 'no-store',
                                   headers: {Accept: 'application/json'}});
      if (r.status === 401) {
        location.replace('/login?next=' + encodeURIComponent(location.pathname + location.search));
        return;
      }
    } catch (e) { /* the server is away: Streamlit keeps trying to reconnect */ }
    setTimeout(() => { asking = false; }, 5000);
  };
  const failed = () => Array.from(document.querySelectorAll('[role="dialog"]'))
    .some((d) => /Connection (error|failed)/.test(d.textContent || ''));
  new MutationObserver(() => { if (failed()) ask(); })
    .observe(document.body, {childList: true, subtree: true});
}
""".replace("ALIVE", server.SESSION_ALIVE)
_SESSION_WATCH = st.components.v2.component("gridmap_session_watch", js=_SESSION_WATCH_JS)


def same_tab_link(href: str, text: str) -> None:
    """A button-like link that opens in this tab (st.link_button opens a new one, which would
    leave this tab as it was). `href` and `text` are constants of ours, never data."""
    st.html(f'<a href="{href}" target="_self" style="display:inline-block;padding:0.45rem '
            '0.9rem;border:1px solid #ccd;border-radius:0.5rem;text-decoration:none;'
            f'color:inherit;min-height:2rem">{text}</a>')
