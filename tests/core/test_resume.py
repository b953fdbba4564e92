"""resume=auto|never|PATH: a killed run resumes to the same weights; SIGTERM saves and exits; bad files fall back."""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import SLOW_EPOCHS, compose_config, run_module, tiny_overrides

from updown_vqa.core.checkpointing import AtomicCheckpointIO, read_checkpoint
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.resume import check_fingerprints, data_fingerprints, resume_checkpoint
from updown_vqa.core.training import train

# Two epochs that change the learning rate at every step, with dropout: what resuming must restore.
EXACT = ["trainer.max_epochs=2", "trainer.deterministic=true", "++model.warmup_epochs=2",
         "checkpoint.every_n_train_steps=5", "+trainer.enable_progress_bar=false"]
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


def overrides(data_dir, out_dir, name, *extra):
    return [*tiny_overrides(data_dir, str(out_dir)), *EXACT, f"name={name}", *extra]


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """An uninterrupted run: its command line and run folder."""
    out = tmp_path_factory.mktemp("out")
    args = overrides(data_dir, out, "run")
    result = run_module("updown_vqa.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return args, out / "runs" / "run"


def val_acc_column(run):
    with open(run / "metrics.csv") as f:
        return [row["val/acc"] for row in csv.DictReader(f) if row["val/acc"]]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(finished, data_dir, tmp_path):
    args = overrides(data_dir, tmp_path, "run")
    env = dict(os.environ, KILL_AT_STEP="7", PYTHONWARNINGS="ignore")  # epoch 0, after the step-5 checkpoint
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, *args], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "runs" / "run"
    assert read_checkpoint(str(run / "checkpoints" / "last.ckpt"))["global_step"] == 5
    resumed = run_module("updown_vqa.train", *args)  # the same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = (read_checkpoint(str(r / "checkpoints" / "last.ckpt")) for r in (run, finished[1]))
    assert ours["global_step"] == theirs["global_step"]
    for key, weight in theirs["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][key], weight, rtol=0, atol=1e-6)
    assert val_acc_column(run) == val_acc_column(finished[1])  # rows logged before the kill are kept
    best = [json.loads((r / "checkpoints" / "finished.json").read_text())["best"] for r in (run, finished[1])]
    assert best[0] == best[1]


@pytest.mark.slow
def test_a_finished_run_is_reported_not_retrained(finished, capsys):
    args, run = finished
    before = os.path.getmtime(run / "checkpoints" / "last.ckpt")
    summary = train(compose_config(args, str(run)))  # the same command, in this process
    assert "this run already finished (best val/acc" in capsys.readouterr().out
    assert summary["best_checkpoint"].startswith(str(run / "checkpoints" / "best-epoch"))
    assert os.path.getmtime(run / "checkpoints" / "last.ckpt") == before


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    args = overrides(data_dir, tmp_path, "run", "checkpoint.every_n_train_steps=2", *SLOW_EPOCHS)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen([sys.executable, "-m", "updown_vqa.train", *args], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # training is under way: the first step checkpoint exists
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "stopped by SIGTERM at epoch 0" in stdout and "run the same command to resume" in stdout
    saved = read_checkpoint(str(last))
    position = saved["callbacks"]["ResumeState"]["position"]
    assert saved["global_step"] >= 2 and position == {"epoch": 0, "start_batch": saved["global_step"]}
    assert not (last.parent / "finished.json").exists()


def write(path, step):
    AtomicCheckpointIO().save_checkpoint({"global_step": step}, str(path))
    os.utime(path, (step, step))  # mtime orders the fallback


def test_a_truncated_last_checkpoint_is_reported_and_auto_falls_back(tmp_path, caplog):
    for name, step in [("best-epoch00.ckpt", 1), ("best-epoch01.ckpt", 2), ("last.ckpt", 3)]:
        write(tmp_path / name, step)
    with open(tmp_path / "last.ckpt", "r+b") as f:
        f.truncate(100)
    (tmp_path / "last.ckpt.tmp-99").write_bytes(b"a write that a kill interrupted")
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint("auto", str(tmp_path)) == str(tmp_path / "best-epoch01.ckpt")
    assert "last.ckpt: cannot load the checkpoint, it is truncated or corrupt" in caplog.text
    assert "resuming from" in caplog.text and not (tmp_path / "last.ckpt.tmp-99").exists()
    for name in ("best-epoch00.ckpt", "best-epoch01.ckpt"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(UpdownError, match="none of its checkpoints can be loaded .3 tried."):
        resume_checkpoint("auto", str(tmp_path))
    assert resume_checkpoint("auto", str(tmp_path / "empty")) is None


def test_resume_never_starts_over_in_a_numbered_folder_beside(tmp_path):
    def run_dir(resume):
        cfg = compose_config([f"paths.log_dir={tmp_path}", "name=run", f"resume={resume}"], hydra=True)
        return cfg.hydra.run.dir

    assert run_dir("never") == str(tmp_path / "runs" / "run")  # nothing there yet
    for folder in ("run", "run-1"):
        write(tmp_path / "runs" / folder / "checkpoints" / "last.ckpt", 1)
    assert run_dir("never") == str(tmp_path / "runs" / "run-2")
    assert run_dir("auto") == str(tmp_path / "runs" / "run")


def test_a_checkpoint_of_another_answer_vocabulary_refuses_to_load_naming_both():
    data = SimpleNamespace(answers=["yes", "no", "2"], vocab=["<pad>", "what"], feature_dim=8, datasets={})
    saved = data_fingerprints(data)
    data.answers = ["yes", "no", "3"]
    with pytest.raises(UpdownError, match=r"x.ckpt: the checkpoint's answer vocabulary \(3 entries, sha1 "
                                          r"\w+\) does not match the data's \(3 entries, sha1 \w+\)"):
        check_fingerprints("x.ckpt", saved, data_fingerprints(data))


@pytest.mark.slow
def test_resume_path_with_other_answers_is_refused_before_training(finished, data_dir, tmp_path):
    checkpoint = read_checkpoint(str(finished[1] / "checkpoints" / "last.ckpt"))
    checkpoint["hyper_parameters"]["answers"] = checkpoint["hyper_parameters"]["answers"][:-1]
    path = tmp_path / "other.ckpt"
    torch.save(checkpoint, path)
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + [f"resume={path}"], str(tmp_path))
    answers = len(checkpoint["hyper_parameters"]["answers"])
    with pytest.raises(UpdownError, match=rf"other.ckpt: the checkpoint's answers \({answers} answers\) does "
                                          rf"not match the data's \({answers + 1} answers\)"):
        train(cfg)
