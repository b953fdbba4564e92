"""`evaluate --task gqa|clevr`: the files each task needs, read and scored by its metric (captions are
scored by `captioning.coco_eval`, which the evaluate command calls itself: vqa does not import captioning)."""

from __future__ import annotations

from updown_vqa.core.cache import read_json
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.jsonstream import iter_object_items
from updown_vqa.vqa.clevr_metrics import evaluate_clevr
from updown_vqa.vqa.gqa_metrics import evaluate_gqa, results_by_id
from updown_vqa.vqa.readers import clevr, gqa

# The flags (argparse dests) each task cannot do without.
REQUIRED = {"vqa": ("questions", "annotations", "results"), "gqa": ("questions", "results"),
            "clevr": ("questions", "results"), "caption": ("annotations", "results")}


def evaluate_task(task: str, args) -> dict:
    """The report of `task` for the files named by `args` (questions, annotations, results, choices)."""
    if task == "gqa":
        return _gqa(str(args.questions), str(args.results), args.choices and str(args.choices))
    if task == "clevr":
        questions = clevr.load_questions(str(args.questions))
        return evaluate_clevr(questions, read_json(str(args.results)), (str(args.questions), str(args.results)))
    raise UpdownError(f"--task {task}: no such evaluation here")


def _gqa(questions: str, results: str, choices: str | None) -> dict:
    """GQA's eval.py metrics; the questions (and choices) files are streamed, never loaded whole."""
    predictions = results_by_id(read_json(results), "questionId", "prediction", str, results)
    choice_items = iter_object_items(choices) if choices else None
    return evaluate_gqa(gqa.iter_questions(questions), predictions, choice_items, (questions, results, choices))


def evaluate_exact(dataset: str, questions: list[str], results: list[dict]) -> dict:
    """After `predict` on GQA or CLEVR: the accuracies of the results when the questions have answers."""
    if dataset == "gqa":
        items = [item for path in questions for item in gqa.iter_questions(path)]
        if not all("answer" in q and "types" in q for _, q in items):
            return {}
        predictions = {r["questionId"]: r["prediction"] for r in results}
        report = evaluate_gqa(items, predictions, None, (", ".join(questions), "predictions", None))
        print(f"accuracy {report['accuracy']:.2f} (binary {report['binary']:.2f} open {report['open']:.2f})",
              flush=True)
        return {k: report[k] for k in ("accuracy", "binary", "open")}
    items = [q for path in questions for q in clevr.load_questions(path)]
    if not items or not all("answer" in q for q in items):
        return {}
    report = evaluate_clevr(items, results, (", ".join(questions), "predictions"))
    per_type = " ".join(f"{k} {v:.2f}" for k, v in report["perQuestionType"].items())
    print(f"accuracy {report['accuracy']:.2f} ({per_type})", flush=True)
    return {"accuracy": report["accuracy"], **report["perQuestionType"]}
