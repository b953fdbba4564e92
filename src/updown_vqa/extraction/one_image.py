"""The features of one new image, made exactly as a feature store's were (its recorded recipe): what
`answer` needs to ask a checkpoint about any image."""

from __future__ import annotations

import json
import logging
import math
import os
from functools import lru_cache

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.devices import choose_device
from updown_vqa.core.errors import UpdownError
from updown_vqa.extraction.extractors import MODES, build_extractor
from updown_vqa.features.images import load_pixels
from updown_vqa.features.pixels import decode
from updown_vqa.features.rois import grid_boxes, weights_record

log = logging.getLogger(__name__)


def feature_recipe(attrs: dict | None, source: str, weights: str | None = None) -> dict:
    """The checkpoint's feature record, its weights checked to be the ones the features came from."""
    attrs = OmegaConf.to_container(attrs) if isinstance(attrs, DictConfig) else dict(attrs or {})
    if attrs.get("extractor") not in MODES:
        raise UpdownError(
            f"{source}: its features were made by {attrs.get('extractor', 'an unrecorded extractor')!r}"
            f", which answer cannot remake for a new image; train on features from `extract` "
            f"(mode {', '.join(MODES)})"
        )
    if weights:
        attrs["weights"] = weights
    if str(attrs["weights"]).startswith("random"):
        return attrs
    model = f"fasterrcnn_{attrs['backbone']}_fpn" if attrs["extractor"] == "regions" else attrs["backbone"]
    if attrs.get("detector_arch") == "c4":
        model = f"{attrs['backbone']}_c4"
    if not (os.path.isfile(attrs["weights"]) or "_Weights." in str(attrs["weights"])):
        raise UpdownError(f"{source}: its features were made with weights {attrs['weights']}, which "
                          "is not there any more; pass weights=PATH to that file")
    found = weights_record(model, attrs["weights"])
    expected = attrs.get("weights_sha256")
    if expected and found.get("weights_sha256") != expected:
        raise UpdownError(f"{source}: weights {attrs['weights']} are not the ones its features were "
                          f"made with (sha256 {found.get('weights_sha256')}, expected {expected}); "
                          "pass weights=PATH to the right file")
    return attrs


@lru_cache(maxsize=2)
def _extractor(recipe_json: str, device: str):
    """Extractors are cached: building a trunk or a detector takes longer than one image."""
    return build_extractor(json.loads(recipe_json), device)


def image_features(recipe: dict, image: str, boxes=None, device: str | None = None):
    """(boxes [K, 4], features [K, D]) of one image, made by the recipe of a feature store."""
    device = str(choose_device(device))
    extractor = _extractor(json.dumps(recipe, sort_keys=True), device)
    try:
        own_size = recipe.get("detector_arch") == "c4"  # it resizes the image itself (600 / 1000)
        pixels, size = load_pixels(image, None if own_size else int(recipe["image_size"]))
    except Exception as e:  # missing, unreadable or not an image
        raise UpdownError(f"image={image}: cannot read it ({type(e).__name__}: {e})") from None
    if recipe["extractor"] == "boxes":
        extractor.boxes = {0: _boxes_or_grid(boxes, recipe, extractor.stride, size)}
    elif boxes is not None:
        log.warning("boxes= is only used for features of mode boxes; these are %s features",
                    recipe["extractor"])
    with torch.inference_mode():
        [(kept, features, *_)] = extractor(pixels[None].to(device), [size], [0])
    return kept.float().cpu(), features.float().cpu()


def model_regions(model, image, boxes=None, weights: str | None = None, device: str | None = None,
                  source: str = "the checkpoint") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's regions as a checkpoint's model (VQA or captioning) reads them: the boxes [K, 4] in
    image pixels, features [1, K, D] and mask [1, K] on the model's device. An end-to-end model
    (`visual=grid`) encodes the pixels with its own trunk, its cells the regions; any other gets them
    from the recipe of the feature store it was trained on (`feature_recipe`)."""
    hp = model.hparams
    if hp.get("visual") == "grid":
        if boxes is not None:
            log.warning("boxes= is not used: an end-to-end model attends over the cells of its grid")
        pixels, (w, h) = decode(image, int(hp.image_size))
        inputs = {"images": pixels[None].to(model.device),
                  "image_index": torch.zeros(1, dtype=torch.long, device=model.device)}
        with torch.no_grad():
            features, mask = model.eval().regions(inputs)  # [1, K, D], [1, K]
        kept = features[0, :, -4:].float().cpu() * torch.tensor([w, h, w, h])  # cell boxes x1/w y1/h x2/w y2/h
        return kept, features, mask
    recipe = feature_recipe(hp.get("feature_attrs"), source, weights)
    kept, features = image_features(recipe, image, boxes, device)  # [K, 4], [K, D]
    if features.shape[1] != hp.feature_dim:
        raise UpdownError(f"image={image}: {features.shape[1]}-d features, but the model takes "
                          f"{hp.feature_dim}-d ones")
    return kept, features[None].to(model.device), torch.ones(1, len(features), dtype=torch.bool, device=model.device)


def _boxes_or_grid(boxes, recipe: dict, stride: int, size: tuple[int, int]) -> np.ndarray:
    """The given boxes [n, 4], or else the cells of the trunk's output grid on this image."""
    if boxes is not None and len(boxes):
        boxes = np.asarray(boxes, np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise UpdownError(f"boxes={boxes.tolist()}: give a list of [x1, y1, x2, y2] in pixels")
        return boxes
    side = int(recipe["image_size"])
    cells = math.ceil(side / stride)  # a ResNet stage's output side, every stride-2 step rounding up
    return grid_boxes((cells, cells), stride, (side, side), size).numpy()
