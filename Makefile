# Everything runs from a local virtual environment built from the hash-locked
# requirements; the only thing a fresh machine needs is python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
# The turn benchmark's PostgreSQL (this machine kind's server; empty: SQLite only). The
# benchmark drops Parley's tables there before it starts.
BENCH_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
STAMP := $(VENV)/.installed

.PHONY: run test lint check lock clean docs stack bench bench-smoke soak replicas

# What the service needs to run: no test, lint or benchmark tools (make run, Docker).
$(RUNTIME): requirements/runtime.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Parley's runtime dependencies into $(VENV) (the first time only)"
	# not --quiet: a first install takes a minute or two, and shows what it is doing
	$(BIN)/python -m pip install --progress-bar off --require-hashes -r requirements/runtime.txt
	# the project itself: no dependencies (all locked above), no network for the build backend
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(RUNTIME)

# Everything make test, lint, docs and bench need on top.
$(STAMP): $(RUNTIME) requirements/lock.txt requirements/bench.txt requirements/fuzz.txt
	@echo "Installing the test, lint and benchmark tools into $(VENV) (the first time only)"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/lock.txt
	# the peers the benchmarks compare against (never imported by Parley itself)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/bench.txt
	# schemathesis, for the generated-request tests (constrained by the lock, like the peers)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/fuzz.txt
	touch $(STAMP)

run: $(RUNTIME)
	$(BIN)/parley serve

# Every test, the slowest twenty named, and the coverage of src/parley against its floor
# (fail_under in pyproject.toml). In TEST_PROCESSES processes (pytest-xdist): on two
# cores, three, since most of a test's time is a server, a browser or Prometheus at work
# in another process. A module whose fixture starts something stays in one process, and
# the PostgreSQL tests run in one, one at a time (xdist_group marks, tests/conftest.py).
TEST_PROCESSES ?= 3
test: $(STAMP)
	scripts/prepare-tests.sh
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadgroup --durations=20 --cov --cov-report=term

# Parley + Prometheus + Alertmanager from Debian's packages (see scripts/stack.sh).
stack: $(STAMP)
	scripts/stack.sh

# LiteLLM's proxy, the gateway peer of the turn benchmark, in a virtual environment of
# its own (its dependencies are not Parley's); hash-locked like the rest.
LITELLM_VENV := .venv-litellm
$(LITELLM_VENV)/.installed: requirements/litellm.txt requirements/pip.txt
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	@echo "Installing LiteLLM's proxy into $(LITELLM_VENV) for the turn benchmark (the first time only)"
	# a locked pip first: the venv's bundled one (23.2) rejects litellm.txt's hashed httpx[http2]
	$(LITELLM_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/pip.txt
	$(LITELLM_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/litellm.txt
	touch $@

# Three replicas on this machine's PostgreSQL (database parley_replicas) behind HAProxy,
# Prometheus scraping each and remote-writing to VictoriaMetrics (the multi-replica
# test's set-up, at Parley's defaults), until Ctrl-C.
replicas: $(STAMP)
	scripts/prepare-tests.sh
	$(BIN)/python -m tests.support.replicas

# Benchmarks (not part of `make test`, which runs them once at tiny sizes).
bench: $(STAMP) $(LITELLM_VENV)/.installed
	scripts/prepare-tests.sh
	LITELLM=$(LITELLM_VENV)/bin/litellm PARLEY_BENCH_POSTGRES_URL=$${PARLEY_BENCH_POSTGRES_URL-$(BENCH_POSTGRES_URL)} \
		$(BIN)/python -m bench $(BENCH_ARGS)

# make bench as a fresh machine builds it (the LiteLLM venv included), at tiny sizes: CI
# runs it, so the benchmark cannot rot. No figure means anything at these sizes.
bench-smoke:
	$(MAKE) bench BENCH_ARGS=--quick

# Minutes of mixed clients against parley serve, then exact accounting (not in make test).
# SOAK_ARGS="--seconds 600 --clients 50 --database-url postgresql+asyncpg://..." to vary.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests deploy bench
	$(BIN)/ruff format --check src tests deploy bench
	$(BIN)/mypy src tests bench deploy

# What CI runs before the tests: lint, then every test of the whole tree that is neither
# `integration` (a server, Prometheus, a browser, PostgreSQL, a subprocess) nor `slow`,
# in under a minute, so a broken change fails early. tests/conftest.py fails a test in
# neither tier that starts one of those, so the tier stays true.
check: lint
	$(BIN)/pytest -q -m "not integration and not slow"

# Regenerate requirements/lock.txt after changing pyproject.toml's dependencies.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --no-header --quiet -o requirements/lock.txt
	$(BIN)/uv pip compile pyproject.toml requirements/build.in -c requirements/lock.txt \
		--generate-hashes --python-version 3.11 --no-header --quiet -o requirements/runtime.txt
	$(BIN)/uv pip compile requirements/bench.in -c requirements/lock.txt --generate-hashes \
		--python-version 3.11 --no-header --quiet -o requirements/bench.txt
	$(BIN)/uv pip compile requirements/fuzz.in -c requirements/lock.txt --generate-hashes \
		--python-version 3.11 --no-header --quiet -o requirements/fuzz.txt
	$(BIN)/uv pip compile requirements/pip.in --generate-hashes \
		--python-version 3.11 --no-header --quiet -o requirements/pip.txt

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .pytest_cache .mypy_cache .ruff_cache

# Regenerate what is generated from code: the metric table, rules and dashboards.
docs: $(STAMP)
	$(BIN)/python -m parley.observability.docs docs/metrics.md
	RUNBOOK_URL="$(RUNBOOK_URL)" $(BIN)/python deploy/generate.py
