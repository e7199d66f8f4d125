"""Readable HTML cards of routing answers, entities and search hits.

Every piece of text from the data (names, addresses, descriptions, reasons) goes through
`esc`: a company called `<img src=x onerror=alert(1)>` is shown as those characters.

Text for the map goes through `js_html` instead: folium writes tooltip (and popup) HTML into a
JavaScript template literal, where HTML escaping alone does not help — a name with a backtick
or `${…}` would run as script when the map is drawn.
"""

from __future__ import annotations

import re
from html import escape
from zoneinfo import ZoneInfo

from grids import deadlines
from grids.answer import FLAG_ZH
from layers.schema import BUREAU_LEVEL_ZH, GRID_KIND_ZH, PARK_KIND_ZH, WORKER_ROLE_ZH

STATUS_CLASS = {"ok": "ok", "ambiguous": "warn", "outside": "out"}
BEIJING = ZoneInfo("Asia/Shanghai")
BEIJING_NOTE = "（北京时间）"

CSS = """<style>
.gm-card{font-size:0.92rem;line-height:1.45;border:1px solid #d0d7de;border-radius:8px;
 padding:0.7rem 0.85rem;background:#fff}
.gm-card h4{margin:0 0 0.35rem 0;font-size:1rem}
.gm-badge{display:inline-block;padding:0 0.45rem;border-radius:4px;font-weight:600;color:#fff;
 margin-right:0.4rem}
.gm-ok .gm-badge{background:#2e7d32}.gm-warn .gm-badge{background:#e65100}
.gm-out .gm-badge{background:#616161}
.gm-meta{color:#57606a;font-size:0.82rem}
.gm-card table{border-collapse:collapse;width:100%;margin:0.4rem 0}
.gm-card th{text-align:left;white-space:nowrap;color:#57606a;font-weight:500;padding:2px 8px 2px 0;
 vertical-align:top;width:6.5em}
.gm-card td{padding:2px 0;vertical-align:top}
.gm-code{color:#57606a;font-family:monospace;font-size:0.82rem}
.gm-chem{color:#c62828;font-weight:600}
.gm-cand{border-top:1px dashed #d0d7de;margin-top:0.35rem;padding-top:0.35rem}
.gm-reasons{margin:0.3rem 0 0 1.1rem;padding:0;color:#24292f;font-size:0.85rem}
.gm-flag{display:inline-block;background:#fff3cd;border:1px solid #e0c46c;border-radius:4px;
 padding:0 0.35rem;margin-right:0.25rem;font-size:0.8rem}
</style>"""


def esc(value: object) -> str:
    """Text as HTML (element content or a quoted attribute value). Only for HTML that stays
    HTML (st.html cards): text that reaches folium/JavaScript goes through `js_html`."""
    return escape("" if value is None else str(value), quote=True)


# Characters that mean something in JavaScript source but not in HTML text, as the HTML
# character references that render the same: the backtick ends a template literal, `${` starts
# code in one, a backslash starts an escape (`\u0060`…), and line breaks end a quoted string.
_JS_SPECIAL = str.maketrans({"`": "&#96;", "$": "&#36;", "\\": "&#92;", "\n": "&#10;",
                             "\r": "&#13;", "\u2028": "&#8232;", "\u2029": "&#8233;"})


def js_html(value: object) -> str:
    """HTML that is safe inside a JS template literal: text escaped for HTML (`esc`) and with
    every character JavaScript would act on (backtick, `$`, backslash, line breaks) written as
    a character reference, which the browser shows as the same character.

    Use it for every text that reaches folium: `folium.Tooltip`/`folium.Popup` text (folium puts
    it between backticks in the map script, and streamlit-folium `eval`s the highlight layer),
    `DivIcon` html, GeoJson properties shown by `GeoJsonTooltip`, and layer names. The result
    contains no `<`, `>`, quote, backtick, `$` or backslash, so it cannot end the template
    literal, start `${…}`, close the `<script>` or leave a quoted string or attribute."""
    return esc(value).translate(_JS_SPECIAL)


# One way to show times, for pages and the domain's exports alike (grids/deadlines.py).
beijing_text = deadlines.beijing_text


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(value: object) -> str:
    """Text from the data, safe inside st.markdown/st.caption: markdown syntax is escaped, so
    a name like "[点此](javascript:…)" stays text."""
    return _MD_SPECIAL.sub(r"\\\1", "" if value is None else str(value))


def lines_md(text: str) -> str:
    """A message of several lines ("问题：\n  - …\n  - …") for st.error/st.warning: each line
    escaped and kept on its own (markdown would run them into one paragraph)."""
    return "  \n".join(md(line.strip()) for line in str(text).splitlines() if line.strip())


def _ref(d: dict | None, kinds: dict[str, str] | None = None, key: str = "kind",
         missing: str = "—") -> str:
    if not d:
        return missing
    extra = ""
    if kinds and d.get(key):
        label = kinds.get(d[key], d[key])
        cls = ' class="gm-chem"' if d[key] == "chemical_park" else ""
        extra = f" · <span{cls}>{esc(label)}</span>"
    return f'{esc(d.get("name"))} <span class="gm-code">{esc(d.get("code"))}</span>{extra}'


