"""Write the notebooks of this folder from the cells below, without outputs: `python notebooks/make_notebooks.py`.

Edit the cells here rather than in Jupyter, so that the committed notebooks stay output-free and
reviewable; tests/test_notebooks.py runs each one top to bottom.
"""

from __future__ import annotations

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = '''\
%matplotlib inline
import os

import updown_vqa.core.paths

# The notebooks keep their own small data and runs (data/notebooks, outputs/notebooks), apart from
# the command line's data/shapes and outputs/runs; the test suite points UPDOWN_NOTEBOOKS_DIR elsewhere.
WORK = os.environ.get("UPDOWN_NOTEBOOKS_DIR", updown_vqa.core.paths.project_root())
DATA_DIR = os.path.join(WORK, "data", "notebooks")
OUT_DIR = os.path.join(WORK, "outputs", "notebooks")'''

SMALL = '''\
# A few hundred 64-pixel images and a small model: a minute on a laptop CPU.
SMALL = ["data.builder.num_train_images=300", "data.builder.num_val_images=100", "data.builder.image_size=64",
         "data.batch_size=64", "model.hidden_dim=64", "model.embed_dim=32", "model.warmup_epochs=0.5"]'''

QUICKSTART = [
    new_markdown_cell("""\
# Quickstart: train, evaluate and ask a question

The same pieces as `python -m updown_vqa.train`, one at a time: the Hydra config, the DataModule and
the model built from it, a short training run on the built-in `shapes` dataset, the validation
metrics, the official VQA evaluation of the predictions, and one question answered and drawn."""),
    new_code_cell(SETUP),
    new_markdown_cell("""\
## The config

`hydra.compose` gives the config `python -m updown_vqa.train` would run, overrides included.
`paths.output_dir` is set here: on the command line Hydra sets it to the run folder."""),
    new_code_cell(SMALL + '''
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

RUN_DIR = os.path.join(OUT_DIR, "quickstart")
with initialize_config_dir(updown_vqa.core.paths.config_dir(), version_base="1.3"):
    cfg = compose("config", overrides=[f"paths.data_dir={DATA_DIR}", f"paths.output_dir={RUN_DIR}", *SMALL,
                                       "trainer.max_epochs=1"])
print(OmegaConf.to_yaml(cfg.model))'''),
    new_markdown_cell("""\
## Data and model

`prepare_data` draws the images, writes the questions in the VQA v2 format and extracts region
features the first time (under `data/notebooks/shapes`); `setup` reads them. The model is sized from
the data: vocabulary, answers and feature size."""),
    new_code_cell('''\
import pytorch_lightning as pl
from hydra.utils import instantiate

from updown_vqa.core.training import build_model

pl.seed_everything(cfg.seed)
datamodule = instantiate(cfg.data)
datamodule.prepare_data()
datamodule.setup("fit")
model = build_model(cfg, datamodule)
print(f"{len(datamodule.datasets['train'])} training questions, {len(datamodule.vocab)} words, "
      f"{len(datamodule.answers)} answers, {datamodule.feature_dim}-d region features")
print(model.model)'''),
    new_markdown_cell("""\
## Train

Callbacks and loggers come from the config too: checkpoints in `checkpoints/`, `metrics.csv`, and
TensorBoard logs in `tensorboard/` of the run folder. See them with `make tensorboard` (all of
`outputs/`), or in the notebook with `%load_ext tensorboard` then `%tensorboard --logdir {RUN_DIR}`."""),
    new_code_cell('''\
callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
loggers = [instantiate(c) for c in cfg.logger.values() if c]
trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
trainer.fit(model, datamodule=datamodule)'''),
    new_markdown_cell("## Evaluate"),
    new_code_cell('''\
trainer.validate(model, datamodule=datamodule)'''),
    new_markdown_cell("""\
The same accuracy from the official evaluation of the predictions, as `python -m updown_vqa.predict`
writes them (EvalAI format), with the questions encoded by the model's own vocabulary."""),
    new_code_cell('''\
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.inference import predict_vqa, question_loader
from updown_vqa.vqa.preprocess import load_json

val = OmegaConf.to_container(cfg.data.val, resolve=True)
loader = question_loader(model.hparams, val, "val")
results, _ = predict_vqa(model.eval(), loader)
questions, annotations = load_json(val["questions"], "questions"), load_json(val["annotations"], "annotations")
report = evaluate(questions, annotations, results)
print(results[:3])
print("accuracy", report["overall"], report["perAnswerType"])'''),
    new_markdown_cell("""\
## One question

What the model answers, and where it looks: each region shaded by its top-down attention weight
(`python -m updown_vqa.visualize` draws the same picture to a PNG)."""),
    new_code_cell('''\
from updown_vqa.core.viz import figure
from updown_vqa.vqa.pictures import vqa_picture

images = os.path.join(DATA_DIR, "shapes", "images", "val")
picture = vqa_picture(model, val, questions[0]["question_id"], images, dataset=loader.dataset)
print(picture["question"], "->", picture["answers"][0])
figure(picture)'''),
    new_markdown_cell("""\
Any question about that image: `answer_image` tokenises it with the model's vocabulary and extracts
the image's features the way the training features were made (here at the image's region boxes)."""),
    new_code_cell('''\
from updown_vqa.vqa.inference import answer_image

answer_image(model, picture["image"], "is there a red circle?", boxes=picture["boxes"], top_k=3)'''),
]

