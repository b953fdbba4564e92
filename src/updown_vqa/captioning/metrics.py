"""Caption metrics in process: CIDEr-D and corpus BLEU-1..n as the COCO caption toolkit computes them.

Inputs are already tokenised, lower-cased strings whose tokens are separated by spaces. On the same
tokenised captions both equal pycocoevalcap's `Cider` and `Bleu` to 1e-6 (tests/captioning/test_coco_eval.py);
the full toolkit with its PTB tokeniser, METEOR and ROUGE-L is `captioning.coco_eval`.
CIDEr-D: Vedantam et al., CVPR 2015; code: tylin/coco-caption pycocoevalcap/cider/cider_scorer.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

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


class CiderD:
    """CIDEr-D of candidates against fixed references, with idf from those references (their images).

    `cider_d` scores a split against its own references; SCST builds one from the training references
    once, so that its rewards use the training set's document frequencies (as self-critical.pytorch).
    """

    def __init__(self, references: Mapping[Hashable, Sequence[str]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.references = references
        cooked = [[ngram_counts(ref, n) for ref in refs] for refs in references.values()]
        self.frequency = document_frequency(cooked)
        self.log_images = math.log(max(1.0, float(len(references))))
        self._cooked: dict[Hashable, list] = {}  # image id -> tf-idf of each reference, built on first use

    def _refs(self, image_id: Hashable) -> list:
        if image_id not in self._cooked:
            self._cooked[image_id] = [_tfidf(ngram_counts(ref, self.n), self.frequency, self.log_images, self.n)
                                      for ref in self.references[image_id]]
        return self._cooked[image_id]

    def score(self, candidate: str, image_id: Hashable) -> float:
        """10 * mean over the image's references of the mean over orders of the penalised clipped cosine."""
        hypothesis = _tfidf(ngram_counts(candidate, self.n), self.frequency, self.log_images, self.n)
        refs = self._refs(image_id)
        total = sum(sum(_similarity(hypothesis, ref, self.sigma)) / self.n for ref in refs)
        return 10.0 * total / len(refs)


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
    scorer = CiderD({image_id: references[image_id] for image_id in image_ids}, n, sigma)
    per_image = {image_id: scorer.score(candidates[image_id], image_id) for image_id in image_ids}
    score = sum(per_image.values()) / len(per_image) if per_image else 0.0
    return score, per_image


_TINY, _SMALL = 1e-15, 1e-9  # the toolkit's smoothing: a zero count gives (1e-15 / 1e-9), not 0


def _bleu_counts(candidate: str, references: Sequence[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """(candidate length, closest reference length, clipped matches and candidate n-grams per order)."""
    counts = ngram_counts(candidate, n)
    most = Counter()
    for ref in references:
        most |= ngram_counts(ref, n)  # the most times each n-gram occurs in one reference
    length = len(candidate.split())
    closest = min((abs(len(ref.split()) - length), len(ref.split())) for ref in references)[1]
    correct = [0] * n
    for ngram, count in counts.items():
        correct[len(ngram) - 1] += min(most[ngram], count)
    guesses = [max(0, length - k) for k in range(n)]
    return length, closest, correct, guesses


def _bleu_from_counts(length: int, reference: int, correct: Sequence[int], guesses: Sequence[int]) -> list[float]:
    """BLEU-1..n from summed counts, with the toolkit's smoothing and brevity penalty."""
    ratio = (length + _TINY) / (reference + _SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for k in range(len(correct)):
        product *= (correct[k] + _TINY) / (guesses[k] + _SMALL)
        scores.append(product ** (1 / (k + 1)) * penalty)
    return scores


def bleu(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], n: int = 4
) -> list[float]:
    """Corpus BLEU-1..n in [0, 1] exactly as the COCO caption toolkit (pycocoevalcap `Bleu`) computes it.

    Its choices: the reference length of each image is the closest one (the shorter on a tie); n-gram
    precisions are (matches + 1e-15) / (guesses + 1e-9), so an order without matches gives a tiny
    score, not 0; brevity penalty exp(1 - r/c) when the corpus is shorter than its references.
    """
    image_ids = _check_ids(candidates, references)
    length = reference = 0
    correct, guesses = [0] * n, [0] * n
    for image_id in image_ids:
        c, r, matched, guessed = _bleu_counts(candidates[image_id], references[image_id], n)
        length, reference = length + c, reference + r
        correct = [a + b for a, b in zip(correct, matched)]
        guesses = [a + b for a, b in zip(guesses, guessed)]
    return _bleu_from_counts(length, reference, correct, guesses)


def sentence_bleu(candidate: str, references: Sequence[str], n: int = 4) -> list[float]:
    """BLEU-1..n of one caption: the toolkit's per-image scores (the second value `Bleu.compute_score`
    returns), which self-critical.pytorch's `bleu_reward_weight` adds to the SCST reward."""
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    return _bleu_from_counts(*_bleu_counts(candidate, references, n))