def _workers(workers: list[dict]) -> str:
    if not workers:
        return "—"
    return "<br>".join(
        f'{esc(WORKER_ROLE_ZH.get(w.get("role"), w.get("role")))} {esc(w.get("name"))} '
        f'<a href="tel:{esc(w.get("phone"))}">{esc(w.get("phone"))}</a>'
        for w in workers
    )


def _rows(items: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{body}</table>"


def route_card(answer: dict, bureau_names: dict[str, str] | None = None,
               title: str = "该位置的责任归属") -> str:
    """The routing answer (the JSON of `gridmap route`) as an HTML card."""
    bureau_names = bureau_names or {}
    status = answer.get("status", "")
    cls = STATUS_CLASS.get(status, "out")
    point = answer.get("point", {})
    lon, lat = point.get("cgcs2000", [None, None])
    where = f"{lon:.6f}, {lat:.6f}" if lon is not None else ""
    accuracy = point.get("input", {}).get("accuracy_m") or 0
    version = answer.get("version", {})
    flags = "".join(f'<span class="gm-flag">{esc(FLAG_ZH.get(f, f))}</span>'
                    for f in answer.get("flags", []))
    head = (
        f'<h4>{esc(title)}</h4>'
        f'<div><span class="gm-badge">{esc(answer.get("status_zh", status))}</span>{flags}</div>'
        f'<div class="gm-meta">位置（CGCS2000/WGS84）<span class="gm-point">{esc(where)}</span>'
        + (f" ±{accuracy:g} 米" if accuracy else "")
        + f' · 图层版本 {esc(version.get("generation"))}</div>'
    )
    # When ambiguous, a field the candidates disagree on is empty: say so, do not show "—".
    open_ = '<span class="gm-meta">各候选不同，见下</span>' if answer.get("candidates") else "—"
    bureau = answer.get("bureau")
    bureau_text = open_
    if bureau:
        bureau_text = _ref(bureau, BUREAU_LEVEL_ZH, "level")
    chain = " → ".join(esc(bureau_names.get(c, c)) for c in answer.get("chain", []))
    rows = [
        ("县（市）、区", _ref(answer.get("county"), missing=open_)),
        ("乡镇/街道", _ref(answer.get("township"), missing=open_)),
        ("网格", _ref(answer.get("grid"), GRID_KIND_ZH, missing=open_)),
        ("网格员", _workers(answer.get("workers", [])) if answer.get("workers")
         or not answer.get("candidates") else open_),
        ("园区", "<br>".join(_ref(p, PARK_KIND_ZH) for p in answer.get("parks", [])) or "—"),
    ]
    if answer.get("sea_area"):
        rows.append(("海域", _ref(answer["sea_area"])))
    rows.append(("责任执法机构", bureau_text))
    if chain:
        rows.append(("上级", chain))
    co = [b for b in answer.get("co_bureaus", []) if b]
    if co:
        rows.append(("协办", "<br>".join(_ref(b, BUREAU_LEVEL_ZH, "level") for b in co)))
    body = _rows(rows)
    cands = answer.get("candidates", [])
    if cands:
        parts = []
        for i, c in enumerate(cands, start=1):
            # Which reading of an unstated pair this candidate comes from (WGS84 / GCJ-02).
            reading = f'（{esc(c["reading"])}）' if c.get("reading") else ""
            parts.append(
                f'<div class="gm-cand"><b>候选 {i}{reading}</b>'
                + _rows([
                    ("县（市）、区", _ref(c.get("county"))),
                    ("乡镇/街道", _ref(c.get("township"))),
                    ("网格", _ref(c.get("grid"), GRID_KIND_ZH)),
                    ("网格员", _workers(c.get("workers", []))),
                    ("责任执法机构", _ref(c.get("bureau"), BUREAU_LEVEL_ZH, "level")),
                ])
                + "</div>"
            )
        body += "".join(parts)
    reasons = "".join(f"<li>{esc(r)}</li>" for r in answer.get("reasons", []))
    body += f'<div class="gm-meta">依据</div><ul class="gm-reasons">{reasons}</ul>'
    return f'{CSS}<div class="gm-card gm-route-card gm-{cls}">{head}{body}</div>'


def hit_card(hit, answer: dict | None = None, bureau_names: dict[str, str] | None = None) -> str:
    """A search hit: what it is, and the routing answer at its position when there is one."""
    head = (f'{CSS}<div class="gm-card gm-hit-card"><h4>{esc(hit.kind_zh)}：{esc(hit.label)}</h4>'
            f'<div class="gm-meta">{esc(hit.detail)}</div></div>')
    if answer is None:
        return head
    return head + route_card(answer, bureau_names, title="其位置的责任归属")


def error_card(message: str) -> str:
    return (f'{CSS}<div class="gm-card gm-out"><span class="gm-badge">无法查询</span>'
            f"{esc(message)}</div>")
