"""Official VQA v2 answer normalisation, soft scores and per-question accuracy (pure functions).

Mirrors GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py, quirks included, in
two versions: "current" (commit a013f00, March 2021, "Fixed processing answers bug") and "legacy"
(the tool used by papers of 2017-2020). See question_accuracy for how they differ.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

PROTOCOLS = ("current", "legacy")

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
_ANY_MARK = re.compile("[" + re.escape("".join(_PUNCTUATION)) + ".]")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# "(?!<=\d)" is a lookahead typo for a lookbehind, so this removes every period not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The official call is periodStrip.sub("", text, re.UNICODE): the flag (32) lands in `count`.
_PERIOD_COUNT = int(re.UNICODE)
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# The official table, odd entries included: words are lower-cased before lookup, so the keys with
# capitals ("Im", "Ive", "Id've", "I'dve") never match, and "somebody'd" maps to "somebodyd".
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip


def process_punctuation(text: str) -> str:
    """Official processPunctuation: delete or blank out punctuation, then drop up to 32 periods."""
    if not _ANY_MARK.search(text):
        return text  # fast path: nothing the official rules would touch
    # Every test looks at the original text, not the text as changed for earlier characters.
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or has_digit_comma else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Official processDigitArticle: lower case, number words to digits, no articles, contractions."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, surrounding spaces stripped (the official first step)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """Full official normalisation of one answer: whitespace, punctuation, digits and articles."""
    return process_digit_article(process_punctuation(_clean_whitespace(answer)))


# Answers repeat across questions, so accuracy normalises them through a cache.
_cached_normalize = functools.lru_cache(maxsize=1 << 18)(normalize_answer)


def soft_score(count: int) -> float:
    """Soft target for an answer given by `count` humans: min(1, 0.3 * count)."""
    return min(1.0, 0.3 * count)


def soft_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Normalised answer -> soft_score of how many humans gave it after normalisation."""
    counts = Counter(normalize_answer(answer) for answer in human_answers)
    return {answer: soft_score(count) for answer, count in counts.items()}


def answer_type_key(answer_type: str) -> str:
    """Metric-name-safe answer type: every non-alphanumeric becomes '_' ('yes/no' -> 'yes_no')."""
    return re.sub(r"[^0-9A-Za-z]", "_", answer_type)


def _processed_humans(
    human_answers: Sequence[str], protocol: str
) -> tuple[list[str], Callable[[str], str]]:
    """Human answers as the protocol compares them, and how it processes a prediction."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if not human_answers:
        raise ValueError("human_answers is empty; a VQA question needs at least one human answer")
    if protocol == "current":
        humans = [_clean_whitespace(answer) for answer in human_answers]
        if len(set(humans)) > 1:
            return [_cached_normalize(answer) for answer in humans], _cached_normalize
        return humans, _clean_whitespace
    humans = list(human_answers)  # legacy: raw answers, punctuation only, prediction always full
    if len(set(humans)) > 1:
        humans = [process_punctuation(answer) for answer in humans]
    return humans, _cached_normalize


def _accuracy(processed_prediction: str, humans: Sequence[str]) -> float:
    """Mean over humans of min(1, matches among the other humans / 3), in the official float order."""
    matches = [human == processed_prediction for human in humans]
    total = sum(matches)
    per_human = [min(1, (total - match) / 3) for match in matches]
    return float(sum(per_human)) / len(per_human)


def question_accuracy(
    prediction: str, human_answers: Sequence[str], protocol: str = "current"
) -> float:
    """Official VQA accuracy in [0, 1] of one prediction against the (ten) human answers.

    current: whitespace-clean prediction and humans; only if the humans are not all identical,
    fully normalise both. legacy: always fully normalise the prediction; only if the raw humans are
    not all identical, apply process_punctuation (and nothing else) to them.
    """
    humans, process_prediction = _processed_humans(human_answers, protocol)
    return _accuracy(process_prediction(prediction), humans)


def candidate_accuracies(
    human_answers: Sequence[str], candidates: Iterable[str], protocol: str = "current"
) -> dict[str, float]:
    """question_accuracy of every candidate answer, processing the human answers only once."""
    humans, process_prediction = _processed_humans(human_answers, protocol)
    by_processed = {human: _accuracy(human, humans) for human in set(humans)}
    return {
        candidate: by_processed.get(process_prediction(candidate), 0.0) for candidate in candidates
    }
