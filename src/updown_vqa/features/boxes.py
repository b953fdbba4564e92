"""Extract features at given boxes for a folder of images into a feature store (the `boxes` mode)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from updown_vqa.features.rois import build_trunk, roi_features
from updown_vqa.features.store import write_store

log = logging.getLogger(__name__)


class _Images(Dataset):
    """Decodes and resizes images in DataLoader workers; returns uint8 [3, S, S] and the original size."""

    def __init__(self, paths: list[str], image_size: int):
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            image = image.convert("RGB")
            size = image.size
            if size != (self.image_size, self.image_size):
                image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
            array = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        return array, torch.tensor(size)


def extract_box_features(
    images: dict[int, str],
    boxes: dict[int, np.ndarray],
    out: str,
    backbone: str = "resnet152",
    weights: str | None = None,
    stage: str = "layer4",
    output_size: int = 1,
    image_size: int = 448,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float32",
    seed: int = 0,
    device: str | None = None,
) -> None:
    """RoI features at `boxes[id]` (pixels of the original image) for every image id, into `out`."""
    torch.manual_seed(seed)  # a randomly initialised trunk is then the same on every run
    trunk, channels, stride = build_trunk(backbone, weights, stage)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    trunk.to(device)
    ids = sorted(images)
    loader = DataLoader(
        _Images([images[i] for i in ids], image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device == "cuda",
    )
    features, sizes = [], []
    with tqdm(total=len(ids), desc=f"features -> {out}", unit="img") as bar:
        for batch, batch_sizes in loader:
            start = len(features)
            batch_boxes = [
                torch.as_tensor(boxes[i], dtype=torch.float32, device=device)
                for i in ids[start : start + len(batch)]
            ]
            size_list = [tuple(s.tolist()) for s in batch_sizes]
            feats = roi_features(
                trunk,
                batch.to(device, non_blocking=True),
                batch_boxes,
                stride,
                output_size,
                size_list,
            )
            features += [f.cpu().numpy() for f in feats]
            sizes += size_list
            bar.update(len(batch))
    attrs = {
        "extractor": "boxes",
        "backbone": backbone,
        "weights": weights or f"random (seed {seed})",
        "stage": stage,
        "roi_output_size": output_size,
        "image_size": image_size,
        "spatial_features": "x1/w y1/h x2/w y2/h appended",
    }
    write_store(
        out,
        ids,
        sizes,
        [np.asarray(boxes[i], np.float32) for i in ids],
        features,
        attrs=attrs,
        dtype=dtype,
    )
    log.info("wrote %d images x %d-d features to %s", len(ids), features[0].shape[1], out)
