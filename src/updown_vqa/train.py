"""Train a model: `python -m updown_vqa.train [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import logging
import os
import sys
import time

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.checkpointing import AtomicCheckpointIO, TrainingStopped
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.resume import (
    finished_run,
    keep_csv_metrics,
    resume_checkpoint,
    write_failed,
    write_finished,
)

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, datamodule) -> pl.LightningModule:
    """The configured LightningModule, sized from the data (vocabulary, answers, feature size)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    feature_dim = model_cfg.pop("feature_dim", None)
    if hasattr(datamodule, "model_kwargs"):  # task=caption, train_detector: what the data decides
        data_kwargs = datamodule.model_kwargs()
    else:
        data_kwargs = {"vocab": datamodule.vocab, "answers": datamodule.answers,
                       "max_question_length": cfg.data.get("max_question_length", 14)}
    if getattr(datamodule, "feature_dim", None) is not None:  # models of feature stores
        features = datamodule.splits["train"].get("features")
        if feature_dim is not None and feature_dim != datamodule.feature_dim:
            raise UpdownError(f"{features}: features are {datamodule.feature_dim}-d but model.feature_dim="
                              f"{feature_dim}; drop model.feature_dim or use matching features")
        data_kwargs |= {"feature_dim": datamodule.feature_dim, "feature_attrs": datamodule.feature_attrs}
    # _convert_: plain lists and dicts in hparams, so checkpoints load with weights_only=True
    return instantiate(model_cfg, _convert_="all", **data_kwargs)


def check_checkpoint(path: str, model: pl.LightningModule) -> None:
    """Refuse a checkpoint whose answers or feature size differ from this data's, naming both."""
    if not os.path.isfile(path):
        raise UpdownError(f"resume={path}: checkpoint not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    except Exception as e:  # truncated or not a checkpoint
        raise UpdownError(f"resume={path}: cannot load the checkpoint ({type(e).__name__}: {e})") from e
    for key in ("feature_dim", "answers"):
        if key in saved and saved[key] != model.hparams[key]:
            what = f"{len(saved[key])} answers" if key == "answers" else saved[key]
            ours = f"{len(model.hparams[key])} answers" if key == "answers" else model.hparams[key]
            raise UpdownError(f"resume={path}: the checkpoint's {key} ({what}) does not match the "
                              f"data's ({ours}); resume with the data it was trained on")


def train(cfg: DictConfig) -> dict:
    """Fit the model, resuming as `resume` says, and return the final metrics and the best checkpoint."""
    smoke = bool(cfg.trainer.get("fast_dev_run"))  # writes no checkpoints: neither resumes nor finishes a run
    finished = None if smoke else finished_run(cfg.get("resume"), cfg.checkpoint.dirpath)
    if finished is not None:
        return finished
    ckpt_path = None if smoke else resume_checkpoint(cfg.get("resume"), cfg.checkpoint.dirpath)
    started = time.monotonic()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    if ckpt_path:
        check_checkpoint(ckpt_path, model)
        keep_csv_metrics(loggers, ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except TrainingStopped as stopped:  # SIGTERM or SIGUSR1: last.ckpt is saved, the same command resumes
        print(stopped, flush=True)
        return {}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    if getattr(checkpoint, "best_model_score", None) is not None:
        metrics["best"] = float(checkpoint.best_model_score)
        metrics["best_checkpoint"] = checkpoint.best_model_path
        if trainer.is_global_zero:  # one summary line, not one per DDP process
            print(f"best {checkpoint.monitor} {metrics['best']:.2f} at {checkpoint.best_model_path} "
                  f"(checkpoints in {checkpoint.dirpath})", flush=True)
    if not smoke and trainer.is_global_zero and trainer.state.status == "finished":
        write_finished(cfg.checkpoint.dirpath, {"monitor": cfg.checkpoint.monitor, **metrics,
                                                "wall_seconds": round(time.monotonic() - started, 1)})
    return metrics


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run(cfg: DictConfig) -> float | None:
    """`train` for a command line: an UpdownError is one line on stderr and exit status 1; in a
    multirun it is recorded in the job's failed.json and the other jobs go on."""
    try:
        metrics = train(cfg)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        if not in_multirun():
            sys.exit(1)
        write_failed(cfg.paths.output_dir, str(e))
        return None
    except Exception as e:  # Hydra goes on with the other jobs and raises it at the end
        if in_multirun():
            write_failed(cfg.paths.output_dir, f"{type(e).__name__}: {e}")
        raise
    return metrics.get("best")  # the value a Hydra sweeper optimises


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
