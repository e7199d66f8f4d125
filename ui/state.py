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


def load(action: str = "map.city") -> tuple[Gridmap, Actor, Router]:
    """The service, the actor (signed in, allowed to `action`) and the router of the current
    layers; stops the page with a message (in Chinese) when any of them is missing."""
    svc, actor = auth.signed_in(action)
    try:
        router = svc.router_for(actor, action)
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
        raise  # unreachable; for type checkers
    return svc, actor, router
