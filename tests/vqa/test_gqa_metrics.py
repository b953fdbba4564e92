"""GQA's eval.py metrics on five balanced questions and two entailed ones, every number worked out by hand."""

import json

import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.evaluate import main as evaluate_main
from updown_vqa.vqa.gqa_metrics import chi_square, evaluate_gqa, steps, words


def op(operation: str, argument: str) -> dict:
    return {"operation": operation, "argument": argument, "dependencies": []}


def q(text, answer, structural, semantic, detailed, program, group, entailed=(), balanced=True):
    return {"question": text, "answer": answer, "imageId": "n1", "isBalanced": balanced,
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "semantic": program, "groups": {"global": group, "local": "l"}, "entailed": list(entailed)}


QUESTIONS = {  # (words, steps) in the comments; steps leave out exist / query name / choose name
    "q1": q("What color is it?", "red", "query", "attr", "objColor",  # 4 words, 2 steps
            [op("select", "cup"), op("query", "color")], "color", ["e1", "e2"]),
    "q2": q("Is the cup on the table?", "yes", "verify", "rel", "verifyRel",  # 6, 2
            [op("select", "table"), op("relate", "on"), op("exist", "?")], None, ["e1"]),
    "q3": q("What do they have in common?", "color", "query", "cat", "categoryThatCommon",  # 6, 3
            [op("select", "a"), op("select", "b"), op("common", ""), op("query", "name")], "common", ["q3"]),
    "q4": q("Is there a cup and a dog?", "no", "logical", "obj", "existAnd",  # 7, 3
            [op("select", "cup"), op("exist", "?"), op("select", "dog"), op("exist", "?"), op("and", "")], None),
    "q5": q("What color is the sky?", "blue", "query", "attr", "objColor",  # 5, 2
            [op("select", "sky"), op("query", "color")], "color"),
    "e1": q("Is the cup blue?", "blue", "verify", "attr", "verifyAttr", [op("select", "cup")], None, balanced=False),
    "e2": q("Is it a cup?", "yes", "verify", "obj", "verifyObj", [op("select", "cup")], None, balanced=False),
}
PREDICTIONS = {"q1": "red", "q2": "no", "q3": "color", "q4": "no", "q5": "red", "e1": "blue", "e2": "no"}
CHOICES = {"q1": {"valid": ["red", "blue"], "plausible": ["blue"]}, "q2": {"valid": ["yes", "no"], "plausible": ["yes", "no"]},
           "q3": {"valid": ["cup"], "plausible": ["cup"]},  # a "Common" question: color/material/shape instead
           "q4": {"valid": ["yes"], "plausible": ["yes"]}, "q5": {"valid": ["red", "blue"], "plausible": ["blue"]},
           "e1": {"valid": [], "plausible": []}, "e2": {"valid": [], "plausible": []}}  # fmt: skip


def test_words_and_steps_count_as_eval_py():
    assert [words(QUESTIONS[k]) for k in ("q1", "q2", "q3", "q4", "q5")] == [4, 6, 6, 7, 5]
    assert [steps(QUESTIONS[k]) for k in ("q1", "q2", "q3", "q4", "q5")] == [2, 2, 3, 3, 2]


def test_chi_square_weights_each_group_by_its_size():
    # color: gold {red 1, blue 1}, predicted {red 2}: (2-1)^2/1 + (0-1)^2/1 = 2, weight 2; common: 0, weight 1
    gold, predicted = {"color": {"red": 1, "blue": 1}, "common": {"color": 1}}, {"color": {"red": 2}, "common": {"color": 1}}
    assert chi_square(gold, predicted) == pytest.approx(4 / 3)


def test_every_metric_on_the_all_questions_file():
    report = evaluate_gqa(QUESTIONS.items(), PREDICTIONS, CHOICES.items())
    assert report["accuracy"] == pytest.approx(60.0)  # q1 q3 q4 right, q2 q5 wrong; e1 e2 are unbalanced
    assert report["binary"] == pytest.approx(50.0)  # q2 wrong, q4 right
    assert report["open"] == pytest.approx(200 / 3)  # query: q1 q3 right, q5 wrong
    assert report["consistency"] == pytest.approx(50.0)  # q1 right: e1 right, e2 wrong; q3 entails only itself
    assert report["validity"] == pytest.approx(80.0)  # all but q4 ("no" not in ["yes"]); q3 by the Common rule
    assert report["plausibility"] == pytest.approx(40.0)  # q2, q3
    assert report["distribution"] == pytest.approx(4 / 3 / 100)
    assert report["grounding"] is None and report["questions"] == 5
    assert report["accuracyPerStructuralType"] == {"query": {"accuracy": pytest.approx(200 / 3), "count": 3},
                                                   "verify": {"accuracy": 0.0, "count": 1},
                                                   "logical": {"accuracy": 100.0, "count": 1}}
    assert {k: v["accuracy"] for k, v in report["accuracyPerSemanticType"].items()} == {
        "attr": 50.0, "rel": 0.0, "cat": 100.0, "obj": 100.0}
    assert report["accuracyPerSteps"] == {"2": {"accuracy": pytest.approx(100 / 3), "count": 3},
                                          "3": {"accuracy": 100.0, "count": 2}}
    assert {k: v["accuracy"] for k, v in report["accuracyPerLength"].items()} == {
        "4": 100.0, "5": 0.0, "6": 50.0, "7": 100.0}


def test_the_balanced_file_has_no_consistency_and_no_choices_no_validity():
    balanced = {k: v for k, v in QUESTIONS.items() if v["isBalanced"]}
    report = evaluate_gqa(balanced.items(), {k: PREDICTIONS[k] for k in balanced})
    assert report["accuracy"] == pytest.approx(60.0)
    assert report["consistency"] is None and report["validity"] is None and report["plausibility"] is None


def test_a_missing_or_unknown_prediction_is_named():
    with pytest.raises(UpdownError, match="r.json: no prediction for question e2 of q.json"):
        evaluate_gqa(QUESTIONS.items(), {k: v for k, v in PREDICTIONS.items() if k != "e2"}, None, ("q.json", "r.json", ""))
    with pytest.raises(UpdownError, match="1 predictions for questions not in q.json, e.g. zz"):
        evaluate_gqa(QUESTIONS.items(), PREDICTIONS | {"zz": "no"}, None, ("q.json", "r.json", ""))


def test_evaluate_task_gqa_reads_the_official_files(tmp_path, capsys):
    files = {"questions": QUESTIONS, "choices": CHOICES,
             "results": [{"questionId": k, "prediction": v} for k, v in PREDICTIONS.items()]}
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = tmp_path / "report.json"
    evaluate_main(["--task", "gqa", "--questions", str(tmp_path / "questions.json"), "--choices",
                   str(tmp_path / "choices.json"), "--predictions", str(tmp_path / "results.json"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert (report["accuracy"], report["consistency"], report["validity"]) == (60.0, 50.0, 80.0)


def test_evaluate_task_gqa_refuses_duplicates_and_unknown_ids_in_one_line(tmp_path, capsys):
    (tmp_path / "q.json").write_text(json.dumps(QUESTIONS))
    twice = [{"questionId": k, "prediction": v} for k, v in PREDICTIONS.items()] + [{"questionId": "q1", "prediction": "x"}]
    (tmp_path / "r.json").write_text(json.dumps(twice))
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--task", "gqa", "--questions", str(tmp_path / "q.json"), "--results", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1
    assert err[0].startswith("error: ") and "r.json: question q1 is answered twice" in err[0]
