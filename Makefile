# The README's two commands: `make run` (set up + a short autopilot session) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workspace
RUNS ?= 3

.PHONY: setup dev run test test-all bench bench-tuning pufferlib lint clean

# torch first, pinned, so no requirement can pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
dev: $(VENV)/.dev-installed

run: $(VENV)/.installed
	$(VENV)/bin/autopilot run --runs $(RUNS) --mode quick --workdir $(WORKDIR)

# pytest's exit code 5 (no tests collected) fails here like any other non-zero code.
test: $(VENV)/.dev-installed
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.dev-installed
	$(PY) -m pytest -q

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/trainer_throughput.py

# The default advisor vs random / constant / optuna on the same starts and run budget (JOBS=16 on a big box).
JOBS ?= 2
bench-tuning: $(VENV)/.dev-installed
	$(PY) benchmarks/tuning_efficiency.py --jobs $(JOBS) --starts decent timid violent entropy value --markdown --out tuning_results.json

# PufferLib 3.0.0 built from its sdist without the build-time downloads (optional; `make test` needs none of it).
pufferlib: $(VENV)/.dev-installed
	scripts/install_pufferlib.sh $(PY)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist src/*.egg-info
