#!/usr/bin/env bash
# The test command: installs what the tests need from Debian packages (PostGIS, Chromium, GDAL,
# nginx) when missing, then lints and runs every test. PostGIS is started by the test session
# itself (tests/pg.py) unless GRIDMAP_TEST_DATABASE_URL points at a server.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# A CJK font, so that the screenshots the browser tests save show Chinese, not boxes.
fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || need+=(fonts-wqy-microhei)
# GDAL itself (its validate_gpkg.py, its Python bindings for the system python3, ogrinfo): the
# GeoPackage store is proven with the tools planners open it with (tests/test_gpkg_gdal.py).
/usr/bin/python3 -c "import osgeo.ogr, osgeo_utils.samples.validate_gpkg" >/dev/null 2>&1 \
  || need+=(python3-gdal)
command -v ogrinfo >/dev/null 2>&1 || need+=(gdal-bin)
# nginx with its brotli modules: the production setup is tested for real (tests/test_production.py).
read -ra nginx_need <<< "$(scripts/nginx-packages.sh)"
need+=("${nginx_need[@]}")
if [ -z "${GRIDMAP_TEST_DATABASE_URL:-}" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$pgbin" ] || need+=(postgresql)
  pgver=$(basename "$(dirname "${pgbin:-/usr/lib/postgresql/15/bin}")")
  ls /usr/share/postgresql/"$pgver"/extension/postgis.control >/dev/null 2>&1 \
    || need+=("postgresql-$pgver-postgis-3")
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing from Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

.venv/bin/ruff check .
# Two workers, a test file each at a time (its servers and browser tabs stay in one process):
# the browser tests wait on servers and pages, the rest is CPU (three workers are no faster on
# 2 cores: measured). The longest files go first (tests/conftest.py), so that both workers end
# together; pytest took 15:40–15:55 on 2026-12-03. GRIDMAP_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -n "${GRIDMAP_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
