"""The feature extractors of `python -m updown_vqa.extract`: grid cells, RoI features at given boxes,
and bottom-up regions; the recipe a store records, and rebuilding an extractor from it.

Image ids are the integer ending each file name (COCO_val2014_000000000042.jpg -> 42).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

import torch
import torchvision
from omegaconf import DictConfig

from updown_vqa.core.cache import file_identity, file_state, files_digest
from updown_vqa.core.cli import in_multirun
from updown_vqa.core.devices import choose_device
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.core.settings import FLAG, Number, OneOf, check_group
from updown_vqa.detection.c4_regions import C4RegionExtractor, build_c4, read_vocab
from updown_vqa.detection.model import (
    REGION_FEATURES,
    RegionExtractor,
    build_detector,
    trained_detector,
)
from updown_vqa.detection.selection import check_detector_settings
from updown_vqa.features.boxes import BoxExtractor, check_boxes
from updown_vqa.features.images import extract_to_store, list_keyed_images
from updown_vqa.features.parts import merge_when_complete, part_ready
from updown_vqa.features.rois import (
    build_trunk,
    end_to_end_trunk,
    grid_boxes,
    normalize_images,
    weights_record,
)
from updown_vqa.features.shards import Shard, choose_shard, part_path
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.work import check_inputs, check_space, remove_inputs

log = logging.getLogger(__name__)
MODES = ("grid", "boxes", "regions")
TRUNK_CUTS = ("layer1", "layer2", "layer3", "layer4")
DETECTOR_KEYS = ("num_classes", "proposals", "per_class_boxes", "nms_iou", "score_threshold",
                 "min_boxes", "max_boxes")
SETTINGS = {"mode": OneOf(MODES), "ids": OneOf(("auto", "name")), "seed": Number("int", 0, 2**32 - 1),
            "image_size": Number("int", 32, 8192), "min_size": Number("int", 32, 8192),
            "max_size": Number("int", 32, 8192), "roi_output_size": Number("int", 1, 64),
            "batch_size": Number("int", 1, 2**16), "num_workers": Number("int", 0, 1024),
            "dtype": OneOf(("float32", "float16")), "trunk": OneOf(TRUNK_CUTS), "stage": OneOf(TRUNK_CUTS),
            **{key: FLAG for key in ("allow_random_weights", "spatial_features", "pin_memory", "autocast",
                                     "restart", "allow_nonfinite", "bench")},
            "bench_images": Number("int", 1, 10**6), "bench_repeats": Number("int", 1, 1000)}


def check_extract_settings(cfg: DictConfig) -> None:
    """Every setting of `extract` (and its bench) before any image is read."""
    check_group(cfg, "", SETTINGS)
    check_detector_settings(cfg)
    if cfg.get("min_size") and cfg.get("max_size") and cfg.min_size > cfg.max_size:
        raise UpdownError(f"min_size={cfg.min_size} > max_size={cfg.max_size}: the shorter side's size "
                          "must not exceed the longer side's limit")


class GridExtractor:
    """Each cell of the trunk's output grid is a region whose box is that cell in original pixels."""

    def __init__(self, trunk: torch.nn.Module, channels: int, stride: int, spatial: bool = False):
        self.trunk, self.stride, self.spatial = trunk, stride, spatial
        self.feature_dim = channels + (4 if spatial else 0)

    def __call__(self, images: torch.Tensor, sizes, ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """images: uint8 [B, 3, S, S]; one (boxes [G*G, 4], features [G*G, D]) per image, row by row."""
        grid = self.trunk(normalize_images(images))  # [B, C, G_h, G_w]
        features = grid.flatten(2).transpose(1, 2)  # [B, G_h*G_w, C]
        out = []
        for cells, (w, h) in zip(features, sizes):
            boxes = grid_boxes(grid.shape[-2:], self.stride, images.shape[-2:], (w, h))
            boxes = boxes.to(images.device)
            if self.spatial:
                cells = torch.cat([cells.float(), boxes / boxes.new_tensor([w, h, w, h])], dim=1)
            out.append((boxes, cells))
        return out


def make_recipe(cfg: DictConfig) -> dict:
    """What the store records about how it was made; checks the mode, backbone and weights now."""
    if not cfg.backbone.startswith("resnet") or not hasattr(torchvision.models, cfg.backbone):
        raise UpdownError(f"backbone={cfg.backbone!r}: use a torchvision ResNet (resnet18..resnet152)")
    if cfg.mode == "regions" and cfg.detector.get("arch", "fpn") != "fpn":
        return _c4_recipe(cfg)
    model = f"fasterrcnn_{cfg.backbone}_fpn" if cfg.mode == "regions" else cfg.backbone
    recipe = {"extractor": cfg.mode, "backbone": cfg.backbone,
              **weights_record(model, cfg.weights, cfg.allow_random_weights, cfg.seed),
              "image_size": int(cfg.image_size), "spatial_features": bool(cfg.spatial_features)}
    if cfg.mode == "regions":
        recipe |= {key: cfg.detector[key] for key in DETECTOR_KEYS}
        trained = trained_detector(cfg.weights)
        if trained:  # a train_detector checkpoint brings its own architecture and classes
            recipe |= {"backbone": trained["backbone"], "num_classes": trained["num_classes"]}
        recipe["region_features"] = cfg.detector.get("region_features", "c5")
        recipe["feature_pooling"] = REGION_FEATURES[recipe["region_features"]]
    else:
        recipe["stage"] = trunk_cut(cfg)  # the store attribute keeps its name: stores and checkpoints read it
    learned = end_to_end_trunk(cfg.weights) if cfg.mode == "grid" else None
    if learned:  # an end-to-end checkpoint brings its trunk, cut and image size; cells get their boxes
        recipe |= {"backbone": learned["backbone"], "stage": learned["stage"],
                   "image_size": learned["image_size"], "spatial_features": True}
    if cfg.mode == "boxes":
        recipe["roi_output_size"] = int(cfg.roi_output_size)
        recipe["boxes_file"] = os.path.abspath(cfg.boxes) if cfg.boxes else "given per image"
    return recipe


def trunk_cut(cfg: DictConfig) -> str:
    """The ResNet stage the trunk ends after: `trunk=`, or the deprecated `stage=layerN` (a warning)."""
    key, cut = "trunk", cfg.trunk
    if cfg.get("stage") is not None:
        log.warning("extract: stage=%s is deprecated, use trunk=%s (stage is the training stage)",
                    cfg.stage, cfg.stage)
        key, cut = "stage", cfg.stage
    if cut not in TRUNK_CUTS:
        raise UpdownError(f"{key}={cut!r}: the trunk ends after one of {', '.join(TRUNK_CUTS)}")
    return cut


def _c4_recipe(cfg: DictConfig) -> dict:
    """The recipe of `mode=regions detector.arch=c4`: the paper's detector (docs/extraction.md)."""
    detector = cfg.detector
    depth, classes = int(detector.get("depth", 101)), int(detector.num_classes)
    attributes = int(detector.get("num_attributes", 401))
    weights = cfg.weights
    if weights and str(weights).endswith(".ckpt") and os.path.isfile(weights):
        spec = torch.load(weights, map_location="cpu", weights_only=True)  # its own architecture
        spec = spec.get("hyper_parameters", {}).get("detector", {}) if isinstance(spec, dict) else {}
        depth = int(spec.get("depth", depth))
        classes, attributes = int(spec.get("num_classes", classes)), int(spec.get("num_attributes", attributes))
    if weights and not os.path.isfile(weights) and not str(weights).startswith("random") \
            and weights != "DEFAULT":
        raise UpdownError(f"weights={weights}: no such file; detector.arch=c4 takes the published "
                          ".pth (MILVLG) or .pkl (airsplay) file or a train_detector checkpoint")
    record = weights_record(f"caffe_resnet{depth}_c4", weights if weights and os.path.isfile(weights)
                            else None, cfg.allow_random_weights, cfg.seed)
    recipe = {"extractor": "regions", "detector_arch": "c4", "backbone": f"caffe_resnet{depth}",
              "depth": depth, **record, "min_size": int(cfg.min_size), "max_size": int(cfg.max_size),
              "spatial_features": bool(cfg.spatial_features),
              **{key: detector[key] for key in DETECTOR_KEYS}, "num_classes": classes,
              "num_attributes": attributes,
              "feature_pooling": "RoI pooling 14x14 on res4, res5 (dilated), mean: the paper's"}
    for key, size, name in (("objects_vocab", classes - 1, "object_names"),
                            ("attributes_vocab", attributes - 1, "attribute_names")):
        if detector.get(key):
            recipe[name] = json.dumps(read_vocab(detector[key], size, f"detector.{key}"))
    return recipe


def build_extractor(recipe: Mapping, device: str | torch.device = "cpu",
                    boxes: Mapping | None = None):
    """The extractor a recipe (a store's attrs) describes, on `device`; `boxes` for mode `boxes`."""
    weights = None if str(recipe["weights"]).startswith("random") else recipe["weights"]
    seed = int(recipe.get("seed", 0))
    spatial = recipe.get("spatial_features") not in (False, None, "none", "false")
    if recipe.get("detector_arch") == "c4":
        detector = build_c4(int(recipe["depth"]), weights, int(recipe["num_classes"]),
                            int(recipe["num_attributes"]), seed, int(recipe["proposals"]))
        rule = {key: recipe[key] for key in DETECTOR_KEYS[2:]}
        return C4RegionExtractor(detector.to(device), int(recipe["min_size"]),
                                 int(recipe["max_size"]), spatial=spatial, **rule)
    if recipe["extractor"] == "regions":
        detector = build_detector(recipe["backbone"], weights, int(recipe["num_classes"]),
                                  int(recipe["image_size"]), int(recipe["proposals"]), seed)
        rule = {key: recipe[key] for key in DETECTOR_KEYS[2:]}
        return RegionExtractor(detector.to(device), spatial=spatial,
                               region_features=str(recipe.get("region_features", "c5")), **rule)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # a random trunk is the same on every run and in `answer`
        trunk, channels, stride = build_trunk(recipe["backbone"], weights, recipe["stage"])
    trunk.to(device)
    if recipe["extractor"] == "grid":
        return GridExtractor(trunk, channels, stride, spatial)
    return BoxExtractor(trunk, channels, stride, boxes or {}, int(recipe["roi_output_size"]),
                        spatial)


def load_boxes(path: str | None) -> dict[int, list]:
    """{image id: [[x1, y1, x2, y2], ...]} from a json file keyed by image id."""
    if not path:
        raise UpdownError("mode=boxes needs boxes=FILE.json: {\"image_id\": [[x1, y1, x2, y2], ...]}")
    try:
        with open(path) as f:
            return {int(k): v for k, v in json.load(f).items()}
    except (OSError, ValueError, AttributeError) as e:
        raise UpdownError(f"boxes={path}: cannot read it as a json object of image id -> boxes "
                          f"({e})") from None


def extract(cfg: DictConfig) -> str:
    """Write (or finish, or confirm up to date) the feature store `cfg.out` for `cfg.images`. A shard
    (`shard=I/N`, a SLURM array task, a torchrun rank) writes its part, and the last part to finish
    merges them all into `cfg.out` (features/shards.py, features/parts.py)."""
    check_extract_settings(cfg)
    refuse_overwriting_inputs("out", cfg.out, {"images folder": cfg.images, "boxes file": cfg.get("boxes"),
                                               "weights file": cfg.get("weights")})
    images, keys = list_keyed_images(cfg.images, by_name=cfg.get("ids", "auto") == "name")
    recipe = make_recipe(cfg)
    if not cfg.restart and _up_to_date(cfg.out, recipe, cfg.dtype, images, keys):
        print(f"{cfg.out}: up to date ({len(images)} images, same settings); nothing to do")
        return cfg.out
    shard = choose_shard(cfg.get("shard"), in_multirun=in_multirun())
    if shard is None:
        _extract_images(cfg, recipe, images, keys, cfg.out)
        return cfg.out
    parts = [part_path(cfg.out, i, shard.count) for i in range(shard.count)]
    blocks = [Shard(i, shard.count).select(images, cfg.batch_size) for i in range(shard.count)]

    def ready(i: int) -> bool:
        return part_ready(parts[i], recipe, cfg.dtype, blocks[i], keys)

    if cfg.restart or not ready(shard.index):
        log.info("%s: %d of the %d images into %s", shard, len(blocks[shard.index]), len(images),
                 parts[shard.index])
        _extract_images(cfg, recipe, blocks[shard.index], keys, parts[shard.index], shard)
    merge_when_complete(cfg.out, parts, ready)
    return cfg.out


def _extract_images(cfg: DictConfig, recipe: dict, images: Mapping[int, str], keys: list[str] | None,
                    out: str, shard: Shard | None = None) -> None:
    """The store `out` (a shard's part: flat, merged later) of these images, resuming unfinished work."""
    boxes = check_boxes(load_boxes(cfg.boxes), images, cfg.boxes) if cfg.mode == "boxes" else None
    inputs = {"images": os.path.abspath(cfg.images), "image_files": files_digest(images.values()),
              "boxes": file_identity(cfg.boxes) | file_state(cfg.boxes) if cfg.boxes else None}
    if shard is not None:  # its block of images depends on the batch size too
        inputs["shard"] = f"{shard.index}/{shard.count}, batch_size={cfg.batch_size}"
    check_inputs(out, inputs, cfg.restart, "restart=true")  # an unfinished store resumes on its own inputs
    device = choose_device(cfg.device)
    device = shard.device(device) if shard else device
    extractor = build_extractor(recipe, device, boxes)
    regions = _regions_per_image(recipe, boxes, getattr(extractor, "stride", 32))
    itemsize = 2 if cfg.dtype == "float16" else 4
    check_space(cfg.out, len(images) * regions * (extractor.feature_dim * itemsize + 16), cfg.restart,
                "extract with dtype=float16" if itemsize == 4 else "extract fewer images")
    own_sizes = recipe.get("detector_arch") == "c4"  # it resizes each image itself (600 / 1000)
    extract_to_store(images, extractor, extractor.feature_dim, out, recipe,
                     None if own_sizes else recipe["image_size"], cfg.batch_size, cfg.num_workers,
                     cfg.pin_memory, device, cfg.autocast, cfg.dtype, resume=not cfg.restart,
                     image_keys=keys, allow_nonfinite=cfg.get("allow_nonfinite", False),
                     per_box=getattr(extractor, "per_box", ()), layout="flat" if shard else "padded")
    remove_inputs(out)
    store = FeatureStore(out)
    print(f"{out}: {len(store)} images, {len(store.skipped)} skipped, up to {store.max_boxes} "
          f"regions of {store.feature_dim}-d {cfg.mode} features")


def _regions_per_image(recipe: Mapping, boxes: dict | None, stride: int) -> int:
    """The most regions an image can have: the detector's max_boxes, the boxes file's longest list,
    or the cells of the grid of an image_size image."""
    if recipe["extractor"] == "regions":
        return int(recipe["max_boxes"])
    if boxes is not None:
        return max((len(b) for b in boxes.values()), default=1)
    return (-(-int(recipe["image_size"]) // stride)) ** 2


def _up_to_date(out: str, recipe: Mapping, dtype: str, images: Mapping[int, str],
                keys: list[str] | None = None) -> bool:
    """A finished store made with the same recipe that covers every image (or lists it as skipped)."""
    if not os.path.isfile(out) or os.path.exists(f"{out}.work.h5"):
        return False
    try:
        store = FeatureStore(out)
    except UpdownError:
        return False
    same = all(store.attrs.get(k) == v for k, v in recipe.items()) and store.attrs.get("dtype") == dtype
    stored_keys = None if store.image_keys is None else dict(zip(store.image_ids.tolist(), store.image_keys))
    same = same and (keys is None) == (stored_keys is None)
    same = same and (keys is None or all(keys[i] == k for i, k in stored_keys.items() if i < len(keys)))
    done = set(store.image_ids.tolist()) | set(store.skipped.tolist())
    if same and not set(images) <= done:
        log.info("%s: %d new images; extracting all again", out, len(set(images) - done))
    return same and set(images) <= done
