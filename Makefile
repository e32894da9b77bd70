# Two commands for a newcomer: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cardiomm-installed
OUT ?= out

.PHONY: demo test test-gadgetron install clean bench-quick bench-quick-speed

$(STAMP): setup.cfg setup.py pyproject.toml cardiomm_guard.pth .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c .ci/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m gadgets.demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

# Every shipped chain on a real Gadgetron 4.x (tests/gadgetron_real): finds one (GADGETRON_HOME, PATH,
# /opt/gadgetron-4.7.2) or builds it from $(GADGETRON_SRC) (about 30 min once per machine; not with
# GADGETRON_BUILD=0), then streams the scans through it. Skipped with a message where no Gadgetron can be found or built.
GADGETRON_SRC ?= ../shared/gadgetron
GADGETRON_BUILD ?= 1
test-gadgetron: $(STAMP)
	GADGETRON_SRC=$(GADGETRON_SRC) GADGETRON_BUILD=$(GADGETRON_BUILD) bash tests/gadgetron_real/ensure_gadgetron.sh
	CARDIOMM_TEST_GADGETRON=1 $(BIN)/python -m pytest tests/gadgetron_real -p no:cacheprovider

# A small version of the tables of BENCHMARKS.md (a few minutes on a 2-core CPU), under $(OUT)/bench.
# Speed: tiny slice, CardioMM tiny/small, E2E-VarNet at its published size (needs fastmri), CS (needs
# sigpy), CG-SENSE; the chain: a tiny scan through every step, <execute> and the warm worker.
bench-quick: bench-quick-speed
bench-quick-speed: $(STAMP)
	$(BIN)/python benchmarks/speed.py --geometry tiny --methods tiny,small,varnet,cs,cg_sense --dtypes fp32 \
		--warmup 0 --repeats 1 --large-repeats 1 --threads 2 --out $(OUT)/bench/speed_quick.md
	$(BIN)/python benchmarks/chain.py --tiny --out $(OUT)/bench/chain_quick.md

clean:
	rm -rf $(VENV) $(OUT)
