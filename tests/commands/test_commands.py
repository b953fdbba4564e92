"""Every command a user runs: its help (Hydra's composed config for Hydra commands) works, and one bad
input keeps the error contract: exactly one output line containing `error: ` (argparse's usage lines may
precede it), no traceback, exit status 1 (2 for argparse's own errors)."""

import pytest
from conftest import run_module

HYDRA, ARGPARSE = "hydra", "argparse"
MISSING = "/nonexistent/updown"
# module, kind, a bad input, its exit status
COMMANDS = [
    ("updown_vqa.train", HYDRA, ["data=vqa2", f"paths.data_dir={MISSING}"], 1),
    ("updown_vqa.train_detector", HYDRA, [f"data.train.annotations={MISSING}.json", "data.builder=null"], 1),
    ("updown_vqa.extract", HYDRA, [f"images={MISSING}", f"out={MISSING}.h5"], 1),
    ("updown_vqa.predict", HYDRA, [f"ckpt={MISSING}.ckpt", "data=vqa2"], 1),
    ("updown_vqa.predict_caption", HYDRA, [f"ckpt={MISSING}.ckpt"], 1),
    ("updown_vqa.answer", HYDRA, [f"ckpt={MISSING}.ckpt", "image=x.png", "question=what?"], 1),
    ("updown_vqa.visualize", HYDRA, [f"ckpt={MISSING}.ckpt", "question_id=1"], 1),
    ("updown_vqa.demo", HYDRA, [f"ckpt={MISSING}.ckpt", "port=0"], 1),
    ("updown_vqa.bench_sweep", HYDRA, ["synthetic=null", "data=vqa2", f"paths.data_dir={MISSING}"], 1),
    ("updown_vqa.bench.extraction", HYDRA, [f"images={MISSING}"], 1),
    ("updown_vqa.evaluate", ARGPARSE, ["--questions", MISSING, "--annotations", MISSING, "--results", MISSING], 1),
    ("updown_vqa.report", ARGPARSE, [MISSING], 1),
    ("updown_vqa.bench", ARGPARSE, ["loader", "--features", f"{MISSING}.h5"], 1),
    ("updown_vqa.features.convert_tsv", ARGPARSE, [f"{MISSING}.tsv", "--out", f"{MISSING}.h5"], 1),
    ("updown_vqa.datasets.vqa2_synthetic", ARGPARSE, ["--out", "/proc/version/sub"], 1),
    ("updown_vqa.features.compare", ARGPARSE, [f"{MISSING}.h5", f"{MISSING}.tsv"], 1),
    ("updown_vqa.features.convert_gqa", ARGPARSE, ["objects", "--root", MISSING, "--out", f"{MISSING}.h5"], 1),
    ("updown_vqa.evaluate", ARGPARSE, ["--task", "gqa", "--results", MISSING], 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("module,kind", sorted({(m, k) for m, k, _, _ in COMMANDS}))
def test_every_command_answers_help(module, kind, tmp_path):
    args = ["--help"] if kind == ARGPARSE else ["--cfg", "job"]
    result = run_module(module, *args, f"hydra.run.dir={tmp_path}" if kind == HYDRA else "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower() if kind == ARGPARSE else result.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("module,kind,bad,status", COMMANDS)
def test_every_command_keeps_the_error_contract(module, kind, bad, status, tmp_path):
    extra = [f"paths.log_dir={tmp_path}"] if kind == HYDRA and module != "updown_vqa.bench.extraction" else []
    result = run_module(module, *bad, *extra, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == status, output[-2000:]
    assert sum("error: " in line for line in output.splitlines()) == 1, output[-2000:]
    assert "Traceback" not in output
