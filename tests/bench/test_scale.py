"""`python -m updown_vqa.bench scale`: the pipeline at a fraction of VQA v2, each stage measured in a
process of its own, a report with every figure it promises, and nothing left behind."""

import json
import os

import pytest
from conftest import run_module
from scipy import stats

from updown_vqa.bench.scale_memory import slope_error_per_100, slope_per_100

TINY = ["--fraction", "0.0005", "--steps", "11", "--hidden-dim", "32", "--batch-size", "32", "--workers", "0,1",
        "--shards", "2"]


def test_the_memory_slope_is_per_100_steps():
    assert slope_per_100([10, 20, 30], [500.0, 500.0, 500.0]) == pytest.approx(0)
    assert slope_per_100([10, 20, 30, 40], [500.0, 501.0, 502.0, 503.0]) == pytest.approx(10)
    assert slope_per_100([10], [500.0]) == 0


def test_the_slopes_standard_error_is_the_least_squares_one():
    steps, rss = [20, 30, 40, 50, 60], [1241.0, 1197.0, 1222.0, 1184.0, 1270.0]
    fit = stats.linregress(steps, rss)
    assert slope_per_100(steps, rss) == pytest.approx(fit.slope * 100)
    assert slope_error_per_100(steps, rss) == pytest.approx(fit.stderr * 100)
    assert slope_error_per_100([10, 20, 30], [500.0, 501.0, 502.0]) == pytest.approx(0, abs=1e-9)


@pytest.mark.slow  # every stage starts a Python process of its own (about a minute in all)
@pytest.mark.parametrize("tsv", ["files", "pipe"])
def test_scale_reports_every_stage_and_removes_its_data(tmp_path, tsv):
    result = run_module("updown_vqa.bench", "scale", *TINY, "--dir", str(tmp_path / "bench"), "--cold", "no",
                        "--tsv", tsv, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert sorted(os.listdir(tmp_path / "bench")) == ["scale_0.0005_float16.json", "scale_0.0005_float16.md"]
    report = json.loads((tmp_path / "bench" / "scale_0.0005_float16.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["generate", "convert", "preprocess", "load 0 workers warm", "load 1 workers warm",
                            "train", "checkpoint", "predict", "evaluate"]
    for name, stage in stages.items():
        if name != "checkpoint":
            assert stage["wall_s"] > 0 and stage["cpu_s"] > 0 and 20 < stage["peak_rss_mb"] < 4000, stage
            assert stage["load_before"] >= 0
    train_questions = report["sizes"]["train2014"]["questions"]
    assert train_questions == 222 and report["sizes"]["val2014"]["images"] == 20
    for workers in (0, 1):  # an epoch: every train question once
        assert stages[f"load {workers} workers warm"]["samples"] == train_questions
    assert stages["load 1 workers warm"]["max_worker_pss_mb"] > 0
    assert stages["convert"]["images"] == 41 + 20 and stages["convert"]["output_mb"] > 61 * 36 * 2048 * 2 / 1e6
    assert stages["train"]["steps"] == 11 and stages["train"]["rss_steps"] == [10]  # sampled every 10 steps
    assert stages["train"]["rss_mb"][0] > 100 and stages["train"]["train_flops_per_sample"] > 0
    assert "rss_slope_mb_per_100_steps" in stages["train"]
    assert stages["checkpoint"]["output_mb"] > 0 and stages["predict"]["output_mb"] > 0
    tsv_gb, store_gb = 61 * 36 * 2048 * (4 * 4 / 3) / 1e9, stages["convert"]["output_mb"] / 1e3
    assert stages["convert"]["tsv_gb"] > tsv_gb
    if tsv == "files":
        assert report["disk_peak_gb"] > tsv_gb  # the TSV shards
    else:  # the TSV went through a pipe: at most the store's work file and its final copy were on the disk
        assert report["disk_peak_gb"] < 2.2 * store_gb < tsv_gb
        assert stages["convert"]["tsv_cpu_s"] > 0 and stages["convert"]["tsv_peak_rss_mb"] > 20
    table = result.stdout
    assert "load 1 workers warm" in table and "RSS slope" in table and "disk used at most" in table
    markdown = (tmp_path / "bench" / "scale_0.0005_float16.md").read_text()
    assert "| train |" in markdown and "| evaluate |" in markdown


def test_a_store_larger_than_the_disk_stops_at_convert_with_its_reason_and_log(tmp_path):
    """Through the pipe, the converter's refusal is the error, not its generator's broken pipe; the
    stage's log outlives the removed run folder."""
    result = run_module("updown_vqa.bench", "scale", *TINY, "--dir", str(tmp_path), "--tsv", "pipe",
                        env={"UPDOWN_FREE_BYTES": "1000"}, timeout=300)
    lines = [line for line in result.stderr.splitlines() if "error: " in line]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("error: stage convert failed: ") and "the store needs about" in lines[0], lines
    log = tmp_path / "scale_0.0005_float16.convert.log"
    assert f"(log: {log})" in lines[0] and "the store needs about" in log.read_text()
    assert not (tmp_path / "scale_0.0005_float16").exists()


@pytest.mark.parametrize("args, message", [
    (["--fraction", "0"], "--fraction 0.0: give a fraction of the real VQA v2 size in (0, 1]"),
    (["--fraction", "1.5"], "--fraction 1.5: give a fraction of the real VQA v2 size in (0, 1]"),
    (["--fraction", "0.1", "--workers", "0,two"], "--workers 0,two: give worker counts separated by commas, e.g. 0,1,2"),
])
def test_a_bad_argument_is_one_error_line(tmp_path, args, message):
    result = run_module("updown_vqa.bench", "scale", *args, "--dir", str(tmp_path))
    assert result.returncode == 1 and result.stderr.strip() == f"error: {message}", result.stderr
    assert os.listdir(tmp_path) == []


def test_an_earlier_runs_data_is_not_overwritten(tmp_path):
    (tmp_path / "scale_0.5_float16").mkdir()
    (tmp_path / "scale_0.5_float16" / "keep.txt").write_text("mine")
    result = run_module("updown_vqa.bench", "scale", "--fraction", "0.5", "--dir", str(tmp_path))
    assert result.returncode == 1 and "scale_0.5_float16 exists with other settings" in result.stderr
    assert (tmp_path / "scale_0.5_float16" / "keep.txt").read_text() == "mine"
