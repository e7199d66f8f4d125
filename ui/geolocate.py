"""The phone's position, asked of the browser (navigator.geolocation) when the worker taps a
button — never on its own. A Streamlit v2 component (no iframe: it runs in the page, so the
page's own permission applies); the value is {lon, lat, accuracy, at} in WGS84, or the
browser's refusal as {error}. Browsers give positions only to secure pages (https, or
localhost); behind the production proxy the site must be served over https."""

from __future__ import annotations

import streamlit as st

# Disabled until the script below has taken it: a tap before then would be lost (on a slow
# phone, or a page still loading) and the worker left waiting for a position never asked.
_HTML = ('<button type="button" class="gm-geo" disabled>获取手机定位</button>'
         '<div class="gm-geo-msg" aria-live="polite"></div>')
_CSS = """
.gm-geo { min-height: 44px; width: 100%; font-size: 15px; border: 1px solid #c8d1dc;
  border-radius: 8px; background: #f6f8fa; color: #0b5394; cursor: pointer; }
.gm-geo:disabled { color: #8c959f; cursor: default; }
.gm-geo-msg { font-size: 14px; color: #57606a; margin-top: 4px; min-height: 1.2em; }
"""
_JS = """
export default function(component) {
  const { parentElement, setStateValue } = component;
  const button = parentElement.querySelector('button.gm-geo');
  const msg = parentElement.querySelector('.gm-geo-msg');
  button.onclick = () => {
    if (!navigator.geolocation) {
      msg.textContent = '此浏览器不能定位';
      setStateValue('position', {error: 'unsupported'});
      return;
    }
    msg.textContent = '正在定位…';
    navigator.geolocation.getCurrentPosition((p) => {
      msg.textContent = '已定位，精度 ±' + Math.round(p.coords.accuracy) + ' 米';
      setStateValue('position', {lon: p.coords.longitude, lat: p.coords.latitude,
                                 accuracy: p.coords.accuracy, at: Date.now()});
    }, (e) => {
      msg.textContent = '定位失败：' + (e.code === 1 ? '未允许获取位置' : e.message);
      setStateValue('position', {error: String(e.code)});
    }, {enableHighAccuracy: true, timeout: 20000, maximumAge: 0});
  };
  button.disabled = false;
}
"""
_COMPONENT = st.components.v2.component("gridmap_geolocate", html=_HTML, css=_CSS, js=_JS)


def position(key: str) -> tuple[float, float, float] | None:
    """(lon, lat, accuracy m) once the worker tapped and the browser answered, else None."""
    result = _COMPONENT(key=key, on_position_change=lambda: None)
    value = getattr(result, "position", None) if result is not None else None
    if not isinstance(value, dict) or "lon" not in value:
        return None
    try:
        return float(value["lon"]), float(value["lat"]), float(value["accuracy"])
    except (TypeError, ValueError, KeyError):
        return None


def refused(key: str) -> bool:
    value = st.session_state.get(key)
    pos = getattr(value, "position", None) if value is not None else None
    return isinstance(pos, dict) and "error" in pos
