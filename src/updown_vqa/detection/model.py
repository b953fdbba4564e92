"""Bottom-up regions (Anderson et al. 2018, arXiv:1707.07998) from a torchvision Faster R-CNN.

The detector proposes boxes and scores them per class; `select_regions` applies the bottom-up rule
(per-class NMS, best class score, threshold, 10 to 100 boxes). Each kept box is described by RoIAlign
with a 1x1 output (a mean pool over the box) on C5, the layer4 output of the detector's own ResNet
body, taken from the same forward pass: the weights that found the boxes describe them, at the cost
of no second backbone pass. The paper instead pools C4 to 14x14 and runs res5 on every box, which
costs a res5 pass per region; C5 RoIAlign is the cheap equivalent used by grid-feature work.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image
from torchvision.ops.misc import FrozenBatchNorm2d

from updown_vqa.core.errors import UpdownError
from updown_vqa.detection.selection import select_regions
from updown_vqa.features.rois import pool_boxes, split_with_coords

C5_STRIDE = 32


# build_detector's arguments that a train_detector checkpoint records (hparams "detector"), so that
# extraction rebuilds the same network: see `detector_spec`.
ARCHITECTURE = ("backbone", "num_classes", "anchor_sizes", "aspect_ratios", "representation_size", "norm",
                "fpn_channels", "roi_sampling_ratio")


def build_detector(backbone: str = "resnet50", weights: str | None = None, num_classes: int = 91,
                   image_size: int = 600, proposals: int = 300, seed: int = 0,
                   anchor_sizes=None, aspect_ratios=(0.5, 1.0, 2.0), representation_size: int = 1024,
                   norm: str = "frozen", fpn_channels: int = 256, roi_sampling_ratio: int = 2,
                   trainable_layers: int = 0) -> FasterRCNN:
    """A Faster R-CNN with a ResNet-FPN backbone, in eval mode, for square image_size inputs.

    `weights`: a torchvision weight name of fasterrcnn_{backbone}_fpn (e.g. COCO_V1 for resnet50),
    a state-dict path, a checkpoint of `python -m updown_vqa.train_detector` (its recorded
    architecture replaces the arguments), or None for a seeded random initialisation.
    num_classes counts background. anchor_sizes: one size per FPN level (five), None for
    torchvision's 32..512; norm: "frozen" (torchvision's FrozenBatchNorm2d) or "batch" (trainable
    BatchNorm2d, for training from scratch); fpn_channels: 256 in torchvision, fewer for small CPU
    models (the FPN and RPN convolutions cost more than a ResNet-18 at 256); roi_sampling_ratio: the
    box head's RoIAlign samples per bin side (2 in torchvision; 1 is 4x cheaper, whose backward
    dominates training on a CPU).
    """
    settings = {"min_size": image_size, "max_size": image_size,
                "rpn_pre_nms_top_n_test": max(1000, proposals), "rpn_post_nms_top_n_test": proposals}
    if weights and not os.path.isfile(weights):
        builder = getattr(torchvision.models.detection, f"fasterrcnn_{backbone}_fpn")
        try:
            return builder(weights=weights, weights_backbone=None, num_classes=num_classes,
                           **settings).eval()
        except ValueError as e:
            raise UpdownError(f"weights={weights}: {e}; set detector.num_classes to match") from None
    state = _read_weights(weights) if weights else None
    spec = detector_spec(state) if state is not None else None
    if spec:  # a train_detector checkpoint: its own architecture, then its weights
        detector = build_detector(image_size=image_size, proposals=proposals, seed=seed, **spec)
        _load(detector, weights, state)
        return detector
    if norm not in ("frozen", "batch"):
        raise UpdownError(f"norm={norm!r}: choose frozen (pretrained trunks) or batch (from scratch)")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        norm_layer = nn.BatchNorm2d if norm == "batch" else FrozenBatchNorm2d
        body = resnet_fpn(backbone, norm_layer, 5 if norm == "batch" else trainable_layers, fpn_channels)
        parts = {}
        if anchor_sizes is not None:
            sizes = tuple((int(size),) for size in anchor_sizes)
            parts["rpn_anchor_generator"] = AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(sizes))
        if roi_sampling_ratio != 2:
            parts["box_roi_pool"] = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, roi_sampling_ratio)
        if representation_size != 1024:
            resolution = 7  # MultiScaleRoIAlign's output, as torchvision's default box head
            parts["box_head"] = TwoMLPHead(body.out_channels * resolution**2, representation_size)
            parts["box_predictor"] = FastRCNNPredictor(representation_size, num_classes)
            num_classes = None  # given through the predictor
        detector = FasterRCNN(body, num_classes=num_classes, **parts, **settings)
    if state is not None:
        _load(detector, weights, state)
    return detector.eval()


def resnet_fpn(backbone: str, norm_layer, trainable_layers: int, fpn_channels: int) -> BackboneWithFPN:
    """torchvision's resnet_fpn_backbone (same module names, so its state dicts load) with a chosen
    FPN width; stages before the last `trainable_layers` are frozen."""
    trunk = getattr(torchvision.models, backbone)(weights=None, norm_layer=norm_layer)
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    train += ["bn1"] if trainable_layers == 5 else []
    for name, parameter in trunk.named_parameters():
        parameter.requires_grad_(any(name.startswith(layer) for layer in train))
    c2 = trunk.inplanes // 8  # layer1's channels: 64 (basic blocks) or 256 (bottlenecks)
    return BackboneWithFPN(trunk, {f"layer{k}": str(k - 1) for k in range(1, 5)},
                           [c2 * 2**k for k in range(4)], fpn_channels)


def _read_weights(path: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UpdownError(f"weights={path}: cannot load it as a state dict or checkpoint "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def detector_spec(state: dict) -> dict | None:
    """The architecture a train_detector checkpoint records (build_detector's defaults for what it
    leaves out), or None for a plain state dict."""
    spec = state.get("hyper_parameters", {}).get("detector") if isinstance(state, dict) else None
    if not isinstance(spec, dict):
        return None
    defaults = inspect.signature(build_detector).parameters
    return {key: spec.get(key, defaults[key].default) for key in ARCHITECTURE}


def trained_detector(weights: str | None) -> dict | None:
    """The recorded architecture when `weights` is a train_detector checkpoint, else None."""
    if not weights or not str(weights).endswith(".ckpt") or not os.path.isfile(weights):
        return None
    return detector_spec(_read_weights(weights))


def _load(detector: nn.Module, path: str, state: dict) -> None:
    """Load a state dict saved from the same architecture, with an error that says what differs."""
    if "hyper_parameters" in state and "state_dict" in state:  # a train_detector checkpoint
        prefix = "detector."
        state = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    elif isinstance(state, dict) and ("model" in state or "state_dict" in state):
        state = state.get("model", state.get("state_dict"))
    try:
        detector.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:3]
        raise UpdownError(
            f"weights={path}: not a state dict of this Faster R-CNN ({' '.join(first)}); check "
            "backbone= and detector.num_classes against the file"
        ) from None


def box_features(detector: FasterRCNN, pyramid: dict, boxes: list[torch.Tensor], image_sizes) -> torch.Tensor:
    """The box head's output [R, representation] at boxes (input pixels) of all images: what the box
    classifier, and a train_detector attribute head, read."""
    heads = detector.roi_heads
    return heads.box_head(heads.box_roi_pool(pyramid, boxes, image_sizes))


def c5_channels(detector: FasterRCNN) -> int:
    """Channels of the ResNet body's layer4 output (2048 for resnet50 and deeper, 512 for resnet18)."""
    convs = [m for m in detector.backbone.body.layer4[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


REGION_FEATURES = {
    "c5": "RoIAlign 1x1 on C5 (layer4) of the detector's ResNet body",
    "box_head": "the box head's output (the feature its classifier reads) at each kept box",
}


class RegionExtractor:
    """Detect, select (bottom-up rule), and describe each kept box.

    `region_features`: "c5" (default), RoIAlign 1x1 on C5; or "box_head", the representation the
    detector's box classifier (and a train_detector attribute head) reads, pooled from the FPN level
    the box belongs to. On small images C5 is too coarse to tell boxes apart (4x4 cells at 128 px):
    docs/extraction.md.
    """

    def __init__(self, detector: FasterRCNN, nms_iou: float = 0.3, score_threshold: float = 0.2,
                 min_boxes: int = 10, max_boxes: int = 100, per_class_boxes: bool = False,
                 spatial: bool = False, region_features: str = "c5"):
        if region_features not in REGION_FEATURES:
            raise UpdownError(f"detector.region_features={region_features!r}: choose one of "
                              f"{', '.join(REGION_FEATURES)}")
        self.detector = detector
        self.rule = {"nms_iou": nms_iou, "score_threshold": score_threshold,
                     "min_boxes": min_boxes, "max_boxes": max_boxes}
        self.per_class_boxes, self.spatial, self.region_features = per_class_boxes, spatial, region_features
        width = (detector.roi_heads.box_predictor.cls_score.in_features if region_features == "box_head"
                 else c5_channels(detector))
        self.feature_dim = width + (4 if spatial else 0)

    def __call__(self, images: torch.Tensor, sizes, ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """images: uint8 [B, 3, S, S]; one (boxes [K, 4] original pixels, features [K, D]) per image."""
        image_list = self._prepare(images)
        stages = self.detector.backbone.body(image_list.tensors)  # C2..C5 as "0".."3"
        kept, pyramid = self._detect(image_list, stages)  # boxes [K, 4] in input pixels, per image
        height, width = images.shape[-2:]
        boxes = [b * b.new_tensor([w / width, h / height] * 2) for b, (w, h) in zip(kept, sizes)]
        if self.region_features == "c5":
            features = pool_boxes(stages["3"], boxes, C5_STRIDE, (height, width), 1, list(sizes),
                                  self.spatial)
            return list(zip(boxes, features))
        pooled = box_features(self.detector, pyramid, kept, image_list.image_sizes)
        return list(zip(boxes, split_with_coords(pooled, boxes, list(sizes), self.spatial)))

    def _prepare(self, images: torch.Tensor) -> ImageList:
        """Normalised as the detector expects, padded to a multiple of the C5 stride."""
        transform = self.detector.transform
        x = images.float() / 255.0
        mean = x.new_tensor(transform.image_mean).view(1, 3, 1, 1)
        std = x.new_tensor(transform.image_std).view(1, 3, 1, 1)
        height, width = x.shape[-2:]
        pad = (0, -width % C5_STRIDE, 0, -height % C5_STRIDE)
        return ImageList(F.pad((x - mean) / std, pad), [(height, width)] * len(x))

    def _detect(self, image_list: ImageList, stages: dict) -> tuple[list[torch.Tensor], dict]:
        """Proposals scored by the box head, then the bottom-up selection per image; and the FPN."""
        heads = self.detector.roi_heads
        pyramid = self.detector.backbone.fpn(stages)
        proposals, _ = self.detector.rpn(image_list, pyramid)  # [N_b, 4] per image
        pooled = box_features(self.detector, pyramid, proposals, image_list.image_sizes)
        logits, deltas = heads.box_predictor(pooled)
        class_boxes = heads.box_coder.decode(deltas.float(), proposals)  # [R, C, 4]
        scores = logits.float().softmax(dim=-1)  # [R, C], column 0 is background
        counts = [len(p) for p in proposals]
        kept = []
        for props, per_class, probs, size in zip(proposals, class_boxes.split(counts),
                                                 scores.split(counts), image_list.image_sizes):
            boxes = clip_boxes_to_image(per_class[:, 1:], size) if self.per_class_boxes else props
            kept.append(select_regions(boxes.float(), probs[:, 1:], **self.rule)[0])
        return kept, pyramid
