"""The bottom-up attention detector as published: Faster R-CNN, ResNet C4, attribute head.

Anderson et al. 2018 (arXiv:1707.07998), as peteanderson80/bottom-up-attention's Caffe model
(models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt, lib/fast_rcnn/config.py): a Caffe
ResNet to res4 (stride 16), an RPN with 12 anchors, RoI pooling 14x14 on res4, res5 (stride 1,
dilation 2) on each region, the mean over its map as the region's 2048-d feature, then a classifier
over 1601 classes (background first), a box regressor and an attribute head over 401 attributes
("no attribute" first). Plain PyTorch + torchvision; `caffe_weights.py` loads the published files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_pool

from updown_vqa.detection.caffe_boxes import (
    caffe_anchors,
    clip,
    decode,
    legacy_nms,
    shifted_anchors,
)
from updown_vqa.detection.caffe_resnet import CaffeTrunk, make_stage, stage_channels

PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)
STRIDE = 16


def caffe_input(image: torch.Tensor, min_size: int = 600, max_size: int = 1000,
                pixel_mean=PIXEL_MEAN_BGR) -> tuple[torch.Tensor, float]:
    """uint8 RGB [3, H, W] -> float BGR minus the pixel means [1, 3, h, w] and the scale h / H.

    As Caffe's `_get_image_blob`: the shorter side to `min_size` unless the longer would pass
    `max_size`; bilinear without antialiasing (OpenCV's INTER_LINEAR).
    """
    height, width = image.shape[-2:]
    scale = min_size / min(height, width)
    if round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    bgr = image.flip(0).float() - image.new_tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    size = (round(height * scale), round(width * scale))
    resized = F.interpolate(bgr[None], size=size, mode="bilinear", align_corners=False,
                            antialias=False)
    return resized, scale


class CaffeRPN(nn.Module):
    """3x3 conv + ReLU, then per anchor one objectness logit (sigmoid) and four box deltas."""

    def __init__(self, channels: int, hidden: int = 512, num_anchors: int = 12):
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, 1, 1)
        self.objectness = nn.Conv2d(hidden, num_anchors, 1)
        self.deltas = nn.Conv2d(hidden, 4 * num_anchors, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.conv(x))
        return self.objectness(hidden), self.deltas(hidden)  # [B, A, H, W], [B, 4A, H, W]


class AttributeHead(nn.Module):
    """Attributes of a region from its feature and an embedding of its predicted class."""

    def __init__(self, feature_dim: int, num_classes: int = 1601, num_attributes: int = 401,
                 embedding: int = 256, hidden: int = 512):
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes, embedding)
        self.hidden = nn.Linear(feature_dim + embedding, hidden)
        self.score = nn.Linear(hidden, num_attributes)

    def forward(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """features [R, D], classes [R] (argmax over all classes, background included) -> [R, A]."""
        x = torch.cat([features, self.class_embedding(classes)], dim=1)  # [R, D + 256]
        return self.score(F.relu(self.hidden(x)))


def proposals_of(logits: torch.Tensor, deltas: torch.Tensor, cell: torch.Tensor, size, scale: float,
                 pre_nms: int, post_nms: int, nms_iou: float, min_box: float) -> torch.Tensor:
    """Caffe's proposal layer for one image: logits [A, H, W], deltas [4A, H, W] -> [P, 4] boxes.

    Decode every anchor, clip to the image, drop boxes narrower than `min_box` * scale, keep the
    `pre_nms` best, NMS (+1 areas), keep the `post_nms` best. `size`: the network input (h, w).
    """
    num_anchors, height, width = logits.shape
    scores = logits.permute(1, 2, 0).reshape(-1)  # [H*W*A]
    deltas = deltas.view(num_anchors, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
    anchors = shifted_anchors(cell, height, width, STRIDE)
    boxes = clip(decode(anchors, deltas.float()), *size)
    sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    keep = sides >= min_box * scale
    boxes, scores = boxes[keep], scores[keep]
    order = scores.argsort(descending=True)[:pre_nms]
    boxes, scores = boxes[order], scores[order]
    keep = legacy_nms(boxes, scores.float(), nms_iou)[:post_nms]
    return boxes[keep]


class C4Detector(nn.Module):
    """Faster R-CNN with a Caffe ResNet C4 trunk, res5 region head and an attribute head.

    The defaults are the published model (depth 101, 1601 classes, 401 attributes, 14x14 pooling);
    `width` (64) and `pool_size` make small variants for CPU training. `box_weights` divide the
    class-box deltas (1, 1, 1, 1 for the Caffe weights; 10, 10, 5, 5 for detectron2's).
    """

    def __init__(self, depth: int = 101, num_classes: int = 1601, num_attributes: int = 401,
                 width: int = 64, pool_size: int = 14, norm: str = "frozen", rpn_hidden: int = 512,
                 anchor_scales=(4, 8, 16, 32), anchor_ratios=(0.5, 1.0, 2.0), pre_nms: int = 6000,
                 post_nms: int = 300, rpn_nms: float = 0.7, min_box: float = 16.0,
                 box_weights=(1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        self.trunk = CaffeTrunk(depth, width, norm)
        cell = caffe_anchors(STRIDE, anchor_ratios, anchor_scales)
        self.register_buffer("cell_anchors", cell, persistent=False)
        self.rpn = CaffeRPN(self.trunk.out_channels, rpn_hidden, len(cell))
        self.res5 = make_stage(depth, 5, width, norm, dilation=2)
        self.feature_dim = stage_channels(depth, width)[3][1]
        self.cls_score = nn.Linear(self.feature_dim, num_classes)
        self.bbox_pred = nn.Linear(self.feature_dim, 4 * num_classes)
        self.attributes = AttributeHead(self.feature_dim, num_classes, num_attributes)
        self.pool_size, self.box_weights = pool_size, tuple(box_weights)
        self.rpn_settings = {"pre_nms": pre_nms, "post_nms": post_nms, "nms_iou": rpn_nms,
                             "min_box": min_box}

    def propose(self, res4: torch.Tensor, sizes, scales) -> list[torch.Tensor]:
        """RPN proposals [P_b, 4] in network-input pixels for each image of res4 [B, C, H, W]."""
        logits, deltas = self.rpn(res4)
        return [proposals_of(logit, delta, self.cell_anchors, size, scale, **self.rpn_settings)
                for logit, delta, size, scale in zip(logits, deltas, sizes, scales)]

    def region_features(self, res4: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """RoI pooling at 1/16, res5, mean over the map: [R, D] for the boxes of all images."""
        pooled = roi_pool(res4, [b.to(res4.dtype) for b in boxes], self.pool_size, 1.0 / STRIDE)
        return self.res5(pooled).mean(dim=(2, 3))  # [R, C, S, S] -> [R, D]

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class logits [R, C], box deltas [R, 4C] and attribute logits [R, A] of features [R, D]."""
        logits = self.cls_score(features)
        attributes = self.attributes(features, logits.argmax(dim=1))
        return {"class_logits": logits, "box_deltas": self.bbox_pred(features),
                "attribute_logits": attributes}

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor], min_size: int = 600,
               max_size: int = 1000) -> list[dict[str, torch.Tensor]]:
        """uint8 RGB [3, H, W] images -> per image its proposals (original pixels), their features,
        class and attribute probabilities (softmax) and class boxes [P, C, 4] (original pixels)."""
        maps, proposals, scales = [], [], []
        for image in images:  # one forward per image, as Caffe: no padding changes the map
            x, scale = caffe_input(image, min_size, max_size)
            res4 = self.trunk(x)
            proposals += self.propose(res4, [x.shape[-2:]], [scale])
            maps.append(res4)
            scales.append(scale)
        features = torch.cat([self.region_features(m, [p]) for m, p in zip(maps, proposals)])
        outputs = self.heads(features)
        counts = [len(p) for p in proposals]
        results = []
        for index, (boxes, scale, image) in enumerate(zip(proposals, scales, images)):
            rows = slice(sum(counts[:index]), sum(counts[: index + 1]))
            original = boxes / scale  # as generate_tsv: rois / im_scale
            deltas = outputs["box_deltas"][rows].float()
            class_boxes = clip(decode(original, deltas, self.box_weights), *image.shape[-2:])
            results.append({
                "boxes": original, "features": features[rows],
                "class_probs": outputs["class_logits"][rows].float().softmax(dim=1),
                "attribute_probs": outputs["attribute_logits"][rows].float().softmax(dim=1),
                "class_boxes": class_boxes.view(len(boxes), -1, 4),  # [P, C, 4]
            })
        return results
