"""Official VQA v2 evaluation of a results file: overall, per answer type, per question type, per question.

    python -m updown_vqa.evaluate --questions Q.json --annotations A.json --results R.json \
        [--protocol current|legacy] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.answers import PROTOCOLS
from updown_vqa.vqa.evaluation import ResultsError, evaluate
from updown_vqa.vqa.schema import check_annotations, check_questions


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
        questions = check_questions(str(args.questions), questions)
        annotations = check_annotations(str(args.annotations), annotations)
    except UpdownError as error:
        parser.error(str(error))
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
