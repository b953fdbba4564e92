"""The readers of VQA-CP v2, GQA and CLEVR on files generated in their official layouts: what they read,
the targets they build, `val/acc` against each dataset's own evaluation, and the error contract."""

import json

import numpy as np
import pytest
import torch

from updown_vqa.core.errors import UpdownError
from updown_vqa.datasets.clevr_synthetic import write_clevr
from updown_vqa.datasets.gqa_synthetic import image_ids, write_questions
from updown_vqa.datasets.vqacp2_synthetic import write_vqacp
from updown_vqa.features.store import write_store
from updown_vqa.vqa.clevr_metrics import evaluate_clevr
from updown_vqa.vqa.data import VQADataModule
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.metrics import VQAAccuracy
from updown_vqa.vqa.readers import clevr, get_reader


def tiny_store(path, ids, keys=None):
    """A 3-region, 6-d store over `ids`; with `keys`, a store with string image keys."""
    rng = np.random.default_rng(0)
    write_store(str(path), ids, [(64, 48)] * len(ids), [rng.random((3, 4), np.float32) * 40] * len(ids),
                [rng.random((3, 6), np.float32) for _ in ids])
    if keys is not None:
        import h5py
        with h5py.File(path, "a") as f:
            f.create_dataset("image_keys", data=keys, dtype=h5py.string_dtype())
    return str(path)


def val_acc(dm, answer: int) -> tuple[dict, list[str]]:
    """VQAAccuracy of "always answer `answer`" over val, and the predictions in question order."""
    metric = VQAAccuracy(dm.answer_types)
    for batch in dm.val_dataloader():
        logits = torch.nn.functional.one_hot(torch.full((len(batch["index"]),), answer), len(dm.answers)).float()
        metric.update(logits, batch["accuracy"], batch["answer_type"])
    return {k: float(v) for k, v in metric.compute().items()}, [dm.answers[answer]] * len(dm.datasets["val"])


