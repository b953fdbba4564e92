"""CLEVR's accuracy: exact match overall and per question type (the last function of the program,
grouped as in Johnson et al. 2017: exist, count, compare integer, query attribute, compare attribute)."""

from __future__ import annotations

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.gqa_metrics import results_by_id
from updown_vqa.vqa.readers.clevr import ANSWER_TYPES, question_type


def evaluate_clevr(questions: list[dict], results: list, sources: tuple[str, str] = ("", "")) -> dict:
    """{"accuracy", "perQuestionType": {type: accuracy}, "questions"} in percent, for the results
    [{"question_index", "answer"}] of every question."""
    answers = results_by_id(results, "question_index", "answer", int, sources[1])
    totals = {t: [0, 0] for t in ANSWER_TYPES}  # type -> [correct, questions]
    for i, q in enumerate(questions):
        if "answer" not in q:
            raise UpdownError(f"{sources[0]}: question {q.get('question_index', i)} has no answer; "
                              "the test split is scored by its authors, not here")
        index = q.get("question_index", i)
        if index not in answers:
            raise UpdownError(f"{sources[1]}: no answer for question_index {index} of {sources[0]}; "
                              "predict every question of the split")
        total = totals[question_type(q.get("program", []))]
        total[0] += answers.pop(index) == str(q["answer"])
        total[1] += 1
    if answers:
        raise UpdownError(f"{sources[1]}: {len(answers)} answers for questions not in {sources[0]}, e.g. "
                          f"question_index {next(iter(answers))}; evaluate against the split you predicted")
    correct, count = sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())
    return {"accuracy": 100 * correct / max(1, count), "questions": count,
            "perQuestionType": {t: 100 * c / n for t, (c, n) in totals.items() if n}}
