"""The COCO caption evaluation: our in-process BLEU and CIDEr-D equal pycocoevalcap's, and
`python -m updown_vqa.evaluate --task caption` scores exactly the results' images, or refuses bad input."""

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from updown_vqa.captioning.coco_eval import METRICS, evaluate_captions
from updown_vqa.captioning.metrics import bleu, cider_d, sentence_bleu
from updown_vqa.captioning.module import write_caption_results
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import build_model

WORDS = "a an the cat dog red small big circle square on in above below left of two".split()


def random_corpus(seed: int, images: int = 40):
    """Tokenised candidates and references of varied lengths, some sharing nothing with their references."""
    rng = random.Random(seed)

    def caption(shortest=1):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(shortest, 12)))

    references = {i: [caption(2) for _ in range(rng.randint(1, 5))] for i in range(images)}
    candidates = {i: rng.choice(refs) if rng.random() < 0.2 else caption() for i, refs in references.items()}
    return candidates, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_process_bleu_and_cider_d_equal_the_toolkit_on_the_same_tokens(seed):
    candidates, references = random_corpus(seed)
    res = {i: [c] for i, c in candidates.items()}
    toolkit_bleu, _ = Bleu(4).compute_score(references, res, verbose=0)
    toolkit_cider, toolkit_per_image = Cider().compute_score(references, res)
    assert bleu(candidates, references) == pytest.approx(toolkit_bleu, abs=1e-6, rel=0)
    score, per_image = cider_d(candidates, references)
    assert score == pytest.approx(toolkit_cider, abs=1e-6, rel=0)
    assert [per_image[i] for i in references] == pytest.approx(list(toolkit_per_image), abs=1e-6, rel=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_sentence_bleu_equals_the_toolkits_per_image_scores(seed):
    candidates, references = random_corpus(seed)
    candidates[0] = ""  # an empty caption scores 0 (brevity penalty), as in the toolkit
    _, per_image = Bleu(4).compute_score(references, {i: [c] for i, c in candidates.items()}, verbose=0)
    ours = [sentence_bleu(candidates[i], references[i]) for i in references]  # [images][order]
    for k, order in enumerate(zip(*ours)):
        assert list(order) == pytest.approx(per_image[k], abs=1e-9, rel=0)
    assert ours[0] == [0.0] * 4


def test_bleu_smooths_an_order_without_matches_as_the_toolkit_does():
    ours = bleu({1: "a cat"}, {1: ["a cat sat", "the cat"]}, n=3)  # closest reference: "the cat" (2 words)
    assert ours == pytest.approx(Bleu(3).compute_score({1: ["a cat sat", "the cat"]}, {1: ["a cat"]},
                                                        verbose=0)[0], abs=1e-12)
    assert ours[:2] == pytest.approx([1.0, 1.0]) and 0 < ours[2] < 0.02  # (1e-15 / 1e-9) ** (1/3)


ANNOTATIONS = {"images": [{"id": i} for i in (1, 2, 3)], "annotations": [
    {"image_id": 1, "id": 10, "caption": "A small red circle above a big square."},
    {"image_id": 1, "id": 11, "caption": "a red circle over a square"},
    {"image_id": 2, "id": 12, "caption": "Two blue triangles, left of a circle."},
    {"image_id": 3, "id": 13, "caption": "A green square."}]}


def write(tmp_path, results, annotations=ANNOTATIONS):
    (tmp_path / "captions.json").write_text(json.dumps(annotations))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return str(tmp_path / "captions.json"), str(tmp_path / "results.json")


@pytest.mark.slow
def test_evaluate_task_caption_scores_exactly_the_results_images(tmp_path):
    annotations, results = write(tmp_path, [{"image_id": 1, "caption": "a small red circle above a big square"},
                                            {"image_id": 2, "caption": "a circle"}])
    out = tmp_path / "report.json"
    result = run_module("updown_vqa.evaluate", "--task", "caption", "--annotations", annotations,
                        "--results", results, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 2 images" in result.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"images", *METRICS} and report["images"] == 2
    perfect = evaluate_captions(annotations, write(tmp_path, [{"image_id": 1, "caption":
                                                               "A small red circle above a big square"}])[1])
    assert perfect["images"] == 1 and perfect["Bleu_4"] == pytest.approx(1.0) and perfect["ROUGE_L"] == 1.0
    assert report["Bleu_4"] < perfect["Bleu_4"] and report["METEOR"] < perfect["METEOR"]


@pytest.mark.parametrize("results, message", [
    ([{"image_id": 1, "caption": "a"}, {"image_id": 7, "caption": "a"}], "1 image ids have no captions in"),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], "image ids captioned more than once: 1"),
    ([{"image_id": "1", "caption": "a"}], 'entry 0 needs an integer "image_id"'),
])
def test_results_with_unknown_duplicated_or_malformed_ids_are_refused(tmp_path, results, message):
    annotations, path = write(tmp_path, results)
    with pytest.raises(UpdownError, match=message):
        evaluate_captions(annotations, path)


@pytest.mark.slow
def test_unknown_image_id_is_one_error_line_naming_the_file_and_id(tmp_path):
    annotations, results = write(tmp_path, [{"image_id": 7, "caption": "a circle"}])
    result = run_module("updown_vqa.evaluate", "--task", "caption", "--annotations", annotations,
                        "--results", results)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(lines) == 1 and "results.json: 1 image ids have no captions in" in lines[0] and ": 7;" in lines[0]


@pytest.mark.slow
def test_a_missing_java_runtime_is_one_error_line(tmp_path):
    annotations, results = write(tmp_path, [{"image_id": 3, "caption": "a green square"}])
    (tmp_path / "bin").mkdir()  # a PATH without java
    env = dict(os.environ, PATH=str(tmp_path / "bin"), PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "updown_vqa.evaluate", "--task", "caption", "--annotations",
                             annotations, "--results", results], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: java: not found" in result.stderr and "install one" in result.stderr
    assert shutil.which("java") is not None  # the other tests here do run the toolkit


@pytest.mark.slow
def test_predict_caption_results_are_accepted_as_they_are(data_dir, tmp_path):
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + ["task=caption", "model.max_decode_length=6"],
                         str(tmp_path))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    results = str(tmp_path / "captions_val_results.json")
    write_caption_results(build_model(cfg, datamodule), datamodule.val_dataloader(), results)  # predict_caption's
    report = evaluate_captions(cfg.data.val.captions, results)
    assert report["images"] == 40 and all(0 <= report[name] for name in METRICS)
