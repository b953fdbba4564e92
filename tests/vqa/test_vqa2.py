"""The VQA v2 reader: val/acc equals the official evaluation, GloVe initialisation, `data=vqa2` training."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import run_module

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import load_glove
from updown_vqa.features.store import write_store
from updown_vqa.vqa.data import VQADataModule
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.metrics import VQAAccuracy
from updown_vqa.vqa.module import UpDownVQA

# Ten human answers per question, written to trip up a careless normalisation: unanimous answers are
# compared un-normalised by the current protocol ("Two" is not "2"), punctuation, articles, number
# words, contractions, thousands separators, tabs and surrounding spaces.
ADVERSARIAL = [
    ("number", ["Two"] * 10), ("number", ["two"] * 5 + ["2"] * 5), ("yes/no", ["yes."] * 4 + ["yes"] * 3 + ["no"] * 3),
    ("yes/no", ["Yes"] * 10), ("other", ["a dog"] * 3 + ["dog"] * 3 + ["the dog."] * 2 + ["cat"] * 2),
    ("other", [" red "] * 10), ("other", ["dont know"] * 6 + ["don't know"] * 4),
    ("number", ["ten"] * 3 + ["10"] * 3 + ["many"] * 4), ("number", ["1,000"] * 4 + ["1000"] * 3 + ["one thousand"] * 3),
    ("other", ["red\tcar"] * 10), ("other", ["an apple"] * 10), ("other", ["black and white"] * 7 + ["black & white"] * 3),
    ("yes/no", ["no"] * 10), ("other", ["cat"] * 2 + ["dog"] * 2 + ["red"] * 2 + ["2"] * 2 + ["yes", "no"]),
]  # fmt: skip


def write_adversarial_split(root) -> dict[str, str]:
    """Questions, annotations and a tiny feature store for the ADVERSARIAL answers, in official formats."""
    questions, annotations = [], []
    for i, (answer_type, humans) in enumerate(ADVERSARIAL):
        questions.append({"image_id": i % 5 + 1, "question": f"what is {i}?", "question_id": 100 + i})
        mca = max(humans, key=humans.count)
        annotations.append({"question_id": 100 + i, "image_id": i % 5 + 1, "question_type": "what is",
                            "answer_type": answer_type, "multiple_choice_answer": mca,
                            "answers": [{"answer": h, "answer_confidence": "yes", "answer_id": k + 1}
                                        for k, h in enumerate(humans)]})
    files = {"questions": str(root / "questions.json"), "annotations": str(root / "annotations.json"),
             "features": str(root / "features.h5")}
    with open(files["questions"], "w") as f:
        json.dump({"questions": questions}, f)
    with open(files["annotations"], "w") as f:
        json.dump({"annotations": annotations}, f)
    rng = np.random.default_rng(0)
    write_store(files["features"], range(1, 6), [(64, 48)] * 5, [rng.random((3, 4), np.float32) * 40] * 5,
                [rng.random((3, 6), np.float32) for _ in range(5)])
    return files


@pytest.fixture
def adversarial(tmp_path):
    files = write_adversarial_split(tmp_path)
    dm = VQADataModule(train=files, val=files, cache_dir=str(tmp_path / "cache"), min_answer_count=1,
                       batch_size=4)
    dm.setup("fit")
    return files, dm


def official_overall(files, predicted: list[str]) -> float:
    with open(files["questions"]) as f:
        questions = json.load(f)["questions"]
    with open(files["annotations"]) as f:
        annotations = json.load(f)["annotations"]
    results = [{"question_id": q["question_id"], "answer": a} for q, a in zip(questions, predicted)]
    return evaluate(questions, annotations, results)["overall"]


def val_acc_and_predictions(dm, logits_of) -> tuple[float, list[str]]:
    """VQAAccuracy over the val batches and the argmax answers, in question order."""
    metric, predicted = VQAAccuracy(), {}
    for batch in dm.val_dataloader():
        logits = logits_of(batch)
        metric.update(logits, batch["accuracy"], batch["answer_type"])
        predicted |= dict(zip(batch["index"].tolist(), logits.argmax(1).tolist()))
    return float(metric.compute()["acc"]), [dm.answers[predicted[i]] for i in range(len(predicted))]


def test_val_acc_equals_the_official_evaluation_for_every_answer(adversarial):
    files, dm = adversarial
    for answer in range(len(dm.answers)):  # "always answer X", for every X in the answer vocabulary
        def constant(batch, answer=answer):
            return torch.nn.functional.one_hot(torch.full((len(batch["index"]),), answer), len(dm.answers)).float()

        acc, predicted = val_acc_and_predictions(dm, constant)
        assert acc == pytest.approx(official_overall(files, predicted), abs=0.005), dm.answers[answer]


def test_val_acc_of_a_model_equals_the_official_evaluation_of_its_predictions(adversarial):
    files, dm = adversarial
    torch.manual_seed(0)
    model = UpDownVQA(dm.vocab, dm.answers, feature_dim=dm.feature_dim, embed_dim=8, hidden_dim=16).eval()
    with torch.no_grad():
        acc, predicted = val_acc_and_predictions(dm, model)
    assert len(set(predicted)) > 1  # not a constant answer, which the test above covers
    assert acc == pytest.approx(official_overall(files, predicted), abs=0.005)


def write_glove(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_glove_vectors_initialise_the_words_they_have(tmp_path, caplog):
    glove = write_glove(tmp_path / "glove.txt", ["what 1 2 3 4", ". . . 9 9 9 9", "color 5 6 7 8", "zebra 0 0 0 1"])
    vocab = ["<pad>", "<unk>", "what", "color", "nowhere"]
    with caplog.at_level(logging.INFO):
        model = UpDownVQA(vocab, ["yes", "no"], feature_dim=6, embed_dim=4, hidden_dim=8, glove=glove)
    weight = model.model.question.embedding.weight.detach()
    assert weight[2].tolist() == [1, 2, 3, 4] and weight[3].tolist() == [5, 6, 7, 8]
    assert weight[0].abs().sum() == 0 and weight[4].abs().sum() > 0  # padding zero; missing word random
    assert "2 of 3 words found; the 1 missing are initialised randomly" in caplog.text
    assert "glove" not in model.hparams  # checkpoints hold the vectors; the file is not needed to load one


def test_glove_file_of_another_dimension_is_refused_naming_both(tmp_path):
    glove = write_glove(tmp_path / "glove.txt", ["what 1 2 3 4"])
    with pytest.raises(UpdownError, match=r"glove.txt: GloVe vectors are 4-d but model.embed_dim=8; set model.embed_dim=4"):
        UpDownVQA(["<pad>", "<unk>", "what"], ["yes"], feature_dim=6, embed_dim=8, hidden_dim=8, glove=glove)


def test_glove_reads_a_word2vec_header_and_refuses_a_missing_file(tmp_path):
    glove = write_glove(tmp_path / "glove.txt", ["2 3", "what 1 2 3", "is 4 5 6"])
    rows, vectors = load_glove(glove, ["<pad>", "<unk>", "is"], 3)
    assert rows.tolist() == [2] and vectors.tolist() == [[4, 5, 6]]
    with pytest.raises(UpdownError, match="missing.txt: cannot read it as a GloVe text file"):
        load_glove(str(tmp_path / "missing.txt"), ["what"], 3)


def vqa2_overrides(data_dir: str, out_dir: str) -> list[str]:
    """`data=vqa2` pointed at the tiny shapes files, as a user would point it at their own dataset."""
    shapes = os.path.join(data_dir, "shapes")
    split = {"train": "train", "val": "val"}
    files = [f"data.{s}.{key}={os.path.join(shapes, name.format(s=s))}" for s in split for key, name in (
        ("questions", "v2_OpenEnded_shapes_{s}_questions.json"), ("annotations", "v2_shapes_{s}_annotations.json"),
        ("features", "shapes_{s}_features.h5"))]
    return ["data=vqa2", *files, "data.test=null", f"data.cache_dir={out_dir}/cache", "data.min_answer_count=1",
            "data.num_workers=0", "data.pin_memory=false", "data.batch_size=32", f"paths.log_dir={out_dir}",
            "model.hidden_dim=32", "model.embed_dim=16", "trainer.max_epochs=1"]


@pytest.mark.slow
def test_data_vqa2_trains_on_any_dataset_in_the_official_formats(data_dir, tmp_path):
    result = run_module("updown_vqa.train", *vqa2_overrides(data_dir, str(tmp_path)), "trainer.fast_dev_run=true",
                        "name=vqa2_reader")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "answer vocabulary" in log and "best answer (multiple_choice_answer) is outside" in log
