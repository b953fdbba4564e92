"""Features at given boxes for a folder of images (`extract mode=boxes` and the `shapes` builder)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.images import extract_to_store
from updown_vqa.features.rois import build_trunk, roi_features, weights_record

log = logging.getLogger(__name__)


class BoxExtractor:
    """RoI features at given boxes (pixels of the original image, per image id) from a ResNet trunk."""

    def __init__(self, trunk: torch.nn.Module, channels: int, stride: int,
                 boxes: Mapping[int, np.ndarray], output_size: int = 1, spatial: bool = True):
        self.trunk, self.stride, self.boxes = trunk, stride, boxes
        self.output_size, self.spatial = output_size, spatial
        self.feature_dim = channels * output_size**2 + (4 if spatial else 0)

    def __call__(self, images: torch.Tensor, sizes, ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """images: uint8 [B, 3, S, S]; one (boxes [n, 4], features [n, D]) per image."""
        boxes = [torch.as_tensor(self.boxes[i], dtype=torch.float32, device=images.device)
                 for i in ids]
        features = roi_features(self.trunk, images, boxes, self.stride, self.output_size,
                                list(sizes), self.spatial)
        return list(zip(boxes, features))


def check_boxes(boxes: Mapping[int, np.ndarray], ids, source: str) -> dict[int, np.ndarray]:
    """Boxes [n, 4] float32 for each of `ids`; a missing id or a malformed list names both."""
    missing = [i for i in ids if i not in boxes]
    if missing:
        raise UpdownError(f"{source}: no boxes for image ids {missing[:10]} ({len(missing)} in all);"
                          " add them or remove those images")
    checked = {}
    for i in ids:
        array = np.asarray(boxes[i], np.float32)
        if array.size and (array.ndim != 2 or array.shape[1] != 4):
            raise UpdownError(f"{source}: image id {i} has boxes of shape {array.shape}; expected "
                              "a list of [x1, y1, x2, y2] in pixels")
        checked[i] = array.reshape(-1, 4)
    return checked


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
    record = weights_record(backbone, weights, allow_random=weights is None, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # a randomly initialised trunk is then the same on every run
        trunk, channels, stride = build_trunk(backbone, weights, stage)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    boxes = check_boxes(boxes, sorted(images), out)
    extractor = BoxExtractor(trunk.to(device), channels, stride, boxes, output_size, spatial=True)
    attrs = {
        "extractor": "boxes",
        "backbone": backbone,
        **record,
        "stage": stage,
        "roi_output_size": output_size,
        "image_size": image_size,
        "spatial_features": True,
    }
    extract_to_store(images, extractor, extractor.feature_dim, out, attrs, image_size, batch_size,
                     num_workers, device=device, dtype=dtype, resume=False)
    log.info("wrote %d images x %d-d features to %s", len(images), extractor.feature_dim, out)
