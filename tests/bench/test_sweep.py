"""`make sweep-loader` (bench_sweep multirun) and `python -m updown_vqa.report` end to end, tiny grid."""

import csv
import glob
import json
import os

import pytest
from conftest import TINY_SHAPES, run_module

from updown_vqa.bench import report
from updown_vqa.report import main as report_main

TINY = ["synthetic.images=40", "synthetic.boxes=4", "synthetic.dim=8", "synthetic.answers=20",
        "model.hidden_dim=16", "model.embed_dim=8", "warmup_batches=1", "batches=2", "train_batches=2"]


def row(batch, workers, pinned, loader, train):
    return {"batch_size": batch, "num_workers": workers, "pin_memory": pinned, "device": "cpu",
            "loader_samples_per_s": loader, "loader_mb_per_s": loader / 10, "train_samples_per_s": train,
            "error": ""}


def test_speedup_of_one_worker_over_none_per_batch_size_and_pinning():
    rows = [row(64, 0, False, 100.0, 50.0), row(64, 1, False, 300.0, 60.0), row(64, 2, False, 310.0, 61.0),
            row(128, 0, False, 200.0, 80.0), row(128, 1, False, 100.0, 80.0), row(128, 0, True, 10.0, 8.0)]
    assert report.speedups(rows) == ["batch 64, pin_memory=False: 1 worker vs 0: loader 3.00x, train 1.20x",
                                     "batch 128, pin_memory=False: 1 worker vs 0: loader 0.50x, train 1.00x"]


def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path)])
    assert exit_info.value.code == 1
    assert "no result.json" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_sweep_writes_one_result_per_job_and_a_report(tmp_path):
    result = run_module("updown_vqa.bench_sweep", "-m", f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path}/data",
                        *TINY, "data.batch_size=8,16", "data.num_workers=0,1", "data.pin_memory=false")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = glob.glob(str(tmp_path / "multirun" / "sweep_loader" / "*"))
    jobs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(sweep, "*", "result.json")))]
    assert sorted((j["batch_size"], j["num_workers"]) for j in jobs) == [(8, 0), (8, 1), (16, 0), (16, 1)]
    assert all(j["loader"]["samples_per_s"] > 0 and j["train"]["samples_per_s"] > 0 for j in jobs)
    assert "batch 8, pin_memory=False: 1 worker vs 0: loader" in result.stdout
    with open(os.path.join(sweep, "throughput.csv")) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert os.path.getsize(os.path.join(sweep, "throughput.png")) > 1000

    again = run_module("updown_vqa.report", sweep, "--out", str(tmp_path / "report"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| 16 | 1 | False |" in again.stdout
    assert sorted(os.listdir(tmp_path / "report")) == ["throughput.csv", "throughput.md", "throughput.png"]


@pytest.mark.slow
def test_tiny_image_sweep_reports_images_per_second_and_step_time(tmp_path, data_dir):
    """`make sweep-images`: the end-to-end model's loader decodes images; its table says images/s."""
    tiny_shapes = [f"data.builder.{k}={v}" for k, v in TINY_SHAPES.items()]
    result = run_module("updown_vqa.bench_sweep", "-m", "--config-name", "sweep_images", f"paths.log_dir={tmp_path}",
                        f"paths.data_dir={data_dir}", *tiny_shapes, "data.image_size=32", "model.hidden_dim=16",
                        "model.embed_dim=8", "warmup_batches=1", "batches=2", "train_batches=2",
                        "data.batch_size=16", "data.num_workers=0,1", "data.pin_memory=false")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = glob.glob(str(tmp_path / "multirun" / "sweep_images" / "*"))
    jobs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(sweep, "*", "result.json")))]
    assert sorted(j["num_workers"] for j in jobs) == [0, 1]
    assert all(j["loader"]["images_per_s"] > 0 and j["train"]["step_s"] > 0 for j in jobs)
    with open(os.path.join(sweep, "throughput.md")) as f:
        assert "loader images/s" in f.read()
    with open(os.path.join(sweep, "throughput.csv")) as f:
        assert all(float(r["loader_images_per_s"]) > 0 for r in csv.DictReader(f))
    assert os.path.getsize(os.path.join(sweep, "throughput.png")) > 1000


@pytest.mark.parametrize("override,message", [
    ("synthetic.images=0", "error: synthetic.images=0: must be an integer in [1, 100000000]"),
    ("batches=-1", "error: batches=-1: must be an integer in [1, 10000000]"),
    ("data.num_workers=-1", "error: data.num_workers=-1: must be"),
])
def test_a_bad_sweep_setting_is_one_error_line_before_any_work(tmp_path, override, message):
    result = run_module("updown_vqa.bench_sweep", f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path}/data",
                        *TINY, override)
    lines = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if "error: " in line]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "data" / "synthetic")
