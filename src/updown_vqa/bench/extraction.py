"""Does `extract` keep the model busy? Its images/s against the model's alone on the same batches.

    python -m updown_vqa.bench.extraction [images=DIR] [any extract override]
    python -m updown_vqa.extract images=DIR out=unused.h5 bench=true [...]      (the same)

The model alone runs the extractor on batches decoded beforehand and already on the device; the
pipeline is `extract` itself (decoding and resizing in DataLoader workers, the StoreWriter, the final
copy), into a temporary store. Each is timed `bench_repeats` times, alternating, and the best is kept: on a
shared machine the best run is the one least disturbed. Without images=, `bench_images` synthetic
640x480 JPEGs are written to a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from updown_vqa.core.cli import hydra_command
from updown_vqa.core.devices import choose_device as device_of
from updown_vqa.extraction.extractors import (
    build_extractor,
    check_extract_settings,
    load_boxes,
    make_recipe,
)
from updown_vqa.features.boxes import check_boxes
from updown_vqa.features.images import ImageFiles, collate, extract_to_store, list_images


def synthetic_images(folder: str, count: int, seed: int = 0) -> None:
    """`count` smooth, noisy 640x480 JPEGs named 1.jpg ... (photo-like sizes and decode costs)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        pixels = np.asarray(coarse.resize((640, 480), Image.BICUBIC), np.float32)
        pixels += rng.normal(0, 8, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i + 1}.jpg"), quality=90)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(extractor, batches: list[dict], device: torch.device, autocast: bool) -> float:
    """Images/s of the extractor alone on preloaded batches (after one warm-up batch)."""
    precision = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    with torch.inference_mode(), precision:
        extractor(batches[0]["pixels"], batches[0]["sizes"], batches[0]["ids"])
        _synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            extractor(batch["pixels"], batch["sizes"], batch["ids"])
        _synchronize(device)
    return sum(len(b["ids"]) for b in batches) / (time.perf_counter() - start)


def preload(images: dict[int, str], image_size: int, batch_size: int, device) -> list[dict]:
    """The images decoded, resized and batched as `extract` does, already on the device."""
    files = ImageFiles(sorted(images.items()), image_size)
    items = [files[i] for i in range(len(files))]
    batches = [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    for batch in batches:  # a list when images keep their own sizes (detector.arch=c4)
        pixels = batch["pixels"]
        batch["pixels"] = [p.to(device) for p in pixels] if isinstance(pixels, list) else pixels.to(device)
    return batches


def bench(cfg: DictConfig) -> dict:
    """Print and return images/s of the model alone and of the whole pipeline, and their ratio."""
    check_extract_settings(cfg)
    repeats, load = cfg.get("bench_repeats", 3), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if OmegaConf.is_missing(cfg, "images") or not cfg.images:
            synthetic_images(os.path.join(tmp, "images"), cfg.bench_images)
            folder = os.path.join(tmp, "images")
        else:
            folder = cfg.images
        images = dict(sorted(list_images(folder).items())[: cfg.bench_images])
        recipe = make_recipe(cfg)
        boxes = check_boxes(load_boxes(cfg.boxes), images, cfg.boxes) if cfg.mode == "boxes" else None
        device = device_of(cfg.device)
        extractor = build_extractor(recipe, device, boxes)
        image_size = None if recipe.get("detector_arch") == "c4" else cfg.image_size  # own resizing
        batches = preload(images, image_size, cfg.batch_size, device)
        model, pipeline = [], []
        for _ in range(repeats):
            model.append(time_model(extractor, batches, device, cfg.autocast))
            start = time.perf_counter()
            extract_to_store(images, extractor, extractor.feature_dim, os.path.join(tmp, "f.h5"),
                             recipe, image_size, cfg.batch_size, cfg.num_workers,
                             cfg.pin_memory, device, cfg.autocast, cfg.dtype, resume=False,
                             per_box=getattr(extractor, "per_box", ()))
            pipeline.append(len(images) / (time.perf_counter() - start))
    result = {"model": max(model), "pipeline": max(pipeline)}
    result["ratio"] = result["pipeline"] / result["model"]
    pairs = " ".join(f"{p / m:.2f}" for m, p in zip(model, pipeline))
    where = f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else \
        torch.cuda.get_device_name(device)
    model_name = (f"c4 ResNet-{cfg.detector.depth}, shorter side {cfg.min_size} (longer at most {cfg.max_size})"
                  if recipe.get("detector_arch") == "c4" else f"{cfg.backbone} {cfg.image_size}px")
    print(f"{cfg.mode} {model_name}, batch {cfg.batch_size}, {cfg.num_workers} "
          f"workers, autocast {cfg.autocast}, {len(images)} images, {where}\n"
          f"  model alone on preloaded batches: {result['model']:.3g} images/s (best of {repeats})\n"
          f"  extract pipeline:                 {result['pipeline']:.3g} images/s "
          f"({result['ratio']:.2f}x; run by run {pairs})\n"
          f"  load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    return result


@hydra_command("extract/config")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
