"""Captioning end to end: `train task=caption` through Hydra, validation metrics, predictions, attention."""

import csv
import glob
import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.captioning.module import UpDownCaptioning, caption_attention, write_caption_results
from updown_vqa.core.training import build_model


def test_task_caption_swaps_data_model_experiment_and_monitor(tmp_path):
    cfg = compose_config(["task=caption"], str(tmp_path))
    assert cfg.data._target_ == "updown_vqa.captioning.data.CaptionDataModule"
    assert cfg.model._target_ == "updown_vqa.captioning.module.UpDownCaptioning"
    assert cfg.checkpoint.monitor == "val/cider" and cfg.name == "shapes_caption"
    assert "warmup_epochs" not in cfg.model  # the VQA experiment is not applied
    vqa = compose_config([], str(tmp_path))
    assert vqa.model._target_ == "updown_vqa.vqa.module.UpDownVQA" and vqa.checkpoint.monitor == "val/acc"
    assert vqa.name == "shapes_updown"


@pytest.fixture(scope="module")
def captioning(data_dir, tmp_path_factory):
    """A tiny untrained captioner and the tiny shapes caption data, built as train.py builds them."""
    out = str(tmp_path_factory.mktemp("out"))
    cfg = compose_config(tiny_overrides(data_dir, out) + ["task=caption", "model.max_decode_length=6"], out)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    return build_model(cfg, dm), dm


class EchoCaptioner(UpDownCaptioning):
    """Decodes each image to its first reference, to check what validation does with the captions."""

    def decode(self, batch, beam_size=None, max_length=None):
        return [refs[0] for refs in batch["references"]]


def test_validation_scores_captions_against_their_own_image_references(captioning):
    model, dm = captioning
    echo = EchoCaptioner(**model.hparams)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    metrics = trainer.validate(echo, datamodule=dm, verbose=False)[0]
    assert [metrics[f"val/bleu{n}"] for n in range(1, 5)] == pytest.approx([1.0] * 4)
    assert metrics["val/cider"] > 3.0  # one reference of three matched exactly: 10/3 plus partial credit
    echo.decode = lambda batch, *_: ["a small red circle"] * len(batch["image_ids"])
    metrics = trainer.validate(echo, datamodule=dm, verbose=False)[0]
    assert metrics["val/cider"] < 1.0 and metrics["val/bleu4"] < 0.5


def test_write_caption_results_gives_one_coco_result_per_image(captioning, tmp_path):
    model, dm = captioning
    path = str(tmp_path / "results.json")
    results = write_caption_results(model, dm.val_dataloader(), path)
    assert json.loads(open(path).read()) == results
    assert sorted(r["image_id"] for r in results) == sorted(dm.datasets["val"].image_ids.tolist())
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str) for r in results)
    words = {w for r in results for w in r["caption"].split()}
    assert words <= set(dm.vocab) - {"<pad>", "<bos>", "<eos>"}
    assert all(len(r["caption"].split()) <= 6 for r in results)  # model.max_decode_length


def test_caption_attention_gives_a_distribution_over_real_regions_per_word(captioning):
    model, dm = captioning
    batch = next(iter(dm.val_dataloader()))
    batch["mask"][1, -2:] = False
    words, attention = caption_attention(model, batch, index=1)
    assert attention.shape == (len(words), batch["mask"].shape[1]) and len(words) > 0
    torch.testing.assert_close(attention.sum(1), torch.ones(len(words)))
    assert torch.all(attention[:, -2:] == 0)
    assert " ".join(words) == model.decode({k: v[1:2] for k, v in batch.items() if torch.is_tensor(v)})[0]


def data_overrides(data_dir: str, out_dir: str) -> list[str]:
    """The tiny dataset's paths and generator settings, for entry points that build only data."""
    return [o for o in tiny_overrides(data_dir, out_dir) if o.startswith(("paths.", "data.builder."))]


@pytest.mark.slow
def test_fast_dev_run_task_caption_through_hydra(data_dir, tmp_path):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "task=caption",
                        "trainer.fast_dev_run=true", "name=caption_smoke")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_caption_training_checkpoint_alone_predicts_coco_results(data_dir, tmp_path):
    overrides = [*tiny_overrides(data_dir, str(tmp_path)), "task=caption", "name=cap",
                 "model.max_decode_length=10", "trainer.log_every_n_steps=1"]
    result = run_module("updown_vqa.train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "cap"
    header = next(csv.reader(open(run / "metrics.csv")))
    assert {"train/loss", "val/cider", "val/bleu1", "val/bleu2", "val/bleu3", "val/bleu4"} <= set(header)
    assert "best val/cider" in result.stdout
    best = glob.glob(str(run / "checkpoints" / "best-*.ckpt"))[0]
    out = tmp_path / "results.json"
    result = run_module("updown_vqa.predict_caption", f"ckpt={best}", f"out={out}", "beam_size=2",
                        *data_overrides(data_dir, str(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 40 and len({r["image_id"] for r in results}) == 40
    assert "cider" in result.stdout


@pytest.mark.slow
def test_predict_caption_missing_checkpoint_is_one_clear_line(data_dir, tmp_path):
    result = run_module("updown_vqa.predict_caption", f"ckpt={tmp_path}/nope.ckpt",
                        *data_overrides(data_dir, str(tmp_path)))
    assert result.returncode == 1
    assert "nope.ckpt: checkpoint not found" in result.stderr and "Traceback" not in result.stderr
