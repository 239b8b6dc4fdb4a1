# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080
BIN := $(VENV)/bin
# The web tests drive Debian's Chromium (no browser downloads are possible in CI).
BROWSER ?= /usr/bin/chromium
# The PostgreSQL tests start a throwaway cluster of Debian's PostgreSQL.
POSTGRES ?= /usr/lib/postgresql
# The shared-limit tests start Debian's Redis server.
REDIS ?= /usr/bin/redis-server

.PHONY: run test install dev lock bench clean

# Debian packages the tests run for real (a browser, PostgreSQL, Redis): installed when missing.
define apt_install
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else \
		echo "The tests need Debian's $(1): sudo apt-get install $(1)" >&2; exit 1; \
	fi
endef

run: $(VENV)/.installed
	$(BIN)/imagegate serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev-installed $(BROWSER) $(POSTGRES) $(REDIS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The lock files pin every transitive dependency, so a fresh install is reproducible.
$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@

$(BROWSER):
	@$(call apt_install,chromium)

$(POSTGRES):
	@$(call apt_install,postgresql)

$(REDIS):
	@$(call apt_install,redis-server)

# Re-resolve the lock files from the ranges in pyproject.toml.
lock: $(BIN)/python
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --strip-extras --no-header --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --strip-extras --no-header --no-emit-index-url --no-emit-find-links --extra dev -o requirements-dev.lock pyproject.toml

# Benchmarks side by side with a pass-through proxy and LiteLLM, on loopback (docs/benchmarks.md).
bench: $(VENV)/.installed
	bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
