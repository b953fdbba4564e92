"""The captioner trained end to end from pixels (task=caption data=shapes_caption_e2e, model.visual=grid):
the trunk learns from the caption loss (and from SCST), model and data that disagree are one error, and a
checkpoint feeds `extract mode=grid` and `predict_caption`."""

import json

import numpy as np
import pytest
import torch
from conftest import (
    assert_extract_holds_trunk_cells,
    compose_config,
    run_module,
    save_module,
    shapes_file,
    tiny_overrides,
)
from hydra.utils import instantiate

from updown_vqa.captioning.images import ImageCaptionDataModule
from updown_vqa.captioning.inference import caption_image
from updown_vqa.captioning.module import UpDownCaptioning
from updown_vqa.captioning.scst import reward_scorer
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import build_model


def image_captions(data_dir: str, cache: str, **kwargs) -> ImageCaptionDataModule:
    files = {split: {"captions": shapes_file(data_dir, f"captions_shapes_{split}.json"),
                     "images": shapes_file(data_dir, f"images/{split}")} for split in ("train", "val")}
    dm = ImageCaptionDataModule(files["train"], files["val"], cache, image_size=32, batch_size=16,
                                min_word_count=1, max_caption_length=44, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def grid_captioner(dm, **kwargs) -> UpDownCaptioning:
    torch.manual_seed(0)
    settings = {"trunk_layer": "layer2", "hidden_dim": 32, "embed_dim": 16, "attention_dim": 16, "dropout": 0.0,
                "max_decode_length": 6} | kwargs
    return UpDownCaptioning(**dm.model_kwargs(), visual="grid", **settings)


@pytest.fixture(scope="module")
def dm(data_dir, tmp_path_factory):
    return image_captions(data_dir, str(tmp_path_factory.mktemp("cache")))


def test_a_training_step_trains_the_trunk_and_every_parameter_gets_a_gradient(dm):
    model = grid_captioner(dm, trunk_lr_mult=0.5)
    batch = next(iter(dm.train_dataloader()))
    images, image_index = batch["images"], batch["image_index"]
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    asked = dm.datasets["train"].image_ids[batch["index"].numpy()]  # each caption's image id
    assert (np.unique(asked)[image_index.numpy()] == asked).all()
    assert len(images) < len(batch["tokens"])  # grouped by image: each image encoded once for its captions
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    optimizer = model.configure_optimizers()["optimizer"]
    model.training_step(batch, 0).backward()
    assert model.hparams.feature_dim == 128 + 4  # resnet18 layer2 channels, then the cell's box
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    optimizer.step()
    after = model.encoder.state_dict()
    assert not torch.equal(before["trunk.0.weight"], after["trunk.0.weight"])  # the stem's convolution
    assert not torch.equal(before["trunk.1.running_mean"], after["trunk.1.running_mean"])  # bn trains
    assert [g["lr"] for g in optimizer.param_groups] == [model.hparams.lr, model.hparams.lr * 0.5]


def test_scst_from_images_trains_the_trunk_too(data_dir, dm, tmp_path):
    images = image_captions(data_dir, str(tmp_path / "cache"), train_items="images")
    model = grid_captioner(images, scst={"samples": 2, "baseline": "mean"})
    train = images.datasets["train"]
    model.reward_scorer = reward_scorer(train.image_ids.tolist(), train.references)
    terms = model.scst_terms(next(iter(images.train_dataloader())))
    terms["loss"].backward()
    assert model.encoder.trunk[0].weight.grad.abs().sum() > 0


def test_the_config_builds_a_grid_captioner_and_disagreeing_ones_are_one_error(data_dir, tmp_path):
    base = tiny_overrides(data_dir, str(tmp_path)) + ["task=caption", "data.image_size=32", "model.trunk_layer=layer2"]
    cfg = compose_config(base + ["data=shapes_caption_e2e"], str(tmp_path))
    assert cfg.name == "shapes_caption_e2e" and cfg.model.visual == "grid" and cfg.model.attention_dim == 128
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert build_model(cfg, dm).hparams.feature_dim == 132
    with pytest.raises(UpdownError, match="set model.visual=grid"):
        build_model(compose_config(base + ["data=shapes_caption_e2e", "model.visual=features"], str(tmp_path)), dm)
    features = compose_config(base[:-2] + ["model.visual=grid"], str(tmp_path))  # data=shapes_caption: stores
    stores = instantiate(features.data)
    stores.prepare_data()
    stores.setup("fit")
    with pytest.raises(UpdownError, match="use an image data config \\(data=shapes_caption_e2e"):
        build_model(features, stores)


def test_caption_image_attends_over_the_cells_of_the_checkpoints_trunk(dm):
    model = grid_captioner(dm)
    dataset = dm.datasets["val"]
    found = caption_image(model, dataset.paths[int(dataset.image_ids[0])])
    cells = (32 // 8) ** 2  # layer2: stride 8
    assert found["boxes"].shape == (cells, 4) and found["attention"].shape == (len(found["words"]), cells)
    assert found["boxes"][:, 2:].max() == 64  # cell boxes in the original image's pixels (64 x 64)


@pytest.mark.slow
def test_train_command_end_to_end_and_the_mismatch_error_line(data_dir, tmp_path):
    small = tiny_overrides(data_dir, str(tmp_path)) + ["task=caption", "data=shapes_caption_e2e", "data.image_size=32",
                                                       "model.trunk_layer=layer2", "trainer.fast_dev_run=true"]
    result = run_module("updown_vqa.train", *small, "name=caption_e2e")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_module("updown_vqa.train", *small, "name=caption_e2e_features", "model.visual=features")
    assert result.returncode == 1 and result.stderr.count("error: ") == 1
    assert "set model.visual=grid" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_extract_and_predict_caption_from_an_end_to_end_captioning_checkpoint(dm, data_dir, tmp_path):
    model = grid_captioner(dm).eval()
    assert_extract_holds_trunk_cells(model, dm, data_dir, tmp_path)
    ckpt = save_module(model, tmp_path / "caption_e2e.ckpt")

    results = tmp_path / "captions.json"
    paths_and_builder = [o for o in tiny_overrides(data_dir, str(tmp_path)) if o.startswith(("paths.", "data.builder."))]
    data = ["data=shapes_caption_e2e", *paths_and_builder]
    result = run_module("updown_vqa.predict_caption", f"ckpt={ckpt}", f"out={results}", *data)
    assert result.returncode == 0, result.stderr[-3000:]
    captions = json.loads(results.read_text())
    assert sorted(r["image_id"] for r in captions) == sorted(np.unique(dm.datasets["val"].image_ids).tolist())
    assert "cider" in result.stdout
    result = run_module("updown_vqa.predict_caption", f"ckpt={ckpt}", f"out={results}", *paths_and_builder)
    assert result.returncode == 1 and "a model.visual=grid checkpoint reads images" in result.stderr
