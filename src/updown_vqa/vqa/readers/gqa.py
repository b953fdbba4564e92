"""GQA (Hudson & Manning 2019): `{split}_balanced_questions.json`, an object keyed by question id (a
string) with `imageId` (a string), `question`, `answer`, `types`, ...; the test, challenge and
submission files have no answers. Files are streamed, never loaded whole (train_all is 10 GB)."""

from __future__ import annotations

from collections.abc import Sequence

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.jsonstream import iter_object_items
from updown_vqa.vqa.readers.exact import answer_labels, encode_exact  # noqa: F401 (the interface)

NAME = "gqa"
DEFAULT_EXPERIMENT = "gqa_updown"
ANSWER_TYPES = ("binary", "open")  # GQA's eval.py: open when types.structural is "query", else binary
ANSWERS_IN_QUESTIONS = True


def answer_kind(question: dict) -> str:
    """'open' for query questions, 'binary' for the others (verify, logical, choose, compare)."""
    return "open" if question["types"]["structural"] == "query" else "binary"


def iter_questions(path: str):
    """(question id, question) of a GQA questions file, streamed; a list or a VQA file is refused."""
    for qid, question in iter_object_items(path):
        if not isinstance(question, dict) or "imageId" not in question or "question" not in question:
            raise UpdownError(f"{path}: question {qid} has no 'imageId' and 'question'; expected GQA's "
                              "{split}_balanced_questions.json (an object keyed by question id)")
        yield qid, question


def read_split(questions: Sequence[str], annotations: Sequence[str] = ()) -> dict:
    """Questions of one split; answered when every question carries an `answer`."""
    out = {"question_ids": [], "image_ids": [], "questions": [], "annotations": []}
    for path in questions:
        for qid, q in iter_questions(path):
            out["question_ids"].append(qid), out["image_ids"].append(str(q["imageId"]))
            out["questions"].append(q["question"])
            if "answer" in q and "types" in q:
                out["annotations"].append({"answer": q["answer"], "answer_type": answer_kind(q)})
    answered = len(out["annotations"])
    if answered and answered != len(out["question_ids"]):
        raise UpdownError(f"{list(questions)}: {answered} of {len(out['question_ids'])} questions have an "
                          "answer; do not mix answered and test question files in one split")
    out["annotations"] = out["annotations"] or None
    return out


def encode_answers(annotations: Sequence[dict], answer_index: dict[str, int]):
    return encode_exact(annotations, answer_index, ANSWER_TYPES)


def submission(question_ids: Sequence, answers: Sequence[str]) -> list[dict]:
    """GQA's predictions file: [{"questionId": str, "prediction": str}]."""
    return [{"questionId": str(q), "prediction": a} for q, a in zip(question_ids, answers)]
