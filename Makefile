# `make train` / `make test` set everything up on first use: .venv with the package (editable, dev extra).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train train-caption test test-fast lint tensorboard clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m updown_vqa.train $(ARGS)

train-caption: $(STAMP)
	$(PY) -m updown_vqa.train task=caption $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

# Loader/training throughput over batch size x workers x pin_memory; report in outputs/multirun/sweep_loader/<time>/
.PHONY: sweep-loader
sweep-loader: $(STAMP)
	$(PY) -m updown_vqa.bench_sweep -m $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs .pytest_cache
