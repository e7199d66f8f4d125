# The two commands of a fresh machine:
#   make run    set up, build the sample store if missing, start the web map
#   make test   set up (incl. PostGIS and Chromium from Debian packages) and run every test
# and, to serve it for real: make prod (nginx from Debian in front of the app, README)
PY ?= python3
VENV := .venv
STORE ?= data/gridmap.gpkg
PORT ?= 8501
PROD_PORT ?= 8080
PROD_ARGS ?=

.PHONY: run test setup demo lint bench bench-postgis prod

# The project's own modules byte-compiled, as pip compiles the libraries it installs: where
# PYTHONDONTWRITEBYTECODE is set (this machine) every command would compile them again at
# start (0.1 s of a cold `gridmap route` or `assign`). Only what changed is compiled again.
setup: $(VENV)/.installed
	@$(VENV)/bin/python -m compileall -q -j 0 cli.py app.py geo grids layers ui pages > /dev/null

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

$(STORE): | setup
	$(VENV)/bin/gridmap --store $(STORE) demo

demo: setup
	$(VENV)/bin/gridmap --store $(STORE) demo --force

run: setup $(STORE)
	$(VENV)/bin/gridmap --store $(STORE) serve --port $(PORT)

prod: setup $(STORE)
	scripts/serve-production.sh --store $(STORE) --port $(PROD_PORT) $(PROD_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	scripts/test.sh

bench: setup $(STORE)
	$(VENV)/bin/python bench/bench_routing.py --store $(STORE)
	$(MAKE) bench-postgis
	$(VENV)/bin/python bench/bench_map.py --store $(STORE)
	$(VENV)/bin/python bench/bench_dispatch.py --store $(STORE)
	$(VENV)/bin/python bench/bench_api.py --store $(STORE) --workers 2
	$(VENV)/bin/python bench/bench_validate.py --store $(STORE)
	$(VENV)/bin/python bench/bench_phone.py --store $(STORE)

# PostGIS against hand-written SQL (a throwaway cluster; PostgreSQL + PostGIS as for `make test`):
# the sample and ×16 stores, 1M points, 3 rounds; BENCH_POSTGIS_ARGS for e.g. --scales 1
bench-postgis: setup
	$(VENV)/bin/python bench/bench_postgis.py $(BENCH_POSTGIS_ARGS)
