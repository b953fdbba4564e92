"""`python -m updown_vqa.visualize`: the picture shows the model's own attention for the question."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import compose_config, run_module, save_module, shapes_file
from PIL import Image

from updown_vqa.captioning.module import UpDownCaptioning, caption_attention
from updown_vqa.core import viz
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import Vocabulary, tokenize
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.visualize import visualize
from updown_vqa.vqa.module import UpDownVQA
from updown_vqa.vqa.preprocess import read_split


@pytest.fixture(scope="module")
def vqa_checkpoint(data_dir, tmp_path_factory):
    """An untrained VQA model with sharp attention that depends on the question (its weights scaled up)."""
    questions = read_split([shapes_file(data_dir, "v2_OpenEnded_shapes_train_questions.json")], [])
    words = Vocabulary.build(tokenize(questions["questions"])).words
    feature_dim = FeatureStore(shapes_file(data_dir, "shapes_val_features.h5")).feature_dim
    torch.manual_seed(0)
    model = UpDownVQA(words, ["yes", "no", "red", "2", "circle", "blue"], feature_dim=feature_dim,
                      embed_dim=8, hidden_dim=16)
    with torch.no_grad():
        model.model.attention.score.weight.mul_(8)
        model.model.attention.project.linear.weight[:, feature_dim:].mul_(10)  # the question's columns
    return save_module(model, str(tmp_path_factory.mktemp("ckpt") / "vqa.ckpt")), model.eval()


def visualize_config(data_dir, tmp_path, *overrides):
    return compose_config([f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", *overrides],
                          config_name="visualize")


def direct_attention(model, data_dir, question: str, image_id: int):
    """Attention [n] and sigmoid scores [A] of a plain forward pass, and the image's boxes [n, 4]."""
    store = FeatureStore(shapes_file(data_dir, "shapes_val_features.h5"))
    read = read_rows(store, store.rows([image_id]))
    count = int(read["num_boxes"][0])
    ids, lengths = Vocabulary(model.hparams.vocab).encode(tokenize([question]), 14)
    batch = {"tokens": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
             "features": torch.from_numpy(read["features"][:, :count]),
             "mask": torch.ones(1, count, dtype=torch.bool)}
    with torch.no_grad():
        logits, attention = model(batch, return_attention=True)
    return attention[0].numpy(), torch.sigmoid(logits[0]).numpy(), read["boxes"][0, :count]


def test_picture_draws_the_models_attention_for_the_question(vqa_checkpoint, data_dir, tmp_path, monkeypatch):
    path, model = vqa_checkpoint
    drawn = []
    draw = viz.show_attention
    monkeypatch.setattr(viz, "show_attention", lambda *args, **kwargs: drawn.append(args) or draw(*args, **kwargs))
    questions = json.load(open(shapes_file(data_dir, "v2_OpenEnded_shapes_val_questions.json")))["questions"]
    annotations = json.load(open(shapes_file(data_dir, "v2_shapes_val_annotations.json")))["annotations"]
    for question in questions[5:7]:  # two questions of one image: the same boxes, other weights
        out = str(tmp_path / f"q{question['question_id']}.png")
        cfg = visualize_config(data_dir, tmp_path, f"ckpt={path}", f"question_id={question['question_id']}",
                               f"out={out}")
        result = visualize(cfg)
        image, boxes, weights, text, answers, truth = drawn[-1]
        attention, scores, store_boxes = direct_attention(model, data_dir, question["question"],
                                                          question["image_id"])
        assert weights.max() > 0.3 and len(weights) == len(store_boxes)  # sharp: not uniform
        np.testing.assert_allclose(weights, attention, atol=1e-6)
        np.testing.assert_array_equal(boxes, store_boxes)
        assert text == question["question"]
        assert image.endswith(f"{question['image_id']:012d}.png") and os.path.isfile(image)
        best = np.argsort(-scores)[:5]
        assert [a for a, _ in answers] == [model.hparams.answers[i] for i in best]
        assert [s for _, s in answers] == pytest.approx(scores[best].tolist(), abs=1e-6)
        annotation = next(a for a in annotations if a["question_id"] == question["question_id"])
        assert list(truth) == [a["answer"] for a in annotation["answers"]]
        assert result["out"] == out and Image.open(out).size[0] > 500
    assert np.abs(drawn[0][2] - drawn[1][2]).max() > 0.01  # far above float error


