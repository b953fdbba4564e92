"""The probes of docs/reliability.md's table (issue 25), each run as a user would: one `error: ` line that
names the key and what is allowed, no traceback, exit status 1, and nothing written."""

import os

import pytest
from conftest import run_module, tiny_overrides


def one_error_line(result) -> str:
    """The contract; returns the error line."""
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "error: " in line]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    return errors[0]


# Hydra's and omegaconf's own errors, before any work: (module, arguments, what the line says)
HYDRA_PROBES = [
    ("updown_vqa.train", ["foo=1"], "foo: no such key; (a new key is added with a leading +, as in +foo=VALUE)"),
    ("updown_vqa.train", ["model.hiden_dim=2"], "did you mean model.hidden_dim?"),
    ("updown_vqa.train", ["data=shapez"], "data=shapez: no such option in group 'data'; did you mean shapes"),
    ("updown_vqa.train", ["hydra/launcher=jobib"], "did you mean joblib?"),
    ("updown_vqa.train", ["positional"], "'positional' is not an override: give key=value"),
    ("updown_vqa.train", ["name=日本"], """quote it, as in 'name="日本"'"""),
    ("updown_vqa.train", ["model.hidden_dim=1)"], """quote it, as in 'model.hidden_dim="1)"'"""),
    ("updown_vqa.predict", [], "ckpt is not set; give ckpt=VALUE"),
    ("updown_vqa.predict_caption", [], "ckpt is not set; give ckpt=VALUE"),
    ("updown_vqa.predict_caption", ["ckpt=x.ckpt", "beam_size=0"], "beam_size=0: must be an integer in [1, 1000]"),
    ("updown_vqa.extract", ["out=x.h5"], "images is not set; give images=VALUE"),
    ("updown_vqa.visualize", ["ckpt=x.ckpt", "question_id=1", "out=att.pngx"], "out=att.pngx: name a file ending in one of"),
    ("updown_vqa.answer", ["ckpt=x.ckpt", "image=x.png", "question=why?", "top_k=0"], "top_k=0: must be an integer in [1, 10000]"),
]


@pytest.mark.parametrize("module,args,says", HYDRA_PROBES)
def test_hydra_and_omegaconf_errors_are_one_line_naming_the_key(module, args, says, tmp_path):
    line = one_error_line(run_module(module, *args, f"paths.log_dir={tmp_path}", cwd=tmp_path))
    assert says in line
    assert os.listdir(tmp_path) == [] or module != "updown_vqa.train"


def test_hydra_full_error_still_gives_the_full_trace(tmp_path):
    result = run_module("updown_vqa.train", "foo=1", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigCompositionException" in result.stderr


# Settings out of range: (arguments, what the line says); train checks them before building anything.
TRAIN_PROBES = [
    (["model.decay_rate=nan"], "model.decay_rate=nan: must be a number in [0, 1]"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: must be a number >= 0"),
    (["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan: must be a number >= 0"),
    (["trainer.deterministic=maybe"], "trainer.deterministic='maybe': must be one of true, false, warn"),
    (["trainer.precision=banana"], "trainer.precision='banana': must be one of 16-true"),
    (["trainer.max_time=soon"], "trainer.max_time='soon': must be DD:HH:MM:SS"),
    (["model.hidden_dim=1099511627776"], "model.hidden_dim=1099511627776: must be an integer in [1, 65536]"),
    (["checkpoint.monitor=val/nonexistent"], "checkpoint.monitor='val/nonexistent': this model logs no such metric"),
    (["task=caption", "checkpoint.monitor=val/acc"], "checkpoint.monitor='val/acc': this model logs no such metric"),
    (["name=../../escape"], "name='../../escape': a run name is one folder name under paths.log_dir/runs"),
    (["data.feature_cache=disk"], "data.feature_cache='disk': must be one of none, ram, device"),
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
]


@pytest.mark.parametrize("args,says", TRAIN_PROBES)
def test_train_refuses_a_bad_setting_before_any_work(args, says, tmp_path, data_dir):
    line = one_error_line(run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), *args, cwd=tmp_path))
    assert says in line
    assert not list(tmp_path.glob("runs/*/checkpoints")) and not (tmp_path.parent / "escape").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible here")
def test_train_on_a_gpu_without_one_is_one_line(tmp_path, data_dir):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "trainer.accelerator=gpu",
                        cwd=tmp_path)
    assert "trainer.accelerator=gpu: no CUDA GPU is visible here" in one_error_line(result)


