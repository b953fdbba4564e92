"""trainer=ddp: two CPU processes (gloo) reach the single process's accuracy and write one set of checkpoints."""

import csv
import json
import os

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.core.checkpointing import read_checkpoint
from updown_vqa.core.sampling import BatchSampler
from updown_vqa.core.training import build_model

# Two processes of 16 questions see, step for step, the 32 questions of one process's batch, so one
# epoch ends with the same weights up to rounding. Over more epochs on this tiny set, rounding alone
# moves val/acc by a few questions (seeds move it by 6 points), so the comparison is after one epoch.
TOLERANCE = 1.1  # val/acc points: two of the tiny set's 186 validation questions


@pytest.mark.parametrize("num_items,replicas", [(10, 3), (188, 2), (5, 4)])
def test_validation_shards_count_every_question_exactly_once(num_items, replicas):
    shards = [BatchSampler(num_items, 4, shuffle=False, num_replicas=replicas, rank=r, pad=False)
              for r in range(replicas)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == list(range(num_items))
    assert all(len(list(shard)) == len(shard) for shard in shards)


def final(run) -> dict:
    return json.loads((run / "checkpoints" / "finished.json").read_text())


def validate_in_one_process(cfg, ckpt_path) -> float:
    """val/acc of a checkpoint's weights, validated by a single process."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    model.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    return trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/acc"]


@pytest.mark.slow
def test_two_processes_reach_the_single_process_accuracy_and_write_one_set_of_checkpoints(data_dir, tmp_path):
    common = [*tiny_overrides(data_dir, str(tmp_path)), "++model.dropout=0", "+trainer.enable_progress_bar=false"]
    single = run_module("updown_vqa.train", *common, "data.batch_size=32", "name=single")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_module("updown_vqa.train", *common, "data.batch_size=16", "trainer=ddp", "trainer.devices=2",
                     "trainer.accelerator=cpu", "name=ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    runs = tmp_path / "runs"
    ours, theirs = final(runs / "ddp"), final(runs / "single")
    assert abs(ours["val/acc"] - theirs["val/acc"]) <= TOLERANCE
    weights = [read_checkpoint(str(runs / r / "checkpoints" / "last.ckpt"))["state_dict"] for r in ("ddp", "single")]
    for key, weight in weights[1].items():  # the same updates, up to float rounding and the padded last batch
        torch.testing.assert_close(weights[0][key], weight, rtol=0, atol=1e-3)
    cfg = compose_config(common, str(tmp_path))
    single_process_acc = validate_in_one_process(cfg, str(runs / "ddp" / "checkpoints" / "last.ckpt"))
    assert ours["val/acc"] == pytest.approx(single_process_acc, abs=1e-4)  # each question counted once
    best = os.path.basename(ours["best_checkpoint"])
    assert sorted(os.listdir(runs / "ddp" / "checkpoints")) == sorted([best, "finished.json", "last.ckpt"])
    with open(runs / "ddp" / "metrics.csv") as f:
        assert sum(1 for row in csv.DictReader(f) if row["val/acc"]) == 1  # one logger, one epoch
    assert os.path.exists(runs / "ddp" / "train_ddp_process_1.log")  # the second process ran
