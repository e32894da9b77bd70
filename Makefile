# Two commands for a newcomer: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cardiomm-installed
OUT ?= out

.PHONY: demo test test-fast lint typecheck test-gadgetron install clean bench-quick bench-quick-speed bench-quick-quality

# '.[dev,bench]': the tests and the benchmark peers (sigpy). fastMRI's E2E-VarNet goes in without its
# declared dependencies (they pull torchvision, which does not import beside this torch);
# cardiomm_core.varnet needs only the package itself (see its docstring).
$(STAMP): setup.cfg setup.py pyproject.toml cardiomm_guard.pth .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c .ci/constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet --no-deps -c .ci/constraints.txt fastmri
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m gadgets.tools.demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

# The fast loop while editing: the suite without the tests marked `slow` (`make test` runs them all).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# ruff with the rules of pyproject.toml, then mypy on cardiomm_core and gadgets (the whole tree passes
# both; about a minute on a fresh clone, seconds with mypy's cache). CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# mypy alone.
typecheck: $(STAMP)
	$(BIN)/mypy

# Every shipped chain on a real Gadgetron 4.x (tests/gadgetron_real): finds one (GADGETRON_HOME, PATH,
# /opt/gadgetron-4.7.2) or builds it from $(GADGETRON_SRC) (about 30 min once per machine; not with
# GADGETRON_BUILD=0), then streams the scans through it. Skipped with a message where no Gadgetron can be found or built.
GADGETRON_SRC ?= ../shared/gadgetron
GADGETRON_BUILD ?= 1
test-gadgetron: $(STAMP)
	GADGETRON_SRC=$(GADGETRON_SRC) GADGETRON_BUILD=$(GADGETRON_BUILD) bash tests/gadgetron_real/ensure_gadgetron.sh
	CARDIOMM_TEST_GADGETRON=1 $(BIN)/python -m pytest tests/gadgetron_real -p no:cacheprovider

# A small version of the tables of BENCHMARKS.md (a few minutes on a 2-core CPU), under $(OUT)/bench.
bench-quick: bench-quick-speed bench-quick-quality

# Speed: tiny slice, CardioMM tiny/small, E2E-VarNet at its published size (needs fastmri), CS (needs
# sigpy), CG-SENSE; the chain: a tiny scan through every step, <execute> and the warm worker.
bench-quick-speed: $(STAMP)
	$(BIN)/python benchmarks/speed.py --geometry tiny --methods tiny,small,varnet,cs,cg_sense --dtypes fp32 \
		--warmup 0 --repeats 1 --large-repeats 1 --threads 2 --out $(OUT)/bench/speed_quick.md
	$(BIN)/python benchmarks/chain.py --tiny --out $(OUT)/bench/chain_quick.md

# Quality: the tiny CPU twins of the bench models (train/configs/bench_*_gpu.yaml) trained for a few
# steps, then benchmarks/quality.py --quick on held-out tiny phantoms (every method: zero-filled,
# CG-SENSE, CS, VarNet, CardioSM, small).
BENCH_QUICK ?= $(OUT)/bench
bench-quick-quality: $(STAMP)
	$(BIN)/python -m benchmarks.bench_train --tiny --tiny-steps 20 --out $(BENCH_QUICK)/models --log-level WARNING
	$(BIN)/python -m benchmarks.quality --quick --out $(BENCH_QUICK) \
		--checkpoint small=$(BENCH_QUICK)/models/small.safetensors \
		--checkpoint cardiosm=$(BENCH_QUICK)/models/cardiosm.safetensors \
		--checkpoint varnet=$(BENCH_QUICK)/models/varnet.safetensors
	@echo "bench-quick: quality table in $(BENCH_QUICK)/quality.md"

clean:
	rm -rf $(VENV) $(OUT)
