"""`python -m updown_vqa.predict`: EvalAI results from a checkpoint's own vocabulary and answers."""

import json
import os

import pytest
import torch
from conftest import compose_config, run_module, save_module, tiny_overrides

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import Vocabulary, tokenize
from updown_vqa.features.loading import StoreSet
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.inference import predict
from updown_vqa.vqa.module import UpDownVQA
from updown_vqa.vqa.preprocess import read_split


def shapes_split(data_dir: str, split: str) -> dict[str, str]:
    root = os.path.join(data_dir, "shapes")
    return {"questions": os.path.join(root, f"v2_OpenEnded_shapes_{split}_questions.json"),
            "annotations": os.path.join(root, f"v2_shapes_{split}_annotations.json"),
            "features": os.path.join(root, f"shapes_{split}_features.h5")}


def predict_config(data_dir, tmp_path, *overrides: str):
    """The config of `python -m updown_vqa.predict`, on the tiny shapes data."""
    return compose_config([f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}",
                           *overrides], config_name="predict")


def save_untrained(data_dir: str, path: str, feature_dim: int | None = None) -> UpDownVQA:
    """An untrained model whose vocabulary is in an order no training cache would produce."""
    questions = read_split([shapes_split(data_dir, "train")["questions"]], [])["questions"]
    words = sorted(Vocabulary.build(tokenize(questions)).words[2:], reverse=True)
    feature_dim = feature_dim or StoreSet([shapes_split(data_dir, "val")["features"]]).feature_dim
    torch.manual_seed(0)
    model = UpDownVQA(["<pad>", "<unk>", *words], ["yes", "no", "red", "2", "circle"], feature_dim=feature_dim,
                      embed_dim=8, hidden_dim=16)
    save_module(model, path)
    return model


@pytest.fixture
def checkpoint(data_dir, tmp_path):
    path = str(tmp_path / "model.ckpt")
    return path, save_untrained(data_dir, path)


def test_answers_every_question_with_the_checkpoints_vocabulary(checkpoint, data_dir, tmp_path):
    path, model = checkpoint
    val = shapes_split(data_dir, "val")
    cfg = predict_config(data_dir, tmp_path, f"ckpt={path}", "split=val", "top_k=3", "data.batch_size=7")
    metrics = predict(cfg)
    results = json.loads(open(cfg.out).read())
    data = read_split([val["questions"]], [])
    assert [r["question_id"] for r in results] == data["question_ids"]  # every question, in file order
    # The same answers as the model on tokens encoded with the checkpoint's vocabulary.
    ids, lengths = Vocabulary(model.hparams.vocab).encode(tokenize(data["questions"][:5]), 14)
    read = StoreSet([val["features"]]).read(data["image_ids"][:5])
    mask = torch.arange(read["features"].shape[1])[None] < torch.from_numpy(read["num_boxes"])[:, None]
    with torch.no_grad():
        logits = model.eval().model(torch.from_numpy(ids), torch.from_numpy(lengths),
                                    torch.from_numpy(read["features"]), mask)
    assert [r["answer"] for r in results[:5]] == [model.hparams.answers[i] for i in logits.argmax(1)]
    ranked = json.loads(open(cfg.top_k_out).read())
    assert [len(r["answers"]) for r in ranked] == [3] * len(results)
    assert all(r["answers"][0]["answer"] == a["answer"] for r, a in zip(ranked, results))
    assert all(r["answers"][0]["score"] >= r["answers"][2]["score"] for r in ranked)
    annotations = json.load(open(val["annotations"]))["annotations"]
    questions = json.load(open(val["questions"]))["questions"]
    assert metrics["overall"] == evaluate(questions, annotations, results)["overall"]


def test_an_unconfigured_split_and_a_missing_checkpoint_are_named(checkpoint, data_dir, tmp_path):
    path, _ = checkpoint
    with pytest.raises(UpdownError, match=r"split=test: data.test is not configured; set data.test.questions="):
        predict(predict_config(data_dir, tmp_path, f"ckpt={path}", "split=test"))
    with pytest.raises(UpdownError, match=r"ckpt=.*nothing.ckpt: checkpoint not found"):
        predict(predict_config(data_dir, tmp_path, f"ckpt={tmp_path}/nothing.ckpt", "split=val"))


def test_features_of_another_size_are_refused(data_dir, tmp_path):
    path = str(tmp_path / "model.ckpt")
    save_untrained(data_dir, path, feature_dim=7)
    with pytest.raises(UpdownError, match=r"shapes_val_features.h5'\]: \d+-d features, but the checkpoint takes 7-d"):
        predict(predict_config(data_dir, tmp_path, f"ckpt={path}", "split=val"))


@pytest.mark.slow
def test_train_then_predict_the_test_split_end_to_end(data_dir, tmp_path):
    trained = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=e2e",
                         "trainer.limit_train_batches=3")
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = tmp_path / "runs" / "e2e" / "checkpoints" / "last.ckpt"
    val = shapes_split(data_dir, "val")  # answered as an unannotated test split
    out = tmp_path / "answers.json"
    done = run_module("updown_vqa.predict", "data=vqa2", f"ckpt={ckpt}", "name=e2e",
                      f"data.test.questions={val['questions']}", f"data.test.features={val['features']}",
                      f"paths.log_dir={tmp_path}", f"out={out}", "top_k=5")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    answers = torch.load(ckpt, weights_only=False)["hyper_parameters"]["answers"]
    assert sorted(r["question_id"] for r in results) == sorted(read_split([val["questions"]], [])["question_ids"])
    assert all(isinstance(r["question_id"], int) and r["answer"] in answers for r in results)
    assert os.path.isfile(tmp_path / "predictions" / "e2e" / "vqa_test_top5.json")
    missing = run_module("updown_vqa.predict", f"ckpt={tmp_path}/none.ckpt", "split=val", f"paths.log_dir={tmp_path}")
    assert missing.returncode == 1 and "error: ckpt=" in missing.stderr and "Traceback" not in missing.stderr
