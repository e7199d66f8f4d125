"""The HTTP API for other systems (the national 12369 platform, the 12345 hotline, WeChat):
Open311 GeoReport v2 for complaints and a MapIt-like point → responsibility lookup.

A thin layer over grids/service.py: every route authenticates the caller's API key
(grids/accounts.py, `gridmap apikey add`), then calls one service method with that actor; the
service checks the permission, routes, registers and audits. Nothing here decides anything.

- `server.py`  the app (`create_api`, `run`): middleware (body limits, access log), errors, docs
- `keys.py`    API keys (query, form or header), the per-key rate limit, the limits' settings
- `open311.py` Open311 GeoReport v2: services, POST/GET requests, discovery
- `routing.py` /route, /point, /areas and the streamed batch POST /route
- `batch.py`   reading a batch body (GeoJSON FeatureCollection or CSV) a chunk at a time
- `formats.py` JSON/XML rendering and the spec's error format
- `docs.py`    the offline /docs page (vendored swagger-ui-dist)
"""
