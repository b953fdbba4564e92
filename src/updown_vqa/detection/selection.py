"""The bottom-up attention rule that turns detector outputs into an image's regions (a pure function).

As in peteanderson80/bottom-up-attention tools/generate_tsv.py: non-maximum suppression per class,
each box keeps its best score over the classes where it survived, boxes scoring at least a threshold
are kept, with at least `min_boxes` and at most `max_boxes` per image (min = max gives a fixed K).
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import FLAG, Number, OneOf, check_group

# The `detector` group of `extract mode=regions` and `visualize mode=detections`.
SETTINGS = {"arch": OneOf(("fpn", "c4")), "depth": OneOf((18, 34, 50, 101, 152)),
            "num_classes": Number("int", 2, 10**5), "num_attributes": Number("int", 1, 10**5),
            "proposals": Number("int", 1, 10**5), "per_class_boxes": FLAG, "nms_iou": Number("float", 0, 1),
            "score_threshold": Number("float", 0, 1), "min_boxes": Number("int", 1, 10**4),
            "max_boxes": Number("int", 1, 10**4), "region_features": OneOf(("c5", "box_head"))}


def check_detector_settings(cfg, group: str = "detector") -> None:
    """The detector group's rules, and at least as many boxes allowed as required."""
    check_group(cfg, group, SETTINGS)
    node = cfg.get(group) or {}
    low, high = node.get("min_boxes"), node.get("max_boxes")
    if low is not None and high is not None and low > high:
        raise UpdownError(f"{group}.min_boxes={low} > {group}.max_boxes={high}: the least must not exceed "
                          "the most boxes per image")


def select_regions(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    nms_iou: float = 0.3,
    score_threshold: float = 0.2,
    min_boxes: int = 10,
    max_boxes: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept boxes [K, 4], their best class scores [K] and classes [K], highest score first.

    boxes: [N, 4] shared by every class (generate_tsv uses the proposals) or [N, C, 4] per class;
    scores: [N, C] class probabilities without the background column. Classes index scores' columns.
    Fewer than `min_boxes` above the threshold: the `min_boxes` best are kept (all N if fewer).
    """
    order, max_conf, best_class = select_indices(boxes, scores, nms_iou, score_threshold,
                                                 min_boxes, max_boxes)
    kept_boxes = boxes[order, best_class] if boxes.dim() == 3 else boxes[order]
    return kept_boxes, max_conf, best_class


def select_indices(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    nms_iou: float = 0.3,
    score_threshold: float = 0.2,
    min_boxes: int = 10,
    max_boxes: int = 100,
    pixel_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rule of `select_regions` as indices: kept rows [K] of boxes, their scores and classes.

    pixel_offset=1 makes NMS count the +1 pixel in widths and overlaps (Caffe's convention, as
    generate_tsv.py): IoU(+1) is the ordinary IoU of boxes grown by one pixel right and down.
    """
    if min_boxes > max_boxes:
        raise ValueError(f"min_boxes={min_boxes} is larger than max_boxes={max_boxes}")
    num_boxes, num_classes = scores.shape
    per_class = boxes if boxes.dim() == 3 else boxes[:, None, :].expand(num_boxes, num_classes, 4)
    classes = torch.arange(num_classes, device=scores.device).expand(num_boxes, num_classes)
    grown = per_class.reshape(-1, 4).float() + per_class.new_tensor([0, 0, 1, 1]).float() * pixel_offset
    keep = batched_nms(grown, scores.reshape(-1).float(),
                       classes.reshape(-1), nms_iou)  # indices into the flattened [N * C]
    survived = torch.zeros(num_boxes * num_classes, dtype=torch.bool, device=scores.device)
    survived[keep] = True
    survived = survived.view(num_boxes, num_classes)
    max_conf, best_class = torch.where(survived, scores, torch.zeros_like(scores)).max(dim=1)  # [N]
    never = ~survived.any(dim=1)  # suppressed in every class: score 0, class of its best score
    best_class[never] = scores[never].argmax(dim=1)
    order = torch.sort(max_conf, descending=True, stable=True).indices
    count = int((max_conf >= score_threshold).sum())
    order = order[: min(max(count, min_boxes), max_boxes)]
    return order, max_conf[order], best_class[order]
