"""One job of the loader sweep: `python -m updown_vqa.bench_sweep -m [key=value ...]` (`make sweep-loader`).

Each job measures steady-state samples/s of the configured training loader alone and of full
Lightning training steps, and writes `result.json` in its job folder. Config: conf/sweep_loader.yaml
(the grid is `hydra.sweeper.params`); when the multirun ends, `updown_vqa.report` tabulates it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from updown_vqa.bench import loader as bench  # the loader benchmark, a library module
from updown_vqa.bench.training import lightning_throughput
from updown_vqa.core.cli import hydra_command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import Number, OneOf, check_group, check_settings
from updown_vqa.core.training import build_model
from updown_vqa.datasets.random_stores import synthetic_data

log = logging.getLogger(__name__)
SETTINGS = {"warmup_batches": Number("int", 0, 10**6), "batches": Number("int", 1, 10**7),
            "train_batches": Number("int", 1, 10**7)}
SYNTHETIC = {"images": Number("int", 1, 10**8), "boxes": Number("int", 1, 10**4), "dim": Number("int", 1, 2**16),
             "answers": Number("int", 1, 10**6), "questions_per_image": Number("int", 1, 10**4),
             "dtype": OneOf(("float32", "float16"))}


def data_config(cfg: DictConfig) -> dict:
    """The data group, pointed at a random store and questions when `synthetic` is set."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if cfg.get("synthetic"):
        for key in ("train", "val", "test", "builder"):
            data.pop(key, None)
        root = os.path.join(cfg.paths.data_dir, "synthetic")
        data |= synthetic_data(root, **OmegaConf.to_container(cfg.synthetic), seed=cfg.seed)
    return data


def measure(cfg: DictConfig) -> dict:
    """Loader-alone and training-step throughput of this job's settings."""
    dm = instantiate(data_config(cfg))
    dm.prepare_data()
    dm.setup("fit")
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if use_gpu else "cpu")
    if getattr(dm, "table", None) is None:  # an image DataModule (model.visual=grid): decoding is the load
        loader = bench.image_loader_throughput(dm, cfg.batches, cfg.warmup_batches, device)
    else:
        loader = bench.loader_throughput(dm, cfg.batches, cfg.warmup_batches, device, memory=True)  # PSS per worker
    torch.manual_seed(cfg.seed)
    train = lightning_throughput(build_model(cfg, dm), dm, cfg.train_batches, cfg.warmup_batches,
                                       cfg.trainer.precision, "gpu" if use_gpu else "cpu")
    return {"loader": loader, "train": train}


def job_settings(cfg: DictConfig) -> dict:
    """What the report groups by, and the machine it ran on."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{_cpu_name()}, no GPU"
    return {"batch_size": cfg.data.batch_size, "num_workers": cfg.data.num_workers,
            "pin_memory": cfg.data.pin_memory, "feature_cache": cfg.data.get("feature_cache", "none"),
            "precision": cfg.trainer.precision, "device": device, "cpus": os.cpu_count()}


def _cpu_name() -> str:
    """The CPU model and core count, e.g. 'Intel(R) Xeon(R) Processor x2'."""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'CPU'} x{os.cpu_count()}"


@hydra_command("sweep_loader")
def main(cfg: DictConfig) -> float | None:
    check_settings(cfg)  # the data, model and trainer groups, as train checks them
    check_group(cfg, "", SETTINGS)
    check_group(cfg, "synthetic", SYNTHETIC)
    result = job_settings(cfg)
    try:
        result |= measure(cfg)
    except (UpdownError, RuntimeError, OSError) as e:  # one failed setting (say, out of memory) is a result
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        result["error"] = str(e)
    path = os.path.join(cfg.paths.output_dir, "result.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    log.info("wrote %s", path)
    if "error" in result and HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on
        sys.exit(1)
    return result.get("train", {}).get("samples_per_s")


if __name__ == "__main__":
    main()
