# The two commands: `make run` serves the chat, `make test` runs every check.
# Both create the virtual environment in .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

WEB      := app/web
VENDOR   := app/static/vendor
SIO_DIST := $(WEB)/node_modules/socket.io-client/dist
JS_TESTS := tests/node

# package:file pairs that `make test` needs from the system
SYSTEM_TOOLS := chromium:/usr/bin/chromium nginx:/usr/sbin/nginx redis-server:/usr/bin/redis-server \
                fonts-noto-color-emoji:/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

# Lock files: every machine installs exactly these versions, with hashes.
# requirements.txt is what the server needs (with the tracing extra, so that
# --trace-endpoint works where `make run` installed); client/requirements.txt the Python
# client alone (the same versions); requirements-test.txt adds the test and
# lock tools (and agrees with requirements.txt); bench/requirements.txt adds
# what `make bench` draws its PNGs with. `make lock` redoes all four.
LOCK      := requirements.txt
CLIENT_LOCK := client/requirements.txt
TEST_LOCK := requirements-test.txt
BENCH_LOCK := bench/requirements.txt
UV        := $(BIN)/uv
COMPILE    = printf 'setuptools>=70.1\n' | $(UV) pip compile setup.cfg - --generate-hashes \
             --python-version 3.11 --annotation-style line --custom-compile-command 'make lock' -q

.PHONY: run test test-unit check web tools bench bench-search bench-isolation bench-history bench-api bench-webhooks bench-retention bench-restarts bench-slow-readers bench-large-rooms bench-uploads churn abuse cluster clean lock test-latest test-lowest

run: $(VENV)/.installed-run web  ## serve the chat on http://localhost:8080
	$(BIN)/python -m app

web: $(VENDOR)/.installed  ## the page's browser libraries (socket.io-client, markdown-it, DOMPurify, emoji-picker-element and its data, tus-js-client), pinned in app/web/package-lock.json

tools:  ## Debian packages the tests run: chromium, nginx, redis-server, a colour emoji font (apt-get when missing)
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
	cp $(WEB)/node_modules/markdown-it/dist/browser/markdown-it.esm.min.mjs $(VENDOR)/markdown-it.js
	cp $(WEB)/node_modules/dompurify/dist/purify.es.mjs $(VENDOR)/purify.js
	cp $(WEB)/node_modules/tus-js-client/dist/tus.min.js $(VENDOR)/
	mkdir -p $(VENDOR)/emoji-picker
	cp $(WEB)/node_modules/emoji-picker-element/picker.js \
	   $(WEB)/node_modules/emoji-picker-element/database.js $(VENDOR)/emoji-picker/
	cp $(WEB)/node_modules/emoji-picker-element-data/en/emojibase/data.json $(VENDOR)/emoji-picker/
	touch $@

$(JS_TESTS)/node_modules/.installed: $(JS_TESTS)/package.json $(JS_TESTS)/package-lock.json
	npm ci --prefix $(JS_TESTS) --no-audit --no-fund --loglevel=error
	touch $@

test: $(VENV)/.installed-test web tools $(JS_TESTS)/node_modules/.installed  ## every test (unit, wire, system), the slowest named, then the type and lint checks
	$(BIN)/python -m pytest --durations=15
	$(MAKE) --no-print-directory check

test-unit: $(VENV)/.installed-test  ## the unit tier: the pure cores, the services and the stores with plain calls (under 30 s)
	$(BIN)/python -m pytest tests/unit

check: $(VENV)/.installed-test  ## mypy --strict and flake8
	$(BIN)/mypy
	$(BIN)/flake8 app client tests bench

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

