"""The training loop every task shares: compose the data module and the model from the config, resume
as `resume` says, fit with Lightning, report the best checkpoint (`python -m updown_vqa.train`,
`.train_detector` and the loader sweep call it)."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.checkpointing import (
    AtomicCheckpointIO,
    TrainingStopped,
    checkpoint_task,
    load_init_weights,
    read_checkpoint,
)
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.lock import RunLock, main_process
from updown_vqa.core.numerics import NonFiniteLoss
from updown_vqa.core.provenance import final_line_suffix, provenance
from updown_vqa.core.resume import (
    finished_run,
    keep_csv_metrics,
    resume_checkpoint,
    write_finished,
)
from updown_vqa.core.settings import check_settings
from updown_vqa.core.slurm import RequeueOnSignal

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, datamodule) -> pl.LightningModule:
    """The configured LightningModule, sized from the data (vocabulary, answers, feature size)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    feature_dim = model_cfg.pop("feature_dim", None)
    data_kwargs = datamodule.model_kwargs()  # vocabularies, answers, classes: what the data decides
    if getattr(datamodule, "feature_dim", None) is not None:  # models of feature stores
        features = datamodule.splits["train"].get("features")
        if feature_dim is not None and feature_dim != datamodule.feature_dim:
            raise UpdownError(f"{features}: features are {datamodule.feature_dim}-d but model.feature_dim="
                              f"{feature_dim}; drop model.feature_dim or use matching features")
        data_kwargs |= {"feature_dim": datamodule.feature_dim, "feature_attrs": datamodule.feature_attrs}
    # _convert_: plain lists and dicts in hparams, so checkpoints load with weights_only=True
    try:
        return instantiate(model_cfg, _convert_="all", **data_kwargs)
    except InstantiationException as e:  # a model's own check (model.visual against the data): its line
        if isinstance(e.__cause__, UpdownError):
            raise e.__cause__ from None
        raise


def check_checkpoint(path: str, model: pl.LightningModule) -> None:
    """Refuse a checkpoint of another task, or whose answers or feature size differ from this data's."""
    checkpoint = read_checkpoint(path, mmap=True, key="resume")  # refuses pickled code in one line
    task, ours = checkpoint_task(checkpoint), getattr(model, "TASK", None)
    if ours and task and task != ours:
        raise UpdownError(f"resume={path}: a {task} checkpoint, but this run trains {ours} (task={ours}); "
                          f"resume from a {ours} checkpoint, or train with task={task}")
    saved = checkpoint.get("hyper_parameters") or {}
    for key in ("feature_dim", "answers"):
        if key in saved and saved[key] != model.hparams[key]:
            what = f"{len(saved[key])} answers" if key == "answers" else saved[key]
            ours = f"{len(model.hparams[key])} answers" if key == "answers" else model.hparams[key]
            raise UpdownError(f"resume={path}: the checkpoint's {key} ({what}) does not match the "
                              f"data's ({ours}); resume with the data it was trained on")
    check_model_settings(path, saved, model)


def check_model_settings(path: str, saved: dict, model: pl.LightningModule) -> None:
    """Refuse to resume with other model settings (all those the model class declares, but `compile`):
    the shapes would not load, and anything else would train another model than the checkpoint's."""
    for key in getattr(type(model), "SETTINGS", {}):
        if key == "compile" or "." in key or key not in saved or key not in model.hparams:
            continue
        if saved[key] != model.hparams[key]:
            raise UpdownError(f"resume={path}: the checkpoint was trained with model.{key}={saved[key]!r}, this "
                              f"run has model.{key}={model.hparams[key]!r}; resume with the checkpoint's "
                              "settings, or resume=never to train anew")


def start_from_init(cfg: DictConfig, model: pl.LightningModule, resuming: bool) -> None:
    """`init=CKPT`: weights only (a resumed run has its own); stage=scst cannot start without them."""
    if cfg.get("stage") == "scst" and getattr(model, "TASK", None) != "caption":
        raise UpdownError("stage=scst trains captioners: add task=caption")
    if resuming:
        return
    if cfg.get("init"):
        load_init_weights(model, str(cfg.init))
    elif cfg.get("stage") == "scst":
        raise UpdownError("stage=scst starts from a cross-entropy captioning checkpoint: add init=CKPT "
                          "(e.g. outputs/runs/shapes_caption/checkpoints/best-epochNN.ckpt)")


def train(cfg: DictConfig) -> dict:
    """Fit the model, resuming as `resume` says, and return the final metrics and the best checkpoint."""
    check_settings(cfg)  # before anything runs: a bad number is one error naming its key
    smoke = bool(cfg.trainer.get("fast_dev_run"))  # writes no checkpoints: neither resumes nor finishes a run
    finished = None if smoke else finished_run(cfg.get("resume"), cfg.checkpoint.dirpath)
    if finished is not None:
        return finished
    run_folder = os.path.dirname(os.path.abspath(cfg.checkpoint.dirpath))
    # SLURM's SIGUSR1 before fit (building data, reading features) requeues the job, which starts over
    with RunLock(run_folder) if main_process() else contextlib.nullcontext(), \
            RequeueOnSignal(requeue=bool(cfg.checkpoint.get("requeue", True)) and main_process()) as signals:
        try:
            return _fit(cfg, smoke, signals)
        except TrainingStopped as stopped:  # SIGTERM or SIGUSR1: last.ckpt is saved, the same command resumes
            print(stopped, flush=True)
            return {}


def _fit(cfg: DictConfig, smoke: bool, signals: RequeueOnSignal) -> dict:
    """`train` once the run folder is ours."""
    ckpt_path = None if smoke else resume_checkpoint(cfg.get("resume"), cfg.checkpoint.dirpath)
    started = time.monotonic()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    start_from_init(cfg, model, resuming=bool(ckpt_path))
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c]
    callbacks.append(NonFiniteLoss(cfg.get("nonfinite", "error")))  # before a NaN loss reaches the weights
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c]
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # SIGUSR1 is ours from start to end (no handler of Lightning's in between)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins)
    if ckpt_path:
        check_checkpoint(ckpt_path, model)
        keep_csv_metrics(loggers, ckpt_path)
    signals.stop_if_signalled("before training started")
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)  # LastCheckpoint: save, then requeue
    signals.requeue = False  # the final checkpoint is written: the job ends in its own time
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary = provenance(trainer, time.monotonic() - started)  # stopped_by, command, machine, date
    checkpoint = trainer.checkpoint_callback
    if getattr(checkpoint, "best_model_score", None) is not None:
        metrics["best"] = float(checkpoint.best_model_score)
        metrics["best_checkpoint"] = checkpoint.best_model_path
        if trainer.is_global_zero:  # one summary line, not one per DDP process
            print(f"best {checkpoint.monitor} {metrics['best']:.2f} at {checkpoint.best_model_path} "
                  f"(checkpoints in {checkpoint.dirpath})"
                  f"{final_line_suffix(summary, trainer.max_epochs)}", flush=True)
    if not smoke and trainer.is_global_zero and trainer.state.status == "finished":
        write_finished(cfg.checkpoint.dirpath, {"monitor": cfg.checkpoint.monitor, **metrics, **summary,
                                                "task": _task_name(cfg, model)})
    return metrics


def _task_name(cfg: DictConfig, model: pl.LightningModule) -> str:
    """The task a results table files this run under: vqa, caption, caption scst, detect."""
    task = getattr(model, "TASK", None) or type(model).__name__
    return f"{task} {cfg.stage}" if cfg.get("stage") not in (None, "xe") else task
