#!/usr/bin/env bash
# The test command: installs what the tests need from Debian packages (PostGIS, Chromium) when
# missing, then lints and runs every test. PostGIS is started by the test session itself
# (tests/pg.py) unless GRIDMAP_TEST_DATABASE_URL points at a server.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# A CJK font, so that the screenshots the browser tests save show Chinese, not boxes.
fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || need+=(fonts-wqy-microhei)
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
.venv/bin/python -m pytest "$@"
