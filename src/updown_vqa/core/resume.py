"""Resuming: which checkpoint a run starts from, and the state Lightning's checkpoints leave out.

`resume=auto` continues the unfinished run in the run folder (`hydra.run.dir`, outputs/runs/${name},
so the same command finds it) from its newest loadable checkpoint; a finished run (`finished.json`
beside its checkpoints) is reported, not retrained; `resume=never` starts over in `${name}-N`;
`resume=PATH` continues from that file. `ResumeState` puts RNG states, the train sampler's position
and data fingerprints in every checkpoint, so that a resumed run trains on the batch that would have
come next and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import random
import warnings

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger

from updown_vqa.core.cache import as_list, content_hash, same_content
from updown_vqa.core.checkpointing import LAST, UnreadableCheckpoint, read_checkpoint
from updown_vqa.core.errors import UpdownError, fail
from updown_vqa.core.io import write_json
from updown_vqa.core.lock import check_free
from updown_vqa.core.run_files import CHECKPOINTS, FAILED, FINISHED, read_record
from updown_vqa.core.settings import run_name

log = logging.getLogger(__name__)


def has_run(folder: str) -> bool:
    """Whether a run already wrote checkpoints in `folder`."""
    checkpoints = os.path.join(folder, CHECKPOINTS)
    return os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))


def run_dir(runs: str, name: str, resume) -> str:
    """`runs/name`; with resume=never and a run already there, the first `runs/name-N` beside it without
    one. A name that would leave `runs` (a '/', '..') or a folder that a live training holds stops the
    command here, before Hydra writes into it."""
    try:
        run_name("name", name)
    except UpdownError as e:
        fail(str(e))
    base = os.path.join(runs, str(name))
    if str(resume) != "never" and not os.path.isfile(os.path.join(base, CHECKPOINTS, FINISHED)):
        try:
            check_free(base)
        except UpdownError as e:
            fail(str(e))
    if str(resume) != "never" or not has_run(base):
        return base
    n = 1
    while has_run(f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


def job_dir(override_dirname: str) -> str:
    """A multirun job's folder name from its overrides (`a=1,b=x`), with no `/` from paths in values."""
    return override_dirname.replace("/", "_")




def read_finished(checkpoint_dir: str) -> dict | None:
    """The summary a finished run left in `checkpoint_dir`, or None."""
    path = os.path.join(checkpoint_dir, FINISHED)
    return read_record(path) if os.path.isfile(path) else None


def write_finished(checkpoint_dir: str, summary: dict, name: str = FINISHED) -> None:
    write_json(os.path.join(checkpoint_dir, name), summary, indent=1)


def write_failed(run_folder: str, error: str) -> None:
    """`failed.json` in a multirun job's folder: the error that ended it, for the report."""
    write_finished(run_folder, {"error": error}, FAILED)


def candidates(checkpoint_dir: str) -> list[str]:
    """`last.ckpt` first, then the folder's other checkpoints, newest first."""
    last = os.path.join(checkpoint_dir, LAST)
    others = [p for p in glob.glob(os.path.join(checkpoint_dir, "*.ckpt")) if p != last]
    others.sort(key=os.path.getmtime, reverse=True)
    return ([last] if os.path.isfile(last) else []) + others


def remove_partial_writes(checkpoint_dir: str) -> None:
    """Temporary files of writes that a kill interrupted (the checkpoints they were to replace are intact)."""
    for path in glob.glob(os.path.join(checkpoint_dir, "*.ckpt.tmp-*")):
        log.warning("%s: removing the partial write of a killed run", path)
        try:
            os.remove(path)
        except FileNotFoundError:  # another process of a DDP run removed it first
            pass


def newest_loadable(checkpoint_dir: str) -> str | None:
    """`last.ckpt`, or when it cannot be loaded the newest checkpoint that can; None in an empty folder."""
    remove_partial_writes(checkpoint_dir)
    found = candidates(checkpoint_dir)
    for path in found:
        try:
            read_checkpoint(path, mmap=True)
        except UnreadableCheckpoint as e:
            log.warning("%s; trying an older checkpoint", e)
            continue
        if path != found[0]:
            log.warning("resuming from %s instead", path)
        return path
    if found:
        raise UpdownError(f"{checkpoint_dir}: none of its checkpoints can be loaded ({len(found)} tried); "
                          "move them away, or start over with resume=never")
    return None


def resume_checkpoint(resume, checkpoint_dir: str) -> str | None:
    """The checkpoint to resume from: resume=auto|never|PATH (None: start from scratch)."""
    if resume in (None, "", "never"):
        return None
    if resume == "auto":
        path = newest_loadable(checkpoint_dir)
        if path:
            log.info("resuming from %s", path)
        return path
    return str(resume)


def finished_run(resume, checkpoint_dir: str) -> dict | None:
    """With resume=auto, the summary of the run that already finished here (reported, not retrained)."""
    summary = read_finished(checkpoint_dir) if resume == "auto" else None
    if summary is not None:
        best = f"best {summary['monitor']} {summary['best']:.2f} at {summary['best_checkpoint']}" \
            if summary.get("best") is not None else "no best checkpoint"
        clock = ", stopped by trainer.max_time" if summary.get("max_time_reached") else ""
        print(f"{os.path.dirname(os.path.abspath(checkpoint_dir))}: this run already finished ({best}{clock}); "
              "not retraining. resume=never trains again in a new folder.", flush=True)
    return summary


def rng_states() -> dict:
    """Every RNG a training step draws from (dropout: torch; CUDA when in use)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _plain(value):
    """`value` with OmegaConf containers turned into dicts and lists."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _digest(values) -> str:
    return hashlib.sha1(json.dumps(list(values)).encode()).hexdigest()[:12]


