"""Atomic checkpoint writes, loading that runs no pickled code, last.ckpt triggers, stop signals, launchers."""

import errno
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.core import checkpointing
from updown_vqa.core.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    UnreadableCheckpoint,
    read_checkpoint,
)
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import train


@pytest.fixture
def saved(tmp_path):
    """A checkpoint written through AtomicCheckpointIO, and its path."""
    path = str(tmp_path / "last.ckpt")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    return path


def test_a_failed_write_keeps_the_previous_checkpoint_and_names_the_file(saved, monkeypatch):
    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UpdownError, match="last.ckpt: cannot write the checkpoint .No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, saved)
    assert read_checkpoint(saved)["global_step"] == 1
    assert os.listdir(os.path.dirname(saved)) == ["last.ckpt"]  # no temporary file left behind


KILL_DURING_WRITE = """
import os, signal, sys
from updown_vqa.core.checkpointing import AtomicCheckpointIO
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies with the new file half on disk
AtomicCheckpointIO().save_checkpoint({"global_step": 2}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_kill_during_a_write_leaves_the_previous_checkpoint_loadable(saved):
    result = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, saved], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert any(".tmp-" in name for name in os.listdir(os.path.dirname(saved)))  # the interrupted write
    assert read_checkpoint(saved)["global_step"] == 1


def test_loading_refuses_pickled_code_and_names_it(tmp_path):
    path = str(tmp_path / "evil.ckpt")
    torch.save({"state_dict": {}, "payload": os.system}, path)  # unpickling would import os.system
    with pytest.raises(UnreadableCheckpoint, match="evil.ckpt: refused: it holds a pickled posix.system"):
        read_checkpoint(path)


def test_a_truncated_checkpoint_is_reported_as_such(saved):
    with open(saved, "r+b") as f:
        f.truncate(os.path.getsize(saved) // 2)
    with pytest.raises(UnreadableCheckpoint, match="last.ckpt: cannot load the checkpoint, it is truncated"):
        read_checkpoint(saved)


SAVES = []  # (global step, file) of every checkpoint written while a SaveSpy is attached


class SaveSpy(pl.Callback):
    """Records every save; sends `signum` to this process at the end of step `signal_step`."""

    def __init__(self, signal_step: int = -1, signum: int = signal.SIGTERM):
        self.signal_step, self.signum = signal_step, signum
        SAVES.clear()

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.signal_step:
            os.kill(os.getpid(), self.signum)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        SAVES.append(trainer.global_step)


def fit_in_process(data_dir, tmp_path, *overrides, signal_step=-1, signum=signal.SIGTERM):
    spy = ["+callbacks.spy._target_=test_checkpointing.SaveSpy", f"+callbacks.spy.signal_step={signal_step}",
           f"+callbacks.spy.signum={int(signum)}"]
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + ["callbacks.model_checkpoint.save_top_k=0",
                         "+trainer.enable_progress_bar=false", *spy, *overrides], str(tmp_path))
    return train(cfg)


@pytest.mark.slow
def test_last_checkpoint_every_n_steps_and_at_the_epoch_end(data_dir, tmp_path):
    fit_in_process(data_dir, tmp_path, "checkpoint.every_n_train_steps=4", "checkpoint.every_n_minutes=null")
    per_epoch = read_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))["global_step"]
    assert SAVES == [*range(4, per_epoch, 4), per_epoch]  # none at the epoch's last batch: its end follows


def test_last_checkpoint_every_n_minutes_of_training(tmp_path, monkeypatch):
    clock, saves = [0.0], []
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])
    progress = SimpleNamespace(is_last_batch=False)
    trainer = SimpleNamespace(world_size=1, global_step=1, fast_dev_run=False, sanity_checking=False, loggers=[],
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
                              save_checkpoint=lambda path, weights_only: saves.append(clock[0] / 60))
    callback = LastCheckpoint(str(tmp_path), every_n_minutes=30)
    callback.on_train_start(trainer, None)
    for minute in range(0, 100, 7):  # a batch ends every 7 minutes
        clock[0] = 60.0 * minute
        callback.on_train_batch_end(trainer, None, None, None, 0)
    callback.on_train_end(trainer, None)
    assert saves == [35, 70]


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_requeues_and_stops(data_dir, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/requeued\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(key, value)
    handler_before = signal.getsignal(signal.SIGUSR1)
    assert fit_in_process(data_dir, tmp_path, "trainer.max_epochs=3", signal_step=3, signum=signal.SIGUSR1) == {}
    assert "stopped by SIGUSR1 at epoch 0, step 3" in capsys.readouterr().out
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    saved = read_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert saved["global_step"] == 3 and saved["callbacks"]["ResumeState"]["position"] == {"epoch": 0, "start_batch": 3}
    assert signal.getsignal(signal.SIGUSR1) == handler_before  # handlers are given back after the fit


@pytest.mark.parametrize("launcher,target", [
    ("submitit_slurm", "hydra_plugins.updown_vqa_slurm.SlurmLauncher"),
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
])
def test_launchers_compose_with_the_run_config(launcher, target):
    cfg = compose_config([f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=4", "trainer.accelerator=gpu"],
                         hydra=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 4
        assert cfg.hydra.launcher.additional_parameters.signal == "USR1@120"
        assert cfg.hydra.launcher.timeout_min <= 48 * 60
    assert instantiate(cfg.hydra.launcher) is not None  # the plugin accepts every key


def test_the_slurm_launcher_asks_for_no_gpu_on_the_cpu():
    cfg = compose_config(["hydra/launcher=submitit_slurm", "trainer.accelerator=cpu", "trainer.devices=2"], hydra=True)
    assert cfg.hydra.launcher.gpus_per_node is None and cfg.hydra.launcher.tasks_per_node == 2
    assert 1 <= cfg.hydra.launcher.cpus_per_task <= 8
