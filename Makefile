# `make train` / `make test` set everything up on first use: .venv with the package (editable, dev extra).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train train-caption train-detector shapes-regions test test-fast lint tensorboard clean slurm-up slurm-down

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# evaluate --task caption runs the COCO toolkit's Java tokeniser and METEOR: install a JRE only where missing
	@command -v java >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq default-jre-headless; } \
	  || echo "warning: no Java runtime; evaluate --task caption needs one (apt-get install default-jre-headless)"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m updown_vqa.train $(ARGS)

train-caption: $(STAMP)
	$(PY) -m updown_vqa.train task=caption $(ARGS)

train-detector: $(STAMP)
	$(PY) -m updown_vqa.train_detector $(ARGS)

# VQA on shapes with bottom-up regions from the trained detector (docs/extraction.md):
# train the detector (reported, not retrained, when its run has finished), extract, train.
DATA ?= data
OUTPUTS ?= outputs
DETECTOR ?= $(OUTPUTS)/runs/detector_shapes/checkpoints/best.ckpt
shapes-regions: $(STAMP)
	$(PY) -m updown_vqa.train_detector paths.data_dir=$(DATA) paths.log_dir=$(OUTPUTS)
	for split in train val; do \
	  $(PY) -m updown_vqa.extract mode=regions images=$(DATA)/shapes/images/$$split \
	    out=$(DATA)/shapes/shapes_$${split}_regions.h5 weights=$(DETECTOR) image_size=128 \
	    spatial_features=true detector.region_features=box_head paths.log_dir=$(OUTPUTS) || exit 1; \
	done
	$(PY) -m updown_vqa.train experiment=shapes_regions paths.data_dir=$(DATA) paths.log_dir=$(OUTPUTS) $(ARGS)

# The paper's ablations (docs/experiments.md): ablation=base,relu,product,blind x seed=0,1,2 on smaller
# shapes, into $(OUTPUTS)/multirun/ablations/<overrides>/; run again to resume; then the report against base.
.PHONY: ablations
ablations: $(STAMP)
	$(PY) -m updown_vqa.train -m experiment=ablations paths.log_dir=$(OUTPUTS) $(ARGS); \
	$(PY) -m updown_vqa.report $(OUTPUTS)/multirun/ablations --baseline ablation=base

# The demo page on localhost (docs/demo.md): make demo ARGS="ckpt=outputs/runs/<name>/checkpoints/best.ckpt [port=7860]"
.PHONY: demo
demo: $(STAMP)
	$(PY) -m updown_vqa.demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

# Loader/training throughput over batch size x workers x pin_memory; report in outputs/multirun/sweep_loader/<time>/
.PHONY: sweep-loader
sweep-loader: $(STAMP)
	$(PY) -m updown_vqa.bench_sweep -m $(ARGS)

# The same sweep for the end-to-end model, whose loader decodes images (docs/end_to_end.md)
.PHONY: sweep-images
sweep-images: $(STAMP)
	$(PY) -m updown_vqa.bench_sweep -m --config-name sweep_images $(ARGS)

# Loader + training benchmarks at VQA v2 sizes on one GPU (~5 min; docs/throughput.md): bench_gpu.json and
# bench_gpu.md in $(OUTPUTS)/bench_gpu. Runs with the machine's own python3 (torch, Lightning, h5py) and no
# venv: nothing on its path imports Hydra or spaCy. Wheels in wheels/ (say, pytorch-lightning where only
# the `lightning` package is installed) are installed first, offline. Without a GPU: one error line, exit 1.
.PHONY: bench-gpu
bench-gpu:
	@if ls wheels/*.whl >/dev/null 2>&1; then $(PYTHON) -m pip install --quiet --no-index --find-links wheels wheels/*.whl; fi
	PYTHONPATH=src $(PYTHON) -m updown_vqa.bench gpu --out $(OUTPUTS)/bench_gpu $(ARGS)

# A single-node SLURM cluster on this machine (root; installs Debian's packages where missing; docs/clusters.md)
slurm-up:
	bash scripts/slurm-cluster.sh up

slurm-down:
	bash scripts/slurm-cluster.sh down

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs .pytest_cache

# The whole VQA v2 pipeline at a fraction of its real size (docs/scale.md), e.g.
#   make bench-scale ARGS="--fraction 0.1 --dir /tmp/scale"
# per-stage wall/CPU time, peak RSS, worker PSS and output size in DIR/scale_F_DTYPE.json and .md.
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(PY) -m updown_vqa.bench scale $(ARGS)
