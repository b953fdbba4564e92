"""Box conventions of Caffe's Faster R-CNN (py-faster-rcnn, as in bottom-up-attention's lib/):
a box [x1, y1, x2, y2] covers pixels x1..x2 inclusive, so its width is x2 - x1 + 1.

Anchors (lib/rpn/generate_anchors.py), decoding (lib/fast_rcnn/bbox_transform.py), clipping to
w - 1 / h - 1, and NMS whose areas count the +1 pixel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import batched_nms, nms

# The largest log-scale a delta may apply (detectron2's clamp; Caffe has none, exp() overflows).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def caffe_anchors(base: int = 16, ratios=(0.5, 1.0, 2.0), scales=(4, 8, 16, 32)) -> torch.Tensor:
    """[len(ratios) * len(scales), 4] anchors around the base cell, ratio-major, rounded as Caffe."""
    size = float(base * base)
    center = (base - 1) / 2.0
    anchors = []
    for ratio in ratios:
        w = np.round(np.sqrt(size / ratio))
        h = np.round(w * ratio)
        for scale in scales:
            ws, hs = w * scale, h * scale
            anchors.append([center - 0.5 * (ws - 1), center - 0.5 * (hs - 1),
                            center + 0.5 * (ws - 1), center + 0.5 * (hs - 1)])
    return torch.tensor(anchors, dtype=torch.float32)


def shifted_anchors(cell: torch.Tensor, height: int, width: int, stride: int = 16) -> torch.Tensor:
    """[H * W * A, 4] anchors of every map position, position-major (Caffe's proposal layer)."""
    ys = torch.arange(height, dtype=torch.float32, device=cell.device) * stride
    xs = torch.arange(width, dtype=torch.float32, device=cell.device) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
    return (shifts + cell[None]).reshape(-1, 4)


def decode(boxes: torch.Tensor, deltas: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """boxes [N, 4] moved by deltas [N, 4k] (dx, dy, dw, dh per class) -> [N, 4k], +1 widths."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=MAX_LOG_SCALE)
    dh = (deltas[:, 3::4] / wh).clamp(max=MAX_LOG_SCALE)
    pred_x = dx * widths[:, None] + ctr_x[:, None]
    pred_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = dw.exp() * widths[:, None]
    pred_h = dh.exp() * heights[:, None]
    out = torch.stack([pred_x - 0.5 * pred_w, pred_y - 0.5 * pred_h,
                       pred_x + 0.5 * pred_w, pred_y + 0.5 * pred_h], dim=-1)  # [N, k, 4]
    return out.reshape(deltas.shape)


def encode(boxes: torch.Tensor, targets: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """The deltas [N, 4] that `decode` turns boxes [N, 4] into targets [N, 4] with."""
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    target_w = targets[:, 2] - targets[:, 0] + 1.0
    target_h = targets[:, 3] - targets[:, 1] + 1.0
    dx = (targets[:, 0] + 0.5 * target_w - boxes[:, 0] - 0.5 * widths) / widths
    dy = (targets[:, 1] + 0.5 * target_h - boxes[:, 1] - 0.5 * heights) / heights
    wx, wy, ww, wh = weights
    return torch.stack([wx * dx, wy * dy, ww * torch.log(target_w / widths),
                        wh * torch.log(target_h / heights)], dim=1)


def clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Coordinates into [0, w - 1] and [0, h - 1] (the last pixel, as Caffe's clip_boxes)."""
    limits = boxes.new_tensor([width - 1, height - 1]).repeat(boxes.shape[-1] // 2)
    return torch.minimum(boxes.clamp(min=0), limits)


def legacy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float,
               groups: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy NMS whose areas and overlaps count the +1 pixel; per group when `groups` is given.

    With inclusive coordinates, IoU(+1) of two boxes is the ordinary IoU of the boxes grown by
    one pixel to the right and bottom, so torchvision's kernel computes it.
    """
    grown = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    if groups is None:
        return nms(grown, scores, iou)
    return batched_nms(grown, scores, groups, iou)


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """Areas [N] with the +1 pixel."""
    return (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
