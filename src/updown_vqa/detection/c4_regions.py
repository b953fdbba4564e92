"""Bottom-up regions from the C4 detector: the selection of generate_tsv.py, labels of each box.

As peteanderson80/bottom-up-attention tools/generate_tsv.py: the kept boxes and their features are
the RPN proposals' (not the class-regressed boxes), per-class NMS at 0.3 with Caffe's +1 areas,
boxes whose best non-background class score reaches 0.2, at least 10 and at most 100 (or 36).
"""

from __future__ import annotations

import os

import torch

from updown_vqa.core.errors import UpdownError
from updown_vqa.detection.c4 import C4Detector
from updown_vqa.detection.caffe_weights import load_published, load_strict
from updown_vqa.detection.selection import select_indices

PER_BOX = ("object_ids", "object_scores", "attribute_ids", "attribute_scores")
# C4Detector's arguments that a train_detector checkpoint records (hparams "detector").
C4_ARCHITECTURE = ("depth", "num_classes", "num_attributes", "width", "pool_size", "norm",
                   "rpn_hidden", "anchor_scales", "anchor_ratios", "min_box")


def build_c4(depth: int = 101, weights: str | None = None, num_classes: int = 1601,
             num_attributes: int = 401, seed: int = 0, proposals: int = 300) -> C4Detector:
    """The C4 detector with published weights (.pth / .pkl), a train_detector checkpoint (.ckpt,
    whose recorded architecture replaces the arguments) or, without weights, seeded random ones."""
    spec = {"depth": depth, "num_classes": num_classes, "num_attributes": num_attributes}
    state = _checkpoint(weights) if weights and str(weights).endswith(".ckpt") else None
    if state is not None:
        spec = {k: v for k, v in state["hyper_parameters"]["detector"].items() if k in C4_ARCHITECTURE}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        detector = C4Detector(**spec, post_nms=proposals)
    if state is not None:
        prefix = "detector."
        load_strict(detector, {k[len(prefix):]: v for k, v in state["state_dict"].items()
                               if k.startswith(prefix)}, weights)
    elif weights:
        if not os.path.isfile(weights):
            raise UpdownError(f"weights={weights}: no such file; pass the published .pth (MILVLG) or "
                              ".pkl (airsplay) file, or a train_detector checkpoint")
        load_published(detector, weights)
    return detector.eval()


def _checkpoint(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UpdownError(f"weights={path}: cannot load it as a checkpoint ({type(e).__name__})") from None
    detector = state.get("hyper_parameters", {}).get("detector", {}) if isinstance(state, dict) else {}
    if detector.get("arch") != "c4":
        raise UpdownError(f"weights={path}: a train_detector checkpoint of arch "
                          f"{detector.get('arch', 'fpn')!r}, not c4; set detector.arch to match")
    return state


def read_vocab(path: str, size: int, what: str) -> list[str]:
    """Names of a Visual Genome vocabulary file (the first comma-separated name of each line),
    which must match the head: `size` entries besides background / "no attribute"."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip().split(",")[0] for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UpdownError(f"{what}={path}: cannot read it ({e})") from None
    if len(names) != size:
        raise UpdownError(f"{what}={path}: {len(names)} names but the detector's head has {size} "
                          "(besides background / no attribute); pass the vocabulary the weights "
                          "were trained with (Visual Genome 1600-400-20)")
    return names


class C4RegionExtractor:
    """Detect (one forward per image, as Caffe), select (generate_tsv.py), describe each kept box."""

    def __init__(self, detector: C4Detector, min_size: int = 600, max_size: int = 1000,
                 nms_iou: float = 0.3, score_threshold: float = 0.2, min_boxes: int = 10,
                 max_boxes: int = 100, per_class_boxes: bool = False, spatial: bool = False):
        self.detector, self.min_size, self.max_size = detector, min_size, max_size
        self.rule = {"nms_iou": nms_iou, "score_threshold": score_threshold,
                     "min_boxes": min_boxes, "max_boxes": max_boxes}
        self.per_class_boxes, self.spatial = per_class_boxes, spatial
        self.feature_dim = detector.feature_dim + (4 if spatial else 0)
        self.per_box = PER_BOX

    def __call__(self, images, sizes, ids) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        """uint8 RGB images at their own sizes ([3, H, W] each); per image (boxes [K, 4] original
        pixels, features [K, D], labels: {object_ids, object_scores, attribute_ids, ...} [K])."""
        outputs = self.detector.detect(list(images), self.min_size, self.max_size)
        return [self._select(out, size) for out, size in zip(outputs, sizes)]

    def _select(self, out: dict, size: tuple[int, int]):
        probs = out["class_probs"][:, 1:]  # [P, C - 1] without background
        boxes = out["class_boxes"][:, 1:] if self.per_class_boxes else out["boxes"]
        order, _, best = select_indices(boxes, probs, **self.rule, pixel_offset=1)
        kept = boxes[order, best] if self.per_class_boxes else boxes[order]
        features = out["features"][order].float()
        if self.spatial:
            w, h = size
            features = torch.cat([features, kept / kept.new_tensor([w, h, w, h])], dim=1)
        object_scores, object_ids = probs[order].max(dim=1)
        attribute_scores, attribute_ids = out["attribute_probs"][order, 1:].max(dim=1)
        labels = {"object_ids": object_ids, "object_scores": object_scores,
                  "attribute_ids": attribute_ids, "attribute_scores": attribute_scores}
        return kept, features, labels
