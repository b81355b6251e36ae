# Every target sets up what it needs from a fresh clone: its own venv, dependencies
# from the package registries.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# `make run` needs only the runtime set; tests and lint add their extras on top.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP         := $(VENV)/.installed

.PHONY: run test lint e2e bench bench-quick clean redis-server chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -e '.[test,lint,socks,redis]'
	touch $(STAMP)

# No key and no upstream configured: serve against the built-in Kimi simulator.
run: $(RUNTIME_STAMP)
	@if [ -z "$$ZENMUX_API_KEY" ] && [ -z "$$MOONSHOT_BASE_URL" ] && [ -z "$$RAWPROXY_UPSTREAM" ]; then \
		exec $(PY) -m rawproxy --simulator; \
	else \
		exec $(PY) -m rawproxy; \
	fi

test: $(STAMP) redis-server chromium
	$(PY) -m pytest -q

# The Redis store's tests start redis-server and redis-cli of their own (free loopback
# ports, no persistence): Debian's package, installed once when either is missing.
redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
		echo "installing Debian's redis-server package for the Redis store tests"; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq redis-server >/dev/null; }

# The dashboard's test drives a real headless browser: Debian's chromium, through the
# playwright package of the test extra (which never downloads a browser of its own).
chromium:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium package for the dashboard's browser test"; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }

# ruff (E, F, W, I, B, UP) and mypy (check_untyped_defs), as configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check rawproxy tests bench
	$(PY) -m mypy

CLAUDE_DIR := .cache/claude-code
CODEX_DIR  := .cache/codex

# Opt-in: installs Claude Code and Codex CLI from npm into a cache directory and runs each
# headless through the proxy against the simulator.
e2e: $(STAMP)
	@test -x $(CLAUDE_DIR)/node_modules/.bin/claude || npm install --prefix $(CLAUDE_DIR) --no-fund --no-audit @anthropic-ai/claude-code
	@test -x $(CODEX_DIR)/node_modules/.bin/codex || npm install --prefix $(CODEX_DIR) --no-fund --no-audit @openai/codex
	$(PY) -m pytest -q -s -m e2e tests/e2e

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache
