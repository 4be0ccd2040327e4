# segbench: `make run` runs the whole pipeline on the embedded data; `make test` runs the tests.
# Both create the virtualenv first if it is missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

# The pipeline's commands (`python stages/...`) must find the virtualenv's python.
export PATH := $(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(abspath .prefect)

.PHONY: setup lock run test test-long test-fast bench bench-sliding bench-sweep bench-faults bench-multiclass bench-serving lint format clean

setup: $(STAMP)

# The virtualenv holds exactly the lock file's packages (and segbench, editable); a changed lock
# re-installs.
$(STAMP): pyproject.toml $(LOCK) tools/setup-venv.sh tools/uv-env.sh
	sh tools/setup-venv.sh $(VENV) $(PYTHON) $(LOCK)
	@touch $(STAMP)

# Re-resolve after a change to pyproject.toml's dependencies and commit the lock; pins that still
# fit are kept. LOCK_ARGS=--upgrade takes the newest allowed versions, --upgrade-package NAME one.
# The lock is resolved against PyPI alone (see tools/lock.sh); LOCK_INDEX_URL names another index.
LOCK_ARGS ?=
LOCK_INDEX_URL ?= https://pypi.org/simple

lock:
	LOCK_INDEX_URL=$(LOCK_INDEX_URL) sh tools/lock.sh $(VENV) $(PYTHON) $(LOCK) $(LOCK_ARGS)

run: setup
	dvc repro
	@echo
	@segbench summary reports

# Tests run in parallel, one process per core (pytest-xdist, one torch thread each: conftest.py).
# loadfile keeps each test file on one worker, so a module fixture (the end-to-end pipeline run,
# a trained model, a built report) is made once, not once per worker.
PYTEST_WORKERS ?= auto

test: setup
	pytest -n $(PYTEST_WORKERS) --dist loadfile

# Tests over make test's budget (marked long: four of the five reference studies through dvc
# repro, the longest fault cases): ~5 min on 2 cores.
test-long: setup
	SEGBENCH_LONG=1 pytest -n $(PYTEST_WORKERS) --dist loadfile -m long

# The edit loop: every test not marked slow (no pipeline, server or Ray), under a minute.
test-fast: setup
	pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow"

# Stage timings (3 fresh copies) and a fresh-clone `make run` + `make test`: ~20 min on 2 cores.
bench: setup
	python benchmarks/stage_times.py --repeats 3
	python benchmarks/fresh_clone.py

# Sliding-window inference, segbench's against MONAI's (~6 min on 2 cores). MONAI is installed
# for this benchmark only, beside the virtualenv (--no-deps: it must never change torch).
MONAI_VERSION ?= 1.6.1
SLIDING_ARGS ?=

bench-sliding: setup
	@test -d .bench-deps/monai-$(MONAI_VERSION).dist-info || \
		python -m pip install --no-deps --upgrade --target .bench-deps monai==$(MONAI_VERSION)
	python benchmarks/sliding_window.py $(SLIDING_ARGS)

# Ray Tune sweep scaling: 1 against 2 trials at once on a 2-CPU local Ray, and Ray's overhead per
# trial against a direct train() (~8 min on 2 cores). Until sweep.max_concurrent is honoured, run
# it with SWEEP_ARGS="--sequential-by cpus" (a 1-CPU Ray stands in for max_concurrent 1).
SWEEP_ARGS ?=

bench-sweep: setup
	python benchmarks/sweep_scaling.py $(SWEEP_ARGS)

# Multi-class metrics, segbench's against torchmetrics' (~2 min). torchmetrics is installed for
# this benchmark only, beside the virtualenv (--no-deps: it must never change torch).
TORCHMETRICS_VERSION ?= 1.9.0
bench-multiclass: setup
	@test -d .bench-deps/torchmetrics/torchmetrics || python -m pip install --no-deps --upgrade \
		--target .bench-deps/torchmetrics torchmetrics==$(TORCHMETRICS_VERSION) lightning-utilities==0.15.3
	python benchmarks/multiclass_metrics.py

# The champion served over loopback against in-process, ONNX Runtime against torch (~3 min on 2
# cores). Needs `make run` first: it serves the model the report registered.
bench-serving: setup
	python benchmarks/serving.py

# kill -9 of every stage at seeded random moments, then a rerun (~12 min on 2 cores).
FAULTS_ARGS ?= --seeds 10 --dvc
bench-faults: setup
	python benchmarks/faults.py $(FAULTS_ARGS)

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff format .
	ruff check --fix .

clean:
	rm -rf data/raw data/tiles models eval reports .prefect .cache
