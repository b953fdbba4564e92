"""What the project asks of SLURM: a job's GPUs and CPUs (resolvers of the sweep launcher's config), the
requeue, and SIGUSR1 outside `fit` (data building, extraction), where no checkpoint can be written.

SLURM sends SIGUSR1 (`--signal=USR1@N`) N seconds before a job's time limit. During `fit`,
`checkpointing.LastCheckpoint` saves `last.ckpt` at the next batch end and requeues. Before `fit`
there is nothing to save, and the job's writes (the data builder's, the feature store's) survive a
kill and resume: `RequeueOnSignal` requeues at once, and SLURM then ends this slice of the job and
starts it over, which finds the files written so far.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading

log = logging.getLogger(__name__)
_requeued: list[str] = []  # the job ids this process requeued
_received: list[int] = []  # SIGUSR1s that arrived under a RequeueOnSignal (nested ones share them)
_depth = [0]  # RequeueOnSignal blocks now open: the outermost starts and ends with a clean slate


class TrainingStopped(Exception):
    """Raised after a stop signal once `last.ckpt` is saved; the entry point exits cleanly."""


def slurm_job() -> str | None:
    """This SLURM job's id (`ARRAYJOB_TASK` for array tasks), or None outside a batch job."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> bool:
    """Put this SLURM job (or array task) back in the queue, as Lightning's SLURM plugin does."""
    job = slurm_job()
    if job is None:
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        error = result.stderr.strip() if result.returncode else ""
    except OSError as e:  # no scontrol on this node
        error = str(e)
    if error:
        log.warning("scontrol requeue %s failed (%s); resubmit the job to resume", job, error)
        return False
    _requeued.append(job)
    return True


def requeued() -> bool:
    """Whether this process requeued its job: the job's next slice carries on, this one only ends."""
    return bool(_requeued)


class RequeueOnSignal:
    """While active (`with`), SIGUSR1 in a SLURM job requeues it at once (with `requeue`); elsewhere it
    is only recorded, for `stop_if_signalled` at the next point where stopping is clean. They nest:
    the sweep launcher's wraps the whole job, `train`'s the part before `fit`."""

    def __init__(self, requeue: bool = True):
        self.requeue, self._previous = requeue, None

    def __enter__(self) -> RequeueOnSignal:
        if _depth[0] == 0:
            _clear()
        _depth[0] += 1
        if threading.current_thread() is threading.main_thread():  # else Python refuses handlers
            self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None
        _depth[0] -= 1
        if _depth[0] == 0:
            _clear()

    def _on_signal(self, signum, frame) -> None:
        _received.append(signum)
        if requeued():
            return
        if self.requeue and slurm_job() and requeue_slurm_job():
            log.warning("SIGUSR1 (the time limit is near) before training: SLURM job %s requeued; it "
                        "starts over and finds what was written so far", slurm_job())
        else:
            log.warning("SIGUSR1 not acted on here (no SLURM job, or training is over): a training not yet "
                        "started stops before it starts; other work goes on")

    def stop_if_signalled(self, moment: str) -> None:
        """Raise TrainingStopped if SIGUSR1 came (`moment`: where we are, for the message)."""
        if _received:
            raise TrainingStopped(f"stopped by SIGUSR1 {moment}: nothing to save yet; "
                                  + ("the SLURM job is requeued and starts over" if requeued()
                                     else "run the same command to start over"))


def _clear() -> None:
    _received.clear()
    _requeued.clear()


def gpus_per_node(accelerator, devices, partition=None) -> int | None:
    """The GPUs a job asks for: none with `trainer.accelerator=cpu`, `devices` with gpu/cuda, and with
    `auto` `devices` only where the partition (the default one if None) has GPUs (`sinfo` says)."""
    accelerator = str(accelerator).lower()
    if accelerator in ("cpu", "mps") or not isinstance(devices, int) or devices <= 0:
        return None
    if accelerator in ("gpu", "cuda"):
        return devices
    return devices if any("gpu" in g for g in _sinfo("%G", partition)) else None


def cpus_per_task(wanted, tasks_per_node=1, partition=None) -> int:
    """`wanted` CPUs per task, or fewer where the partition's smallest node has fewer for its tasks."""
    counts = [int(c.rstrip("+")) for c in _sinfo("%c", partition) if c.rstrip("+").isdigit()]
    if not counts:
        return int(wanted)
    return max(1, min(int(wanted), min(counts) // max(1, int(tasks_per_node or 1))))


def _sinfo(field: str, partition=None) -> list[str]:
    """One `sinfo` field per node line of `partition`; [] where sinfo is missing or fails."""
    if not shutil.which("sinfo"):
        return []
    command = ["sinfo", "-h", "-N", "-o", field] + (["-p", str(partition)] if partition else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split() if result.returncode == 0 else []
