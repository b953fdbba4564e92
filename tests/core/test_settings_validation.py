"""Bad settings are one error naming the key, its value and the allowed range, before anything runs."""

from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_module, tiny_overrides

from updown_vqa.bench.cli import parse_args
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.settings import check_settings
from updown_vqa.core.training import train


@pytest.mark.parametrize("key,value,allowed", [
    ("data.batch_size", "-1", r"an integer in \[1, 1048576\]"), ("data.batch_size", "0", r"an integer in \[1, 1048576\]"),
    ("data.batch_size", "1.5", r"an integer in \[1, 1048576\]"), ("data.batch_size", "abc", r"an integer in \[1, 1048576\]"),
    ("data.num_workers", "-2", r"an integer in \[0, 1024\]"), ("model.dropout", "1.5", r"a number in \[0, 0.999\]"),
    ("trainer.max_epochs", "0.5", "an integer >= -1"), ("model.attention", "dot", "one of concat, product"),
])
def test_a_bad_setting_names_key_value_and_range(key, value, allowed, tmp_path, data_dir):
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + [f"{key}={value}"], str(tmp_path))
    with pytest.raises(UpdownError, match=rf"{key}=.*{value}.*: must be {allowed}"):
        check_settings(cfg)


def test_good_settings_pass(tmp_path, data_dir):
    check_settings(compose_config(tiny_overrides(data_dir, str(tmp_path)) + ["model.attention=product"], str(tmp_path)))


def test_validation_without_annotations_fails_at_start_not_after_an_epoch(tmp_path, data_dir):
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + ["data.val.annotations=null"], str(tmp_path))
    with pytest.raises(UpdownError, match="data.val.annotations is not set; training validates on data.val"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_a_bad_batch_size_on_the_command_line_is_one_error_line(tmp_path, data_dir):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "data.batch_size=abc")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and output.count("error: ") == 1 and "Traceback" not in output
    assert "data.batch_size='abc': must be an integer in [1, 1048576]" in output


def test_bench_refuses_a_negative_batch_size(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["loader", "--batch-size", "-4"])
    assert stop.value.code == 2
    assert "error: --batch-size -4: must be an integer >= 1" in capsys.readouterr().err


def test_resuming_vqa_training_from_a_captioning_checkpoint_is_refused_in_one_line(tmp_path, data_dir):
    path = tmp_path / "caption.ckpt"
    torch.save({"task": "caption", "state_dict": {}, "hyper_parameters": {"vocab": ["a"]}}, path)
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + [f"resume={path}"], str(tmp_path))
    with pytest.raises(UpdownError, match=r"caption.ckpt: a caption checkpoint, but this run trains vqa"):
        train(cfg)


def test_resuming_from_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, data_dir):
    import os

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": os.system}, path)
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + [f"resume={path}"], str(tmp_path))
    with pytest.raises(UpdownError, match=r"evil.ckpt: refused: it holds a pickled .*system") as error:
        train(cfg)
    assert "weights_only=False" not in str(error.value) and "\n" not in str(error.value)


TASK_OF = {"shapes_caption": "caption", "coco_karpathy": "caption", "shapes_detect": "detect"}


@pytest.mark.parametrize("data", sorted(p.stem for p in (Path(config_dir()) / "data").glob("*.yaml")))
def test_every_shipped_data_option_passes_the_checks_with_its_task(data, tmp_path):
    task = TASK_OF.get(data, "vqa")
    check_settings(compose_config([f"data={data}", f"task={task}", f"paths.log_dir={tmp_path}"], str(tmp_path)))


def test_a_monitor_of_another_task_is_refused_naming_the_metrics(tmp_path):
    cfg = compose_config([f"paths.log_dir={tmp_path}", "checkpoint.monitor=val/cider"], str(tmp_path))
    with pytest.raises(UpdownError, match=r"checkpoint.monitor='val/cider': this model logs no such metric; choose "
                                          r"one of train/loss, val/loss, val/acc, val/acc_\*"):
        check_settings(cfg)
