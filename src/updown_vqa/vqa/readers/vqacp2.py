"""VQA-CP v2 (Agrawal et al. 2018): `vqacp_v2_{train,test}_{questions,annotations}.json`, each a
top-level list; items as VQA v2's plus `coco_split` (train2014 or val2014: one split mixes both, so one
store covering both COCO splits, e.g. `trainval_36.h5`, serves). Answers are scored as VQA v2's."""

from __future__ import annotations

from collections.abc import Sequence

from updown_vqa.core.cache import read_json
from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.preprocess import ANSWER_TYPES, encode_answers  # noqa: F401 (the interface)
from updown_vqa.vqa.readers.vqa2 import answer_labels, submission  # noqa: F401 (the interface)

NAME = "vqacp2"
DEFAULT_EXPERIMENT = "vqacp2_updown"
ANSWERS_IN_QUESTIONS = False


def load_list(path: str, what: str) -> list[dict]:
    """A VQA-CP file's top-level list; a VQA v2 file (an object) is refused, naming the other config."""
    data = read_json(path)
    if isinstance(data, dict) and what in data:
        raise UpdownError(f"{path}: a VQA v2 {what} file (an object with a '{what}' list), not VQA-CP v2 "
                          f"(a top-level list); use data=vqa2 for it, or give the vqacp_v2_*_{what}.json file")
    if not isinstance(data, list) or not all(isinstance(item, dict) and "question_id" in item for item in data):
        raise UpdownError(f"{path}: expected the VQA-CP v2 {what} file, a list of objects with a "
                          "'question_id'; use the file as distributed")
    return data


def read_split(questions: Sequence[str], annotations: Sequence[str]) -> dict:
    """Questions (and annotations when given) of one split, files concatenated in order."""
    items = [q for path in questions for q in load_list(path, "questions")]
    out = {"question_ids": [q["question_id"] for q in items], "image_ids": [q["image_id"] for q in items],
           "questions": [q["question"] for q in items], "annotations": None}
    if annotations:
        by_id = {a["question_id"]: a for path in annotations for a in load_list(path, "annotations")}
        missing = [qid for qid in out["question_ids"] if qid not in by_id]
        if missing:
            raise UpdownError(f"{list(annotations)}: no annotation for question ids {missing[:5]} "
                              f"({len(missing)} in all); pair each questions file with its annotations")
        out["annotations"] = [by_id[qid] for qid in out["question_ids"]]
    return out
