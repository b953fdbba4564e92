"""Train a model: `python -m updown_vqa.train [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.checkpointing import AtomicCheckpointIO, TrainingStopped, load_init_weights
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.resume import finished_run, keep_csv_metrics, resume_checkpoint, write_finished

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
    smoke = bool(cfg.trainer.get("fast_dev_run"))  # writes no checkpoints: neither resumes nor finishes a run
    finished = None if smoke else finished_run(cfg.get("resume"), cfg.checkpoint.dirpath)
    if finished is not None:
        return finished
    ckpt_path = None if smoke else resume_checkpoint(cfg.get("resume"), cfg.checkpoint.dirpath)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    start_from_init(cfg, model, resuming=bool(ckpt_path))
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
        write_finished(cfg.checkpoint.dirpath, {"monitor": cfg.checkpoint.monitor, **metrics})
    return metrics


def run(cfg: DictConfig) -> float | None:
    """`train` for a command line: an UpdownError is one line on stderr and exit status 1."""
    try:
        metrics = train(cfg)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    return metrics.get("best")  # the value a Hydra sweeper optimises


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
