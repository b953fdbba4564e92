"""Answer a question about any image with a trained checkpoint, its features made as in training.

    python -m updown_vqa.answer ckpt=PATH image=IMG.jpg question="what color is the bus?"

The checkpoint carries the record of how its training features were made (hparams `feature_attrs`,
the store's attributes); the image's features are extracted by that same recipe, so the same
weights (checked by sha256), image size, stage and thresholds. In a notebook:
`answer_image(ckpt, image, question) -> [(answer, score), ...]`. Features of mode `boxes` need boxes:
`boxes=[[x1, y1, x2, y2], ...]` in image pixels, or, when none are given, the cells of the trunk's grid.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import sys
import typing
from functools import lru_cache

import hydra
import numpy as np
import torch
from omegaconf import AnyNode, DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.text import Vocabulary, tokenize
from updown_vqa.extract import MODES, build_extractor, device_of, grid_boxes
from updown_vqa.features.images import load_pixels
from updown_vqa.features.rois import weights_record
from updown_vqa.vqa.module import UpDownVQA

log = logging.getLogger(__name__)


# Data-only classes of OmegaConf containers, which Hydra's `instantiate` leaves in a model's hparams
# (lists passed as kwargs become ListConfig); allowed by torch's restricted (weights_only) unpickler.
_HPARAM_GLOBALS = [ListConfig, DictConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, list,
                   dict, int, collections.defaultdict]


def load_model(ckpt: str) -> UpDownVQA:
    """The checkpoint's model in eval mode on the CPU (loaded without unpickling arbitrary objects)."""
    if not os.path.isfile(ckpt):
        raise UpdownError(f"ckpt={ckpt}: checkpoint not found")
    return _load_model(ckpt, os.stat(ckpt).st_mtime_ns)


@lru_cache(maxsize=2)
def _load_model(ckpt: str, mtime_ns: int) -> UpDownVQA:
    """Cached per file version: a notebook asking many questions loads the checkpoint once."""
    try:
        with torch.serialization.safe_globals(_HPARAM_GLOBALS):
            model = UpDownVQA.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another model's checkpoint, an old format
        raise UpdownError(f"ckpt={ckpt}: cannot load it as an UpDownVQA checkpoint "
                          f"({type(e).__name__}: {e})") from None
    return model.eval()


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
    device = str(device_of(device))
    extractor = _extractor(json.dumps(recipe, sort_keys=True), device)
    try:
        pixels, size = load_pixels(image, int(recipe["image_size"]))
    except Exception as e:  # missing, unreadable or not an image
        raise UpdownError(f"image={image}: cannot read it ({type(e).__name__}: {e})") from None
    if recipe["extractor"] == "boxes":
        extractor.boxes = {0: _boxes_or_grid(boxes, recipe, extractor.stride, size)}
    elif boxes is not None:
        log.warning("boxes= is only used for features of mode boxes; these are %s features",
                    recipe["extractor"])
    with torch.inference_mode():
        [(kept, features)] = extractor(pixels[None].to(device), [size], [0])
    return kept.float().cpu(), features.float().cpu()


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


def answer_image(ckpt, image: str, question: str, boxes=None, top_k: int = 5,
                 weights: str | None = None, device: str | None = None) -> list[tuple[str, float]]:
    """The top-k answers and their sigmoid scores; `ckpt` is a checkpoint path or a loaded model."""
    model = load_model(str(ckpt)) if isinstance(ckpt, (str, os.PathLike)) else ckpt
    hp = model.hparams
    recipe = feature_recipe(hp.get("feature_attrs"), str(ckpt), weights)
    _, features = image_features(recipe, image, boxes, device)  # [K, D]
    if features.shape[1] != hp.feature_dim:
        raise UpdownError(f"image={image}: {features.shape[1]}-d features, but the model takes "
                          f"{hp.feature_dim}-d ones")
    tokens, lengths = Vocabulary(hp.vocab).encode(tokenize([question]), hp.max_question_length)
    batch = {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths),
             "features": features[None], "mask": torch.ones(1, len(features), dtype=torch.bool)}
    with torch.no_grad():
        scores = torch.sigmoid(model.eval()(batch)[0])  # [A]
    top = scores.topk(min(top_k, len(scores)))
    return [(hp.answers[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]


def quote_free_text(argv: list[str], keys=("question", "image", "ckpt", "weights")) -> list[str]:
    """Quote free-text values (apostrophes, commas) so Hydra's override grammar takes them as is."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in keys and value and value[0] not in "'\"":
            arg = f"{key}='" + value.replace("'", "\\'") + "'"
        out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="extract/answer")
def _main(cfg: DictConfig) -> None:
    try:
        boxes = OmegaConf.to_container(cfg.boxes) if cfg.boxes is not None else None
        answers = answer_image(cfg.ckpt, cfg.image, cfg.question, boxes, cfg.top_k, cfg.weights,
                               cfg.device)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(cfg.question)
    for answer, score in answers:
        print(f"  {answer:<20} {score:.3f}")


def main() -> None:
    sys.argv[1:] = quote_free_text(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
