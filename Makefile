# Two commands on a fresh clone:  `make demo`  and  `make test`.  Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: setup setup-test demo test bench clean

setup: $(VENV)/.installed node_modules/.installed

setup-test: setup
	@scripts/ensure-postgres.sh
	@scripts/ensure-chromium.sh
	@scripts/ensure-checkov.sh
	@scripts/ensure-slurm.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/hubfleet demo --port $(PORT)

test: setup-test
	HUBFLEET_REQUIRE_POSTGRES=1 HUBFLEET_REQUIRE_SLURM=1 $(BIN)/pytest -n 2 --dist worksteal --durations=25

bench: setup-test
	$(BIN)/python -m tests.perf.bench_fleet --postgres
	$(BIN)/python -m tests.perf.bench_sweep
	$(BIN)/python -m tests.perf.bench_local_stop
	$(BIN)/python -m tests.perf.bench_rollout
	$(BIN)/python -m tests.perf.bench_load
	$(BIN)/python -m tests.perf.bench_k8s_refresh
	$(BIN)/python -m tests.perf.bench_slurm
	$(BIN)/python -m tests.perf.bench_limits

clean:
	rm -rf $(VENV) node_modules hubfleet-data .pytest_cache
