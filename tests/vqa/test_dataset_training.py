"""`data=vqacp2|gqa|clevr` end to end on generated files: each experiment trains (Hydra, fast_dev_run
and one short epoch), `predict` writes the dataset's submission format, and `evaluate --task` accepts it."""

import json

import numpy as np
import pytest
from conftest import compose_config
from hydra import compose, initialize_config_dir

from updown_vqa.core.paths import config_dir
from updown_vqa.core.training import train
from updown_vqa.datasets.clevr_synthetic import write_clevr
from updown_vqa.datasets.gqa_synthetic import image_ids, write_questions
from updown_vqa.datasets.vqacp2_synthetic import write_vqacp
from updown_vqa.evaluate import main as evaluate_main
from updown_vqa.features.store import write_store
from updown_vqa.vqa.inference import predict

TINY = ["data.num_workers=0", "data.pin_memory=false", "data.batch_size=8", "data.min_answer_count=1",
        "model.hidden_dim=16", "model.embed_dim=8", "model.glove=null", "trainer.max_epochs=1",
        "trainer.accelerator=cpu", "trainer.devices=1"]


def store(path, ids, keys=None) -> str:
    rng = np.random.default_rng(0)
    write_store(str(path), ids, [(64, 48)] * len(ids), [rng.random((3, 4), np.float32) * 40] * len(ids),
                [rng.random((3, 6), np.float32) for _ in ids])
    if keys is not None:
        import h5py
        with h5py.File(path, "a") as f:
            f.create_dataset("image_keys", data=keys, dtype=h5py.string_dtype())
    return str(path)


def files_of(dataset: str, root) -> tuple[dict, list[str]]:
    """Generated files of `dataset` as data.* overrides, and the evaluate arguments of its val split."""
    if dataset == "vqacp2":
        paths, features = write_vqacp(str(root), 120, 12), store(root / "trainval.h5", list(range(1, 13)))
        splits = {"train": paths["train"], "val": paths["test"]}
        splits = {s: f | {"features": features} for s, f in splits.items()}
        evaluation = ["--questions", paths["test"]["questions"], "--annotations", paths["test"]["annotations"]]
    elif dataset == "gqa":
        paths = write_questions(str(root), "val", 12)
        features = store(root / "objects.h5", list(range(12)), image_ids(12))
        splits = {s: {"questions": paths["balanced_questions"], "features": features} for s in ("train", "val")}
        evaluation = ["--task", "gqa", "--questions", paths["all_questions"], "--choices", paths["choices"]]
    else:
        paths = write_clevr(str(root), 6, splits=("train", "val"))
        splits = {s: {"questions": paths[s], "features": store(root / f"{s}.h5", list(range(6)))} for s in paths}
        evaluation = ["--task", "clevr", "--questions", paths["val"]]
    overrides = [f"data.{s}.{k}={v}" for s, f in splits.items() for k, v in f.items()]
    return overrides + ["data.test=null", f"data.cache_dir={root}/cache"], evaluation


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["vqacp2", "gqa", "clevr"])
def test_the_experiment_trains_with_fast_dev_run(dataset, tmp_path):
    data, _ = files_of(dataset, tmp_path)
    cfg = compose_config([f"experiment={dataset}_updown", f"paths.log_dir={tmp_path}", *data, *TINY,
                          "trainer.fast_dev_run=true"], str(tmp_path / "run"))
    assert cfg.data.dataset == dataset and cfg.name == f"{dataset}_updown"
    metrics = train(cfg)
    expected = {"vqacp2": ["val/acc_yes_no", "val/acc_number", "val/acc_other"], "gqa": ["val/acc_binary", "val/acc_open"],
                "clevr": ["val/acc_exist", "val/acc_count", "val/acc_compare_integer", "val/acc_query_attribute",
                          "val/acc_compare_attribute"]}[dataset]  # fmt: skip
    assert {"val/acc", *expected} <= metrics.keys()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["vqacp2", "gqa", "clevr"])
def test_predict_writes_the_submission_format_that_evaluate_accepts(dataset, tmp_path, capsys):
    data, evaluation = files_of(dataset, tmp_path)
    cfg = compose_config([f"experiment={dataset}_updown", f"paths.log_dir={tmp_path}", *data, *TINY,
                          "trainer.limit_train_batches=2", "name=short"], str(tmp_path / "run"))
    train(cfg)
    with initialize_config_dir(config_dir(), version_base="1.3"):
        predict_cfg = compose("predict", overrides=[f"data={dataset}", *data, "split=val", f"out={tmp_path}/results.json", *TINY[:2],
                                                    f"ckpt={tmp_path}/run/checkpoints/last.ckpt",
                                                    f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}"])
    printed = predict(predict_cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    keys = {"vqacp2": {"question_id", "answer"}, "gqa": {"questionId", "prediction"},
            "clevr": {"question_index", "answer"}}[dataset]
    assert all(set(r) == keys for r in results)
    if dataset == "gqa":
        assert all(isinstance(r["questionId"], str) for r in results)
        all_questions = json.loads(open(evaluation[evaluation.index("--questions") + 1]).read())
        answered = {r["questionId"] for r in results}  # consistency needs every question answered
        results += [{"questionId": q, "prediction": "no"} for q in all_questions if q not in answered]
        (tmp_path / "results.json").write_text(json.dumps(results))
    capsys.readouterr()
    evaluate_main([*evaluation, "--results", f"{tmp_path}/results.json"])
    report = json.loads(capsys.readouterr().out)
    overall = report["overall"] if dataset == "vqacp2" else report["accuracy"]
    assert overall == pytest.approx(printed.get("overall", printed.get("accuracy")), abs=0.01)


@pytest.mark.slow
def test_vqacp_files_given_to_data_vqa2_stop_with_one_error_line(tmp_path):
    from conftest import run_module

    data, _ = files_of("vqacp2", tmp_path)
    tiny = [o for o in TINY if not o.startswith("model.glove")]  # data=vqa2 alone has no model.glove key
    done = run_module("updown_vqa.train", "data=vqa2", *data, f"paths.log_dir={tmp_path}", *tiny)
    errors = [line for line in done.stderr.splitlines() if "error: " in line]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr
    assert "vqacp_v2_train_questions.json: a VQA-CP v2 file" in errors[0] and "use data=vqacp2" in errors[0]
