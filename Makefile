# Pulse — `make demo` runs the whole stack with simulated traffic; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SYSTEM_PACKAGES := prometheus-alertmanager chromium chromium-driver

GBSTATS_VENV := .venv-gbstats
GBSTATS_STAMP := $(GBSTATS_VENV)/.installed-stamp

.PHONY: install system-deps lint format test test-unit gbstats-parity ajs-bundle demo bench clean

# -qq: pip's warnings (e.g. about a configured index location that is absent) would fill
# the first screen of `make demo`; its errors still show.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Pulse and its dependencies into $(VENV) (once; a minute or two)"
	@$(BIN)/pip install -qq --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Segment's browser SDK (@segment/analytics-next) for the browser test and its Node SDK
# (@segment/analytics-node, with its npm dependencies) for the Node test: `npm pack` into the
# ignored .cache/npm (never committed); the versions are the tests' AJS_VERSION and
# NODE_SDK_VERSION.
ajs-bundle: install
	@if command -v npm >/dev/null; then $(BIN)/python -c \
	  "from tests.integration.test_segment_browser import _bundle; print(_bundle())" && \
	  $(BIN)/python -c \
	  "from tests.integration.test_segment_node import _node_sdk; print(_node_sdk())"; \
	else echo "npm missing: the browser test of the Segment API will fail under CI=true"; fi

# The official Segment / RudderStack SDKs the Segment-compatible API is tested with.
SDK_STAMP := $(VENV)/.sdk-tests-stamp
$(SDK_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[sdk-tests]'
	touch $(SDK_STAMP)

install: $(STAMP)

# Debian packages the integration tests need; installed when running as root and missing
# (npm only when there is no npm command: nodejs from elsewhere brings its own).
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -z "$$missing" ]; then echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "missing system packages:$$missing (install them to run every test)"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers, a test file each at a time (the fixtures of a file stay in one process):
# 12 min instead of 16 on 2 cores. PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
test: install $(SDK_STAMP) system-deps lint gbstats-parity ajs-bundle
	TZ=UTC $(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile

test-unit: install
	TZ=UTC $(BIN)/python -m pytest -q tests/unit

# GrowthBook's gbstats 0.8, the reference of insights.experiments, in a venv of its own (it
# pins numpy<2 and pandas<2). gbstats-parity answers the cases afresh, fails if the stored
# tests/data/gbstats_cases.json is stale, and compares ours with the fresh answers.
$(GBSTATS_STAMP):
	test -x $(GBSTATS_VENV)/bin/python || $(PYTHON) -m venv $(GBSTATS_VENV)
	$(GBSTATS_VENV)/bin/pip install --quiet --disable-pip-version-check 'gbstats==0.8.*'
	touch $(GBSTATS_STAMP)

gbstats-parity: install $(GBSTATS_STAMP)
	@fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
	$(GBSTATS_VENV)/bin/python tests/reference/gbstats_cases.py \
	  --out "$$fresh/gbstats_cases.json" --check tests/data/gbstats_cases.json && \
	PULSE_GBSTATS_CASES="$$fresh/gbstats_cases.json" TZ=UTC $(BIN)/python -m pytest -q \
	  -p no:cacheprovider tests/unit/insights/test_experiments.py

# Opens the Business overview in a browser when there is one; make demo DEMO_ARGS=--no-open
demo: install
	@$(BIN)/pulse demo $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/replay_throughput.py

clean:
	rm -rf $(VENV) $(GBSTATS_VENV) .pulse .mypy_cache .ruff_cache
