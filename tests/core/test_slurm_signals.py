"""SIGUSR1 outside `fit` (RequeueOnSignal) and the launcher's resources, without a cluster (the cluster's
own tests are in tests/slurm/)."""

from __future__ import annotations

import os
import signal

import pytest

from updown_vqa.core.slurm import RequeueOnSignal, TrainingStopped, cpus_per_task, gpus_per_node


@pytest.fixture
def no_slurm(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no sinfo, no scontrol


def test_sigusr1_outside_slurm_stops_before_training_and_the_next_command_starts_clean(no_slurm):
    before = signal.getsignal(signal.SIGUSR1)
    with RequeueOnSignal() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)  # would end the process without the guard
        with pytest.raises(TrainingStopped, match="stopped by SIGUSR1 before training started: nothing to save yet; "
                                                  "run the same command to start over"):
            signals.stop_if_signalled("before training started")
    assert signal.getsignal(signal.SIGUSR1) == before
    with RequeueOnSignal() as signals:  # a later command in the same process is not stopped by it
        signals.stop_if_signalled("before training started")


def test_no_gpu_is_asked_for_on_the_cpu_or_where_sinfo_shows_none(no_slurm):
    assert gpus_per_node("cpu", 4) is None
    assert gpus_per_node("auto", 4) is None  # no sinfo: no GPUs known
    assert gpus_per_node("gpu", 4) == 4 and gpus_per_node("cuda", 2, "gpu") == 2
    assert cpus_per_task(8, 4) == 8  # nothing known of the nodes: the number asked
