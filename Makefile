# Every target does its own set-up on a fresh clone: it creates .venv and installs the toolkit.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean-venv

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash bench/../scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check probe analyses protect tests bench anti_i2v_cli.py

bench: $(STAMP)
	$(BIN)/python bench/probe_overhead.py

clean-venv:
	rm -rf $(VENV)