EXTRACT_PROBES = [
    (["batch_size=0"], "batch_size=0: must be an integer in [1, 65536]"),
    (["num_workers=-1"], "num_workers=-1: must be an integer in [0, 1024]"),
    (["dtype=float8"], "dtype='float8': must be one of float32, float16"),
    (["detector.min_boxes=50", "detector.max_boxes=10"], "detector.min_boxes=50 > detector.max_boxes=10"),
    (["image_size=0"], "image_size=0: must be an integer in [32, 8192]"),
    (["detector.score_threshold=nan"], "detector.score_threshold=nan: must be a number in [0, 1]"),
    (["mode=cells"], "mode='cells': must be one of grid, boxes, regions"),
]


@pytest.mark.parametrize("args,says", EXTRACT_PROBES)
def test_extract_refuses_a_bad_setting_and_writes_nothing(args, says, tmp_path):
    (tmp_path / "images").mkdir()
    out = tmp_path / "features.h5"
    result = run_module("updown_vqa.extract", f"images={tmp_path / 'images'}", f"out={out}",
                        f"paths.log_dir={tmp_path / 'logs'}", "allow_random_weights=true", *args, cwd=tmp_path)
    assert says in one_error_line(result)
    assert not out.exists()


@pytest.mark.slow
def test_an_error_inside_instantiate_is_its_cause_in_one_line(tmp_path, data_dir):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "+model.foo=1", cwd=tmp_path)
    line = one_error_line(result)
    assert "updown_vqa.vqa.module.UpDownVQA" in line and "unexpected keyword argument 'foo'" in line


def test_a_log_dir_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    result = run_module("updown_vqa.train", "paths.log_dir=/sys/updown_probe", cwd=tmp_path)
    assert "/sys/updown_probe" in one_error_line(result)


# Outputs that would destroy an input, and files that are not what they should be.
def tsv(path):
    import numpy as np

    from updown_vqa.features.tsv import write_tsv

    write_tsv(str(path), [(1, 10, 10, np.array([[0, 0, 5, 5]], np.float32), np.ones((1, 4), np.float32))])
    return path


@pytest.mark.parametrize("through_link", [False, True])
def test_convert_tsv_never_writes_over_its_input(tmp_path, through_link):
    source = tsv(tmp_path / "self.tsv")
    out = tmp_path / "link.h5" if through_link else source
    if through_link:
        out.symlink_to(source)
    before = source.read_bytes()
    result = run_module("updown_vqa.features.convert_tsv", str(source), "--out", str(out), cwd=tmp_path)
    assert f"--out={out}: it is the input TSV" in one_error_line(result)
    assert source.read_bytes() == before


def test_evaluate_never_writes_its_report_over_the_results(tmp_path):
    import json

    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": 1, "answer": "red"}]))
    before = results.read_text()
    result = run_module("updown_vqa.evaluate", "--questions", str(results), "--annotations", str(results),
                        "--results", str(results), "--out", str(results), cwd=tmp_path)
    assert "it is the --questions file" in one_error_line(result) and results.read_text() == before


def run_folder(tmp_path):
    """A finished-looking run folder for the report: .hydra/overrides.yaml and a metrics.csv."""
    run = tmp_path / "runs" / "r"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (run / "metrics.csv").write_text("epoch,step,val/acc\n0,10,50.0\n")
    return run


def test_report_names_a_metrics_csv_that_is_not_utf8(tmp_path):
    run = run_folder(tmp_path)
    (run / "metrics.csv").write_bytes(b"epoch,step,val/acc\n0,10,\xff\xfe\n")
    result = run_module("updown_vqa.report", str(tmp_path / "runs"), cwd=tmp_path)
    assert f"{run / 'metrics.csv'}: not a metrics.csv of CSVLogger" in one_error_line(result)


def test_report_out_naming_an_existing_file_is_one_line(tmp_path):
    run_folder(tmp_path)
    (tmp_path / "taken").write_text("keep me")
    result = run_module("updown_vqa.report", str(tmp_path / "runs"), "--out", str(tmp_path / "taken"), cwd=tmp_path)
    assert "--out" in one_error_line(result) and (tmp_path / "taken").read_text() == "keep me"


def test_a_corrupt_finished_json_is_named_with_what_to_do(tmp_path, data_dir):
    checkpoints = tmp_path / "runs" / "cut" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "finished.json").write_text('{"monitor": "val/acc", "be')
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=cut", cwd=tmp_path)
    assert "finished.json: corrupt" in one_error_line(result) and "delete it and run the same command again" in result.stderr


def test_compare_of_disjoint_stores_says_why_it_failed(tmp_path):
    import numpy as np

    from updown_vqa.features.store import write_store

    for name, first in (("a.h5", 1), ("b.h5", 100)):
        write_store(str(tmp_path / name), [first, first + 1], [(10, 10)] * 2,
                    [np.array([[0, 0, 5, 5]], np.float32)] * 2, [np.ones((1, 4), np.float32)] * 2)
    result = run_module("updown_vqa.features.compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), cwd=tmp_path)
    assert "2 of 2 reference images are not in our store" in one_error_line(result)
