"""A result is a function of the config and the seed: the same command run twice into fresh run folders
(the data already built) writes the same metrics.csv, for every task; and a wall-clock stop, a user's
option only, says that it stopped the run."""

import json
import re

import pytest
from conftest import compose_config, run_module, tiny_overrides

DETECTOR = ["data.builder=null", "model.image_size=64", "data.batch_size=4", "data.eval_batch_size=20",
            "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]


def train_twice(tmp_path, *args, module="updown_vqa.train", name="run", folder=None) -> tuple[str, str]:
    """metrics.csv of the same command run in two fresh log folders (the run folder `folder`, default `name`)."""
    written = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        result = run_module(module, f"paths.log_dir={out}", f"name={name}", *args, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        written.append((out / "runs" / (folder or name) / "metrics.csv").read_text())
    return written[0], written[1]


def assert_same_metrics(first: str, second: str, *columns: str) -> None:
    header = first.splitlines()[0].split(",")
    assert set(columns) <= set(header), header
    assert len(first.splitlines()) > 2  # steps and validations were logged
    assert first == second  # every logged value, to the last digit written


@pytest.mark.slow
def test_vqa_reruns_repeat_with_a_loader_worker(data_dir, tmp_path):
    first, second = train_twice(tmp_path, *tiny_overrides(data_dir, str(tmp_path))[2:], f"paths.data_dir={data_dir}",
                                "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "data.num_workers=1")
    assert_same_metrics(first, second, "train/loss", "val/acc")


@pytest.fixture(scope="module")
def caption_reruns(data_dir, tmp_path_factory):
    """Cross-entropy captioning twice, then SCST twice from the first run's best checkpoint."""
    out = tmp_path_factory.mktemp("caption")
    small = [*tiny_overrides(data_dir, str(out))[2:], f"paths.data_dir={data_dir}", "task=caption",
             "model.max_decode_length=8", "trainer.log_every_n_steps=1"]
    xe = train_twice(out / "xe", *small, name="cap")
    init = next((out / "xe" / "first" / "runs" / "cap" / "checkpoints").glob("best-*.ckpt"))
    scst = train_twice(out / "scst", *small, "stage=scst", f"init={init}", "trainer.max_steps=4",
                       "trainer.val_check_interval=2", name="cap", folder="cap_scst")
    return xe, scst


@pytest.mark.slow
def test_caption_reruns_repeat(caption_reruns):
    assert_same_metrics(*caption_reruns[0], "train/loss", "val/cider")


@pytest.mark.slow
def test_scst_reruns_repeat(caption_reruns):
    assert_same_metrics(*caption_reruns[1], "train/reward", "val/cider")


@pytest.mark.slow
def test_detector_reruns_repeat(data_dir, tmp_path):
    images = f"data.train.images={data_dir}/shapes/images/train"
    first, second = train_twice(tmp_path, f"paths.data_dir={data_dir}", images, *DETECTOR,
                                "trainer.log_every_n_steps=1", module="updown_vqa.train_detector")
    assert_same_metrics(first, second, "val/map50")


@pytest.mark.slow
def test_a_run_that_the_clock_stopped_says_so(data_dir, tmp_path):
    """trainer.max_time stops the run, the final line and finished.json say that the clock did it."""
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=clock",
                        "trainer.max_epochs=1000", "trainer.max_time=00:00:00:02")
    assert result.returncode == 0, result.stderr[-3000:]
    final = result.stdout.strip().splitlines()[-1]
    assert "best val/acc" in final and "stopped by trainer.max_time" in final
    summary = json.loads((tmp_path / "runs" / "clock" / "checkpoints" / "finished.json").read_text())
    assert summary["stopped_by"] == "max_time" and summary["max_time_reached"] is True
    assert 0 < summary["epochs"] < 1000
    again = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=clock",
                       "trainer.max_epochs=1000", "trainer.max_time=00:00:00:02")
    assert "already finished" in again.stdout and "stopped by trainer.max_time" in again.stdout


@pytest.mark.slow
def test_a_run_that_its_schedule_ended_records_how_to_rerun_it(data_dir, tmp_path):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=done")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_time" not in result.stdout.strip().splitlines()[-1]
    summary = json.loads((tmp_path / "runs" / "done" / "checkpoints" / "finished.json").read_text())
    assert summary["stopped_by"] == "max_epochs" and summary["max_time_reached"] is False
    assert summary["epochs"] == 1 and summary["task"] == "vqa" and summary["wall_seconds"] > 0
    assert summary["command"].startswith("python -m updown_vqa.train ") and "name=done" in summary["command"]
    assert "cores" in summary["machine"] and summary["date"].endswith("UTC")
    assert re.search(r", \d+ torch threads?, ", summary["machine"]), summary["machine"]  # results depend on it


def test_the_shipped_trainer_leaves_the_clock_to_the_user():
    assert compose_config([]).trainer.max_time is None