def test_regions_are_as_bright_as_their_weight():
    image = np.full((40, 40, 3), 200, np.uint8)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [30, 0, 40, 10]], np.float32)
    fig = viz.show_attention(image, boxes, [0.8, 0.2, 0.0], "q?", [("a", 0.9)], ["a"])
    shown = fig.axes[0].images[0].get_array()
    assert shown[5, 5, 0] == 200 and shown[25, 25, 0] == pytest.approx(200 * (0.2 + 0.8 * 0.25), abs=1)
    assert shown[5, 35, 0] == pytest.approx(200 * viz.DARKEST, abs=1)  # zero weight: darkest
    assert shown[15, 15, 0] == shown[5, 35, 0]  # no region there


def test_unknown_question_or_image_folder_is_an_error_naming_it(vqa_checkpoint, data_dir, tmp_path):
    path, _ = vqa_checkpoint
    with pytest.raises(UpdownError, match="question_id=123 is not in"):
        visualize(visualize_config(data_dir, tmp_path, f"ckpt={path}", "question_id=123"))
    question_id = json.load(open(shapes_file(data_dir, "v2_OpenEnded_shapes_val_questions.json")))[
        "questions"][0]["question_id"]
    with pytest.raises(UpdownError, match="images=/nowhere: no image file"):
        visualize(visualize_config(data_dir, tmp_path, f"ckpt={path}", f"question_id={question_id}",
                                   "images=/nowhere"))


def test_caption_checkpoint_gets_a_panel_per_word(data_dir, tmp_path, monkeypatch):
    feature_dim = FeatureStore(shapes_file(data_dir, "shapes_val_features.h5")).feature_dim
    torch.manual_seed(0)
    model = UpDownCaptioning(["<pad>", "<unk>", "<bos>", "<eos>", "red", "circle", "a"], feature_dim,
                             embed_dim=8, hidden_dim=16, attention_dim=8, max_decode_length=4)
    path = save_module(model, str(tmp_path / "caption.ckpt"))
    drawn = []
    draw = viz.show_caption_attention
    monkeypatch.setattr(viz, "show_caption_attention",
                        lambda *args, **kwargs: drawn.append(args) or draw(*args, **kwargs))
    store = FeatureStore(shapes_file(data_dir, "shapes_val_features.h5"))
    image_id = int(store.image_ids[3])
    result = visualize(visualize_config(data_dir, tmp_path, f"ckpt={path}", f"image_id={image_id}"))
    _, boxes, words, attention = drawn[0]
    read = read_rows(store, store.rows([image_id]))
    count = int(read["num_boxes"][0])
    batch = {"features": torch.from_numpy(read["features"][:, :count]), "mask": torch.ones(1, count, dtype=bool)}
    expected_words, expected = caption_attention(model.eval(), batch)
    assert words == expected_words and len(words) > 0
    np.testing.assert_allclose(attention, expected.numpy(), atol=1e-6)
    np.testing.assert_array_equal(boxes, read["boxes"][0, :count])
    assert result["out"] == str(tmp_path / f"attention_i{image_id}.png") and os.path.isfile(result["out"])
    with pytest.raises(UpdownError, match="give image_id=N"):
        visualize(visualize_config(data_dir, tmp_path, f"ckpt={path}", "question_id=1"))


@pytest.mark.slow
def test_command_writes_the_png_and_reports_errors_in_one_line(vqa_checkpoint, data_dir, tmp_path):
    path, _ = vqa_checkpoint
    question_id = json.load(open(shapes_file(data_dir, "v2_OpenEnded_shapes_val_questions.json")))[
        "questions"][0]["question_id"]
    out = tmp_path / "picture.png"
    done = run_module("updown_vqa.visualize", f"ckpt={path}", f"question_id={question_id}", f"out={out}",
                      f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Image.open(out).format == "PNG"
    failed = run_module("updown_vqa.visualize", f"ckpt={tmp_path}/missing.ckpt", "question_id=1",
                        f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}")
    assert failed.returncode == 1 and "error: ckpt=" in failed.stderr and "not found" in failed.stderr
