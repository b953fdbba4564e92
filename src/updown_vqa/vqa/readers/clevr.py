"""CLEVR (Johnson et al. 2017): `CLEVR_{split}_questions.json` = {"questions": [{"question_index",
"image_index", "image_filename", "question", "answer", "program", ...}]}; the test split has no answers.
Image indices restart at 0 in each split, so each split has its own feature store."""

from __future__ import annotations

from collections.abc import Sequence

from updown_vqa.core.cache import read_json
from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.readers.exact import answer_labels, encode_exact  # noqa: F401 (the interface)

NAME = "clevr"
DEFAULT_EXPERIMENT = "clevr_updown"
ANSWERS_IN_QUESTIONS = True
# The question types of the CLEVR paper (Johnson et al. 2017, Fig. 4 and Table 1), from the last function.
ANSWER_TYPES = ("exist", "count", "compare_integer", "query_attribute", "compare_attribute")
_LAST_FUNCTION = {"exist": "exist", "count": "count", "equal_integer": "compare_integer",
                  "less_than": "compare_integer", "greater_than": "compare_integer"}
_LAST_FUNCTION |= {f"query_{a}": "query_attribute" for a in ("size", "color", "material", "shape")}
_LAST_FUNCTION |= {f"equal_{a}": "compare_attribute" for a in ("size", "color", "material", "shape")}


def question_type(program: list[dict]) -> str:
    """The paper's type of a question: its program's last function ('function', or 'type' in later
    releases of the generator)."""
    last = program[-1].get("function", program[-1].get("type")) if program else None
    if last not in _LAST_FUNCTION:
        raise UpdownError(f"program ending in {last!r}: not one of CLEVR's answering functions")
    return _LAST_FUNCTION[last]


def load_questions(path: str) -> list[dict]:
    """The `questions` list of a CLEVR questions file."""
    data = read_json(path)
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all("image_index" in q and "question" in q for q in items):
        raise UpdownError(f"{path}: expected CLEVR_<split>_questions.json, an object whose 'questions' "
                          "list has 'image_index' and 'question' in each item")
    return items


def read_split(questions: Sequence[str], annotations: Sequence[str] = ()) -> dict:
    """Questions of one split (question id: `question_index`); answered when each has `answer`."""
    items = [(path, q) for path in questions for q in load_questions(path)]
    out = {"question_ids": [q.get("question_index", i) for i, (_, q) in enumerate(items)],
           "image_ids": [q["image_index"] for _, q in items], "questions": [q["question"] for _, q in items],
           "annotations": None}
    if items and all("answer" in q for _, q in items):
        out["annotations"] = [{"answer": str(q["answer"]), "answer_type": question_type(q.get("program", []))}
                              for _, q in items]
    return out


def encode_answers(annotations: Sequence[dict], answer_index: dict[str, int]):
    return encode_exact(annotations, answer_index, ANSWER_TYPES)


def submission(question_ids: Sequence, answers: Sequence[str]) -> list[dict]:
    """Per split: [{"question_index": int, "answer": str}]."""
    return [{"question_index": int(q), "answer": a} for q, a in zip(question_ids, answers)]
