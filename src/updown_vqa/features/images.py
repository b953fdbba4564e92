"""Image folders in, feature stores out: ids from file names, decoding in DataLoader workers, the loop.

Every extraction mode (and the `shapes` builder) goes through `extract_to_store`: images are decoded,
converted to RGB and resized to image_size x image_size in DataLoader workers, the extractor runs on
whole batches on the device, and a StoreWriter appends the results, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.writer import StoreWriter

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_TRAILING_INTEGER = re.compile(r"(\d+)$")

# An extractor maps a batch (uint8 [B, 3, S, S] on the device, original (w, h) per image, image ids)
# to one (boxes [n, 4] in original pixels, features [n, D]) pair of tensors per image.
Extractor = Callable[[torch.Tensor, Sequence[tuple[int, int]], Sequence[int]], list]


def image_id(file_name: str) -> int | None:
    """The integer at the end of the stem, COCO style: COCO_val2014_000000000042.jpg -> 42."""
    match = _TRAILING_INTEGER.search(os.path.splitext(os.path.basename(file_name))[0])
    return int(match.group(1)) if match else None


def list_images(folder: str) -> dict[int, str]:
    """{image id: path} of the image files in `folder`; names without an id or sharing one are errors."""
    if not os.path.isdir(folder):
        raise UpdownError(f"images={folder}: not a folder; pass the folder that holds the images")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise UpdownError(f"images={folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    unnamed = [n for n in names if image_id(n) is None]
    if unnamed:
        raise UpdownError(
            f"images={folder}: {len(unnamed)} file names do not end in an integer image id "
            f"(COCO style, e.g. COCO_val2014_000000000042.jpg or 17.png): {', '.join(unnamed[:10])}"
            f"{', ...' if len(unnamed) > 10 else ''}; rename them or move them out"
        )
    found: dict[int, str] = {}
    for name in names:
        other = found.setdefault(image_id(name), name)
        if other != name:
            raise UpdownError(
                f"images={folder}: {other} and {name} both have image id {image_id(name)}; "
                "keep one of them"
            )
    return {i: os.path.join(folder, name) for i, name in found.items()}


def list_keyed_images(folder: str, by_name: bool = False) -> tuple[dict[int, str], list[str] | None]:
    """{image id: path} and, with `by_name` or when some file names do not end in an integer, the
    images' string keys: the file stems, sorted, image id i being keys[i] (else None). GQA's
    "n161313.jpg" needs `by_name`: its id is the string "n161313", not 161313."""
    names = [n for n in sorted(os.listdir(folder)) if n.lower().endswith(IMAGE_EXTENSIONS)] \
        if os.path.isdir(folder) else []
    if not names or (not by_name and all(image_id(n) is not None for n in names)):
        return list_images(folder), None  # integer ids, or the error naming the folder
    stems: dict[str, str] = {}
    for name in names:
        other = stems.setdefault(os.path.splitext(name)[0], name)
        if other != name:
            raise UpdownError(f"images={folder}: {other} and {name} both have image key "
                              f"{os.path.splitext(name)[0]}; keep one of them")
    keys = sorted(stems)
    return {i: os.path.join(folder, stems[k]) for i, k in enumerate(keys)}, keys


def load_rgb(path: str) -> Image.Image:
    """An image as RGB: grayscale, palette and CMYK converted, transparency composited on white."""
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
            return rgb
        return image.convert("RGB")


def load_pixels(path: str, image_size: int | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 [3, S, S] of the image resized (bilinear) to S = image_size (kept as it is when
    image_size is None: the extractor resizes), and its original (w, h)."""
    image = load_rgb(path)
    size = image.size
    if image_size and size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1), size


class ImageFiles(Dataset):
    """(image id, path) items decoded in DataLoader workers; a file that fails carries its error."""

    def __init__(self, items: Sequence[tuple[int, str]], image_size: int):
        self.items, self.image_size = list(items), image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_id, path = self.items[index]
        try:
            pixels, size = load_pixels(path, self.image_size)
        except Exception as e:  # any unreadable file is skipped, never the end of the run
            return {"id": image_id, "error": f"{type(e).__name__}: {e}"}
        return {"id": image_id, "pixels": pixels, "size": size}


