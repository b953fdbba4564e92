"""`answer`: a checkpoint answers about a new image whose features are made as in training."""

import glob
import os

import numpy as np
import pytest
import torch
from conftest import compose_config, extract_config, run_module, save_module, write_images

from updown_vqa.answer import quote_free_text
from updown_vqa.core.errors import UpdownError
from updown_vqa.datasets.shapes import split_files
from updown_vqa.extraction.extractors import extract
from updown_vqa.extraction.one_image import feature_recipe, image_features
from updown_vqa.features.boxes import extract_box_features
from updown_vqa.features.images import list_images
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.vqa.inference import answer_image
from updown_vqa.vqa.module import UpDownVQA

ANSWERS = ["red", "blue", "green", "yes", "no", "2", "3"]


def save_checkpoint(path, feature_attrs, feature_dim):
    """A checkpoint as `train` writes it, of an untrained model, for features with this record."""
    model = UpDownVQA(["<pad>", "<unk>", "what", "color"], ANSWERS, feature_dim=feature_dim,
                      embed_dim=8, hidden_dim=16, feature_attrs=feature_attrs)
    return save_module(model, path)


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    write_images(root / "images", sizes=((80, 60), (50, 70)))
    out = str(root / "grid.h5")
    extract(extract_config(f"images={root / 'images'}", f"out={out}", "backbone=resnet18",
                           "allow_random_weights=true", "image_size=64", "num_workers=0"))
    return root, FeatureStore(out)


def test_features_for_a_new_image_equal_the_training_features(grid_store):
    root, store = grid_store
    image = list_images(str(root / "images"))[2]
    boxes, features = image_features(store.attrs, image)
    row = read_rows(store, store.rows([2]))
    np.testing.assert_allclose(features.numpy(), row["features"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(boxes.numpy(), row["boxes"][0])


def test_answer_image_returns_the_top_five_answers_by_score(grid_store, tmp_path):
    root, store = grid_store
    ckpt = save_checkpoint(tmp_path / "model.ckpt", store.attrs, store.feature_dim)
    answers = answer_image(ckpt, list_images(str(root / "images"))[1], "what color is it?")
    assert len(answers) == 5 and {a for a, _ in answers} <= set(ANSWERS)
    scores = [s for _, s in answers]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)


def test_weights_other_than_the_recorded_ones_are_refused(tmp_path):
    weights = tmp_path / "trunk.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    attrs = {"extractor": "grid", "backbone": "resnet18", "weights": str(weights),
             "weights_sha256": "0" * 64, "stage": "layer4", "image_size": 64}
    with pytest.raises(UpdownError, match="not the ones its features were made with"):
        feature_recipe(attrs, "model.ckpt")
    with pytest.raises(UpdownError, match="not there any more; pass weights=PATH"):
        feature_recipe(attrs | {"weights": str(tmp_path / "gone.pt")}, "model.ckpt")
    with pytest.raises(UpdownError, match="'bottom-up-tsv'.*cannot remake"):
        feature_recipe({"extractor": "bottom-up-tsv"}, "model.ckpt")


def test_box_features_use_given_boxes_or_the_trunk_grid(tmp_path):
    paths = write_images(tmp_path / "images", sizes=((64, 64),))
    boxes = np.array([[0, 0, 32, 32], [16, 16, 64, 48]], np.float32)
    out = str(tmp_path / "boxes.h5")  # made as the shapes builder makes its features
    extract_box_features(paths, {1: boxes}, out, backbone="resnet18", stage="layer2",
                         output_size=2, image_size=64)
    store = FeatureStore(out)
    _, given = image_features(store.attrs, paths[1], boxes.tolist())
    np.testing.assert_allclose(given.numpy(), read_rows(store, [0])["features"][0], rtol=1e-4, atol=1e-5)
    cells, features = image_features(store.attrs, paths[1])
    assert cells.shape == (64, 4) and features.shape == (64, store.feature_dim)  # 8x8 at stride 8
    assert cells[9].tolist() == [8, 8, 16, 16]


def test_free_text_questions_survive_the_override_grammar():
    question = "what's on the left, the cup or the bowl?"
    cfg = compose_config(quote_free_text([f"question={question}", "ckpt=a.ckpt", "image=b.jpg", "boxes=[[1,2,3,4]]"]),
                         config_name="extract/answer")
    assert cfg.question == question and list(cfg.boxes[0]) == [1, 2, 3, 4]


@pytest.mark.slow
def test_an_extracted_folder_trains_and_answers_end_to_end(data_dir, tmp_path):
    images = os.path.join(data_dir, "shapes", "images")
    stores = {}
    for split in ("train", "val"):
        stores[split] = str(tmp_path / f"{split}.h5")
        done = run_module("updown_vqa.extract", f"images={images}/{split}", f"out={stores[split]}",
                          "backbone=resnet18", "allow_random_weights=true", "image_size=64",
                          "num_workers=1", f"paths.log_dir={tmp_path}")
        assert done.returncode == 0, done.stderr[-3000:]
    files = {split: split_files(os.path.join(data_dir, "shapes"), split) for split in stores}
    splits = [f"data.{split}.{key}={files[split][key]}" for split in stores
              for key in ("questions", "annotations")]
    done = run_module("updown_vqa.train", "data=vqa2", *splits, "data.test=null",
                      f"data.train.features={stores['train']}", f"data.val.features={stores['val']}",
                      f"data.cache_dir={tmp_path / 'cache'}", "data.min_answer_count=1",
                      "data.num_workers=0", "data.pin_memory=false", "data.batch_size=32",
                      f"paths.log_dir={tmp_path}", "model.hidden_dim=32", "model.embed_dim=16",
                      "trainer.max_epochs=1", "name=extracted")
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = glob.glob(str(tmp_path / "runs" / "extracted" / "checkpoints" / "*.ckpt"))[0]
    image = sorted(glob.glob(f"{images}/val/*.png"))[0]
    done = run_module("updown_vqa.answer", f"ckpt={ckpt}", f"image={image}",
                      "question=what's the color of the circle?", f"paths.log_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "what's the color of the circle?" and len(lines) == 6
    assert all(0 <= float(line.split()[-1]) <= 1 for line in lines[1:])
