"""Caption metrics: CIDEr-D as the COCO caption evaluation computes it, and corpus BLEU-1..n.

Inputs are already tokenised, lower-cased strings whose tokens are separated by spaces.
CIDEr-D: Vedantam et al., CVPR 2015; code: tylin/coco-caption pycocoevalcap/cider/cider_scorer.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from torchmetrics.text import BLEUScore

NgramCounts = Counter  # n-gram tuple -> count


def _check_ids(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> list:
    """Sorted image ids, after checking both dicts hold the same ids and every image has a reference."""
    if candidates.keys() != references.keys():
        missing = sorted(map(str, references.keys() - candidates.keys()))[:5]
        extra = sorted(map(str, candidates.keys() - references.keys()))[:5]
        raise ValueError(
            f"candidate and reference ids differ: no candidate for {missing}, no references for {extra}"
        )
    empty = [image_id for image_id, refs in references.items() if not refs][:5]
    if empty:
        raise ValueError(
            f"images {empty} have an empty reference list; each needs at least one caption"
        )
    return sorted(candidates, key=str)


def ngram_counts(caption: str, n: int = 4) -> NgramCounts:
    """Counts of every 1..n-gram of a space-separated caption (pycocoevalcap `precook`)."""
    words = caption.split()
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def document_frequency(references: Sequence[Sequence[NgramCounts]]) -> Counter:
    """Number of images whose references contain each n-gram (idf is computed over references only)."""
    frequency = Counter()
    for image_refs in references:
        frequency.update({ngram for ref in image_refs for ngram in ref})
    return frequency


def _tfidf(counts: NgramCounts, frequency: Counter, log_images: float, n: int):
    """tf-idf vectors per n-gram order, their norms, and the length used by the penalty.

    The length counts bigrams (pycocoevalcap's `if n == 1` tests the 0-based order), which equals
    the word count minus one for non-empty captions, so the length difference is that of words.
    """
    vectors = [{} for _ in range(n)]
    for ngram, term_freq in counts.items():
        vectors[len(ngram) - 1][ngram] = term_freq * (
            log_images - math.log(max(1.0, frequency[ngram]))
        )
    norms = [math.sqrt(sum(value * value for value in vector.values())) for vector in vectors]
    length = sum(count for ngram, count in counts.items() if len(ngram) == 2)
    return vectors, norms, length


def _similarity(hypothesis, reference, sigma: float) -> list[float]:
    """Per-order clipped cosine similarity times the gaussian length penalty (the CIDEr-D changes)."""
    (hyp_vectors, hyp_norms, hyp_length), (ref_vectors, ref_norms, ref_length) = (
        hypothesis,
        reference,
    )
    penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * sigma**2))
    values = []
    for hyp, ref, hyp_norm, ref_norm in zip(hyp_vectors, ref_vectors, hyp_norms, ref_norms):
        value = sum(
            min(weight, ref.get(ngram, 0.0)) * ref.get(ngram, 0.0) for ngram, weight in hyp.items()
        )
        if hyp_norm != 0 and ref_norm != 0:
            value /= hyp_norm * ref_norm
        values.append(value * penalty)
    return values


def cider_d(
    candidates: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, dict[Hashable, float]]:
    """CIDEr-D of one candidate per image against its references -> (corpus mean, score per image id).

    Per image: 10 * mean over references of the mean over n-gram orders of the clipped tf-idf cosine
    times exp(-delta^2 / (2 sigma^2)); idf = log(#images) - log(max(1, df)), df over the references.
    """
    image_ids = _check_ids(candidates, references)
    cooked_refs = [[ngram_counts(ref, n) for ref in references[image_id]] for image_id in image_ids]
    frequency = document_frequency(cooked_refs)
    log_images = math.log(max(1.0, float(len(image_ids))))
    per_image = {}
    for image_id, refs in zip(image_ids, cooked_refs):
        hypothesis = _tfidf(ngram_counts(candidates[image_id], n), frequency, log_images, n)
        total = 0.0
        for ref in refs:
            total += sum(_similarity(hypothesis, _tfidf(ref, frequency, log_images, n), sigma)) / n
        per_image[image_id] = 10.0 * total / len(refs)
    score = sum(per_image.values()) / len(per_image) if per_image else 0.0
    return score, per_image


def bleu(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], n: int = 4
) -> list[float]:
    """Corpus BLEU-1..n in [0, 1] (torchmetrics BLEUScore, uniform weights, no smoothing)."""
    image_ids = _check_ids(candidates, references)
    predictions = [candidates[image_id] for image_id in image_ids]
    targets = [list(references[image_id]) for image_id in image_ids]
    return [float(BLEUScore(n_gram=order)(predictions, targets)) for order in range(1, n + 1)]