def collate(items: list[dict]) -> dict:
    """Stack the decoded images; list the failed ones with their errors."""
    good = [x for x in items if "pixels" in x]
    same = len({tuple(x["pixels"].shape) for x in good}) <= 1
    return {
        "ids": [x["id"] for x in good],
        "sizes": [x["size"] for x in good],
        # [B, 3, S, S], or a list of [3, H, W] when the images keep their own sizes
        "pixels": (torch.stack if same else list)([x["pixels"] for x in good]) if good else None,
        "failed": [(x["id"], x["error"]) for x in items if "error" in x],
    }


def image_loader(items, image_size: int, batch_size: int, num_workers: int, pin_memory: bool):
    """Batches of decoded images, prepared in `num_workers` processes ahead of the model."""
    workers = num_workers > 0
    return DataLoader(ImageFiles(items, image_size), batch_size=batch_size, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None)


def extract_to_store(
    images: Mapping[int, str],
    extractor: Extractor,
    feature_dim: int,
    out: str,
    attrs: Mapping[str, object],
    image_size: int,
    batch_size: int = 16,
    num_workers: int = 0,
    pin_memory: bool = True,
    device: str | torch.device = "cpu",
    autocast: bool = False,
    dtype: str = "float32",
    resume: bool = True,
    image_keys: list[str] | None = None,
    allow_nonfinite: bool = False,
    per_box: tuple[str, ...] = (),
    layout: str = "padded",
) -> str:
    """Features of every image into the store `out`, skipping ids a previous run already wrote;
    `image_keys[i]` is the string key of image id i, written as the store's `image_keys`."""
    device = torch.device(device)
    keys_digest = hashlib.sha1("\n".join(image_keys).encode()).hexdigest() if image_keys else None
    _check_unfinished(out, {**attrs, "image_keys": keys_digest}, resume)  # ids are positions in the keys
    with StoreWriter(out, feature_dim, dtype=dtype, attrs=attrs, resume=resume,
                     allow_nonfinite=allow_nonfinite, per_box=per_box) as writer:
        todo = [(i, images[i]) for i in sorted(images) if i not in writer.done_ids]
        if len(todo) < len(images):
            log.info("%s: resuming, %d of %d images already done", out, len(images) - len(todo),
                     len(images))
        loader = image_loader(todo, image_size, batch_size, num_workers,
                              pin_memory and device.type == "cuda")
        precision = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else \
            contextlib.nullcontext()
        with tqdm(total=len(images), initial=len(images) - len(todo), unit="img", smoothing=0.1,
                  desc=f"features -> {os.path.basename(out)}") as bar, torch.inference_mode(), \
                precision:
            for batch in loader:
                _write_batch(batch, extractor, writer, images, device)
                bar.update(len(batch["ids"]) + len(batch["failed"]))
    writer.finalize(layout, image_keys=image_keys)
    os.remove(_settings_path(out))
    if writer.skipped_ids:
        log.warning("%s: %d unreadable images were skipped; they are listed in its `skipped` "
                    "dataset", out, len(writer.skipped_ids))
    return out


def _write_batch(batch: dict, extractor: Extractor, writer: StoreWriter, images, device) -> None:
    for image_id, reason in batch["failed"]:
        log.warning("image %d (%s) skipped: %s", image_id, images[image_id], reason)
        writer.skip(image_id, reason)
    if not batch["ids"]:
        return
    pixels = batch["pixels"]
    if isinstance(pixels, list):
        pixels = [p.to(device, non_blocking=True) for p in pixels]
    else:
        pixels = pixels.to(device, non_blocking=True)
    outputs = extractor(pixels, batch["sizes"], batch["ids"])
    for image_id, (w, h), (boxes, features, *labels) in zip(batch["ids"], batch["sizes"], outputs):
        labels = {k: v.cpu().numpy() for k, v in labels[0].items()} if labels else None
        writer.add(image_id, w, h, boxes.float().cpu().numpy(), features.float().cpu().numpy(),
                   labels)


def _settings_path(out: str) -> str:
    return f"{out}.work.json"


def _check_unfinished(out: str, attrs: Mapping[str, object], resume: bool) -> None:
    """Refuse to resume an unfinished store made with other settings (it would mix features)."""
    path = _settings_path(out)
    settings = json.loads(json.dumps(dict(attrs), default=str))
    if resume and os.path.exists(path) and os.path.exists(f"{out}.work.h5"):
        with open(path) as f:
            previous = json.load(f)
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if changed:
            shown = ", ".join(f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise UpdownError(
                f"{out}: an unfinished extraction with other settings is waiting in {out}.work.h5 "
                f"({shown}); rerun with its settings or start over with restart=true"
            )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings, f, indent=1)
