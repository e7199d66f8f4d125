#!/usr/bin/env bash
# The production web server (README "Production serving"): installs nginx and its brotli modules
# from Debian packages when missing, then runs `gridmap serve --production` — nginx in front of
# the app, both stopped by Ctrl-C. Arguments go to gridmap, e.g.
#   scripts/serve-production.sh --store data/gridmap.gpkg --port 8080 --host 0.0.0.0
#   scripts/serve-production.sh --store postgresql://… --app-processes 4   (README "Production:
#   more than one process": nginx keeps each session on one of the 4 app processes)
set -euo pipefail
cd "$(dirname "$0")/.."

read -ra need <<< "$(scripts/nginx-packages.sh)"
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing from Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

store=()
if [ "${1:-}" = "--store" ]; then store=(--store "$2"); shift 2; fi
exec .venv/bin/gridmap "${store[@]}" serve --production "$@"
