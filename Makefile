# Two entry points, both self-contained on a fresh machine with Python 3.11 and pip:
#   make run    set up .venv and run the default experiment (configs/default.py)
#   make test   set up .venv with the test extra and run the test suite
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=

# make run installs attnjax alone; make test adds the test extra and the tpu extra (libtpu,
# ~700 MB: the TPU-topology compile tests; without it they are skipped).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -e ".[test,tpu]"
	touch $@

.PHONY: setup run test
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python launch.py $(ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -n 2 --dist worksteal -q -p no:cacheprovider --durations=20 $(PYTEST_ARGS)
