# Two commands for a newcomer: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cardiomm-installed
OUT ?= out

.PHONY: demo test install clean

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

clean:
	rm -rf $(VENV) $(OUT)
