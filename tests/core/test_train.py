"""`python -m updown_vqa.train` through Hydra: runs, sweeps, configs, and one-line errors."""

import glob
import os

import pytest
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from updown_vqa.core.paths import config_dir

GROUPS = ["data", "model", "trainer", "callbacks", "logger", "experiment", "task"]


def group_options():
    for group in GROUPS:
        for name in sorted(os.listdir(os.path.join(config_dir(), group))):
            if name.endswith(".yaml"):  # data/builder/ is a group of the data options
                yield group, name.removesuffix(".yaml")


def task_of(option: str) -> list[str]:
    """The task an option composes under: caption and detector options need theirs."""
    if "caption" in option:
        return ["task=caption"]
    return ["task=detect"] if "detect" in option else []


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_config_group_option_composes_and_instantiates(group, option, tmp_path, data_dir):
    task = task_of(option)
    selected = task + [f"{group}={option}"]
    has_builder = compose_config(selected, str(tmp_path)).data.get("builder") is not None
    small = tiny_overrides(data_dir, str(tmp_path), builder=has_builder, model=task != ["task=detect"])
    cfg = compose_config(small + selected, str(tmp_path))
    OmegaConf.resolve(cfg)
    if group in ("callbacks", "logger"):
        assert all(instantiate(c) is not None for c in cfg[group].values())
    elif group == "model" and task == ["task=detect"]:
        model = instantiate(cfg.model, classes=["circle", "square"], attributes=["red"], _convert_="all")
        assert model.hparams.classes == ["circle", "square"]
    elif group == "model" and task:
        model_cfg = OmegaConf.to_container(cfg.model)
        model_cfg.pop("feature_dim", None)
        model = instantiate(model_cfg, vocab=["<pad>", "<unk>", "<bos>", "<eos>", "a"], feature_dim=8)
        assert model.hparams.vocab[-1] == "a"
    elif group == "model":
        model_cfg = OmegaConf.to_container(cfg.model)
        model_cfg.pop("feature_dim", None)
        model = instantiate(model_cfg, vocab=["<pad>", "<unk>", "what"], answers=["yes", "no"], feature_dim=8)
        assert model.hparams.answers == ["yes", "no"]
    elif group not in ("experiment", "task"):
        assert instantiate(cfg[group]) is not None


@pytest.mark.slow
def test_fast_dev_run_through_hydra(data_dir, tmp_path):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "trainer.fast_dev_run=true",
                        "name=smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isdir(tmp_path / "runs" / "smoke")


@pytest.mark.slow
def test_training_writes_metrics_checkpoints_and_a_summary(data_dir, tmp_path):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=run",
                        "trainer.log_every_n_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert glob.glob(str(run / "checkpoints" / "best-*.ckpt"))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "val/acc_yes_no", "val/acc_number", "val/acc_other"} <= set(header)
    assert "best val/acc" in result.stdout and str(run / "checkpoints") in result.stdout


@pytest.mark.slow
def test_two_value_multirun(data_dir, tmp_path):
    result = run_module("updown_vqa.train", "-m", *tiny_overrides(data_dir, str(tmp_path)),
                        "trainer.fast_dev_run=true", "name=sweep", "data.batch_size=16,32")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = glob.glob(str(tmp_path / "multirun" / "sweep" / "*" / "[01]"))
    assert len(jobs) == 2
    batch_sizes = sorted(OmegaConf.load(os.path.join(j, ".hydra", "config.yaml")).data.batch_size for j in jobs)
    assert batch_sizes == [16, 32]


@pytest.mark.parametrize("override,message", [
    ("data.no_such_key=1", "error: data.no_such_key: no such key"),
    ("data.train.features={tmp}/missing.h5", "missing.h5: features file not found"),
    ("model.feature_dim=7", "model.feature_dim=7"),
])
def test_bad_input_is_one_clear_line(data_dir, tmp_path, override, message):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)),
                        override.format(tmp=tmp_path))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