ATTENTION = [
    new_markdown_cell("""\
# Attention: where the model looks, right and wrong, and accuracy per question template

Give a checkpoint and the data folder it was trained on, or leave them `None` to train a tiny model
here (about a minute on a CPU; a second run of the notebook reuses it)."""),
    new_code_cell('''\
CKPT = None       # e.g. "../outputs/runs/shapes_updown/checkpoints/last.ckpt"
CKPT_DATA = None  # the paths.data_dir it was trained on, e.g. "../data"; None: the notebooks' small data'''),
    new_code_cell(SETUP + '''
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

data_dir = os.path.abspath(CKPT_DATA) if CKPT_DATA else DATA_DIR'''),
    new_code_cell(SMALL + '''
from updown_vqa.vqa.inference import load_vqa_model as load_model
from updown_vqa.core.training import train

RUN_DIR = os.path.join(OUT_DIR, "attention")
small = [] if CKPT else [*SMALL, "trainer.max_epochs=4"]
with initialize_config_dir(updown_vqa.core.paths.config_dir(), version_base="1.3"):
    cfg = compose("config", overrides=[f"paths.data_dir={data_dir}", f"paths.output_dir={RUN_DIR}", *small])
if CKPT is None:  # resume=auto: a finished run in RUN_DIR is not trained again
    train(cfg)
    CKPT = os.path.join(RUN_DIR, "checkpoints", "last.ckpt")
model = load_model(CKPT)
model.hparams'''),
    new_markdown_cell("## Every validation question answered and scored"),
    new_code_cell('''\
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.inference import predict_vqa, question_loader
from updown_vqa.vqa.preprocess import load_json

val = OmegaConf.to_container(cfg.data.val, resolve=True)
loader = question_loader(model.hparams, val, "val")
results, _ = predict_vqa(model, loader)
questions, annotations = load_json(val["questions"], "questions"), load_json(val["annotations"], "annotations")
report = evaluate(questions, annotations, results)
accuracy = {int(q): a for q, a in report["evalQA"].items()}  # per question, 0-100
print("accuracy", report["overall"])'''),
    new_markdown_cell("""\
## Accuracy per question template and per answer type

The shapes questions record their template (`color`, `shape`, `count`, `exist`, `spatial`); the
answer types are VQA v2's (`yes/no`, `number`, `other`)."""),
    new_code_cell('''\
from collections import defaultdict

from updown_vqa.core.viz import accuracy_bars

by_template = defaultdict(list)
for q in questions:
    by_template[q.get("template", "none")].append(accuracy[q["question_id"]])
per_template = {name: sum(values) / len(values) for name, values in sorted(by_template.items())}
accuracy_bars({"template": per_template, "answer type": report["perAnswerType"]})'''),
    new_markdown_cell("""\
## Right and wrong answers

The image with its regions shaded by attention, the top-5 answers (green: an annotator's answer)
and the ground truth."""),
    new_code_cell('''\
from updown_vqa.core.viz import figure
from updown_vqa.vqa.pictures import vqa_picture

images = os.path.join(data_dir, "shapes", "images", "val")
right = next(q["question_id"] for q in questions if accuracy[q["question_id"]] == 100)
wrong = next(q["question_id"] for q in questions if accuracy[q["question_id"]] == 0)
figure(vqa_picture(model, val, right, images, dataset=loader.dataset))'''),
    new_code_cell('''\
figure(vqa_picture(model, val, wrong, images, dataset=loader.dataset))'''),
    new_markdown_cell("## One image, each of its questions: attention follows the question"),
    new_code_cell('''\
image_id = questions[0]["image_id"]
for q in [q for q in questions if q["image_id"] == image_id][:3]:
    display(figure(vqa_picture(model, val, q["question_id"], images, dataset=loader.dataset)))'''),
]

