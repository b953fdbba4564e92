"""VQA accuracy as a torchmetrics Metric, synchronised across processes."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from updown_vqa.vqa.answers import answer_type_key
from updown_vqa.vqa.preprocess import ANSWER_TYPES


class VQAAccuracy(Metric):
    """Mean official accuracy of the top-scoring answer, overall and per answer type, in percent.

    `accuracy[b, a]` is the official VQA accuracy answer `a` would get on question `b`, precomputed
    from the ten human answers, so this equals the official evaluation on the same predictions.
    """

    full_state_update = False

    def __init__(self, answer_types=ANSWER_TYPES, **kwargs):
        super().__init__(**kwargs)
        self.answer_types = tuple(answer_types)
        self.add_state("total", torch.zeros(len(self.answer_types), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(self.answer_types), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, accuracy: torch.Tensor, answer_type: torch.Tensor) -> None:
        predicted = logits.argmax(dim=1)  # [B]
        scores = accuracy.gather(1, predicted[:, None]).squeeze(1).double()  # [B]
        self.total.index_add_(0, answer_type, scores)
        self.count.index_add_(0, answer_type, torch.ones_like(scores))

    def compute(self) -> dict[str, torch.Tensor]:
        out = {"acc": 100 * self.total.sum() / self.count.sum().clamp(min=1)}
        for k, name in enumerate(self.answer_types):
            out[f"acc_{answer_type_key(name)}"] = 100 * self.total[k] / self.count[k].clamp(min=1)
        return {k: v.float() for k, v in out.items()}
