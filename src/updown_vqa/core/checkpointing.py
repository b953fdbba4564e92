"""Checkpoints that survive kills and preemption: atomic writes, safe loading, last.ckpt, signals.

`LastCheckpoint` writes `last.ckpt` every epoch, every `every_n_minutes` and every
`every_n_train_steps`, and on SIGTERM or SIGUSR1 at the next batch end before stopping.
Every file goes through `AtomicCheckpointIO`: a kill at any moment leaves the previous one loadable,
and loading uses `weights_only=True`, so a checkpoint can never run code. (What goes into a
checkpoint beyond Lightning's own state, and resuming, are in `updown_vqa.core.resume`.)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time

import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)
LAST = "last.ckpt"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SIGUSR1: SLURM's warning before the time limit


class UnreadableCheckpoint(UpdownError):
    """A checkpoint file that is missing, truncated or corrupt."""


class TrainingStopped(Exception):
    """Raised after a stop signal once `last.ckpt` is saved; the entry point exits cleanly."""


def read_checkpoint(path: str, mmap: bool = False) -> dict:
    """The checkpoint at `path`, loaded with `weights_only=True`: no pickled code ever runs."""
    if not os.path.isfile(path):
        raise UnreadableCheckpoint(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e)) if "Weights only load failed" in str(e) else None
        if refused:  # a class or function that unpickling would import and call
            raise UnreadableCheckpoint(f"{path}: refused: it holds a pickled {refused.group(1)}, and loading "
                                       "runs no pickled code; only tensors and plain containers load") from e
        raise UnreadableCheckpoint(f"{path}: cannot load the checkpoint, it is truncated or corrupt "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a temporary file beside the target, fsyncs it and renames it over the target."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = str(path)
        folder = os.path.dirname(os.path.abspath(path))
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_folder(folder)  # the rename itself survives a power cut
        except OSError as e:  # a full disk, a quota, a lost mount
            raise UpdownError(f"{path}: cannot write the checkpoint ({e.strerror or e}); the previous one "
                              f"is kept. Free space in {folder}, then rerun the same command to resume") from e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(str(path))


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LastCheckpoint(Checkpoint):
    """Writes `<dirpath>/last.ckpt` at every epoch end, every `every_n_minutes` of training and every
    `every_n_train_steps` steps; on SIGTERM or SIGUSR1 writes it at the next batch end and stops.

    With `requeue`, a SIGUSR1 under SLURM also requeues the job, which resumes with `resume=auto`.
    A save never happens at an epoch's last batch: the epoch-end save follows right after validation.
    """

    def __init__(self, dirpath: str, every_n_minutes: float | None = 30, every_n_train_steps: int | None = None,
                 requeue: bool = True):
        self.dirpath, self.every_n_minutes = str(dirpath), every_n_minutes
        self.every_n_train_steps, self.requeue = every_n_train_steps, requeue
        self.received: int = 0  # the stop signal's number, 0 for none
        self._last_save = time.monotonic()
        self._previous_handlers: dict = {}

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, LAST)

    def on_train_start(self, trainer, pl_module) -> None:
        """Stop signals only set a flag, acted on at the next batch end (over Lightning's own handlers,
        which would stop mid-validation without saving)."""
        self._last_save = time.monotonic()
        if threading.current_thread() is threading.main_thread():  # else Python refuses handlers
            for signum in STOP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        time_due, stop = self._decide(trainer)
        steps_due = bool(self.every_n_train_steps) and trainer.global_step % self.every_n_train_steps == 0
        if time_due or steps_due or stop:
            self._save(trainer)
        if stop:
            self._stop(trainer, stop)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
        stop = self._decide(trainer)[1]
        if stop:
            self._stop(trainer, stop)

    def _decide(self, trainer) -> tuple[bool, int]:
        """(time to save, stop signal): rank 0's clock and any rank's signal, the same on every rank."""
        time_due = bool(self.every_n_minutes) and time.monotonic() - self._last_save >= 60 * self.every_n_minutes
        if trainer.world_size == 1:
            return time_due, self.received
        flags = torch.tensor([float(time_due and trainer.is_global_zero), float(self.received)],
                             device=trainer.strategy.root_device)
        flags = trainer.strategy.reduce(flags, reduce_op="max")
        return bool(flags[0]), int(flags[1])

    def _save(self, trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        for logger in trainer.loggers:  # the metrics logged so far survive a kill too
            logger.save()
        self._last_save = time.monotonic()

    def _stop(self, trainer, signum: int) -> None:
        name = signal.Signals(signum).name
        requeued = self.requeue and signum == signal.SIGUSR1 and SLURMEnvironment.detect()
        if requeued and trainer.is_global_zero:
            requeue_slurm_job()
        raise TrainingStopped(f"stopped by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                              f"saved {self.path}" + ("; the SLURM job is requeued" if requeued else "")
                              + "; run the same command to resume")

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handlers()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}


def requeue_slurm_job() -> None:
    """Put this SLURM job (or array task) back in the queue, as Lightning's SLURM plugin does."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        error = result.stderr.strip() if result.returncode else ""
    except OSError as e:  # no scontrol on this node
        error = str(e)
    if error:
        log.warning("scontrol requeue %s failed (%s); resubmit the job to resume", job, error)
