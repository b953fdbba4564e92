"""CIDEr-D against a hand-computed example, and BLEU as the COCO caption toolkit computes it."""

import math

import pytest

from updown_vqa.captioning.metrics import bleu, cider_d

# Three images, so idf = log 3 - log df: df 1 -> log 3, df 2 -> log 1.5, df 3 -> 0.
REFERENCES = {
    1: ["a cat sat", "the cat sat"],
    2: ["a dog ran"],
    3: ["a cat ran"],
}
CANDIDATES = {1: "a cat cat sat", 2: "a dog ran", 3: "a cat"}
L3, L15 = math.log(3), math.log(1.5)
PENALTY_1 = math.exp(-1 / (2 * 6.0**2))  # length (bigram count) differs by one


def expected_image_1() -> float:
    """'a cat cat sat' vs 'a cat sat' and 'the cat sat'.

    df: a 3 (idf 0), cat 2 (L15), sat 1 (L3), the 1 (L3); 'a cat' 2 (L15); 'cat sat', 'the cat' 1 (L3);
    'cat cat', 'a cat cat', 'cat cat sat', 'a cat cat sat' appear in no reference: df 0 -> idf L3.
    Candidate tf-idf: 1-grams {a 0, cat 2*L15, sat L3}; 2-grams {a cat L15, cat cat L3, cat sat L3};
    3-grams two of L3; one 4-gram L3. 'cat' is clipped: min(2*L15, L15) * L15.
    """
    hyp_norm_1 = math.sqrt(4 * L15**2 + L3**2)
    hyp_norm_2 = math.sqrt(L15**2 + 2 * L3**2)
    # vs 'a cat sat': 1-grams {a 0, cat L15, sat L3}, 2-grams {a cat L15, cat sat L3}; no shared 3/4-gram.
    ref_a = [
        (L15**2 + L3**2) / (hyp_norm_1 * math.sqrt(L15**2 + L3**2)),
        (L15**2 + L3**2) / (hyp_norm_2 * math.sqrt(L15**2 + L3**2)),
        0.0,
        0.0,
    ]
    # vs 'the cat sat': 1-grams {the L3, cat L15, sat L3}, 2-grams {the cat L3, cat sat L3}.
    ref_b = [
        (L15**2 + L3**2) / (hyp_norm_1 * math.sqrt(L15**2 + 2 * L3**2)),
        L3**2 / (hyp_norm_2 * math.sqrt(2) * L3),
        0.0,
        0.0,
    ]
    return 10 * PENALTY_1 * (sum(ref_a) / 4 + sum(ref_b) / 4) / 2


def expected_image_3() -> float:
    """'a cat' vs 'a cat ran': 1-grams {a 0, cat L15} vs {a 0, cat L15, ran L15}; 2-grams {a cat L15}
    vs {a cat L15, cat ran L3}; the candidate has no 3-gram."""
    unigram = L15**2 / (L15 * math.sqrt(2) * L15)
    bigram = L15**2 / (L15 * math.sqrt(L15**2 + L3**2))
    return 10 * PENALTY_1 * (unigram + bigram + 0.0 + 0.0) / 4


def test_cider_d_matches_hand_computation():
    score, per_image = cider_d(CANDIDATES, REFERENCES)
    # Image 2 repeats its only reference: cosine 1 for 1-, 2-, 3-grams, 0 for 4-grams: 10 * 3 / 4.
    expected = {1: expected_image_1(), 2: 7.5, 3: expected_image_3()}
    assert per_image == pytest.approx(expected, rel=1e-12)
    assert score == pytest.approx(sum(expected.values()) / 3, rel=1e-12)
    assert per_image[1] == pytest.approx(
        3.3237, abs=1e-4
    )  # guards the formulas above drifting with the code
    assert per_image[3] == pytest.approx(2.5970, abs=1e-4)


def test_cider_d_identical_caption_scores_the_maximum():
    candidates = {image_id: refs[0] for image_id, refs in REFERENCES.items()}
    _, per_image = cider_d(candidates, REFERENCES)
    assert per_image[2] == pytest.approx(7.5)  # three-word captions have no 4-gram
    four_words = {1: ["a cat sat down"], 2: ["a dog ran off"]}
    score, _ = cider_d({1: "a cat sat down", 2: "a dog ran off"}, four_words)
    assert score == pytest.approx(10.0)


def test_cider_d_missing_words_score_lower():
    _, complete = cider_d({**CANDIDATES, 3: "a cat ran"}, REFERENCES)
    _, missing = cider_d(CANDIDATES, REFERENCES)
    assert missing[3] < complete[3]
    assert complete[3] == pytest.approx(7.5)


def test_cider_d_clips_repeated_words():
    _, repeated = cider_d({**CANDIDATES, 3: "a cat cat ran"}, REFERENCES)
    _, once = cider_d(CANDIDATES | {3: "a cat ran"}, REFERENCES)
    assert repeated[3] < once[3]


def test_cider_d_idf_ignores_candidates():
    _, first = cider_d(CANDIDATES, REFERENCES)
    _, second = cider_d({**CANDIDATES, 2: "a cat sat"}, REFERENCES)
    assert first[1] == second[1]


def test_cider_d_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="no candidate for \\['3'\\]"):
        cider_d({1: "a cat", 2: "a dog"}, REFERENCES)


def test_bleu_identical_captions_score_one():
    candidates = {1: "a cat sat on the mat", 2: "a dog ran in the park"}
    references = {image_id: [caption] for image_id, caption in candidates.items()}
    assert bleu(candidates, references) == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_bleu_brevity_penalty_and_missing_ngrams():
    scores = bleu({1: "a cat"}, {1: ["a cat sat"]}, n=3)
    # Every candidate 1- and 2-gram matches; brevity penalty exp(1 - 3/2); no 3-gram -> the toolkit's
    # smoothed (1e-15 / 1e-9) ** (1/3) = 0.01 instead of 0.
    assert scores == pytest.approx([math.exp(-0.5), math.exp(-0.5), 0.01 * math.exp(-0.5)], rel=1e-6)
