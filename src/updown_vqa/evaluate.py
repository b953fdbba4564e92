"""Official evaluation of a results file: VQA v2 / VQA-CP v2 (default), GQA, CLEVR or captions.

    python -m updown_vqa.evaluate [--task vqa] --questions Q.json --annotations A.json --results R.json \
        [--protocol current|legacy] [--out report.json]
    python -m updown_vqa.evaluate --task gqa --questions val_balanced_questions.json --results R.json \
        [--choices val_choices.json] [--out report.json]   (val_all_questions.json: consistency too)
    python -m updown_vqa.evaluate --task clevr --questions CLEVR_val_questions.json --results R.json
    python -m updown_vqa.evaluate --task caption --annotations captions_val2014.json --results R.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from updown_vqa.core.cli import command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_write, refuse_overwriting_inputs
from updown_vqa.vqa.answers import PROTOCOLS
from updown_vqa.vqa.evaluation import ResultsError, evaluate
from updown_vqa.vqa.schema import check_annotations, check_questions
from updown_vqa.vqa.task_evaluation import REQUIRED, evaluate_task


def caption_report(annotations: str, results: str) -> dict:
    """The COCO caption toolkit's scores, where this build has them."""
    try:
        from updown_vqa.captioning.coco_eval import evaluate_captions
    except ImportError:
        raise UpdownError("--task caption is not available in this build (updown_vqa.captioning.coco_eval "
                          "is missing); score captions with the COCO caption toolkit") from None
    report = evaluate_captions(annotations, results)
    print(f"scored {report['images']} images of {results}", flush=True)
    return report


def _load(path: Path, role: str, key: str | None):
    """The json in `path` (its `key` list when given); one error line when it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UpdownError(f"cannot read {role} file {path}: {error}") from None
    items = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(items, list):
        expected = f'an object with a "{key}" list' if key else "a list of {question_id, answer}"
        raise UpdownError(f"{role} file {path} is not in the official VQA format: expected {expected}")
    return items


def _parser() -> argparse.ArgumentParser:
    """Command-line arguments of `python -m updown_vqa.evaluate`."""
    parser = argparse.ArgumentParser(
        prog="python -m updown_vqa.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--task", choices=sorted(REQUIRED), default="vqa", help="which evaluation (default vqa)")
    parser.add_argument("--questions", type=Path, help="official questions json")
    parser.add_argument("--annotations", type=Path, help="official annotations json")
    parser.add_argument("--results", "--predictions", dest="results", type=Path,
                        help='results json (vqa: [{"question_id", "answer"}])')
    parser.add_argument("--choices", type=Path, help="gqa: {split}_choices.json, for validity and plausibility")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="current",
        help="current: official tool since March 2021; legacy: as in papers 2017-2020",
    )
    parser.add_argument("--out", type=Path, help="also write the report json here")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate a results file, print the report json and optionally write it to --out. Usage errors
    are argparse's (exit 2); bad files are one error line (exit 1), for every task."""
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [flag for flag in REQUIRED[args.task] if getattr(args, flag) is None]
    if missing:
        parser.error(f"--task {args.task} needs --{missing[0]}")
    command(_evaluate)(args)


def _evaluate(args: argparse.Namespace) -> None:
    inputs = {f"--{k} file": getattr(args, k, None) for k in ("questions", "annotations", "results", "choices")}
    refuse_overwriting_inputs("--out", args.out, inputs)  # before any work
    _write(_report(args), args.out)


def _report(args: argparse.Namespace) -> dict:
    if args.task != "vqa":
        if args.task == "caption":
            return caption_report(str(args.annotations), str(args.results))
        return evaluate_task(args.task, args)
    questions = check_questions(str(args.questions), _load(args.questions, "questions", "questions"))
    annotations = check_annotations(str(args.annotations), _load(args.annotations, "annotations", "annotations"))
    results = _load(args.results, "results", None)
    try:
        return evaluate(questions, annotations, results, args.protocol)
    except ResultsError as error:
        raise UpdownError(f"results file {args.results}: {error}") from None
    except KeyError as error:
        raise UpdownError(f"{args.annotations}: a question or annotation lacks the key {error}; use the "
                          "official VQA v2 file") from None
    except ValueError as error:
        raise UpdownError(f"{args.questions} / {args.annotations}: {error}") from None


def _write(report: dict, out: Path | None) -> None:
    """Print the report json and, with --out, write it there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        with atomic_write(str(out)) as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
