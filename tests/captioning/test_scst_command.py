"""`python -m updown_vqa.train task=caption stage=scst init=CKPT` as a user runs it: its own run folder,
its logs, and a killed run resuming to the weights of an uninterrupted one (as tests/test_resume.py)."""

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import run_module, tiny_overrides

from updown_vqa.core.checkpointing import read_checkpoint

# As tests/test_resume.py: a kill at a given step, after the step checkpoint before it.
KILL_AT_STEP = """
import os, runpy, signal, sys
from updown_vqa.core.checkpointing import LastCheckpoint
step, original = int(os.environ["KILL_AT_STEP"]), LastCheckpoint.on_train_batch_end
def on_train_batch_end(self, trainer, *args):
    original(self, trainer, *args)
    if trainer.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
LastCheckpoint.on_train_batch_end = on_train_batch_end
runpy.run_module("updown_vqa.train", run_name="__main__")
"""
EXACT = ["trainer.max_epochs=2", "trainer.val_check_interval=1.0", "trainer.deterministic=true", "checkpoint.every_n_train_steps=2",
         "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "model.max_decode_length=8"]


@pytest.fixture(scope="module")
def xe_checkpoint(data_dir, tmp_path_factory):
    """A one-epoch cross-entropy captioner on the tiny set: the init of the SCST runs."""
    out = tmp_path_factory.mktemp("xe")
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(out)), "task=caption", "name=cap",
                        "model.max_decode_length=8")
    assert result.returncode == 0, result.stderr[-3000:]
    return str(next((out / "runs" / "cap" / "checkpoints").glob("best-*.ckpt")))


def scst_args(data_dir, out, init, *extra):
    return [*tiny_overrides(data_dir, str(out)), "task=caption", "stage=scst", "name=cap", f"init={init}",
            *EXACT, *extra]


@pytest.fixture(scope="module")
def finished_scst(data_dir, xe_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("scst")
    result = run_module("updown_vqa.train", *scst_args(data_dir, out, xe_checkpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "runs" / "cap_scst"


def column(run, name):
    with open(run / "metrics.csv") as f:
        return [row[name] for row in csv.DictReader(f) if row.get(name)]


@pytest.mark.slow
def test_scst_runs_in_its_own_folder_logging_rewards_and_greedy_validation(finished_scst, xe_checkpoint):
    assert (finished_scst / "checkpoints" / "finished.json").exists()
    assert len(column(finished_scst, "train/reward")) == 8 and len(column(finished_scst, "val/cider")) == 2
    assert column(finished_scst, "train/reward_baseline") and column(finished_scst, "val/bleu4")
    saved = read_checkpoint(str(finished_scst / "checkpoints" / "last.ckpt"))
    assert saved["hyper_parameters"]["scst"] == {"samples": 5, "baseline": "mean", "cider_weight": 1.0,
                                                 "bleu_weight": 0.0}  # experiment_stage/shapes_caption_scst
    xe = read_checkpoint(xe_checkpoint)["state_dict"]
    changed = [k for k, v in saved["state_dict"].items() if not torch.equal(v, xe[k])]
    assert changed  # trained from the init's weights, in cap_scst, beside the untouched cap run


@pytest.mark.slow
def test_a_killed_scst_run_resumes_to_the_weights_of_an_uninterrupted_one(finished_scst, data_dir, xe_checkpoint,
                                                                          tmp_path):
    args = scst_args(data_dir, tmp_path, xe_checkpoint)
    env = dict(os.environ, KILL_AT_STEP="3", PYTHONWARNINGS="ignore")  # after the step-2 checkpoint
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, *args], env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = tmp_path / "runs" / "cap_scst"
    assert read_checkpoint(str(run / "checkpoints" / "last.ckpt"))["global_step"] == 2
    resumed = run_module("updown_vqa.train", *args)  # the same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = (read_checkpoint(str(r / "checkpoints" / "last.ckpt")) for r in (run, finished_scst))
    assert ours["global_step"] == theirs["global_step"] == 8
    for key, weight in theirs["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][key], weight, rtol=0, atol=1e-6)
    assert column(run, "train/reward") == column(finished_scst, "train/reward")
    assert column(run, "val/cider") == column(finished_scst, "val/cider")


@pytest.mark.slow
@pytest.mark.parametrize("init, message", [
    (None, "error: stage=scst starts from a cross-entropy captioning checkpoint: add init=CKPT"),
    ("vqa", "vqa.ckpt: a vqa checkpoint, not a caption one"),
])
def test_scst_without_a_captioning_init_is_one_error_line(data_dir, tmp_path, init, message):
    args = [*tiny_overrides(data_dir, str(tmp_path)), "task=caption", "stage=scst"]
    if init:
        torch.save({"task": "vqa", "state_dict": {}, "hyper_parameters": {"answers": ["yes"]}}, tmp_path / "vqa.ckpt")
        args.append(f"init={tmp_path / 'vqa.ckpt'}")
    result = run_module("updown_vqa.train", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0]
