"""The VQA v2 preprocessing cache: versioned, rebuilt on any change, and an honest summary."""

import json
import logging
import os

import numpy as np
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import tokenize
from updown_vqa.datasets.vqa2_synthetic import generate
from updown_vqa.vqa import preprocess as prep
from updown_vqa.vqa.answers import soft_scores
from updown_vqa.vqa.evaluation import evaluate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small generated corpus in the official formats: about 220 train and 110 val questions."""
    root = tmp_path_factory.mktemp("vqa2")
    files = generate(str(root), scale=0.0005)
    return {"train": {"questions": files["train2014"]["questions"], "annotations": files["train2014"]["annotations"]},
            "val": {"questions": files["val2014"]["questions"], "annotations": files["val2014"]["annotations"]}}


def build(splits, cache_dir, **settings) -> str:
    return prep.preprocess(splits, str(cache_dir), **{"min_answer_count": 1, **settings})


def test_cache_is_reused_until_an_input_file_changes(corpus, tmp_path):
    splits = {name: dict(files) for name, files in corpus.items()}
    stem = build(splits, tmp_path)
    written = os.stat(stem + ".npz").st_mtime_ns
    assert build(splits, tmp_path) == stem and os.stat(stem + ".npz").st_mtime_ns == written
    changed = tmp_path / "train_annotations.json"
    data = json.loads(open(corpus["train"]["annotations"]).read())
    for answer in data["annotations"][0]["answers"]:
        answer["answer"] = "zebra crossing"
    data["annotations"][0]["multiple_choice_answer"] = "zebra crossing"
    changed.write_text(json.dumps(data))
    splits["train"]["annotations"] = str(changed)
    new_stem = build(splits, tmp_path)
    assert new_stem != stem and "zebra crossing" in prep.load_cache(new_stem)[0]["answers"]


@pytest.mark.parametrize("setting", [{"max_question_length": 6}, {"min_answer_count": 2},
                                     {"answer_splits": ["train", "val"]}, {"vocab_splits": ["train", "val"]}])
def test_cache_is_rebuilt_when_a_setting_changes(corpus, tmp_path, setting):
    assert build(corpus, tmp_path, **setting) != build(corpus, tmp_path)


def test_cache_is_rebuilt_for_a_new_cache_version_or_when_incomplete(corpus, tmp_path, monkeypatch):
    stem = build(corpus, tmp_path)
    os.remove(stem + ".json")  # an interrupted write: the json is written last
    assert build(corpus, tmp_path) == stem and os.path.isfile(stem + ".json")
    monkeypatch.setattr(prep, "CACHE_VERSION", prep.CACHE_VERSION + 1)
    assert build(corpus, tmp_path) != stem


def test_questions_are_tokenised_and_cut_at_14_tokens(corpus, tmp_path):
    meta, arrays = prep.load_cache(build(corpus, tmp_path))
    questions = json.loads(open(corpus["val"]["questions"]).read())["questions"]
    lengths = [len(tokens) for tokens in tokenize(q["question"] for q in questions)]
    assert arrays["val/lengths"].tolist() == [min(14, n) for n in lengths]
    assert arrays["val/tokens"].shape == (len(questions), 14)
    assert not any("?" in w or "," in w or w != w.lower() for w in meta["vocab"])


def write_split(root, name: str, items: list[tuple[str, list[str]]]) -> dict[str, str]:
    """Questions and annotations files for (multiple_choice_answer, human answers) items."""
    questions = [{"image_id": 1, "question": "what is it?", "question_id": i} for i in range(len(items))]
    annotations = [{"question_id": i, "image_id": 1, "question_type": "what", "answer_type": "other",
                    "multiple_choice_answer": best, "answers": [{"answer": h, "answer_id": k + 1}
                                                                for k, h in enumerate(humans)]}
                   for i, (best, humans) in enumerate(items)]
    paths = {"questions": str(root / f"{name}_q.json"), "annotations": str(root / f"{name}_a.json")}
    (root / f"{name}_q.json").write_text(json.dumps({"questions": questions}))
    (root / f"{name}_a.json").write_text(json.dumps({"annotations": annotations}))
    return paths


def test_summary_counts_val_questions_whose_best_answer_is_not_an_answer_class(tmp_path, caplog):
    train = write_split(tmp_path, "train", [("cat", ["cat"] * 10), ("dog", ["dog"] * 10)])
    # The second question's best answer (bird) is out of the vocabulary though some humans said dog.
    val = write_split(tmp_path, "val", [("cat", ["cat"] * 10), ("bird", ["bird"] * 7 + ["dog"] * 3),
                                         ("dog", ["dog"] * 10), ("fish", ["fish"] * 10)])
    with caplog.at_level(logging.INFO, logger="updown_vqa.vqa.preprocess"):
        build({"train": train, "val": val}, tmp_path / "cache")
    assert "vocabulary 2 answers" in caplog.text.replace("answer vocabulary", "vocabulary")
    assert "outside the answer vocabulary: 50.00%" in caplog.text
    assert "the highest val/acc any model can reach is 72.50" in caplog.text  # (1 + 0.9 + 1 + 0) / 4


def test_unknown_or_unannotated_split_names_are_refused(corpus, tmp_path):
    with pytest.raises(UpdownError, match=r"data.answer_splits: unknown splits \['trainval'\]"):
        build(corpus, tmp_path, answer_splits=["trainval"])
    with pytest.raises(UpdownError, match=r"data.vocab_splits: unknown splits \['test'\]"):
        build(corpus, tmp_path, vocab_splits=["train", "test"])
    unannotated = {**corpus, "test": {"questions": corpus["val"]["questions"]}}
    with pytest.raises(UpdownError, match=r"data.answer_splits: splits \['test'\] have no annotations"):
        build(unannotated, tmp_path, answer_splits=["train", "test"])


def test_soft_targets_are_the_official_soft_scores():
    humans = [["two"] * 5 + ["2"] * 5, ["yes."] * 4 + ["yes"] * 3 + ["no"] * 3, ["a dog", "dog", "Dog!", "cat"]]
    answers = ["2", "yes", "no", "dog", "cat"]
    arrays = prep.encode_answers([{"answers": [{"answer": h} for h in hs], "answer_type": "other"}
                                  for hs in humans], {a: i for i, a in enumerate(answers)})
    dense = np.zeros((len(humans), len(answers)))
    dense[arrays["target_rows"], arrays["target_cols"]] = arrays["target_vals"]
    expected = [[soft_scores(hs).get(a, 0) for a in answers] for hs in humans]
    np.testing.assert_allclose(dense, expected, rtol=1e-6)


def test_generated_corpus_is_in_the_official_format_and_looks_like_vqa(corpus):
    questions = json.loads(open(corpus["val"]["questions"]).read())
    annotations = json.loads(open(corpus["val"]["annotations"]).read())
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= questions.keys()
    assert {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type", "question_id"} \
        == annotations["annotations"][0].keys()
    assert all(len(a["answers"]) == 10 for a in annotations["annotations"])
    lengths = [len(t) for t in tokenize(q["question"] for q in questions["questions"])]
    assert 3 <= min(lengths) and max(lengths) <= 15
    assert {a["answer_type"] for a in annotations["annotations"]} == {"yes/no", "number", "other"}
    best = [{"question_id": a["question_id"], "answer": a["multiple_choice_answer"]} for a in annotations["annotations"]]
    assert 80 < evaluate(questions["questions"], annotations["annotations"], best)["overall"] < 100
