# The two commands: `make run` serves the chat, `make test` runs every check.
# Both create the virtual environment in .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

WEB      := app/web
VENDOR   := app/static/vendor
SIO_DIST := $(WEB)/node_modules/socket.io-client/dist

# package:binary pairs that `make test` needs from the system
SYSTEM_TOOLS := chromium:/usr/bin/chromium nginx:/usr/sbin/nginx redis-server:/usr/bin/redis-server

.PHONY: run test check web tools bench churn cluster clean

run: $(VENV)/.installed-run web  ## serve the chat on http://localhost:8080
	$(BIN)/python -m app

web: $(VENDOR)/.installed  ## the Socket.IO browser client, pinned in app/web/package-lock.json

tools:  ## Debian packages the tests run: chromium, nginx, redis-server (apt-get when missing)
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  test -x "$${pair#*:}" || missing="$$missing $${pair%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "The tests need these Debian packages:$$missing (sudo apt-get install$$missing)"; \
	    exit 1; \
	  fi; \
	fi

$(VENDOR)/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp $(SIO_DIST)/socket.io.min.js $(SIO_DIST)/socket.io.msgpack.min.js $(VENDOR)/
	touch $@

test: $(VENV)/.installed-test web tools  ## every test, then the type and lint checks
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory check

check: $(VENV)/.installed-test  ## mypy --strict and flake8
	$(BIN)/mypy
	$(BIN)/flake8 app client tests bench

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed-run: $(VENV)/.created setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache $(VENDOR) $(WEB)/node_modules \
	  $(BENCH_NODE)/node_modules

BENCH_NODE := bench/node

$(BENCH_NODE)/node_modules/.installed: $(BENCH_NODE)/package.json $(BENCH_NODE)/package-lock.json
	npm ci --prefix $(BENCH_NODE) --no-audit --no-fund --loglevel=error
	touch $@

bench: $(VENV)/.installed-run $(BENCH_NODE)/node_modules/.installed  ## S1-S4 vs stock python-socketio and Node socket.io (about 15 min; BENCH_ARGS="--runs 1")
	$(BIN)/python -m bench $(BENCH_ARGS)

churn: $(VENV)/.installed-run  ## bench/churn.py: thousands of short connections, then leak check
	$(BIN)/python -m bench.churn

cluster: $(VENV)/.installed-run web  ## two nodes + nginx on :8080, on the local Redis and PostgreSQL
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "make cluster needs nginx: apt-get install nginx"; exit 1; }
	$(BIN)/python -m app.cluster
