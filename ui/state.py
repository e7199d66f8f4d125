"""What a page needs before it draws: the signed-in actor, the service, and the router of
the current layers — all through the service layer (grids/service.py), which checks the
actor's permission and keeps routers and indexes per generation for the whole process.
"""

from __future__ import annotations

import streamlit as st

from grids.access import Actor
from grids.routing import Router
from grids.service import Gridmap
from layers.store import StoreError
from ui import auth

# Streamlit writes a few words of its own widgets in English, with no setting to change them:
# the file uploader's button says 选择文件, its English size-and-types line is hidden (each
# uploader's label says both in Chinese), and a file it refused says why next to its name.
# A table's own "Download as CSV" is hidden: it writes a cell such as =HYPERLINK(…) (a name,
# a complaint from the public) as it is, and Excel runs it; the exports people need are the
# pages' own Excel files, in which text is always text.
WIDGET_CSS = """<style>
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p {
  visibility: hidden; font-size: 0; }
[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p::after {
  content: "选择文件"; visibility: visible; font-size: 0.95rem; }
[data-testid="stFileUploaderDropzoneInstructions"] { display: none; }
[role="listbox"][data-empty="true"] [role="option"] span { font-size: 0; }
[role="listbox"][data-empty="true"] [role="option"] span::after {
  content: "没有匹配的选项"; font-size: 0.9rem; }
[data-testid="stElementToolbarButton"]:has(button[aria-label^="Download as CSV"]) {
  display: none; }
@media (max-width: 640px) {  /* a phone: every link and box a finger can hit (44 px) */
  [data-testid="stPageLink-NavLink"] { min-height: 44px; align-items: center; }
  [data-testid="stTextInput"] input { min-height: 44px; } }
[data-testid="stFileChip"][aria-invalid="true"]::after {
  content: "未上传：超过大小限制或不是允许的文件类型"; color: #b00020; font-size: 0.85rem;
  margin-left: 8px; align-self: center; }
</style>"""


def load(action: str = "map.city") -> tuple[Gridmap, Actor, Router]:
    """The service, the actor (signed in, allowed to `action`) and the router of the current
    layers; stops the page with a message (in Chinese) when any of them is missing."""
    svc, actor = auth.signed_in(action)
    st.html(WIDGET_CSS)
    try:
        router = svc.router_for(actor, action)
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
        raise  # unreachable; for type checkers
    return svc, actor, router
