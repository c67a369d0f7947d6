# `make run` starts the platform, `make test` runs every test; both install what is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run run-ha test lint install redis-server chromium promtool clean bench profile soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[torch,dev]'
	touch $(STAMP)

# A Debian package, when its command is missing and we may install packages:
# $(call apt,<command>,<package>)
define apt
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "$(1) is missing: install it (apt-get install $(2))"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(2) >/dev/null; }
endef

redis-server:
	$(call apt,redis-server,redis-server)

# The tests drive /docs in Debian's chromium (Playwright's own browser download does not work
# without internet).
chromium:
	$(call apt,/usr/bin/chromium,chromium)

# The tests check /metrics with promtool: taken out of Debian's prometheus package into the
# venv, so no Prometheus server is installed (or started) on this machine.
promtool: $(STAMP)
	@command -v promtool >/dev/null 2>&1 || { \
	  tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool $(abspath $(BIN))/ && rm -rf $$tmp; }

install: $(STAMP) redis-server

run: install
	CONVEYOR_LOG__FORMAT=$${CONVEYOR_LOG__FORMAT:-console} $(BIN)/honcho start

# The same platform on a primary, a replica and three sentinels (loopback ports 6391, 6392,
# 26391-26393): kill the primary and watch it keep working (README "Redis Sentinel").
run-ha: install
	CONVEYOR_LOG__FORMAT=$${CONVEYOR_LOG__FORMAT:-console} $(BIN)/honcho -e deploy/local-ha/ha.env -f Procfile.ha start

lint: $(STAMP)
	$(BIN)/ruff check platform tests bench functions
	$(BIN)/ruff format --check platform tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # the import contracts in pyproject.toml

test: install chromium promtool lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .conveyor .pytest_cache .mypy_cache .ruff_cache

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[torch,dev,bench]'
	touch $(BENCH_STAMP)

# Benchmarks against raw Celery (not part of `make test`); see bench/README.md.
bench: install $(BENCH_STAMP)
	$(BIN)/python -m bench.run

# Where the time goes under load: CPU per process and py-spy profiles (bench/spy.py).
profile: install $(BENCH_STAMP)
	for load in echo embed embed-nobatch; do $(BIN)/python -m bench.spy $$load || exit 1; done

# Ten minutes of mixed load with workers killed and Redis restarted (not part of `make test`).
soak: install
	$(BIN)/python -m tests.soak
