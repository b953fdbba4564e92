"""Official VQA v2 evaluation of a results file: overall, per answer type, per question type, per question.

    python -m updown_vqa.evaluate --questions Q.json --annotations A.json --results R.json \
        [--protocol current|legacy] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.answers import PROTOCOLS, question_accuracy

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


def _load(parser: argparse.ArgumentParser, path: Path, role: str, key: str | None):
    """The json in `path` (its `key` list when given); a clear parser error when it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"cannot read {role} file {path}: {error}")
    items = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(items, list):
        expected = f'an object with a "{key}" list' if key else "a list of {question_id, answer}"
        parser.error(f"{role} file {path} is not in the official VQA format: expected {expected}")
    return items


def _parser() -> argparse.ArgumentParser:
    """Command-line arguments of `python -m updown_vqa.evaluate`."""
    parser = argparse.ArgumentParser(
        prog="python -m updown_vqa.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--questions", type=Path, required=True, help="official questions json")
    parser.add_argument("--annotations", type=Path, required=True, help="official annotations json")
    parser.add_argument(
        "--results", type=Path, required=True, help='[{"question_id", "answer"}] json'
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="current",
        help="current: official tool since March 2021; legacy: as in papers 2017-2020",
    )
    parser.add_argument("--out", type=Path, help="also write the report json here")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate a results file, print the report json and optionally write it to --out."""
    parser = _parser()
    args = parser.parse_args(argv)
    questions = _load(parser, args.questions, "questions", "questions")
    annotations = _load(parser, args.annotations, "annotations", "annotations")
    results = _load(parser, args.results, "results", None)
    try:
        report = evaluate(questions, annotations, results, args.protocol)
    except ResultsError as error:
        parser.error(f"results file {args.results}: {error}")
    except KeyError as error:
        parser.error(
            f"{args.annotations}: a question or annotation lacks the key {error}; use the official VQA v2 file"
        )
    except ValueError as error:
        parser.error(f"{args.questions} / {args.annotations}: {error}")
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
