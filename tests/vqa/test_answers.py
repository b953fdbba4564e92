"""Official VQA answer normalisation and accuracy, with expected values derived by hand from the rules."""

import pytest

from updown_vqa.vqa.answers import (
    PROTOCOLS,
    answer_type_key,
    candidate_accuracies,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    question_accuracy,
    soft_score,
    soft_scores,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes!", "yes "),  # "!" never touches a space: blanked, not deleted
        ("t-shirt", "t shirt"),  # "-" inside a word becomes a space
        ("t - shirt", "t  shirt"),  # "- " occurs, so every "-" is deleted
        ("red,white", "red white"),
        ("red, white", "red white"),  # ", " occurs: commas deleted
        ("1,000", "1000"),  # digit-comma-digit: commas deleted
        ("1,000 (about)", "1000 about"),  # ...and so is every other punctuation mark
        ("3.5", "3.5"),  # a period before a digit stays
        ("u.s.a.", "usa"),
        ("it's", "it's"),  # the apostrophe is not in the official list
        ("." * 33 + "x", ".x"),  # re.UNICODE (32) lands in `count`: only 32 periods go
    ],
)
def test_process_punctuation_follows_official_rules(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Two dogs", "2 dogs"),  # lower case, number word to digit, article dropped
        ("none", "0"),
        ("an  apple ", "apple"),
        ("dont", "don't"),
        ("whats that", "what's that"),
        ("its", "its"),  # "its" is not in the contractions table
        ("Im", "im"),  # lower-cased before lookup, so the table's "Im" -> "I'm" never applies
        ("somebody'd", "somebodyd"),  # the table's backwards entry
        ("eleven", "eleven"),  # only none, zero..ten are mapped
    ],
)
def test_process_digit_article_follows_official_rules(text, expected):
    assert process_digit_article(text) == expected


def test_normalize_answer_cleans_whitespace_punctuation_and_articles():
    assert normalize_answer("\tA  T-Shirt!\n") == "t shirt"
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("") == ""


def test_soft_scores_count_humans_after_normalisation():
    assert soft_scores(["yes"] * 3 + ["no"] * 7) == {"yes": pytest.approx(0.9), "no": 1.0}
    # "Two", "2" and "two" normalise to "2": 3 humans; "two dogs" -> "2 dogs": 1 human.
    assert soft_scores(["Two", "2", "two", "two dogs"]) == {"2": pytest.approx(0.9), "2 dogs": 0.3}
    assert soft_score(0) == 0.0 and soft_score(4) == 1.0


def test_answer_type_key_is_metric_safe():
    assert [answer_type_key(t) for t in ("yes/no", "number", "other")] == [
        "yes_no",
        "number",
        "other",
    ]


# Per question: each of the ten humans scores min(1, matches among the other nine / 3); mean of ten.
# With k humans matching: those k score min(1, (k-1)/3), the other 10-k score min(1, k/3).
MIXED = ["2"] * 3 + ["3"] * 7  # not unanimous, so both protocols process the humans


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("prediction", "humans", "expected"),
    [
        ("two", MIXED, 0.9),  # "two" -> "2", k=3: (3 * 2/3 + 7 * 1) / 10
        ("3", MIXED, 1.0),  # k=7: everyone scores 1
        ("4", MIXED, 0.0),
        ("2", ["2"] + ["3"] * 9, 0.3),  # k=1: 1 * 0 + 9 * 1/3
        (
            "dont",
            ["don't"] * 2 + ["no"] * 8,
            0.6,
        ),  # "dont" -> "don't", k=2: (2 * 1/3 + 8 * 2/3) / 10
        ("t-shirt", ["t shirt"] * 3 + ["shirt"] * 7, 0.9),  # "t-shirt" -> "t shirt", k=3
        ("1,000", ["1,000"] * 5 + ["1000"] * 5, 1.0),  # both forms become "1000", k=10
        ("U.S.A.", ["u.s.a."] + ["usa"] * 3 + ["america"] * 6, 1.0),  # all become "usa", k=4
        ("3.5", ["3.5"] * 2 + ["3"] * 8, 0.6),  # "3.5" keeps its period, k=2
        ("it's", ["its"] * 5 + ["no"] * 5, 0.0),  # apostrophe kept, "its" not a contraction
    ],
)
def test_question_accuracy_agrees_across_protocols(prediction, humans, expected, protocol):
    assert question_accuracy(prediction, humans, protocol) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "humans", "current", "legacy"),
    [
        # Unanimous humans: current compares whitespace-cleaned strings only; legacy normalises the
        # prediction ("Two" -> "2") but leaves unanimous humans raw, so nothing matches "Two".
        ("2", ["Two"] * 10, 0.0, 0.0),
        ("Two", ["Two"] * 10, 1.0, 0.0),
        ("yes!", ["yes"] * 10, 0.0, 1.0),  # legacy: "yes!" -> "yes"; current: "yes!" != "yes"
        (" yes\t", ["\tyes\n"] * 10, 1.0, 0.0),  # legacy never cleans human whitespace
        ("the", [""] * 10, 0.0, 1.0),  # legacy: "the" -> "" matches the empty answers
        ("", [""] * 10, 1.0, 1.0),
        # Mixed humans: legacy applies only punctuation to humans, so articles and case survive.
        ("dog", ["a dog"] * 4 + ["dog"] * 2 + ["cat"] * 4, 1.0, 0.6),  # current k=6; legacy k=2
        ("usa", ["USA"] * 4 + ["america"] * 6, 1.0, 0.0),  # current lower-cases humans, legacy not
    ],
)
def test_protocols_differ_where_official_versions_differ(prediction, humans, current, legacy):
    assert question_accuracy(prediction, humans, "current") == pytest.approx(current)
    assert question_accuracy(prediction, humans, "legacy") == pytest.approx(legacy)


def test_unknown_protocol_names_the_allowed_values():
    with pytest.raises(ValueError, match="current.*legacy"):
        question_accuracy("yes", ["yes"] * 10, protocol="2017")


def test_empty_human_answers_are_refused():
    with pytest.raises(ValueError, match="human_answers"):
        question_accuracy("yes", [])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "humans",
    [
        MIXED,
        ["2"] * 10,
        ["a dog"] * 4 + ["dog"] * 2 + ["cat"] * 4,
        ["yes"] * 3 + ["no"] * 7,
        [""] * 9 + ["the"],
    ],
)
def test_candidate_accuracies_equal_question_accuracy(humans, protocol):
    candidates = [
        "2",
        "two",
        "Two",
        "3",
        "dog",
        "a dog",
        "cat",
        "yes",
        "Yes!",
        "no",
        "",
        "the",
        "x",
    ]
    scores = candidate_accuracies(humans, candidates, protocol)
    assert list(scores) == candidates
    assert scores == {c: question_accuracy(c, humans, protocol) for c in candidates}
    assert any(score > 0 for score in scores.values())
