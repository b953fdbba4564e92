"""Configuration that cannot surprise: every data option brings its own experiment, and each valid
(task, data) pair composes to the model size, batch size, schedule and run name meant for it."""

import os

import pytest
from conftest import compose_config

from updown_vqa.core.paths import config_dir

# (task, data) -> (hidden size, batch size, epochs, run name)
PAIRS = {
    ("vqa", "shapes"): (256, 128, 17, "shapes_updown"),
    ("vqa", "shapes_e2e"): (256, 128, 10, "shapes_e2e"),
    ("vqa", "vqa2"): (1024, 512, 13, "vqa2_updown"),
    ("vqa", "vqacp2"): (1024, 512, 15, "vqacp2_updown"),
    ("vqa", "gqa"): (1024, 512, 13, "gqa_updown"),
    ("vqa", "clevr"): (1024, 64, 16, "clevr_updown"),
    ("caption", "shapes_caption"): (256, 100, 10, "shapes_caption"),
    ("caption", "shapes_caption_e2e"): (256, 100, 10, "shapes_caption_e2e"),
    ("caption", "coco_karpathy"): (1000, 50, 30, "coco_updown"),
    ("detect", "shapes_detect"): (None, 16, 2, "detector_shapes"),
}


def options(group: str) -> list[str]:
    return sorted(n.removesuffix(".yaml") for n in os.listdir(os.path.join(config_dir(), group)) if n.endswith(".yaml"))


@pytest.mark.parametrize("task,data", sorted(PAIRS))
def test_each_task_and_data_pair_gets_the_experiment_of_its_data(task, data):
    cfg = compose_config([f"task={task}", f"data={data}"])
    assert (cfg.model.get("hidden_dim"), cfg.data.batch_size, cfg.trainer.max_epochs, cfg.name) == PAIRS[task, data]


def shipped_runs():
    """Every experiment, stage and ablation a user can select, and the other training commands' configs."""
    yield from ([f"experiment={option}"] for option in options("experiment"))
    yield from (["experiment=ablations", f"ablation={option}"] for option in options("ablation"))
    yield ["task=caption", "stage=scst"]  # experiment_stage/shapes_caption_scst
    yield ["task=caption", "data=shapes_caption_e2e", "stage=scst"]  # experiment_stage/shapes_caption_e2e_scst
    yield ["task=detect"]


@pytest.mark.parametrize("overrides", list(shipped_runs()), ids=" ".join)
def test_no_shipped_run_stops_on_a_clock(overrides):
    """Schedules are epochs or steps: the same command trains as long on a fast host as on a slow one."""
    cfg = compose_config(overrides)
    assert cfg.trainer.max_time is None and cfg.trainer.max_epochs > 0
    assert compose_config(["trainer.max_time=00:00:05:00"]).trainer.max_time == "00:00:05:00"  # a user's option


def test_every_data_option_ships_a_default_experiment_and_is_covered_here():
    data_options = options("data")
    assert sorted(data for _, data in PAIRS) == data_options
    assert set(data_options) <= set(options("experiment"))


def test_vqa2_alone_gets_the_vqa2_recipe_not_the_built_in_datasets():
    cfg = compose_config(["data=vqa2"])
    assert cfg.data.builder is None and cfg.model.nonlinearity == "gated_tanh" and cfg.model.glove is None
    assert cfg.trainer.max_epochs == 13 and cfg.trainer.gradient_clip_val == 0.25


def test_an_explicit_experiment_still_wins_and_brings_its_data():
    assert compose_config(["experiment=vqa2_updown_relu"]).data.train.features.endswith("vqa2/trainval_36.h5")
    assert compose_config(["experiment=vqa2_updown"]).name == "vqa2_updown"
    assert compose_config(["experiment=shapes_regions"]).data.train.features.endswith("shapes_train_regions.h5")


def test_train_detector_is_the_training_config_with_task_detect():
    detector = compose_config(["data.num_workers=1"], config_name="train_detector")
    assert detector == compose_config(["task=detect", "data.num_workers=1"])
    assert detector.callbacks.model_checkpoint.filename == "best" and detector.checkpoint.monitor == "val/map50"
    assert detector.model.detector.backbone == "resnet18"  # today's keys keep working as written


def test_the_shapes_generator_is_configured_once():
    builders = {task: compose_config([f"task={task}"]).data.builder for task in ("vqa", "caption", "detect")}
    assert builders["vqa"] == builders["caption"] == builders["detect"]
    assert builders["vqa"].num_train_images == 8000