def data_fingerprints(datamodule, stores: bool = True) -> dict:
    """What a checkpoint must match: answer and word vocabularies and feature size; and the data's size."""
    out = {}
    for key in ("answers", "vocab"):
        values = getattr(datamodule, key, None)
        if values is not None:
            out[key] = f"{len(values)} entries, sha1 {_digest(values)}"
    if getattr(datamodule, "feature_dim", None) is not None:
        out["feature_dim"] = int(datamodule.feature_dim)
    out["items"] = {split: len(ds) for split, ds in getattr(datamodule, "datasets", {}).items()}
    if stores:  # saving: the content hash of each store (computed once per process and file state)
        paths = {key: path for key, path in store_paths(datamodule).items() if os.path.isfile(path)}
        out["stores"] = {key: {"path": os.path.abspath(path), **content_hash(path)} for key, path in paths.items()}
    return out


def store_paths(datamodule) -> dict[str, str]:
    """The feature stores that decide a run's result: data.train's and data.val's."""
    splits = getattr(datamodule, "splits", {}) or {}
    return {f"data.{split}.features[{i}]": path for split in ("train", "val")
            for i, path in enumerate(as_list((splits.get(split) or {}).get("features")))}


def check_fingerprints(path: str, saved: dict, ours: dict) -> None:
    """Refuse a checkpoint made on other vocabularies or features, naming both; warn if the data grew."""
    for key, name in (("answers", "answer vocabulary"), ("vocab", "word vocabulary"), ("feature_dim", "feature size")):
        if key in saved and key in ours and saved[key] != ours[key]:
            raise UpdownError(f"{path}: the checkpoint's {name} ({saved[key]}) does not match the data's "
                              f"({ours[key]}); resume with the data it was trained on, or resume=never")
    check_stores(path, saved.get("stores", {}), ours.get("paths", {}))
    if saved.get("items", ours["items"]) != ours["items"]:
        log.warning("%s: the data changed since this checkpoint (questions per split %s, now %s); "
                    "training goes on, but not with the batches the interrupted run would have seen",
                    path, saved["items"], ours["items"])


def check_stores(path: str, saved: dict, current: dict) -> None:
    """Refuse to resume onto feature stores whose content differs from the checkpoint's (values replaced
    with the same shapes and ids too, or another file): an untouched file costs one stat, a touched or
    another one a full hash."""
    for key, record in saved.items():
        store = current.get(key, record.get("path", ""))
        if os.path.isfile(store) and not same_content(store, record):
            raise UpdownError(f"{path}: the feature store {store} ({key}) changed since this checkpoint "
                              f"(its sha1 was {record.get('sha1')}); resume with the features it was trained "
                              "on, or resume=never to train anew on these")


class ResumeState(Callback):
    """Puts into every checkpoint the RNG states, the train sampler's position and data fingerprints,
    and restores them, so that a resumed run trains on the batch that would have come next.

    Consumed batches are counted here, at each batch end, not by the sampler: with num_workers > 0
    the sampler runs ahead by the prefetch depth. The position reaches the new sampler through the
    datamodule's `train_position`, which `train_dataloader()` applies before iterating.
    """

    def __init__(self):
        self.position: dict | None = None  # {"epoch", "start_batch"}: the next batch to train on
        self._rng_to_restore: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng_to_restore is not None:  # after the loader's first fetch, as in the interrupted run
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.position = {"epoch": trainer.current_epoch, "start_batch": batch_idx + 1}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.position = {"epoch": trainer.current_epoch + 1, "start_batch": 0}

    def state_dict(self) -> dict:
        return {"position": self.position, "rng": rng_states()}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["fingerprints"] = data_fingerprints(trainer.datamodule)
        checkpoint["task"] = getattr(pl_module, "TASK", None)  # which command can use it (checkpoint_task)
        if "hyper_parameters" in checkpoint:  # OmegaConf containers would need pickled code to load
            checkpoint["hyper_parameters"] = _plain(dict(checkpoint["hyper_parameters"]))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if "fingerprints" in checkpoint:
            ours = data_fingerprints(trainer.datamodule, stores=False) | {"paths": store_paths(trainer.datamodule)}
            check_fingerprints(trainer.ckpt_path, checkpoint["fingerprints"], ours)
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            return
        self.position, self._rng_to_restore = state["position"], state["rng"]
        if hasattr(trainer.datamodule, "train_position"):
            trainer.datamodule.train_position = state["position"]
            # Lightning cannot see that the batch sampler resumes, and would warn that it does not.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        elif state["position"] and state["position"]["start_batch"]:
            log.warning("%s has no train_position: epoch %d goes on with its first batches again, not with "
                        "those that would have come next", type(trainer.datamodule).__name__,
                        state["position"]["epoch"])


def keep_csv_metrics(loggers: list, ckpt_path: str) -> None:
    """Keep the metrics.csv rows logged up to the checkpoint, which CSVLogger would delete."""
    last_step = read_checkpoint(ckpt_path, mmap=True)["global_step"]
    for logger in loggers:
        path = os.path.join(logger.log_dir, "metrics.csv") if isinstance(logger, CSVLogger) else ""
        if not os.path.isfile(path):
            continue
        with open(path, newline="") as f:
            rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        writer = logger.experiment  # deletes the file; on ranks other than 0, a stand-in that does nothing
        if isinstance(getattr(writer, "metrics", None), list):
            writer.metrics[:0] = [row for row in rows if float(row.get("step", 0)) <= last_step]
            logger.save()
