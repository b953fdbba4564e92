"""The official VQA json formats, checked where they are read: required fields and their types, one
entry per question id. A bad entry is an error naming the file and the id; a duplicated question id
is suspicious but usable: it is counted once, with a warning naming it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)
SHOWN = 5  # ids named in a warning
QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {"question_id": int, "answers": list, "multiple_choice_answer": str, "answer_type": str}


def _entry_name(entry, index: int) -> str:
    qid = entry.get("question_id") if isinstance(entry, dict) else None
    return f"question id {qid}" if isinstance(qid, int) else f"entry {index}"


def _check_fields(path: str, entry, index: int, fields: dict) -> None:
    """Refuse an entry that is not an object with every field of its type (booleans are not ints)."""
    if not isinstance(entry, dict):
        raise UpdownError(f"{path}: entry {index} is {type(entry).__name__}, not an object; expected the "
                          "official VQA v2 format")
    for field, kind in fields.items():
        value = entry.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if field not in entry else f"{type(value).__name__} {value!r:.40}"
            raise UpdownError(f"{path}: {_entry_name(entry, index)} has no valid '{field}' (expected "
                              f"{kind.__name__}, got {got}); fix or remove the entry")


def _first_of_each_id(path: str, entries: list[dict], what: str) -> list[dict]:
    """Entries with distinct question ids (the first of each), warning about the others."""
    seen: set[int] = set()
    kept, duplicates = [], []
    for entry in entries:
        if entry["question_id"] in seen:
            duplicates.append(entry["question_id"])
            continue
        seen.add(entry["question_id"])
        kept.append(entry)
    if duplicates:
        shown = ", ".join(map(str, duplicates[:SHOWN])) + (" ..." if len(duplicates) > SHOWN else "")
        log.warning("%s: %d duplicated question id(s) in the %s (%s); each is counted once, the first kept",
                    path, len(duplicates), what, shown)
    return kept


def check_questions(path: str, questions: Sequence) -> list[dict]:
    """The questions of one file (or several, `path` naming them), checked, duplicates dropped."""
    if not isinstance(questions, list):
        raise UpdownError(f"{path}: 'questions' is not a list; expected the official VQA v2 format")
    for index, entry in enumerate(questions):
        _check_fields(path, entry, index, QUESTION_FIELDS)
    return _first_of_each_id(path, questions, "questions")


def check_annotations(path: str, annotations: Sequence) -> list[dict]:
    """The annotations of one file (or several), checked down to each human answer, duplicates dropped."""
    if not isinstance(annotations, list):
        raise UpdownError(f"{path}: 'annotations' is not a list; expected the official VQA v2 format")
    for index, entry in enumerate(annotations):
        _check_fields(path, entry, index, ANNOTATION_FIELDS)
        for k, human in enumerate(entry["answers"]):
            if not isinstance(human, dict) or not isinstance(human.get("answer"), str):
                raise UpdownError(f"{path}: question id {entry['question_id']} has a human answer {k} that is "
                                  f"not a string ({human!r:.60}); fix or remove the annotation")
        if not entry["answers"]:
            raise UpdownError(f"{path}: question id {entry['question_id']} has an empty 'answers' list; "
                              "fix or remove the annotation")
    return _first_of_each_id(path, annotations, "annotations")
