"""What the API sends back: JSON (UTF-8, Chinese as is), Open311's XML (a `.xml` suffix), and
errors in the spec's format — `[{"code": 400, "description": "中文说明"}]` (XML:
`<errors><error><code/><description/></error></errors>`) — on every route, not only Open311's.
"""

from __future__ import annotations

import json
import math
import re
from xml.sax.saxutils import escape

import numpy as np
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson; charset=utf-8"

# Open311's XML names the members of a list after the list (the spec's examples).
XML_ITEMS = {"services": "service", "service_requests": "request", "errors": "error",
             "attributes": "attribute", "values": "value", "endpoints": "endpoint",
             "formats": "format"}


# What XML 1.0 cannot hold at all (C0 controls but tab and line ends, U+FFFE/U+FFFF, lone
# surrogates): one such character in a stored case would make every list that shows it
# unreadable to an XML parser. Dropped from XML text; a carriage return is kept as a reference
# (a parser turns a literal one into a line feed).
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(value: str) -> str:
    """`value` as the text of an XML element."""
    return escape(_XML_ILLEGAL.sub("", value)).replace("\r", "&#13;")


class ApiError(Exception):
    """A refusal with its HTTP status and a description in Chinese (shown to the caller)."""

    def __init__(self, status: int, description: str, headers: dict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}


def _plain(value):
    """numpy scalars as Python ones (json cannot write them)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_bytes(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, default=_plain).encode("utf-8")


def clean(value):
    """NaN and pandas' missing values as null, numpy scalars as Python ones, recursively."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, str | int | float | bool) and _missing(value):
        return None
    return value


def _missing(value) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def wants_xml(path: str) -> bool:
    return path.endswith(".xml")


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json_bytes(data), status_code=status, media_type=JSON_TYPE,
                    headers=headers)


def render(data, root: str, xml: bool, status: int = 200,
           headers: dict | None = None) -> Response:
    """`data` as JSON, or as Open311 XML under the element `root`."""
    if not xml:
        return json_response(data, status, headers)
    return Response(to_xml(root, data).encode("utf-8"), status_code=status,
                    media_type=XML_TYPE, headers=headers)


def to_xml(root: str, data) -> str:
    return '<?xml version="1.0" encoding="utf-8"?>\n' + _element(root, data) + "\n"


def _element(name: str, value) -> str:
    if value is None:
        return f"<{name}/>"
    if isinstance(value, dict):
        return f"<{name}>" + "".join(_element(k, v) for k, v in value.items()) + f"</{name}>"
    if isinstance(value, list | tuple):
        item = XML_ITEMS.get(name, "item")
        return f"<{name}>" + "".join(_element(item, v) for v in value) + f"</{name}>"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = xml_text(str(_plain(value) if isinstance(value, np.generic) else value))
    return f"<{name}>{text}</{name}>"


def error_response(status: int, description: str, path: str = "",
                   headers: dict | None = None) -> Response:
    """The spec's error list (one error), JSON or XML after the path's suffix."""
    return render([{"code": status, "description": description}], "errors", wants_xml(path),
                  status, headers)