# --no-deps --no-build-isolation: Roomcast itself, built with the locked
# setuptools and nothing else fetched
$(VENV)/.installed-run: $(VENV)/.created $(LOCK) setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-run $(BENCH_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(TEST_LOCK)
	touch $@

lock: $(VENV)/.installed-test  ## pick the newest versions the ranges in setup.cfg allow, into the lock files
	$(COMPILE) --upgrade --extra server --extra tracing --extra s3 -o $(LOCK)
	$(COMPILE) -c $(LOCK) -o $(CLIENT_LOCK)
	$(COMPILE) --upgrade --extra server --extra tracing --extra s3 --extra test --extra dev -c $(LOCK) -o $(TEST_LOCK)
	$(COMPILE) --upgrade --extra server --extra tracing --extra s3 --extra bench -c $(LOCK) -o $(BENCH_LOCK)

# The suite on the newest releases, past setup.cfg's upper bounds too (to try
# an upgrade: app/compat.py says at once if a private name moved), or on the
# lowest versions the ranges allow; each in a virtual environment of its own
# (.venv-latest, .venv-lowest). Nothing is locked.
UPPER_BOUNDED := aiohttp python-engineio python-socketio
test-latest: RESOLVE = --resolution highest --override .venv-latest/unbounded.txt
test-lowest: RESOLVE = --resolution lowest-direct
test-latest test-lowest: $(VENV)/.installed-test web tools $(JS_TESTS)/node_modules/.installed
	rm -rf .venv-$(@:test-%=%)
	$(PYTHON) -m venv .venv-$(@:test-%=%)
	$(if $(filter test-latest,$@),printf '%s\n' $(UPPER_BOUNDED) > .venv-latest/unbounded.txt)
	printf 'setuptools>=70.1\n' | $(UV) pip install --quiet --python .venv-$(@:test-%=%)/bin/python \
	  $(RESOLVE) -r - -e '.[server,test]'
	.venv-$(@:test-%=%)/bin/python -m pip list --format=freeze | grep -iE \
	  '^(aiohttp|python-socketio|python-engineio|redis|msgpack|asyncpg|pytest)=='
	.venv-$(@:test-%=%)/bin/python -m pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest build dist *.egg-info .mypy_cache .pytest_cache $(VENDOR) $(WEB)/node_modules \
	  $(BENCH_NODE)/node_modules

BENCH_NODE := bench/node

$(BENCH_NODE)/node_modules/.installed: $(BENCH_NODE)/package.json $(BENCH_NODE)/package-lock.json
	npm ci --prefix $(BENCH_NODE) --no-audit --no-fund --loglevel=error
	touch $@

bench: $(VENV)/.installed-bench $(BENCH_NODE)/node_modules/.installed  ## S1-S5 (and S1 on PostgreSQL, S1 traced at 1 % and 100 %) vs stock python-socketio and Node socket.io, C1/C2 (two/four nodes on Redis) vs Node with its Redis adapter (about 50 min; BENCH_ARGS="--runs 1")
	$(BIN)/python -m bench $(BENCH_ARGS)

churn: $(VENV)/.installed-run  ## bench/churn.py: thousands of short connections, then leak check
	$(BIN)/python -m bench.churn

abuse: $(VENV)/.installed-run  ## bench/abuse.py: server memory under an unread-ping flood and msgpack amplification
	$(BIN)/python -m bench.abuse

bench-search: $(VENV)/.installed-run  ## bench/search.py: search and history latency over a million messages, both stores
	$(BIN)/python -m bench.search $(BENCH_ARGS)

bench-isolation: $(VENV)/.installed-run  ## bench/isolation.py: others' join, history and send latency while one person floods searches, a million messages, both stores (about 6 min)
	$(BIN)/python -m bench.isolation $(BENCH_ARGS)

bench-history: $(VENV)/.installed-run  ## bench/history.py: history and join-with-since latency over ten million messages, both stores, with the query plans (about 15 min)
	$(BIN)/python -m bench.history $(BENCH_ARGS)

bench-api: $(VENV)/.installed-run  ## bench/api.py: messages per second posted through the HTTP API beside the same through a socket (about 1 min)
	$(BIN)/python -m bench.api $(BENCH_ARGS)

bench-webhooks: $(VENV)/.installed-bench $(BENCH_NODE)/node_modules/.installed  ## bench/webhooks.py: webhook delivery lag at 1,000 events/s beside a socket's, and S1 with ten webhooks beside none (about 8 min)
	$(BIN)/python -m bench.webhooks $(BENCH_ARGS)

bench-retention: $(VENV)/.installed-bench $(BENCH_NODE)/node_modules/.installed  ## bench/retention.py: S1 while retention removes a million messages beside S1 with nothing to remove, both stores (about 20 min; BENCH_ARGS="--runs 1")
	$(BIN)/python -m bench.retention $(BENCH_ARGS)

bench-restarts: $(VENV)/.installed-run tools  ## bench/restarts.py: two nodes behind nginx, 200 clients sending, each node restarted in turn: presence events, lost messages, reconnect spread (about 3 min)
	$(BIN)/python -m bench.restarts $(BENCH_ARGS)

bench-slow-readers: $(VENV)/.installed-run  ## bench/slow_readers.py: readers on links ten times slower than their room, caught up (auth.catch_up) and cut (stock): disconnects, every message once, fast readers' latency, memory (about 3 min)
	$(BIN)/python -m bench.slow_readers $(BENCH_ARGS)

bench-uploads: $(VENV)/.installed-bench $(BENCH_NODE)/node_modules/.installed  ## bench/uploads.py: upload throughput (one, and ten 100 MB files at once), and S1 while ten 100 MB uploads run beside none (about 10 min; BENCH_ARGS="--runs 1")
	$(BIN)/python -m bench.uploads $(BENCH_ARGS)

bench-large-rooms: $(VENV)/.installed-bench $(BENCH_NODE)/node_modules/.installed  ## bench/large_rooms.py: rooms of 1,000 and 10,000 over two nodes, 200 joins and leaves a second: join p99, presence bytes a member, node CPU, coalesced against per-event (about 5 min)
	$(BIN)/python -m bench.large_rooms $(BENCH_ARGS)

cluster: $(VENV)/.installed-run web  ## two nodes + nginx on :8080, on the local Redis and PostgreSQL
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "make cluster needs nginx: apt-get install nginx"; exit 1; }
	$(BIN)/python -m app.tools.cluster
