"""VQA v2: `{"questions": [...]}` and `{"annotations": [...]}` files, ten human answers per question."""

from __future__ import annotations

from collections.abc import Sequence

from updown_vqa.vqa import preprocess
from updown_vqa.vqa.preprocess import ANSWER_TYPES, encode_answers, read_split  # noqa: F401 (the interface)

NAME = "vqa2"
DEFAULT_EXPERIMENT = "vqa2_updown"
ANSWERS_IN_QUESTIONS = False


def answer_labels(annotations: Sequence[dict]) -> list[str]:
    """The normalised `multiple_choice_answer` of each question."""
    return [preprocess._normalize(a["multiple_choice_answer"]) for a in annotations]


def submission(question_ids: Sequence, answers: Sequence[str]) -> list[dict]:
    """EvalAI's results file: [{"question_id": int, "answer": str}]."""
    return [{"question_id": int(q), "answer": a} for q, a in zip(question_ids, answers)]
