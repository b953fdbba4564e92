"""The bottom-up region selection rule on hand-built boxes and scores."""

import pytest
import torch

from updown_vqa.detection.selection import select_regions


def spread_boxes(n):
    """n disjoint 10x10 boxes in a row."""
    x = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)


def test_nms_is_per_class_and_each_box_keeps_its_best_surviving_score():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=torch.float32)
    # boxes 0 and 1 overlap (IoU 0.82): in class 0 box 0 wins, in class 1 box 1 wins
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.05]])
    kept, kept_scores, classes = select_regions(boxes, scores, min_boxes=0, max_boxes=10)
    assert kept.tolist() == boxes[[0, 1, 2]].tolist()
    # box 1 loses class 0 to box 0 but survives class 1, so it keeps 0.7 (not its 0.8)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert classes.tolist() == [0, 1, 0]


def test_a_box_suppressed_in_every_class_is_dropped():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.6], [0.8, 0.5]])  # box 1 loses both classes to box 0
    kept, kept_scores, _ = select_regions(boxes, scores, min_boxes=0, max_boxes=10)
    assert kept.tolist() == [[0, 0, 10, 10]] and kept_scores.tolist() == pytest.approx([0.9])


def test_iou_below_the_nms_threshold_keeps_both():
    boxes = torch.tensor([[0, 0, 10, 10], [6, 0, 16, 10]], dtype=torch.float32)  # IoU 0.25
    scores = torch.tensor([[0.9], [0.8]])
    assert len(select_regions(boxes, scores, nms_iou=0.3, min_boxes=0)[0]) == 2
    assert len(select_regions(boxes, scores, nms_iou=0.2, min_boxes=0)[0]) == 1


def test_score_threshold_within_min_and_max():
    scores = torch.linspace(0.05, 0.95, 19)[:, None]  # 0.05, 0.10, ..., 0.95 (14 are >= 0.27)
    kept, kept_scores, _ = select_regions(spread_boxes(19), scores, score_threshold=0.27,
                                          min_boxes=10, max_boxes=100)
    assert len(kept) == 14 and kept_scores.min() >= 0.27
    assert kept_scores.tolist() == sorted(kept_scores.tolist(), reverse=True)


def test_too_few_above_the_threshold_takes_the_best_min_boxes():
    scores = (torch.arange(30) * 0.01 + 0.005)[:, None]  # 0.005 ... 0.295: 10 reach 0.2
    assert len(select_regions(spread_boxes(30), scores, min_boxes=10, max_boxes=100)[0]) == 10
    kept, kept_scores, _ = select_regions(spread_boxes(25), scores[:25], min_boxes=10)  # 5 reach it
    assert len(kept) == 10
    assert kept_scores.tolist() == pytest.approx(scores[15:25, 0].flip(0).tolist())


def test_too_many_above_the_threshold_keeps_the_best_max_boxes():
    scores = torch.linspace(0.5, 0.99, 150)[:, None]
    kept, kept_scores, _ = select_regions(spread_boxes(150), scores, min_boxes=10, max_boxes=100)
    assert len(kept) == 100 and kept_scores.min() == pytest.approx(scores[50, 0].item())


@pytest.mark.parametrize("num_above", [0, 20, 80])
def test_fixed_k_when_min_equals_max(num_above):
    scores = torch.cat([torch.full((80 - num_above,), 0.1), torch.full((num_above,), 0.9)])[:, None]
    kept, _, _ = select_regions(spread_boxes(80), scores, min_boxes=36, max_boxes=36)
    assert len(kept) == 36


def test_per_class_boxes_return_the_box_of_the_best_class():
    boxes = torch.tensor([[[0, 0, 10, 10], [2, 2, 12, 12]]], dtype=torch.float32)  # [N=1, C=2, 4]
    scores = torch.tensor([[0.3, 0.6]])
    kept, _, classes = select_regions(boxes, scores, min_boxes=1)
    assert classes.tolist() == [1] and kept.tolist() == [[2, 2, 12, 12]]


def test_min_larger_than_max_is_refused():
    with pytest.raises(ValueError, match="min_boxes"):
        select_regions(spread_boxes(3), torch.rand(3, 2), min_boxes=5, max_boxes=4)
