"""Bottom-up regions (Anderson et al. 2018, arXiv:1707.07998) from a torchvision Faster R-CNN.

The detector proposes boxes and scores them per class; `select_regions` applies the bottom-up rule
(per-class NMS, best class score, threshold, 10 to 100 boxes). Each kept box is described by RoIAlign
with a 1x1 output (a mean pool over the box) on C5, the layer4 output of the detector's own ResNet
body, taken from the same forward pass: the weights that found the boxes describe them, at the cost
of no second backbone pass. The paper instead pools C4 to 14x14 and runs res5 on every box, which
costs a res5 pass per region; C5 RoIAlign is the cheap equivalent used by grid-feature work.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import clip_boxes_to_image

from updown_vqa.errors import UpdownError
from updown_vqa.features.rois import pool_boxes
from updown_vqa.features.selection import select_regions

C5_STRIDE = 32


def build_detector(backbone: str = "resnet50", weights: str | None = None, num_classes: int = 91,
                   image_size: int = 600, proposals: int = 300, seed: int = 0) -> FasterRCNN:
    """A Faster R-CNN with a ResNet-FPN backbone, in eval mode, for square image_size inputs.

    `weights`: a torchvision weight name of fasterrcnn_{backbone}_fpn (e.g. COCO_V1 for resnet50),
    a state-dict path, or None for a seeded random initialisation. num_classes counts background.
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
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=0)
        detector = FasterRCNN(body, num_classes=num_classes, **settings)
    if weights:
        _load(detector, weights)
    return detector.eval()


def _load(detector: nn.Module, path: str) -> None:
    """Load a state dict saved from the same architecture, with an error that says what differs."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and ("model" in state or "state_dict" in state):
        state = state.get("model", state.get("state_dict"))
    try:
        detector.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:3]
        raise UpdownError(
            f"weights={path}: not a state dict of this Faster R-CNN ({' '.join(first)}); check "
            "backbone= and detector.num_classes against the file"
        ) from None


def c5_channels(detector: FasterRCNN) -> int:
    """Channels of the ResNet body's layer4 output (2048 for resnet50 and deeper, 512 for resnet18)."""
    convs = [m for m in detector.backbone.body.layer4[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class RegionExtractor:
    """Detect, select (bottom-up rule), and describe each kept box by RoIAlign 1x1 on C5."""

    def __init__(self, detector: FasterRCNN, nms_iou: float = 0.3, score_threshold: float = 0.2,
                 min_boxes: int = 10, max_boxes: int = 100, per_class_boxes: bool = False,
                 spatial: bool = False):
        self.detector = detector
        self.rule = {"nms_iou": nms_iou, "score_threshold": score_threshold,
                     "min_boxes": min_boxes, "max_boxes": max_boxes}
        self.per_class_boxes, self.spatial = per_class_boxes, spatial
        self.feature_dim = c5_channels(detector) + (4 if spatial else 0)

    def __call__(self, images: torch.Tensor, sizes, ids) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """images: uint8 [B, 3, S, S]; one (boxes [K, 4] original pixels, features [K, D]) per image."""
        image_list = self._prepare(images)
        stages = self.detector.backbone.body(image_list.tensors)  # C2..C5 as "0".."3"
        kept = self._detect(image_list, stages)  # boxes [K, 4] in input pixels, per image
        height, width = images.shape[-2:]
        boxes = [b * b.new_tensor([w / width, h / height] * 2) for b, (w, h) in zip(kept, sizes)]
        features = pool_boxes(stages["3"], boxes, C5_STRIDE, (height, width), 1, list(sizes),
                              self.spatial)
        return list(zip(boxes, features))

    def _prepare(self, images: torch.Tensor) -> ImageList:
        """Normalised as the detector expects, padded to a multiple of the C5 stride."""
        transform = self.detector.transform
        x = images.float() / 255.0
        mean = x.new_tensor(transform.image_mean).view(1, 3, 1, 1)
        std = x.new_tensor(transform.image_std).view(1, 3, 1, 1)
        height, width = x.shape[-2:]
        pad = (0, -width % C5_STRIDE, 0, -height % C5_STRIDE)
        return ImageList(F.pad((x - mean) / std, pad), [(height, width)] * len(x))

    def _detect(self, image_list: ImageList, stages: dict) -> list[torch.Tensor]:
        """Proposals scored by the box head, then the bottom-up selection per image."""
        heads = self.detector.roi_heads
        pyramid = self.detector.backbone.fpn(stages)
        proposals, _ = self.detector.rpn(image_list, pyramid)  # [N_b, 4] per image
        pooled = heads.box_head(heads.box_roi_pool(pyramid, proposals, image_list.image_sizes))
        logits, deltas = heads.box_predictor(pooled)
        class_boxes = heads.box_coder.decode(deltas.float(), proposals)  # [R, C, 4]
        scores = logits.float().softmax(dim=-1)  # [R, C], column 0 is background
        counts = [len(p) for p in proposals]
        kept = []
        for props, per_class, probs, size in zip(proposals, class_boxes.split(counts),
                                                 scores.split(counts), image_list.image_sizes):
            boxes = clip_boxes_to_image(per_class[:, 1:], size) if self.per_class_boxes else props
            kept.append(select_regions(boxes.float(), probs[:, 1:], **self.rule)[0])
        return kept
