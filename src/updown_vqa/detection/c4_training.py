"""Training and evaluation passes of the C4 detector (Faster R-CNN losses plus the attribute loss).

Approximate joint training as in Caffe's end-to-end Faster R-CNN: the RPN learns from sampled
anchors (IoU >= 0.7 positive, < 0.3 negative, each ground truth's best anchor positive), the region
head from sampled proposals plus the ground-truth boxes (IoU >= 0.5 foreground). The attribute head
reads each foreground region with the embedding of its ground-truth class (Anderson et al. 2018,
section 3.1); "no attribute" is attribute 0, so the data's attribute i is index i + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from updown_vqa.detection.c4 import PIXEL_MEAN_BGR, STRIDE, C4Detector, proposals_of
from updown_vqa.detection.caffe_boxes import clip, decode, encode, legacy_nms, shifted_anchors


def caffe_batch(images: list[torch.Tensor]) -> torch.Tensor:
    """Float RGB [3, S, S] images in [0, 1] (one size) -> the BGR, mean-subtracted batch [B, 3, S, S]."""
    x = torch.stack(images).flip(1) * 255.0
    return x - x.new_tensor(PIXEL_MEAN_BGR).view(1, 3, 1, 1)


def _sample(labels: torch.Tensor, batch: int, fraction: float) -> torch.Tensor:
    """Indices of at most batch * fraction positives (label > 0) and negatives (label == 0)."""
    positive = torch.nonzero(labels > 0).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    positive = positive[torch.randperm(len(positive), device=labels.device)[: int(batch * fraction)]]
    negative = negative[torch.randperm(len(negative), device=labels.device)[: batch - len(positive)]]
    return torch.cat([positive, negative])


def rpn_losses(detector: C4Detector, logits, deltas, targets, batch: int = 256) -> dict:
    """Objectness (binary cross-entropy) and anchor box (smooth L1) losses over sampled anchors."""
    num_anchors, height, width = logits.shape[1:]
    anchors = shifted_anchors(detector.cell_anchors, height, width, STRIDE)  # [H*W*A, 4]
    objectness, box_loss, count = [], [], 0
    for logit, delta, target in zip(logits, deltas, targets):
        scores = logit.permute(1, 2, 0).reshape(-1)
        moves = delta.view(num_anchors, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
        overlaps = box_iou(anchors, target["boxes"])  # [N, G]
        best, matched = overlaps.max(dim=1)
        labels = torch.full_like(best, -1, dtype=torch.long)
        labels[best < 0.3] = 0
        labels[best >= 0.7] = 1
        labels[overlaps.argmax(dim=0)] = 1  # each ground truth's best anchor
        sampled = _sample(labels, batch, 0.5)
        objectness.append(F.binary_cross_entropy_with_logits(
            scores[sampled], labels[sampled].float(), reduction="sum"))
        positive = sampled[labels[sampled] > 0]
        goal = encode(anchors[positive], target["boxes"][matched[positive]])
        box_loss.append(F.smooth_l1_loss(moves[positive], goal, beta=1 / 9, reduction="sum"))
        count += len(sampled)
    return {"loss_objectness": sum(objectness) / count, "loss_rpn_box": sum(box_loss) / count}


def head_losses(detector: C4Detector, res4, proposals, targets, batch: int = 64) -> dict:
    """Class, box and attribute losses of sampled proposals (ground-truth boxes added)."""
    rois, labels, goals, attributes = [], [], [], []
    for boxes, target in zip(proposals, targets):
        boxes = torch.cat([boxes, target["boxes"]])
        best, matched = box_iou(boxes, target["boxes"]).max(dim=1)
        label = torch.where(best >= 0.5, target["labels"][matched], torch.zeros_like(matched))
        sampled = _sample(label, batch, 0.25)
        rois.append(boxes[sampled])
        labels.append(label[sampled])
        goals.append(encode(boxes[sampled], target["boxes"][matched[sampled]]))
        attributes.append(target["attributes"][matched[sampled]])
    labels, goals, attributes = torch.cat(labels), torch.cat(goals), torch.cat(attributes)
    features = detector.region_features(res4, rois)  # [R, D]
    logits, deltas = detector.cls_score(features), detector.bbox_pred(features)
    fg = torch.nonzero(labels > 0).flatten()
    class_deltas = deltas.view(len(deltas), -1, 4)[fg, labels[fg]]
    box = F.smooth_l1_loss(class_deltas, goals[fg], beta=1.0, reduction="sum") / max(len(labels), 1)
    attribute_logits = detector.attributes(features[fg], labels[fg])
    return {"loss_classifier": F.cross_entropy(logits, labels), "loss_box": box,
            "loss_attributes": attribute_loss(attribute_logits, attributes[fg])}


def attribute_loss(logits: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, one term per listed attribute (data index + 1); none listed: "no
    attribute" (0). logits [N, A], attributes [N, M] with -1 pads."""
    if not len(logits):
        return logits.sum() * 0
    targets = torch.where(attributes >= 0, attributes + 1, -torch.ones_like(attributes))
    targets[(attributes < 0).all(dim=1), 0] = 0
    repeated = logits.repeat_interleave(targets.shape[1], dim=0)
    flat = targets.reshape(-1)
    return F.cross_entropy(repeated, flat.clamp(min=0), reduction="none")[flat >= 0].mean()


def training_losses(detector: C4Detector, images, targets, rpn_batch: int = 256,
                    box_batch: int = 64) -> dict:
    """All five losses for a batch of same-size float RGB images with targets (pixels)."""
    x = caffe_batch(images)
    res4 = detector.trunk(x)
    logits, deltas = detector.rpn(res4)
    with torch.no_grad():
        settings = {**detector.rpn_settings, "pre_nms": 2000}
        proposals = [proposals_of(lo.detach(), de.detach(), detector.cell_anchors, x.shape[-2:], 1.0,
                                  **settings) for lo, de in zip(logits, deltas)]
    return {**rpn_losses(detector, logits, deltas, targets, rpn_batch),
            **head_losses(detector, res4, proposals, targets, box_batch)}


@torch.no_grad()
def predict(detector: C4Detector, images, score_threshold: float = 0.05, nms_iou: float = 0.3,
            max_detections: int = 100) -> tuple[list[dict], torch.Tensor]:
    """Detections per image ({boxes, scores, labels}, per-class NMS) and res4, for evaluation."""
    x = caffe_batch(images)
    res4 = detector.trunk(x)
    proposals = detector.propose(res4, [x.shape[-2:]] * len(x), [1.0] * len(x))
    features = detector.region_features(res4, proposals)
    outputs = detector.heads(features)
    probs = outputs["class_logits"].softmax(dim=1).split([len(p) for p in proposals])
    deltas = outputs["box_deltas"].split([len(p) for p in proposals])
    detections = []
    for boxes, prob, delta in zip(proposals, probs, deltas):
        class_boxes = clip(decode(boxes, delta, detector.box_weights), *x.shape[-2:])
        class_boxes = class_boxes.view(len(boxes), -1, 4)[:, 1:]  # [P, C - 1, 4]
        scores, classes = prob[:, 1:], torch.arange(1, prob.shape[1], device=prob.device)
        keep = scores > score_threshold
        rows, cols = keep.nonzero(as_tuple=True)
        kept = legacy_nms(class_boxes[rows, cols], scores[rows, cols], nms_iou, cols)[:max_detections]
        detections.append({"boxes": class_boxes[rows, cols][kept], "scores": scores[rows, cols][kept],
                           "labels": classes[cols[kept]]})
    return detections, res4
