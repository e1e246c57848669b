# `make profile` and `make test` set themselves up: they use this machine's python3 when it already has
# every package (as on a GPU machine with no network), else a local .venv installed from the registry.
PYTHON ?= python3
NEEDS := torch, triton, yaml, jinja2, rich, matplotlib, pytest
HAVE := $(shell $(PYTHON) -c "import $(NEEDS)" >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE),yes)
  PY := $(PYTHON)
  DEPS :=
else
  PY := .venv/bin/python
  DEPS := .venv/.installed
endif
ARGS ?=
STAGE ?=
STAGE_ARG := $(if $(STAGE),--stage $(STAGE),)

.PHONY: profile report gate test list deps python clean-reports

profile: $(DEPS)
	$(PY) -m pipeline profile $(STAGE_ARG) $(ARGS)

report: $(DEPS)
	$(PY) -m pipeline report $(ARGS)

gate: $(DEPS)
	$(PY) -m pipeline gate $(ARGS)

list: $(DEPS)
	$(PY) -m pipeline list

test: $(DEPS)
	$(PY) -m pytest -q $(ARGS)

deps: $(DEPS)

# the interpreter the targets use: CI calls `$(make -s python) -m pipeline ...` itself, because make turns
# every failing exit code into 2
python:
	@echo $(PY)

# torch==2.13.0 first: on CPU machines it is a local CPU build; a bare `torch` would pull GBs of CUDA wheels.
.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip
	.venv/bin/python -m pip install -q torch==2.13.0 || .venv/bin/python -m pip install -q torch
	.venv/bin/python -m pip install -q -e '.[test]'
	touch $@
