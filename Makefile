# Set-up and main jobs. Every target creates .venv from requirements.txt when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where the raw datasets live (each in its own folder with a SOURCE.md).
DATA_DIR ?= ../shared/data
# Everything the demo writes goes under this folder.
RUN_DIR ?= runs/demo
# Passes over the trivago training split in the demo.
DEMO_EPOCHS ?= 6
# Extra pytest arguments, for example PYTEST_ARGS="-k losses".
PYTEST_ARGS ?=
# pytest-xdist workers; each test file runs whole on one worker (--dist loadfile), so
# module-scoped fixtures such as the Beam and cluster runs are built once. 0 runs serially.
TEST_WORKERS ?= 2

.PHONY: demo demo-synthetic test lint venv clean-venv

venv: $(VENV)/.installed

# One pip resolve of the pinned file; a stamp records that it finished.
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	$(PY) -m pip check
	@touch $@

demo: venv
	DATA_DIR="$(DATA_DIR)" RUN_DIR="$(RUN_DIR)" EPOCHS="$(DEMO_EPOCHS)" PY="$(PY)" bash scripts/demo.sh

demo-synthetic: venv
	SOURCE=synthetic RUN_DIR="$(RUN_DIR)-synthetic" EPOCHS="$(DEMO_EPOCHS)" PY="$(PY)" bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS) tests

lint: venv
	$(PY) -m ruff check seqmd_tf pipelines export benchmarks tests

clean-venv:
	rm -rf $(VENV)
