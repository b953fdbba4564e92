"""Malformed VQA json is one error naming the file and the id; a duplicated question id is counted once
with a warning; training needs only its own splits; `answer` gets the question as typed; every key the
README names composes as written."""

import json
import logging
import os
import re
import sys

import pytest
from conftest import compose_config, tiny_overrides
from hydra import compose, initialize_config_dir

from updown_vqa import answer as answer_command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.training import train
from updown_vqa.evaluate import main as evaluate_main
from updown_vqa.vqa.preprocess import read_split

QUESTION = {"question_id": 1, "image_id": 10, "question": "what color?"}
ANNOTATION = {"question_id": 1, "image_id": 10, "question_type": "what color", "answer_type": "other",
              "multiple_choice_answer": "red", "answers": [{"answer": "red", "answer_id": 1}] * 10}


def write(tmp_path, questions, annotations):
    q, a = tmp_path / "q.json", tmp_path / "a.json"
    q.write_text(json.dumps({"questions": questions}))
    a.write_text(json.dumps({"annotations": annotations}))
    return str(q), str(a)


@pytest.mark.parametrize("question,annotation,match", [
    ({"question_id": 1, "image_id": 10}, ANNOTATION, r"q.json: question id 1 has no valid 'question' \(expected str, "
                                                     r"got missing\)"),
    ({**QUESTION, "question": 42}, ANNOTATION, r"q.json: question id 1 has no valid 'question' \(expected str, got int"),
    (QUESTION, {k: v for k, v in ANNOTATION.items() if k != "answers"}, r"a.json: question id 1 has no valid 'answers'"),
    (QUESTION, {**ANNOTATION, "answers": [{"answer": None}] * 10}, r"a.json: question id 1 has a human answer 0 that "
                                                                  r"is not a string"),
])
def test_malformed_entries_are_named_by_file_and_id(tmp_path, question, annotation, match):
    with pytest.raises(UpdownError, match=match):
        read_split(*map(lambda p: [p], write(tmp_path, [question], [annotation])))


def test_a_duplicated_question_id_is_counted_once_with_a_warning(tmp_path, caplog):
    questions, annotations = write(tmp_path, [QUESTION, {**QUESTION, "question": "again?"}], [ANNOTATION])
    with caplog.at_level(logging.WARNING):
        split = read_split([questions], [annotations])
    assert split["question_ids"] == [1] and split["questions"] == ["what color?"]
    assert "q.json: 1 duplicated question id(s) in the questions (1)" in caplog.text


def test_evaluate_names_a_null_human_answer_in_one_line(tmp_path, capsys):
    questions, annotations = write(tmp_path, [QUESTION], [{**ANNOTATION, "answers": [{"answer": None}] * 10}])
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"question_id": 1, "answer": "red"}]))
    with pytest.raises(SystemExit) as stop:
        evaluate_main(["--questions", questions, "--annotations", annotations, "--results", str(results)])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err  # bad data: 1, as every command
    assert "error: " in err and "a.json: question id 1 has a human answer 0 that is not a string" in err


@pytest.mark.slow
def test_vqa2_trains_without_the_test_files(data_dir, tmp_path):
    shapes = os.path.join(data_dir, "shapes")
    files = [f"data.{split}.{part}={shapes}/{name}" for split in ("train", "val") for part, name in (
        ("questions", f"v2_OpenEnded_shapes_{split}_questions.json"), ("annotations", f"v2_shapes_{split}_annotations.json"),
        ("features", f"shapes_{split}_features.h5"))]
    overrides = [o for o in tiny_overrides(data_dir, str(tmp_path), builder=False)] + [
        "data=vqa2", *files, f"data.cache_dir={tmp_path}/cache", "data.min_answer_count=1", "data.num_workers=0",
        "data.pin_memory=false", "trainer.fast_dev_run=true"]
    cfg = compose_config(overrides, str(tmp_path))
    assert not os.path.exists(cfg.data.test.questions)  # configured, absent, and not needed
    train(cfg)


@pytest.mark.parametrize("question", ["is ${oc.env:HOME} red?", "???", "what's \\n in ${x}, $y?"])
def test_answer_gets_the_question_exactly_as_typed(question, monkeypatch, tmp_path, capsys):
    import updown_vqa.vqa.inference as inference

    asked = []
    monkeypatch.setattr(inference, "answer_image", lambda ckpt, image, q, *args: asked.append(q) or [("yes", 0.9)])
    monkeypatch.setattr(answer_command, "TYPED", {})
    monkeypatch.setattr(sys, "argv", ["answer", "ckpt=a.ckpt", "image=b.png", f"question={question}",
                                      f"paths.log_dir={tmp_path}"])
    answer_command.main()
    assert asked == [question]
    assert capsys.readouterr().out.splitlines()[0] == question


def readme_keys() -> dict[str, str]:
    """Every `group.key` the README (and docs/design.md, its configuration section) tells users to set,
    with a value it shows (or none)."""
    keys = {}
    root = os.path.dirname(config_dir())
    lines = [line for name in ("README.md", "docs/design.md") for line in open(os.path.join(root, name))]
    for line in lines:
        if "error" in line.lower() or "Could not" in line:  # quoted error messages name wrong keys on purpose
            continue
        pattern = r"(?<![\w.+/-])((?:data|model|trainer|checkpoint|paths)\.[\w.]*\w)(?![\w(])(?:=([\w.,-]+))?"
        for key, value in re.findall(pattern, line):
            if not key.endswith(".py"):
                keys.setdefault(key, value.split(",")[0] if value else "")
    return keys


@pytest.mark.parametrize("key,value", sorted(readme_keys().items()))
def test_every_key_the_readme_names_composes_as_written(key, value):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        base = compose("config")
        current = base
        for part in key.split("."):
            assert part in current, f"README names {key}, which the run config does not have"
            current = current[part]
        if value:
            compose("config", overrides=[f"{key}={value}"])  # no `+` needed
