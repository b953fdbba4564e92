"""Self-critical sequence training (Rennie et al. 2017): the CIDEr-D reward of sampled captions, its
baseline, and the policy-gradient loss. The module's SCST training step (`UpDownCaptioning`) uses these.

As self-critical.pytorch (misc/rewards.py, misc/loss_wrapper.py): the reward is CIDEr-D against the
image's training references with document frequencies from the whole training set, with the end token
appended to the sampled captions that ended and to every reference; the loss is
-(reward - baseline) * log p(word), averaged over the words up to and including the end token.
Its `cider_reward_weight` and `bleu_reward_weight` are `model.scst.cider_weight` (1) and `bleu_weight`
(0): the reward is cider_weight * CIDEr-D + bleu_weight * the caption's own BLEU-4 (the toolkit's
per-image score) against the same strings.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from updown_vqa.captioning.data import EOS
from updown_vqa.captioning.metrics import CiderD, sentence_bleu
from updown_vqa.core.errors import UpdownError

BASELINES = ("greedy", "mean")  # greedy: Rennie et al. 2017; mean of the other samples: Luo 2020


def check_scst(scst: Mapping) -> dict:
    """`model.scst` as plain values, refusing a baseline or sample count that cannot work."""
    scst = {"samples": 5, "baseline": "greedy", "cider_weight": 1.0, "bleu_weight": 0.0, **dict(scst)}
    for key in ("cider_weight", "bleu_weight"):
        value = scst[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UpdownError(f"model.scst.{key}={value}: use a finite number >= 0")
    if scst["cider_weight"] == 0 and scst["bleu_weight"] == 0:
        raise UpdownError("model.scst.cider_weight=0 and model.scst.bleu_weight=0: the reward would be 0; "
                          "set one of them above 0")
    if scst["baseline"] not in BASELINES:
        raise UpdownError(f"model.scst.baseline={scst['baseline']}: use greedy or mean")
    least = 2 if scst["baseline"] == "mean" else 1
    if not isinstance(scst["samples"], int) or scst["samples"] < least:
        raise UpdownError(f"model.scst.samples={scst['samples']}: the {scst['baseline']} baseline needs an "
                          f"integer of at least {least}")
    return scst


class Reward:
    """cider_weight * CIDEr-D + bleu_weight * BLEU-4 of a caption against its image's training references.

    The references get the end token appended; CIDEr-D's idf comes from all the training images.
    """

    def __init__(self, references: Mapping[Hashable, Sequence[str]], cider_weight: float = 1.0,
                 bleu_weight: float = 0.0):
        self.cider = CiderD(references)
        self.references = references
        self.cider_weight, self.bleu_weight = float(cider_weight), float(bleu_weight)

    def score(self, candidate: str, image_id: Hashable) -> float:
        total = self.cider_weight * self.cider.score(candidate, image_id) if self.cider_weight else 0.0
        if self.bleu_weight:
            total += self.bleu_weight * sentence_bleu(candidate, self.references[image_id])[3]
        return total


def reward_scorer(image_ids: Sequence[int], references: Sequence[Sequence[str]], cider_weight: float = 1.0,
                  bleu_weight: float = 0.0) -> Reward:
    """The SCST reward against the training references (end token appended), idf over the training images."""
    refs = {int(i): [f"{ref} {EOS}" for ref in image_refs] for i, image_refs in zip(image_ids, references)}
    return Reward(refs, cider_weight, bleu_weight)


def reward_strings(tokens: Tensor, vocab: Sequence[str], eos_index: int, pad_index: int = 0) -> list[str]:
    """Decoded ids [N, L] -> captions for the reward: words, and the end token where one was produced."""
    out = []
    for row in tokens.tolist():
        ended = eos_index in row
        row = row[: row.index(eos_index) + 1] if ended else row
        out.append(" ".join(vocab[i] for i in row if i != pad_index))
    return out


def rewards(scorer: Reward, tokens: Tensor, image_ids: Sequence[Hashable], vocab: Sequence[str],
            eos_index: int) -> Tensor:
    """The reward of each decoded caption [N, L] against its image's references -> [N] (float, CPU)."""
    captions = reward_strings(tokens, vocab, eos_index)
    return torch.tensor([scorer.score(c, i) for c, i in zip(captions, image_ids)], dtype=torch.float32)


def mean_of_others(sample_rewards: Tensor, samples: int) -> Tensor:
    """Luo 2020's baseline: for each sample, the mean reward of the image's other samples. [B * n] -> [B * n]."""
    grouped = sample_rewards.view(-1, samples)  # [B, n]
    return ((grouped.sum(1, keepdim=True) - grouped) / (samples - 1)).flatten()


def scst_loss(log_probs: Tensor, tokens: Tensor, advantages: Tensor, eos_index: int) -> Tensor:
    """-(advantage * log p) averaged over the sampled words up to and including EOS.

    log_probs [N, L] (with gradients), tokens [N, L], advantages [N] (reward - baseline, no gradient).
    """
    is_eos = (tokens == eos_index).long()
    before_end = (is_eos.cumsum(1) - is_eos) == 0  # [N, L]: words up to the first EOS, itself included
    mask = before_end.to(log_probs.dtype)
    return -(log_probs * advantages.to(log_probs).unsqueeze(1) * mask).sum() / mask.sum().clamp(min=1)
