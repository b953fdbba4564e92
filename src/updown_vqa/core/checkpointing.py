"""Checkpoints that survive kills and preemption: atomic writes, safe loading, last.ckpt, signals.

`LastCheckpoint` writes `last.ckpt` every epoch, every `every_n_minutes` and every
`every_n_train_steps`, and on SIGTERM or SIGUSR1 at the next batch end before stopping.
Every file goes through `AtomicCheckpointIO`: a kill at any moment leaves the previous one loadable,
and loading uses `weights_only=True`, so a checkpoint can never run code. (What goes into a
checkpoint beyond Lightning's own state, and resuming, are in `updown_vqa.core.resume`.)
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import threading
import time
import typing

import torch
from omegaconf import AnyNode, DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_write
from updown_vqa.core.slurm import TrainingStopped, requeue_slurm_job, slurm_job

log = logging.getLogger(__name__)
LAST = "last.ckpt"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SIGUSR1: SLURM's warning before the time limit


class UnreadableCheckpoint(UpdownError):
    """A checkpoint file that is missing, truncated or corrupt."""


# Data-only classes of OmegaConf containers, which older checkpoints hold in their hparams (lists that
# Hydra's `instantiate` passed as kwargs); torch's restricted (weights_only) unpickler may build them.
HPARAM_GLOBALS = [ListConfig, DictConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, list, dict, int,
                  collections.defaultdict]
COMMANDS = {"vqa": "python -m updown_vqa.predict or .answer", "caption": "python -m updown_vqa.predict_caption",
            "detect": "python -m updown_vqa.extract mode=regions weights=CKPT"}


def read_checkpoint(path: str, mmap: bool = False, key: str = "") -> dict:
    """The checkpoint (or weights file) at `path`, loaded with `weights_only=True`: no pickled code ever
    runs. `key` (ckpt, weights, resume) prefixes the messages, which name the file and what to do."""
    name = f"{key}={path}" if key else str(path)
    if not os.path.isfile(path):
        raise UnreadableCheckpoint(f"{name}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(HPARAM_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e)) if "Weights only load failed" in str(e) else None
        if refused:  # a class or function that unpickling would import and call
            raise UnreadableCheckpoint(f"{name}: refused: it holds a pickled {refused.group(1)}, and loading "
                                       "runs no pickled code; only tensors and plain containers load") from None
        raise UnreadableCheckpoint(f"{name}: cannot load the checkpoint, it is truncated or corrupt "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def checkpoint_task(checkpoint: dict) -> str | None:
    """"vqa", "caption" or "detect": recorded in every checkpoint by ResumeState (guessed from the
    hyperparameters of checkpoints written before it did); None for a plain state dict."""
    if "task" in checkpoint:
        return checkpoint["task"]
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):
        return None
    return "vqa" if "answers" in hparams else "detect" if "detector" in hparams else "caption"


def load_module(cls, path: str, key: str = "ckpt"):
    """The LightningModule `cls` (with a TASK) of a checkpoint, on the CPU in eval mode; a checkpoint of
    another task or an unreadable file is one UpdownError naming the file and what to do."""
    task = checkpoint_task(read_checkpoint(path, mmap=True, key=key))
    if task != cls.TASK:
        what = f"a {task} checkpoint" if task else "not a checkpoint of python -m updown_vqa.train"
        hint = f"; use it with {COMMANDS[task]}" if task in COMMANDS else ""
        raise UpdownError(f"{key}={path}: {what}, not a {cls.TASK} one{hint}")
    try:
        with torch.serialization.safe_globals(HPARAM_GLOBALS):
            model = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an old format, or weights that do not fit the recorded sizes
        raise UpdownError(f"{key}={path}: cannot load it as a {cls.TASK} checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return model.eval()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written through `core.io.atomic_path`: whole or not at all, fsynced."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_write(str(path), "wb", what="the checkpoint") as f:  # a full disk keeps the previous one
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(str(path))


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
        requeued = self.requeue and signum == signal.SIGUSR1 and slurm_job() is not None
        if requeued and trainer.is_global_zero:
            requeued = requeue_slurm_job()
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


def load_init_weights(model, path: str) -> None:
    """Start `model` (a LightningModule with a TASK) from the weights of the checkpoint `init=path`: the
    optimizer and schedule start fresh. Another task, vocabulary, answer set or feature size is refused."""
    checkpoint = read_checkpoint(path, key="init")
    task = checkpoint_task(checkpoint)
    if task != model.TASK or "state_dict" not in checkpoint:
        what = f"a {task} checkpoint" if task else "not a checkpoint of python -m updown_vqa.train"
        raise UpdownError(f"init={path}: {what}, not a {model.TASK} one; start from a {model.TASK} training's "
                          "checkpoint (outputs/runs/NAME/checkpoints/best-*.ckpt)")
    saved = checkpoint.get("hyper_parameters", {})
    for key, name in (("vocab", "word vocabulary"), ("answers", "answer set"), ("feature_dim", "feature size")):
        if key in saved and key in model.hparams and list_or_value(saved[key]) != list_or_value(model.hparams[key]):
            ours, theirs = model.hparams[key], saved[key]
            sizes = (len(theirs), len(ours)) if isinstance(ours, (list, tuple)) else (theirs, ours)
            raise UpdownError(f"init={path}: the checkpoint's {name} ({sizes[0]}) differs from this data's "
                              f"({sizes[1]}); start from a checkpoint trained on the same data settings")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:  # other layer sizes
        raise UpdownError(f"init={path}: its weights do not fit this model ({str(e).splitlines()[0][:200]}); "
                          "use the model settings it was trained with") from None
    log.info("weights from %s (optimizer and schedule start fresh)", path)


def list_or_value(value):
    """Lists and tuples as lists, for comparing hyperparameters saved in either form."""
    return list(value) if isinstance(value, (list, tuple)) else value
