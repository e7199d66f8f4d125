"""The interactive docs at /docs, offline: FastAPI's own docs page loads Swagger UI from a CDN,
so it is switched off (`docs_url=None`) and this page loads the vendored swagger-ui-dist
(static/vendor/, see ASSETS.md) from the API itself, under a strict CSP: nothing is fetched
from any other host (the spec validator, which would be, is switched off).

The docs and /openapi.json are public: they describe the API and hold no data."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

# static/vendor/, as ui/assets.py names it (not imported: it loads folium).
VENDOR_DIR = Path(__file__).resolve().parent.parent.parent / "static" / "vendor"
SWAGGER = "swagger-ui-dist@5.35.0"
SWAGGER_DIR = VENDOR_DIR / SWAGGER
STATIC_PATH = "/docs/static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

# Relative URLs: the page works behind a reverse proxy that adds a path prefix.
PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · 接口文档</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="docs/static/swagger-ui.css">
</head><body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body></html>
"""

INIT = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  docExpansion: "list",
  defaultModelsExpandDepth: -1
});
"""


def add_docs(app: FastAPI) -> None:
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> Response:
        return HTMLResponse(PAGE.format(title=app.title), headers=headers)

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(INIT, media_type="text/javascript; charset=utf-8", headers=headers)

    app.mount(STATIC_PATH, StaticFiles(directory=SWAGGER_DIR), name="swagger-ui")
