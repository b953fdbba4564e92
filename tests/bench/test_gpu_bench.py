"""`make bench-gpu` / `bench gpu`: a clear error without a GPU, a complete plan on a smoke run, and a
benchmark path that imports neither spaCy nor Hydra (the GPU machine has neither)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_module

from updown_vqa.bench.protocol import alternate
from updown_vqa.bench.report import report_text, rows_of
from updown_vqa.core import text
from updown_vqa.datasets.random_stores import write_random_questions

TINY = ["--boxes", "4", "--dim", "8", "--answers", "20", "--batch-size", "16", "--hidden-dim", "16",
        "--embed-dim", "8", "--batches", "2", "--warmup", "1", "--repeats", "1"]
NO_SPACY_NO_HYDRA = "import sys; sys.modules.update(spacy=None, hydra=None, omegaconf=None, antlr4=None); "


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_is_one_error_line(tmp_path):
    result = run_module("updown_vqa.bench", "gpu", "--out", str(tmp_path))
    assert result.returncode == 1
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error: " in line]
    assert errors == [errors[0]] and "no CUDA GPU" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available() or not shutil.which("make"), reason="needs make and no GPU")
def test_make_bench_gpu_without_a_gpu_fails_with_the_error_line():
    # under `make test ARGS=...`, the outer make's ARGS reaches this make through MAKEFLAGS and the
    # environment: drop the first, and give ARGS= on the command line, which wins over the second
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "--no-print-directory", "bench-gpu", f"PYTHON={sys.executable}",
                             "OUTPUTS=/tmp/updown-bench-gpu-test", "ARGS="], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode != 0 and "error: bench gpu: no CUDA GPU" in result.stderr


@pytest.mark.slow
def test_smoke_run_without_spacy_or_hydra_writes_the_json_and_report(tmp_path):
    """The whole plan at tiny sizes on the CPU, with spaCy and Hydra made unimportable."""
    args = ["gpu", "--allow-cpu", "--skip-compile", "--images", "40", "--workers", "0,1", "--out", str(tmp_path),
            "--work-dir", str(tmp_path / "data"), *TINY]
    code = NO_SPACY_NO_HYDRA + f"from updown_vqa.bench.cli import main; main({args!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [(r["feature_cache"], r["precision"]) for r in out["train"]] == [
        (c, p) for c in ("none", "ram", "device") for p in ("32-true", "bf16-mixed")]
    assert all({"lightning", "plain", "plain_in_memory"} <= r.keys() for r in out["train"])
    assert [r["num_workers"] for r in out["sweep"]] == [0, 1, 0, 1]
    assert out["sweep"][1]["loader"]["memory"]["max_worker_mb"] > 0
    report = (tmp_path / "bench_gpu.md").read_text()
    assert "feature_cache=device + bf16" in report and "1 worker vs 0" in report


@pytest.mark.slow
def test_bench_train_runs_without_spacy_or_hydra(tmp_path):
    args = ["train", "--synthetic", "30", "--work-dir", str(tmp_path), "--json", *TINY]
    code = NO_SPACY_NO_HYDRA + f"from updown_vqa.bench.cli import main; main({args!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(json.loads(result.stdout.splitlines()[-1])) == {"lightning", "plain", "plain_in_memory"}


def test_random_questions_tokenise_the_same_without_spacy(tmp_path, monkeypatch):
    paths = write_random_questions(str(tmp_path), np.arange(1, 21), 5, num_answers=10)
    questions = [q["question"] for q in json.loads(open(paths["questions"]).read())["questions"]]
    with_spacy = text.tokenize(questions)
    monkeypatch.setitem(sys.modules, "spacy", None)
    text._tokenizer.cache_clear()
    try:
        assert text.tokenize(questions) == with_spacy
    finally:
        text._tokenizer.cache_clear()


def test_alternate_reports_the_best_of_runs_each_first_in_turn():
    order, speeds = [], {"a": iter([3.0, 5.0, 4.0]), "b": iter([7.0, 6.0, 1.0])}

    def run(name):
        order.append(name)
        return {"samples_per_s": next(speeds[name])}
    result = alternate({"a": lambda: run("a"), "b": lambda: run("b")}, 3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert result["a"] == {"samples_per_s": 5.0, "runs": [3.0, 5.0, 4.0]} and result["b"]["samples_per_s"] == 7.0


def test_sweep_report_says_when_training_is_model_bound():
    jobs = [{"batch_size": 64, "num_workers": w, "pin_memory": False, "loader": {"samples_per_s": 5000.0 + w},
             "train": {"samples_per_s": 60.0 + w}} for w in (0, 1)]
    assert "Training is model-bound here" in report_text(rows_of(jobs))
    for job in jobs:
        job["train"]["samples_per_s"] = 4000.0  # a GPU: the loader matters
    assert "model-bound" not in report_text(rows_of(jobs))
