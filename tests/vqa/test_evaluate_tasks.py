"""`python -m updown_vqa.evaluate --task ...`: which files each task needs, the --predictions alias."""

import json

import pytest
from conftest import run_module

from updown_vqa.datasets.clevr_synthetic import write_clevr
from updown_vqa.evaluate import main as evaluate_main


@pytest.mark.parametrize("args, flag", [(["--results", "r.json"], "--questions"),
                                        (["--questions", "q.json", "--results", "r.json"], "--annotations"),
                                        (["--task", "gqa", "--questions", "q.json"], "--results"),
                                        (["--task", "clevr", "--results", "r.json"], "--questions"),
                                        (["--task", "caption", "--results", "r.json"], "--annotations")])
def test_a_missing_input_is_one_error_line_naming_the_flag(args, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: --task" in err and f"needs {flag}" in err
    assert len([line for line in err.splitlines() if "error: " in line]) == 1


def test_clevr_results_through_the_predictions_alias(tmp_path, capsys):
    questions = write_clevr(str(tmp_path), 2, splits=("val",))["val"]
    items = json.loads(open(questions).read())["questions"]
    results = [{"question_index": q["question_index"], "answer": q["answer"] if i % 2 else "nope"} for i, q in enumerate(items)]
    (tmp_path / "r.json").write_text(json.dumps(results))
    evaluate_main(["--task", "clevr", "--questions", questions, "--predictions", str(tmp_path / "r.json")])
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(50.0)


def test_caption_without_the_toolkit_is_one_error_line(tmp_path):
    done = run_module("updown_vqa.evaluate", "--task", "caption", "--annotations", "a.json", "--results", "r.json",
                      cwd=str(tmp_path))
    lines = done.stderr.strip().splitlines()
    try:
        import updown_vqa.captioning.coco_eval  # noqa: F401
    except ImportError:
        assert done.returncode == 1 and len(lines) == 1 and "not available in this build" in lines[0]
    else:
        assert done.returncode != 0 and "Traceback" not in done.stderr  # a.json does not exist
