"""Drawing a line or an area on the city map (a polluted river stretch, a plume): Leaflet.draw
1.0.4 (vendored), with Chinese labels, one shape at a time."""

from __future__ import annotations

import folium
import folium.plugins
from branca.element import MacroElement
from jinja2 import Template

from ui import assets

SHAPE = {"color": "#d81b60", "weight": 4, "opacity": 0.9, "fillOpacity": 0.15}
# L.drawLocal entries the toolbar shows (Leaflet.draw's defaults are English).
LABELS = {
    "draw": {
        "toolbar": {
            "actions": {"title": "取消绘制", "text": "取消"},
            "finish": {"title": "完成绘制", "text": "完成"},
            "undo": {"title": "删除最后一个点", "text": "撤销上一点"},
            "buttons": {"polyline": "画线（如受污染的河段）", "polygon": "画面（如烟羽、污染区域）",
                        "rectangle": "画矩形范围"},
        },
        "handlers": {
            "polyline": {"tooltip": {"start": "单击开始画线", "cont": "单击继续画线",
                                     "end": "单击最后一点结束画线"},
                         "error": "<strong>错误：</strong>线不能自相交"},
            "polygon": {"tooltip": {"start": "单击开始画面", "cont": "单击继续画面",
                                    "end": "单击第一个点闭合"}},
            "rectangle": {"tooltip": {"start": "按住鼠标拖出矩形"}},
            "simpleshape": {"tooltip": {"end": "松开鼠标完成"}},
        },
    },
    "edit": {
        "toolbar": {
            "actions": {"save": {"title": "保存", "text": "保存"},
                        "cancel": {"title": "取消", "text": "取消"},
                        "clearAll": {"title": "清除全部", "text": "清除全部"}},
            "buttons": {"edit": "编辑", "editDisabled": "没有可编辑的图形",
                        "remove": "删除图形", "removeDisabled": "没有可删除的图形"},
        },
        "handlers": {"remove": {"tooltip": {"text": "单击要删除的图形"}}},
    },
}


class DrawSetup(MacroElement):
    """Runs before the draw control is made: Chinese labels, and a new drawing replaces the
    previous one (a case has one extent)."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map, shapes, labels) {
            function merge(into, from) {
                for (var k in from) {
                    if (typeof from[k] === "object" && into[k]) { merge(into[k], from[k]); }
                    else { into[k] = from[k]; }
                }
            }
            if (window.L && L.drawLocal) { merge(L.drawLocal, labels); }
            map.on("draw:drawstart", function () { shapes.clearLayers(); });
        })({{ this._parent.get_name() }}, {{ this.shapes.get_name() }}, {{ this.labels|tojson }});
        {% endmacro %}
    """)

    def __init__(self, shapes: folium.FeatureGroup) -> None:
        super().__init__()
        self._name = "DrawSetup"
        self.shapes = shapes
        self.labels = LABELS


def add_draw(m: folium.Map) -> None:
    """Add the line/area drawing tools to `m` (after its other elements)."""
    shapes = folium.FeatureGroup(name="事件范围", control=False)
    shapes.add_to(m)
    DrawSetup(shapes).add_to(m)
    folium.plugins.Draw(
        feature_group=shapes, show_geometry_on_click=False, position="topleft",
        draw_options={"polyline": {"shapeOptions": SHAPE},
                      "polygon": {"shapeOptions": SHAPE, "allowIntersection": False},
                      "rectangle": {"shapeOptions": SHAPE},
                      "circle": False, "marker": False, "circlemarker": False},
        edit_options={"edit": False, "remove": True},
    ).add_to(m)
    assets.localize(m)
