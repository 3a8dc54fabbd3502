# vamu-tasks: `make demo` runs the main job end to end on embedded defaults; `make test` runs every check.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
NODE_DIR := tests/e2e/node
CLIENT_DIR := clients/node

.PHONY: demo dev test install node-deps node-client lint typecheck format unit integration e2e clean chaos test-live

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_DIR)/node_modules/.package-lock.json

$(CLIENT_DIR)/node_modules/.package-lock.json: $(CLIENT_DIR)/package-lock.json
	npm ci --prefix $(CLIENT_DIR) --no-audit --no-fund --loglevel=error
	touch $@

# The npm package @vamu/ai-jobs (clients/node): builds dist/ (which the e2e tests drive the bridge
# through), runs its node --test tests and type-checks the NestJS example (`npm test` there).
node-client: $(CLIENT_DIR)/node_modules/.package-lock.json
	cd $(CLIENT_DIR) && npm test --silent

demo: install
	$(BIN)/vamu-tasks demo

# Every process on the local PostgreSQL and Redis, Socket.IO on (README, `vamu-tasks dev`).
dev: install
	$(BIN)/vamu-tasks dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check vamu_tasks workers celeryconfig.py
	$(BIN)/vamu-tasks contracts export --check
	$(BIN)/vamu-tasks contracts openapi --check
	node $(CLIENT_DIR)/scripts/generate.mjs --check
	@# The alert rules (deploy/prometheus): syntax, the scrape config, and the rules' unit tests.
	@if command -v promtool >/dev/null; then \
	  promtool check config deploy/prometheus/prometheus.yml && \
	  promtool check rules deploy/prometheus/alerts.yml && \
	  promtool test rules deploy/prometheus/alerts.test.yml; \
	else \
	  echo "lint: promtool not found, alert rules not checked (apt-get install prometheus)"; \
	fi

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format vamu_tasks workers celeryconfig.py

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install node-deps
	$(BIN)/pytest tests/integration -q

e2e: install node-deps node-client
	$(BIN)/pytest tests/e2e -q

# The fault suite (tests/chaos, ~6 min, docs/reliability.md) has its own target; .ci/run runs both.
# The live vendor checks (tests/live) spend real tokens: only `make test-live` runs them.
test: install node-deps node-client lint typecheck
	$(BIN)/pytest -q --ignore=tests/chaos --ignore=tests/live

# Flower's dashboard with tasks of every feature, rendered by headless Chromium to docs/img/
# (needs /usr/bin/chromium and a Redis on 127.0.0.1:6379; see scripts/render_flower.py).
.PHONY: flower-screenshot
flower-screenshot: install
	$(BIN)/python scripts/render_flower.py --out docs/img

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .vamu $(NODE_DIR)/node_modules
	rm -rf $(CLIENT_DIR)/node_modules $(CLIENT_DIR)/dist $(CLIENT_DIR)/build

# Benchmarks (bench/, docs/performance.md). They need PostgreSQL, Redis and Node like the tests.
# `make bench`: the full run (~10 min), results in bench/results/; `make bench-quick`: every
# scenario for a moment (about a minute and a half), so CI keeps the bench working.
.PHONY: bench bench-quick
bench: install node-deps
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py
	$(BIN)/python bench/cost.py

bench-quick: install node-deps
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py --quick
	$(BIN)/python bench/cost.py --quick

# Fault-injection suite (docs/reliability.md): real processes, one fault per test, ~9 minutes.
chaos: install node-deps
	$(BIN)/pytest tests/chaos -q -p no:cacheprovider

# Each feature once against the real OpenAI / Anthropic APIs (a few cents); skips without keys.
test-live: install
	$(BIN)/pytest tests/live -q -rs