@pytest.fixture(scope="module")
def vqacp(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqacp")
    files = write_vqacp(str(root), num_questions=120, num_images=12)
    store = tiny_store(root / "trainval.h5", list(range(1, 13)))
    return {split: f | {"features": store} for split, f in files.items()}, root


def test_vqacp_reads_top_level_lists_across_both_coco_splits(vqacp):
    files, root = vqacp
    dm = VQADataModule(train=files["train"], val=files["test"], cache_dir=str(root / "cache"),
                       min_answer_count=1, batch_size=16, dataset="vqacp2")
    dm.setup("fit")
    test = json.loads(open(files["test"]["questions"]).read())
    assert {q["coco_split"] for q in test} == {"train2014", "val2014"}
    assert dm.datasets["val"].question_ids.tolist() == [q["question_id"] for q in test]
    assert dm.answer_types == ["yes/no", "number", "other"]
    annotations = json.loads(open(files["test"]["annotations"]).read())
    for answer in range(0, len(dm.answers), 5):  # val/acc is the official accuracy on the test split
        acc, predicted = val_acc(dm, answer)
        results = [{"question_id": q["question_id"], "answer": a} for q, a in zip(test, predicted)]
        report = evaluate(test, annotations, results)
        assert acc["acc"] == pytest.approx(report["overall"], abs=0.005)
        for kind, value in report["perAnswerType"].items():
            assert acc[f"acc_{kind.replace('/', '_')}"] == pytest.approx(value, abs=0.005)


def test_a_vqacp_file_as_vqa2_and_the_reverse_name_the_right_config(vqacp, tmp_path):
    files, _ = vqacp
    with pytest.raises(UpdownError, match="vqacp_v2_train_questions.json: a VQA-CP v2 file .*use data=vqacp2"):
        get_reader("vqa2").read_split([files["train"]["questions"]], [])
    vqa2 = tmp_path / "v2_questions.json"
    vqa2.write_text(json.dumps({"questions": [{"question_id": 1, "image_id": 1, "question": "what?"}]}))
    with pytest.raises(UpdownError, match="v2_questions.json: a VQA v2 questions file .*use data=vqa2"):
        get_reader("vqacp2").read_split([str(vqa2)], [])


def test_questions_whose_images_are_not_in_the_features_are_named(vqacp, tmp_path):
    files, root = vqacp
    small = tiny_store(tmp_path / "small.h5", [1, 2])
    dm = VQADataModule(train=files["train"] | {"features": small}, val=files["test"] | {"features": small},
                       cache_dir=str(root / "cache"), min_answer_count=1, dataset="vqacp2")
    with pytest.raises(UpdownError, match=r"vqacp_v2_train_questions.json: image id \d+ is not in the features file .*small.h5"):
        dm.setup("fit")


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("gqa")
    paths = write_questions(str(root), "val", num_images=10)
    ids = image_ids(10)
    store = tiny_store(root / "objects.h5", list(range(len(ids))), ids)
    return {"questions": paths["balanced_questions"], "features": store}, root


def test_gqa_keeps_string_ids_and_exact_answers(gqa):
    files, root = gqa
    dm = VQADataModule(train=files, val=files, cache_dir=str(root / "cache"), min_answer_count=1,
                       batch_size=8, dataset="gqa")
    dm.setup("fit")
    questions = json.loads(open(files["questions"]).read())
    val = dm.datasets["val"]
    assert val.question_ids.tolist() == list(questions)  # "0000000": leading zeros kept
    assert val.image_ids.tolist() == [q["imageId"] for q in questions.values()]  # "n1004" found by key
    assert dm.answer_types == ["binary", "open"]
    batch = val[list(range(len(val)))]
    gold = [dm.answers[i] for i in batch["targets"].argmax(1).tolist()]
    assert gold == [q["answer"] for q in questions.values()] and (batch["targets"].sum(1) == 1).all()
    kinds = ["open" if q["types"]["structural"] == "query" else "binary" for q in questions.values()]
    assert [dm.answer_types[t] for t in batch["answer_type"].tolist()] == kinds
    for answer in range(len(dm.answers)):  # val/acc is exact match
        acc, predicted = val_acc(dm, answer)
        right = [p == q["answer"] for p, q in zip(predicted, questions.values())]
        assert acc["acc"] == pytest.approx(100 * np.mean(right), abs=1e-4)
        binary = [r for r, k in zip(right, kinds) if k == "binary"]
        assert acc["acc_binary"] == pytest.approx(100 * np.mean(binary), abs=1e-4)


def test_gqa_answers_are_not_normalised(tmp_path):
    questions = {"1": {"imageId": "a", "question": "What?", "answer": "Yes", "types": {"structural": "query"}},
                 "2": {"imageId": "a", "question": "What?", "answer": "yes", "types": {"structural": "verify"}}}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    split = get_reader("gqa").read_split([str(tmp_path / "q.json")])
    assert get_reader("gqa").answer_labels(split["annotations"]) == ["Yes", "yes"]


def test_a_vqa_file_given_as_gqa_is_named(tmp_path):
    (tmp_path / "v2.json").write_text(json.dumps({"questions": [{"question_id": 1}]}))
    with pytest.raises(UpdownError, match="v2.json: question questions has no 'imageId'"):
        get_reader("gqa").read_split([str(tmp_path / "v2.json")])


@pytest.mark.parametrize("last, kind", [("exist", "exist"), ("count", "count"), ("less_than", "compare_integer"),
                                        ("greater_than", "compare_integer"), ("equal_integer", "compare_integer"),
                                        ("query_material", "query_attribute"), ("equal_shape", "compare_attribute")])
def test_clevr_question_type_is_the_last_function_grouped_as_in_the_paper(last, kind):
    assert clevr.question_type([{"function": "scene"}, {"function": last}]) == kind
    assert clevr.question_type([{"type": "scene"}, {"type": last}]) == kind  # later generator releases


def test_clevr_accuracy_per_type_by_hand():
    program = {t: [{"function": f}] for t, f in [("e", "exist"), ("c", "count"), ("q", "query_color")]}
    questions = [{"question_index": 0, "image_index": 0, "question": "?", "answer": "yes", "program": program["e"]},
                 {"question_index": 1, "image_index": 0, "question": "?", "answer": "no", "program": program["e"]},
                 {"question_index": 2, "image_index": 1, "question": "?", "answer": "3", "program": program["c"]},
                 {"question_index": 3, "image_index": 1, "question": "?", "answer": "red", "program": program["q"]}]
    results = [{"question_index": 0, "answer": "yes"}, {"question_index": 1, "answer": "yes"},
               {"question_index": 2, "answer": "3"}, {"question_index": 3, "answer": "Red"}]
    report = evaluate_clevr(questions, results)
    assert report["accuracy"] == 50.0 and report["questions"] == 4
    assert report["perQuestionType"] == {"exist": 50.0, "count": 100.0, "query_attribute": 0.0}
    with pytest.raises(UpdownError, match="r.json: no answer for question_index 3"):
        evaluate_clevr(questions, results[:3], ("q.json", "r.json"))


def test_clevr_splits_restart_image_indices_and_test_has_no_answers(tmp_path):
    paths = write_clevr(str(tmp_path), num_images=4)
    reader = get_reader("clevr")
    train, test = reader.read_split([paths["train"]]), reader.read_split([paths["test"]])
    assert min(train["image_ids"]) == min(test["image_ids"]) == 0
    assert train["annotations"] and test["annotations"] is None
    assert {a["answer_type"] for a in train["annotations"]} == set(clevr.ANSWER_TYPES)
