"""GQA's official metrics (eval.py of gqadataset.org, v1.2), as pure functions over streamed questions.

Names and definitions are eval.py's: accuracy, binary, open, validity, plausibility (balanced questions),
consistency (over the entailed questions of each correctly answered balanced question; needs the
`{split}_all_questions.json` file and a prediction for each of its questions), distribution (chi-square
of gold vs predicted answer counts per global group, divided by 100; lower is better), accuracy per
structural type, semantic type, reasoning steps and question length (words); all in percent. Grounding
needs attention maps and scene graphs, which this evaluation does not take: it is always null.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from updown_vqa.core.errors import UpdownError

_NOT_STEPS = ("exist", "query: name", "choose name")  # eval.py: final querying steps add no reasoning
DETAILED = ("accuracyPerStructuralType", "accuracyPerSemanticType", "accuracyPerSteps", "accuracyPerLength")


def words(question: dict) -> int:
    """Question length: whitespace-separated words."""
    return len(question["question"].split())


def steps(question: dict) -> int:
    """Reasoning steps: semantic operations, leaving out exist / query name / choose name."""
    return sum(not any(o in f"{op['operation']}: {op['argument']}" for o in _NOT_STEPS)
               for op in question["semantic"])


def chi_square(gold: dict[str, Counter], predicted: dict[str, Counter]) -> float:
    """Sum over groups of chi2(group) x group size, over the total size (eval.py's chiSquare)."""
    total_score, total = 0.0, 0
    for group, answers in gold.items():
        score = sum((predicted[group].get(a, 0) - e) ** 2 / e for a, e in answers.items())
        size = sum(answers.values())
        total_score, total = total_score + score * size, total + size
    return total_score / total if total else 0.0


def _percent(values: Sequence[float]) -> float:
    return 100 * sum(values) / len(values) if values else 0.0


def results_by_id(results, id_key: str, answer_key: str, id_type: type, source: str) -> dict:
    """{id: answer} of a results list; malformed entries and duplicate ids are refused, naming one."""
    if not isinstance(results, list):
        raise UpdownError(f"{source}: expected a list of {{{id_key!r}, {answer_key!r}}}")
    out = {}
    for index, r in enumerate(results):
        if not (isinstance(r, dict) and isinstance(r.get(id_key), id_type) and isinstance(r.get(answer_key), str)):
            raise UpdownError(f"{source}: entry {index} needs a {id_type.__name__} {id_key!r} and a string "
                              f"{answer_key!r}, got {r!r}")
        if r[id_key] in out:
            raise UpdownError(f"{source}: question {r[id_key]} is answered twice; keep one answer per question")
        out[r[id_key]] = r[answer_key]
    return out


class _Scores:
    """The running sums of one evaluation."""

    def __init__(self):
        self.lists = {k: [] for k in ("accuracy", "binary", "open")}
        self.detailed = {k: defaultdict(list) for k in DETAILED}
        self.gold, self.predicted = defaultdict(Counter), defaultdict(Counter)
        self.balanced: dict[str, tuple[str, bool]] = {}  # qid -> (prediction, Common question)
        self.correct: dict[str, bool] = {}  # every question of the file: answered right?
        self.entailed: list[tuple[str, ...]] = []  # of each correct balanced question
        self.all_questions = False

    def add(self, qid: str, question: dict, predicted: str) -> None:
        correct = predicted == question["answer"]
        self.correct[qid] = correct
        if not question.get("isBalanced", True):
            self.all_questions = True
            return
        score = float(correct)
        self.lists["accuracy"].append(score)
        self.lists["open" if question["types"]["structural"] == "query" else "binary"].append(score)
        for key, value in zip(DETAILED, (question["types"]["structural"], question["types"]["semantic"],
                                         steps(question), words(question))):
            self.detailed[key][str(value)].append(score)
        self.balanced[qid] = (predicted, "Common" in question["types"]["detailed"])
        group = question.get("groups", {}).get("global")
        if group is not None:
            self.gold[group][question["answer"]] += 1
            self.predicted[group][predicted] += 1
        inferred = tuple(e for e in question.get("entailed", ()) if e != qid)
        if correct and inferred:
            self.entailed.append(inferred)


def consistency(scores: _Scores, source: str) -> float | None:
    """Mean accuracy over the entailed questions of correct balanced ones; None without the all file."""
    if not scores.all_questions:
        return None
    per_question = []
    for inferred in scores.entailed:
        missing = [e for e in inferred if e not in scores.correct]
        if missing:
            raise UpdownError(f"{source}: entailed question {missing[0]} is not in the file; give "
                              "{split}_all_questions.json for consistency")
        per_question.append(sum(scores.correct[e] for e in inferred) / len(inferred))
    return _percent(per_question)


def choice_scores(scores: _Scores, choices: Iterable[tuple[str, dict]], source: str) -> tuple[float, float]:
    """Validity and plausibility (percent) of the balanced questions' predictions, from the choices."""
    valid, plausible, seen = [], [], 0
    for qid, choice in choices:
        if qid in scores.balanced:
            predicted, common = scores.balanced[qid]
            group = ["color", "material", "shape"] if common else None
            valid.append(predicted in (group or choice["valid"]))
            plausible.append(predicted in (group or choice["plausible"]))
            seen += 1
    if seen != len(scores.balanced):
        raise UpdownError(f"{source}: {len(scores.balanced) - seen} balanced questions have no choices; "
                          "give the {split}_choices.json of the questions' split")
    return _percent(valid), _percent(plausible)


def evaluate_gqa(questions: Iterable[tuple[str, dict]], predictions: dict[str, str],
                 choices: Iterable[tuple[str, dict]] | None = None, sources: Sequence[str] = ("", "", "")) -> dict:
    """GQA's report for `predictions` ({questionId: prediction}) over the streamed questions.

    Every question of the file needs a prediction and every prediction a question. `sources` names the
    questions, results and choices files in errors.
    """
    remaining, scores = dict(predictions), _Scores()
    for qid, question in questions:
        if qid not in remaining:
            raise UpdownError(f"{sources[1]}: no prediction for question {qid} of {sources[0]}; "
                              "predict every question of the questions file")
        scores.add(qid, question, remaining.pop(qid))
    if remaining:
        raise UpdownError(f"{sources[1]}: {len(remaining)} predictions for questions not in {sources[0]}, "
                          f"e.g. {next(iter(remaining))}; evaluate against the split you predicted")
    validity, plausibility = choice_scores(scores, choices, sources[2]) if choices is not None else (None, None)
    report = {k: _percent(v) for k, v in scores.lists.items()}
    report |= {"consistency": consistency(scores, sources[0]), "validity": validity,
               "plausibility": plausibility, "grounding": None,
               "distribution": chi_square(scores.gold, scores.predicted) / 100,
               "questions": len(scores.lists["accuracy"])}
    for key, groups in scores.detailed.items():
        report[key] = {t: {"accuracy": _percent(v), "count": len(v)}
                       for t, v in sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0]))}
    return report
