"""`python -m updown_vqa.bench`: the loader and training benchmarks run and report what they promise."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_module

from updown_vqa.bench import cli as bench
from updown_vqa.bench.loader import children, pss_mb, time_batches

TINY = ["--synthetic", "40", "--boxes", "4", "--dim", "8", "--answers", "20", "--batch-size", "16",
        "--batches", "2", "--warmup", "1", "--repeats", "1"]


def test_time_batches_counts_the_timed_samples_only():
    batches = iter([np.zeros((5, 2))] * 2 + [np.zeros((3, 2))] * 4)
    result = time_batches(batches, count=3, warmup=2, bytes_per_sample=1000)
    assert result["samples_per_s"] * result["seconds"] == pytest.approx(9)
    assert result["mb_per_s"] == pytest.approx(result["samples_per_s"] * 1000 / 1e6)
    assert len(list(batches)) == 1  # warm-up and timed batches were consumed, no more


@pytest.mark.parametrize("batch_size, batches", [(64, 160), (512, 20), (2048, 20)])
def test_a_loader_run_times_10240_samples_unless_told(batch_size, batches):
    assert bench.parse_args(["loader", "--batch-size", str(batch_size)]).batches == batches
    assert bench.parse_args(["loader", "--batch-size", str(batch_size), "--batches", "3"]).batches == 3
    assert bench.parse_args(["train", "--batch-size", str(batch_size)]).batches == 20


def test_pss_of_this_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "up\n"
        assert child.pid in children(os.getpid())
        assert 1 < pss_mb(child.pid) < pss_mb(os.getpid()) + 100
    finally:
        child.kill()
        child.wait()


def last_json(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_loader_bench_reports_project_naive_memcpy_and_worker_memory():
    out = last_json(run_module("updown_vqa.bench", "loader", *TINY, "--num-workers", "1", "--memory", "--json"))
    assert set(out) == {"project", "naive", "memcpy"}
    assert all(out[k]["samples_per_s"] > 0 and out[k]["mb_per_s"] > 0 for k in out)
    memory = out["project"]["memory"]
    assert len(memory["workers_mb"]) == 1 and 0 < memory["max_worker_mb"] < 500
    assert memory["tree_mb"] == pytest.approx(memory["main_mb"] + sum(memory["workers_mb"]))


def run_main(capsys, *args):
    """The bench in this process (no interpreter start-up): stdout and the last line's JSON."""
    bench.main(list(args))
    out = capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("feature_cache", ["ram", "device"])
def test_loader_bench_in_cache_modes(capsys, feature_cache):
    _, out = run_main(capsys, "loader", *TINY, "--feature-cache", feature_cache, "--json")
    assert out["project"]["samples_per_s"] > 0


def test_train_bench_reports_lightning_and_plain(capsys):
    text, out = run_main(capsys, "train", *TINY, "--hidden-dim", "16", "--embed-dim", "8",
                         "--feature-cache", "device", "--repeats", "2", "--json")
    assert set(out) == {"lightning", "plain", "plain_in_memory"}
    assert all(len(out[k]["runs"]) == 2 and out[k]["samples_per_s"] == max(out[k]["runs"]) for k in out)
    assert "lightning/plain_in_memory" in text and "best of 2 alternated runs" in text


def test_missing_features_file_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["loader", "--features", str(tmp_path / "nope.h5")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.h5: features file not found" in err