LOADER_SWEEP = [
    new_markdown_cell("""\
# Loader sweep: samples/s against DataLoader workers, pinned memory and batch size

A small version of `make sweep-loader` (`python -m updown_vqa.bench_sweep -m`), run from Python with
the same measurements (`bench_sweep.measure`: the training loader alone, then Lightning training
steps) and the same report (`updown_vqa.report`). Set `SWEEP_DIR` to a `make sweep-loader` folder
(`outputs/multirun/sweep_loader/<time>`) to plot a full sweep instead of measuring here."""),
    new_code_cell('''\
SWEEP_DIR = None'''),
    new_code_cell(SETUP + '''
import itertools
import json

import torch
from hydra import compose, initialize_config_dir

from updown_vqa.bench import report
from updown_vqa.bench_sweep import job_settings, measure

# Random features shaped like a small bottom-up store; pinned memory only matters with a GPU.
GRID = {"data.batch_size": [32, 128], "data.num_workers": [0, 1],
        "data.pin_memory": [False, True] if torch.cuda.is_available() else [False]}
SMALL = ["synthetic.images=400", "synthetic.dim=256", "synthetic.answers=300", "model.hidden_dim=64",
         "model.embed_dim=32", "warmup_batches=2", "batches=8", "train_batches=4"]'''),
    new_code_cell('''\
def run_sweep(folder: str) -> None:
    """One job folder with its result.json per setting of GRID, as the Hydra multirun writes them."""
    for number, values in enumerate(itertools.product(*GRID.values())):
        job_dir = os.path.join(folder, str(number))
        settings = [f"{key}={value}" for key, value in zip(GRID, values)]
        with initialize_config_dir(updown_vqa.core.paths.config_dir(), version_base="1.3"):
            cfg = compose("sweep_loader", overrides=[f"paths.data_dir={DATA_DIR}",
                                                     f"paths.output_dir={job_dir}", *SMALL, *settings])
        result = job_settings(cfg) | measure(cfg)
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, "result.json"), "w") as f:
            json.dump(result, f)
        print(", ".join(settings), f"-> loader {result['loader']['samples_per_s']:.0f}/s, "
              f"training {result['train']['samples_per_s']:.0f}/s")


if SWEEP_DIR is None:
    SWEEP_DIR = os.path.join(OUT_DIR, "loader_sweep")
    run_sweep(SWEEP_DIR)'''),
    new_markdown_cell("""\
## The report

`report.write_report` writes `throughput.md`, `.csv` and `.png` into the sweep folder, as at the end
of `make sweep-loader`."""),
    new_code_cell('''\
from IPython.display import Image, Markdown, display

display(Markdown(report.write_report(SWEEP_DIR)))
Image(os.path.join(SWEEP_DIR, "throughput.png"))'''),
    new_code_cell('''\
report.load_rows(SWEEP_DIR)  # the rows, for your own plots'''),
]

NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_attention.ipynb": ATTENTION,
             "03_loader_sweep.ipynb": LOADER_SWEEP}


def write(name: str, cells: list, folder: str = HERE) -> None:
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    for number, cell in enumerate(notebook.cells):
        cell.id = f"{name[:2]}-{number:02d}"  # stable ids: regenerating changes only what was edited
    nbformat.validate(notebook)
    nbformat.write(notebook, os.path.join(folder, name))


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        write(name, cells)
        print("wrote", os.path.join(HERE, name))
