"""Front-end assets served by the app itself, and the check that nothing else is loaded.

Leaflet, its plugins, jQuery, Bootstrap, fonts and icons are vendored under static/vendor/ (see
static/vendor/ASSETS.md: package, version, licence, refresh script) and served by Streamlit's
static file serving at /app/static/. `localize` points every folium element's `default_js` /
`default_css` at them; `external_urls` lists whatever would still leave the host, and
`ensure_offline` turns that into an error at start-up instead of a blank map (streamlit-folium
loads scripts one after another and silently stops at the first that fails).

URLs are relative to the streamlit-folium iframe (…/component/streamlit_folium.st_folium/
index.html), so `../../app/static/` reaches the app's static root under any baseUrlPath.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import branca
import folium
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from jinja2 import Template

ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = ROOT / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
# The app's static root as seen from the map iframe.
STATIC_URL = "../../app/static/"

# folium's resource names → vendored files. Names are folium's own, so a plugin whose names are
# listed here is served locally with no further code.
VENDORED: dict[str, str] = {
    # folium.Map
    "leaflet": "leaflet@1.9.4/leaflet.js",
    "jquery": "jquery@3.7.1/jquery.min.js",
    "bootstrap": "bootstrap@5.2.2/bootstrap.bundle.min.js",
    "awesome_markers": "leaflet.awesome-markers@2.0.5/leaflet.awesome-markers.js",
    "leaflet_css": "leaflet@1.9.4/leaflet.css",
    "bootstrap_css": "bootstrap@5.2.2/bootstrap.min.css",
    "glyphicons_css": "bootstrap@3.4.1/css/glyphicons.css",
    "awesome_markers_font_css": "fontawesome-free@6.2.0/css/all.min.css",
    "awesome_markers_css": "leaflet.awesome-markers@2.0.5/leaflet.awesome-markers.css",
    "awesome_rotate_css": "gridmap-rotate@1/awesome-rotate.css",
    # folium.plugins.MarkerCluster / FastMarkerCluster
    "markerclusterjs": "leaflet.markercluster@1.5.3/leaflet.markercluster.js",
    "markerclustercss": "leaflet.markercluster@1.5.3/MarkerCluster.css",
    "markerclusterdefaultcss": "leaflet.markercluster@1.5.3/MarkerCluster.Default.css",
    # folium.plugins.Draw: 1.0.4, which can edit existing polygons (folium pins 1.0.2)
    "leaflet_draw_js": "leaflet-draw@1.0.4/leaflet.draw.js",
    "leaflet_draw_css": "leaflet-draw@1.0.4/leaflet.draw.css",
    # ui/worker.MAP_ASSETS: the phone map (one finger scrolls the page, two move the map)
    "gesture_handling_js": "leaflet-gesture-handling@1.2.2/leaflet-gesture-handling.min.js",
    "gesture_handling_css": "leaflet-gesture-handling@1.2.2/leaflet-gesture-handling.min.css",
}
LEAFLET_IMAGES = "leaflet@1.9.4/images/"
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_ATTR_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


class OfflineAssetError(RuntimeError):
    """The map would load something from another host; the message is for the user."""


def vendor_url(path: str) -> str:
    return STATIC_URL + "vendor/" + path


def own_url(path: str) -> str:
    """URL of one of the app's own static files, versioned by content so browsers never keep a
    stale copy of a changed file."""
    return f"{STATIC_URL}{path}?v={_digest(STATIC_DIR / path)}"


@cache
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def image_path() -> str:
    """For `L.Icon.Default.imagePath` (Leaflet cannot guess it when its CSS is not at /dist)."""
    return vendor_url(LEAFLET_IMAGES)


def is_external(url: str) -> bool:
    return bool(_EXTERNAL.match(url.strip())) and not url.strip().lower().startswith("data:")


def _walk(element):
    yield element
    for child in getattr(element, "_children", {}).values():
        yield from _walk(child)


class ControlWords(MacroElement):
    """Leaflet's controls in Chinese: its zoom and layer buttons are titled "Zoom in", "Zoom
    out", "Layers" (what a mouse shows and a screen reader says), and its credit links to a
    site the intranet cannot reach. Controls added later (the map script's layer control,
    once its data is in) are named as they appear in the controls' corner."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map) {
          var words = {"leaflet-control-zoom-in": "放大", "leaflet-control-zoom-out": "缩小",
                       "leaflet-control-layers-toggle": "图层"};
          // Only the controls' corner is watched: marker and tile changes on the map are not.
          var box = map.getContainer().querySelector(".leaflet-control-container");
          var name = function () {
            Object.keys(words).forEach(function (cls) {
              box.querySelectorAll("a." + cls).forEach(function (a) {
                if (a.title !== words[cls]) {
                  a.title = words[cls];
                  a.setAttribute("aria-label", words[cls]);
                }
              });
            });
          };
          if (box) {
            name();
            new MutationObserver(name).observe(box, {childList: true, subtree: true});
          }
          if (map.attributionControl) { map.attributionControl.setPrefix("Leaflet"); }
        })({{ this._parent.get_name() }});
        {% endmacro %}
    """)

    def __init__(self) -> None:
        super().__init__()
        self._name = "ControlWords"


def localize(element) -> None:
    """Point every JS/CSS link of `element` and its children at the vendored copies (links with
    no vendored copy are left as they are, for `external_urls` to report); a map's own
    controls get Chinese words (`ControlWords`)."""
    if isinstance(element, folium.Map) and not any(
            isinstance(e, ControlWords) for e in element._children.values()):
        element.add_child(ControlWords())
    for elem in _walk(element):
        if not isinstance(elem, JSCSSMixin):
            continue
        # Instance attributes: folium's class-level lists stay untouched.
        elem.default_js = [(n, vendor_url(VENDORED[n]) if n in VENDORED else u)
                           for n, u in elem.default_js]
        elem.default_css = [(n, vendor_url(VENDORED[n]) if n in VENDORED else u)
                            for n, u in elem.default_css]


def tile_host(url: str) -> str:
    """The host of a tile URL template ({s} taken as "0"), as Basemap.hosts gives it."""
    return urlparse(url.replace("{s}", "0")).netloc


def trim_map_assets(m: folium.Map) -> None:
    """Load only Leaflet itself for the map when nothing on it uses folium.Icon (awesome
    markers, with jQuery, Bootstrap and the icon fonts): streamlit-folium loads scripts one
    after another, so each unused one delays the map. Elements that bring their own assets
    (plugins) keep them."""
    if any(isinstance(e, folium.Icon) for e in _walk(m)):
        return
    m.default_js = [(n, u) for n, u in m.default_js if n == "leaflet"]
    m.default_css = [(n, u) for n, u in m.default_css if n == "leaflet_css"]


def external_urls(element, allowed_hosts: tuple[str, ...] = ()) -> list[str]:
    """Everything `element` would make the browser fetch from another host: script and style
    links (what streamlit-folium loads), src/href attributes in the page header and body, and
    branca colormaps (streamlit-folium adds d3 from a CDN for them). `allowed_hosts`: the tile
    servers the user configured (`tile_host` of their URLs)."""
    found: list[str] = []
    for elem in _walk(element):
        if isinstance(elem, branca.colormap.ColorMap):
            found.append("branca colormap (streamlit-folium loads d3 from d3js.org for it)")
        for _, url in [*getattr(elem, "default_js", []), *getattr(elem, "default_css", [])]:
            if is_external(url):
                found.append(url)
        # Elements that load scripts, styles or data themselves list them (mapview.GridmapLayers).
        for attr in ("js", "css", "prefetch", "boot_url"):
            urls = getattr(elem, attr, None) or []
            found += [u for u in ([urls] if isinstance(urls, str) else urls)
                      if isinstance(u, str) and is_external(u)]
        if (isinstance(elem, folium.TileLayer) and is_external(elem.tiles)
                and tile_host(elem.tiles) not in allowed_hosts):
            found.append(elem.tiles)
    root = element.get_root()
    for part in (getattr(root, "header", None), getattr(root, "html", None)):
        if part is not None:
            found += [u for u in _ATTR_URL.findall(part.render()) if is_external(u)]
    return list(dict.fromkeys(found))


def ensure_offline(element, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Raise OfflineAssetError when the map would load anything from another host."""
    missing = missing_files()
    if missing:
        raise OfflineAssetError(
            "地图前端文件缺失（static/vendor/）：" + "、".join(missing[:5])
            + "。请运行 static/vendor/refresh.sh 恢复，见 static/vendor/ASSETS.md。"
        )
    bad = external_urls(element, allowed_hosts)
    if bad:
        raise OfflineAssetError(
            "地图将从外部网站加载以下资源，内网环境下会导致地图空白，已停止加载："
            + "；".join(bad[:8])
            + "。请在 ui/assets.py 的 VENDORED 中登记本地文件（见 static/vendor/ASSETS.md）。"
        )


@cache
def manifest() -> dict:
    return json.loads((VENDOR_DIR / "manifest.json").read_text(encoding="utf-8"))


def missing_files() -> list[str]:
    """Registered or manifest files that are not on disk."""
    paths = {*VENDORED.values(), *(f["path"] for f in manifest()["files"])}
    return sorted(p for p in paths if not (VENDOR_DIR / p).is_file())
