"""Up-Down trained end to end from pixels (model.visual=grid): the encoder learns, its options hold,
and the learned trunk feeds the precomputed path (`extract mode=grid weights=CKPT`), answer, visualize."""

import os

import pytest
import pytorch_lightning as pl
import torch
from conftest import (
    assert_extract_holds_trunk_cells,
    run_module,
    save_module,
    tiny_overrides,
)
from test_image_data import image_module

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.inference import answer_image
from updown_vqa.vqa.module import UpDownVQA


def grid_model(dm, **kwargs) -> UpDownVQA:
    torch.manual_seed(0)
    settings = {"trunk_layer": "layer2", "hidden_dim": 32, "embed_dim": 16, "dropout": 0.0} | kwargs
    return UpDownVQA(**dm.model_kwargs(), visual="grid", **settings)


@pytest.fixture
def dm(data_dir, tmp_path):
    return image_module(data_dir, str(tmp_path / "cache"))


def test_every_parameter_gets_a_gradient(dm):
    model = grid_model(dm)
    batch = next(iter(dm.train_dataloader()))
    model.training_step(batch, 0).backward()
    assert model.hparams.feature_dim == 128 + 4  # resnet18 layer2 channels, then the cell's box
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_a_training_step_changes_the_trunk(dm):
    model = grid_model(dm)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    after = model.encoder.state_dict()
    assert not torch.equal(before["trunk.0.weight"], after["trunk.0.weight"])  # the stem's convolution
    assert not torch.equal(before["trunk.1.running_mean"], after["trunk.1.running_mean"])  # bn trains


def test_frozen_stages_and_frozen_batch_norm_stay_put(dm):
    model = grid_model(dm, trunk_frozen_stages=2, trunk_bn="frozen", trunk_lr_mult=0.5)
    model.train()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    optimizer = torch.optim.Adamax(model.parameter_groups(), lr=0.1)
    model.training_step(next(iter(dm.train_dataloader())), 0).backward()
    optimizer.step()
    after = model.encoder.state_dict()
    for key in ("trunk.0.weight", "trunk.4.0.conv1.weight", "trunk.5.0.bn1.running_mean", "trunk.5.0.bn1.weight"):
        assert torch.equal(before[key], after[key]), key  # stem, layer1; every batch norm
    assert not torch.equal(before["trunk.5.0.conv1.weight"], after["trunk.5.0.conv1.weight"])
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, model.hparams.lr * 0.5]


def test_model_and_data_that_disagree_are_one_error(dm):
    with pytest.raises(UpdownError, match="data=shapes_e2e"):
        UpDownVQA(vocab=dm.vocab, answers=dm.answers, visual="grid")
    with pytest.raises(UpdownError, match="set model.visual=grid"):
        UpDownVQA(**dm.model_kwargs())
    with pytest.raises(UpdownError, match="model.trunk_frozen_stages=4"):
        grid_model(dm, trunk_frozen_stages=4)


@pytest.mark.slow
def test_extract_from_an_end_to_end_checkpoint_gives_its_cells(dm, data_dir, tmp_path):
    assert_extract_holds_trunk_cells(grid_model(dm).eval(), dm, data_dir, tmp_path)


@pytest.mark.slow
def test_answer_visualize_and_predict_work_on_an_end_to_end_checkpoint(dm, data_dir, tmp_path):
    ckpt = save_module(grid_model(dm), tmp_path / "e2e.ckpt")
    dataset = dm.datasets["val"]
    image = dataset.paths[int(dataset.image_ids[0])]
    answers = answer_image(ckpt, image, "what color is the circle?", top_k=3)
    assert len(answers) == 3 and all(a in dm.answers for a, _ in answers)
    out = str(tmp_path / "attention.png")
    result = run_module("updown_vqa.visualize", f"ckpt={ckpt}", f"question_id={int(dataset.question_ids[0])}",
                        "data=shapes_e2e", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}",
                        f"out={out}")
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(out) > 0
    result = run_module("updown_vqa.predict", f"ckpt={ckpt}", "data=shapes_e2e", "split=val", "data.num_workers=1",
                        f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}", f"out={tmp_path}/answers.json")
    assert result.returncode == 0, result.stderr
    assert f"{len(dataset)} answers written" in result.stdout and "accuracy" in result.stdout


@pytest.mark.slow
def test_train_command_end_to_end_and_a_corrupt_image(data_dir, tmp_path):
    small = tiny_overrides(data_dir, str(tmp_path), builder=True) + ["data=shapes_e2e", "data.image_size=32",
                                                                     "model.trunk_layer=layer2"]
    result = run_module("updown_vqa.train", *small, "trainer.fast_dev_run=true", "name=e2e")
    assert result.returncode == 0, result.stderr
    result = run_module("updown_vqa.train", *small, "trainer.fast_dev_run=true", "name=e2e_features",
                        "model.visual=features")
    assert result.returncode == 1 and result.stderr.count("error: ") == 1
    assert "set model.visual=grid" in result.stderr and "Traceback" not in result.stderr
