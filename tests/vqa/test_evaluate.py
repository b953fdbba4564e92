"""The evaluate library function and the `python -m updown_vqa.evaluate` command, on tiny official-format files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import updown_vqa
from updown_vqa.evaluate import main
from updown_vqa.vqa.evaluation import ResultsError, evaluate

# (question_id, answer_type, question_type, ten human answers, prediction)
SPLIT = [
    (1, "yes/no", "is the", ["yes"] * 10, "yes"),  # 1.0 in both protocols
    (2, "number", "how many", ["2"] * 3 + ["3"] * 7, "two"),  # "two" -> "2", k=3: 0.9 in both
    (3, "other", "what color", ["red"] * 10, "Red."),  # unanimous: current 0.0; legacy "red" -> 1.0
    (4, "number", "how many", ["2"] + ["3"] * 9, "2"),  # k=1: 9 * 1/3 / 10 = 0.3 in both
]
# current: overall 100 * (1 + 0.9 + 0 + 0.3) / 4 = 55.0; number: (0.9 + 0.3) / 2 -> 60.0
# legacy:  overall 100 * (1 + 0.9 + 1 + 0.3) / 4 = 80.0
EXPECTED_CURRENT = {
    "overall": 55.0,
    "perAnswerType": {"yes/no": 100.0, "number": 60.0, "other": 0.0},
    "perQuestionType": {"is the": 100.0, "how many": 60.0, "what color": 0.0},
    "evalQA": {"1": 100.0, "2": 90.0, "3": 0.0, "4": 30.0},
}


def _questions():
    return [{"question_id": q, "image_id": 10 + q, "question": f"question {q}?"} for q, *_ in SPLIT]


def _annotations():
    return [
        {
            "question_id": q, "image_id": 10 + q, "question_type": qtype, "answer_type": atype,
            "multiple_choice_answer": humans[-1],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(humans)],
        }
        for q, atype, qtype, humans, _ in SPLIT
    ]  # fmt: skip


def _results():
    return [{"question_id": q, "answer": prediction} for q, *_, prediction in SPLIT]


def _write_split(tmp_path: Path, results: list[dict]) -> list[str]:
    """Write the three official files; return the CLI arguments naming them."""
    files = {
        "questions": {"questions": _questions()},
        "annotations": {"annotations": _annotations()},
        "results": results,
    }
    args = []
    for role, content in files.items():
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(content))
        args += [f"--{role}", str(path)]
    return args


def test_evaluate_reports_official_numbers_in_both_protocols():
    assert evaluate(_questions(), _annotations(), _results()) == EXPECTED_CURRENT
    legacy = evaluate(_questions(), _annotations(), _results(), protocol="legacy")
    assert legacy["overall"] == 80.0
    assert legacy["perAnswerType"]["other"] == 100.0
    assert legacy["evalQA"]["3"] == 100.0


def test_evaluate_rounds_like_the_official_tool():
    # Without question 4: 100 * (1 + 0.9 + 0) / 3 = 63.333... -> 63.33
    questions, annotations, results = _questions()[:3], _annotations()[:3], _results()[:3]
    assert evaluate(questions, annotations, results)["overall"] == 63.33


def test_evaluate_refuses_results_that_do_not_match_the_annotations():
    with pytest.raises(ResultsError, match=r"1 of 4 .*no answer, e\.g\. 4"):
        evaluate(_questions(), _annotations(), _results()[:3])
    with pytest.raises(ResultsError, match="not in the annotations: 999"):
        evaluate(_questions(), _annotations(), _results() + [{"question_id": 999, "answer": "x"}])
    with pytest.raises(ResultsError, match="more than once: 2"):
        evaluate(_questions(), _annotations(), _results() + [{"question_id": 2, "answer": "3"}])
    with pytest.raises(ResultsError, match='entry 0 needs an integer "question_id"'):
        evaluate(_questions(), _annotations(), [{"question_id": 1}] + _results()[1:])


def test_cli_prints_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "reports" / "val.json"
    main(_write_split(tmp_path, _results()) + ["--out", str(out)])
    assert json.loads(out.read_text()) == EXPECTED_CURRENT
    assert json.loads(capsys.readouterr().out) == EXPECTED_CURRENT


def test_cli_legacy_protocol(tmp_path, capsys):
    main(_write_split(tmp_path, _results()) + ["--protocol", "legacy"])
    assert json.loads(capsys.readouterr().out)["overall"] == 80.0


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (_results()[1:], "1 of 4 annotated questions have no answer, e.g. 1"),
        (
            _results() + [{"question_id": 999, "answer": "no"}],
            "1 question ids are not in the annotations: 999",
        ),
        (_results() + _results()[:2], "2 question ids answered more than once: 1, 2"),
    ],
)
def test_cli_refuses_bad_results_naming_the_file(tmp_path, capsys, results, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_write_split(tmp_path, results))
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert str(tmp_path / "results.json") in error and message in error


def test_cli_names_a_missing_file(tmp_path, capsys):
    args = _write_split(tmp_path, _results())
    args[args.index("--annotations") + 1] = str(tmp_path / "nowhere.json")
    with pytest.raises(SystemExit):
        main(args)
    assert "annotations file " + str(tmp_path / "nowhere.json") in capsys.readouterr().err


def test_module_runs_as_a_command_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(updown_vqa.__file__).parents[1])}
    command = [sys.executable, "-m", "updown_vqa.evaluate", *_write_split(tmp_path, _results()[:3])]
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert finished.returncode != 0
    assert "results.json" in finished.stderr and "Traceback" not in finished.stderr
