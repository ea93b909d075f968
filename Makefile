# `make run` and `make test`, plus `make check` (lint and types), `make bench` and `make docs`.
# Each builds .venv from requirements.txt when it is missing or older than requirements.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench docs clean

run: $(STAMP) .env
	$(BIN)/twistd -n --pidfile= tradehub

test: $(STAMP)
	$(BIN)/trial tests

# Lint and type-check; settings in pyproject.toml.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

docs: $(STAMP)
	$(BIN)/python -m tradehub.codegen.protocol_doc
	$(BIN)/python -m tradehub.codegen.cpp_header
	$(BIN)/python -m tradehub.codegen.schema_doc

# The repo root goes on the venv's sys.path through a .pth file, so that
# `twistd` finds twisted/plugins/ and `tap` without installing the package.
$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		| xargs -I{} sh -c 'echo "$(CURDIR)" > "{}/tradehub-root.pth"'
	touch $@

.env:
	cp .env.example .env

clean:
	rm -rf $(VENV) _trial_temp
