"""The official VQA v2 evaluation (vqaEval.py, both protocols): overall, per answer type, per question
type and per question, from questions, annotations and a results file already parsed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.answers import question_accuracy

_SHOWN_IDS = 5


class ResultsError(UpdownError, ValueError):
    """The results do not answer exactly the annotated questions, once each."""


def _few(ids: Sequence) -> str:
    """The first few ids of a sorted list, for an error message."""
    shown = ", ".join(sorted(map(str, ids), key=lambda i: (len(i), i))[:_SHOWN_IDS])
    return shown + (", ..." if len(ids) > _SHOWN_IDS else "")


def _predictions_by_id(results: list[dict], annotated_ids: set[int]) -> dict[int, str]:
    """Question id -> predicted answer, refusing malformed entries, duplicates, unknown and missing ids."""
    for index, result in enumerate(results):
        valid = isinstance(result, dict) and isinstance(result.get("answer"), str)
        if not valid or not isinstance(result.get("question_id"), (int, str)):
            raise ResultsError(
                f'entry {index} needs an integer "question_id" and a string "answer", got {result!r}'
            )
    counts = Counter(result["question_id"] for result in results)
    duplicates = [qid for qid, count in counts.items() if count > 1]
    if duplicates:
        raise ResultsError(
            f"{len(duplicates)} question ids answered more than once: {_few(duplicates)}"
        )
    unknown = [qid for qid in counts if qid not in annotated_ids]
    if unknown:
        raise ResultsError(
            f"{len(unknown)} question ids are not in the annotations: {_few(unknown)}; "
            "evaluate against the annotations of the split you predicted"
        )
    missing = [qid for qid in annotated_ids if qid not in counts]
    if missing:
        raise ResultsError(
            f"{len(missing)} of {len(annotated_ids)} annotated questions have no answer, "
            f"e.g. {_few(missing)}; predict every question of the split"
        )
    return {result["question_id"]: result["answer"] for result in results}


def _check_questions(questions: list[dict], annotations: list[dict]) -> None:
    """Refuse questions and annotations that describe different question ids."""
    question_ids = {question["question_id"] for question in questions}
    annotated_ids = [annotation["question_id"] for annotation in annotations]
    if not annotated_ids:
        raise ValueError("the annotations list is empty")
    orphans = [qid for qid in annotated_ids if qid not in question_ids]
    if orphans or len(question_ids) != len(set(annotated_ids)):
        raise ValueError(
            f"questions and annotations disagree ({len(question_ids)} question ids, "
            f"{len(set(annotated_ids))} annotated; not in questions: {_few(orphans)}); "
            "use the two files of the same split"
        )


def _percent(accuracies: list[float]) -> float:
    """Official aggregate: round(100 * float(sum(acc)) / len(acc), 2)."""
    return round(100 * float(sum(accuracies)) / len(accuracies), 2)


def evaluate(
    questions: list[dict], annotations: list[dict], results: list[dict], protocol: str = "current"
) -> dict:
    """Official VQA v2 report {overall, perAnswerType, perQuestionType, evalQA} for `results`."""
    _check_questions(questions, annotations)
    predictions = _predictions_by_id(results, {a["question_id"] for a in annotations})
    all_accuracies: list[float] = []
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    eval_qa: dict[str, float] = {}
    for annotation in annotations:  # annotation order, as the official vqa.getQuesIds()
        question_id = annotation["question_id"]
        humans = [answer["answer"] for answer in annotation["answers"]]
        accuracy = question_accuracy(predictions[question_id], humans, protocol)
        all_accuracies.append(accuracy)
        by_answer_type.setdefault(annotation["answer_type"], []).append(accuracy)
        by_question_type.setdefault(annotation["question_type"], []).append(accuracy)
        eval_qa[str(question_id)] = round(100 * accuracy, 2)
    return {
        "overall": _percent(all_accuracies),
        "perAnswerType": {kind: _percent(accs) for kind, accs in by_answer_type.items()},
        "perQuestionType": {kind: _percent(accs) for kind, accs in by_question_type.items()},
        "evalQA": eval_qa,
    }
