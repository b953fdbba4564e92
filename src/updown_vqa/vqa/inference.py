"""Answering with a trained VQA checkpoint: every question of a split (`predict`), or one question about
any image (`answer_image`). Questions are tokenised with the checkpoint's own vocabulary and answered
from its own answer list: no training cache is read."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from updown_vqa.core.cache import as_list
from updown_vqa.core.checkpointing import load_module
from updown_vqa.core.devices import choose_device
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs, write_json
from updown_vqa.core.sampling import BatchSampler
from updown_vqa.core.settings import Number, OneOf, check_group, declared
from updown_vqa.core.text import UNK, Vocabulary, tokenize
from updown_vqa.extraction.one_image import model_regions
from updown_vqa.features.finite import require_finite
from updown_vqa.features.loading import StoreSet
from updown_vqa.features.pixels import check_images, image_paths
from updown_vqa.vqa.data import VQADataset
from updown_vqa.vqa.evaluation import evaluate
from updown_vqa.vqa.images import ImageQuestions, usable_questions
from updown_vqa.vqa.module import UpDownVQA
from updown_vqa.vqa.preprocess import id_array, load_json
from updown_vqa.vqa.readers import get_reader
from updown_vqa.vqa.readers.vqacp2 import load_list
from updown_vqa.vqa.task_evaluation import evaluate_exact

log = logging.getLogger(__name__)
RECIPE_KEYS_IGNORED = {"format_version", "layout"}  # how a store is laid out, not how features were made


def load_vqa_model(path: str, device: str | None = None) -> UpDownVQA:
    """The VQA model of a checkpoint, in eval mode, on `device` (default: the GPU when there is one)."""
    return load_module(UpDownVQA, str(path)).to(choose_device(device))


def question_loader(hparams, files: dict, split: str, batch_size: int = 512, num_workers: int = 0,
                    pin_memory: bool = False, dataset: str = "vqa2") -> DataLoader:
    """Batches of a split's questions, encoded with the checkpoint's vocabulary, in file order, with
    their region features (or, for an end-to-end checkpoint, their images: `files["images"]`);
    `dataset` names the questions files' layout (updown_vqa.vqa.readers)."""
    questions = as_list(files.get("questions"))
    if not questions:
        raise UpdownError(f"data.{split}.questions is not set; give the questions file to answer")
    data = get_reader(dataset).read_split(questions, [])
    vocab = Vocabulary(hparams.vocab)
    tokens = tokenize(data["questions"])
    ids, lengths = vocab.encode(tokens, hparams.max_question_length)
    unknown = sum(w not in vocab.index for t in tokens for w in t) / max(1, sum(map(len, tokens)))
    log.info("%s: %d questions; %.1f%% of their words are not in the checkpoint's vocabulary (%s)",
             split, len(ids), 100 * unknown, UNK)
    arrays = {f"{split}/tokens": ids, f"{split}/lengths": lengths,
              f"{split}/question_ids": id_array(data["question_ids"]),
              f"{split}/image_ids": id_array(data["image_ids"])}
    if hparams.get("visual") == "grid":
        question_set = ImageQuestions(arrays, split, image_paths(files.get("images"), split), len(hparams.answers),
                                      int(hparams.image_size))
        question_set.keep = usable_questions(question_set, split, skip_bad=False)
        return DataLoader(question_set, sampler=BatchSampler(len(question_set), batch_size, shuffle=False),
                          batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    stores = StoreSet(as_list(files.get("features")))
    _check_features(hparams, stores, split)
    for store in stores.stores:  # NaN features would give confident answers
        require_finite(store.path)
    question_set = VQADataset(arrays, split, stores, len(hparams.answers), source=", ".join(questions))
    sampler = BatchSampler(len(question_set), batch_size, shuffle=False)
    return DataLoader(question_set, sampler=sampler, batch_size=None, num_workers=num_workers,
                      pin_memory=pin_memory)


def _check_features(hparams, stores: StoreSet, split: str) -> None:
    """Refuse features of another size; warn when the store records another extraction recipe."""
    paths = [s.path for s in stores.stores]
    if stores.feature_dim != hparams.feature_dim:
        raise UpdownError(f"data.{split}.features {paths}: {stores.feature_dim}-d features, but the "
                          f"checkpoint takes {hparams.feature_dim}-d; use the features it was trained on")
    trained = hparams.get("feature_attrs") or {}
    differ = sorted(k for k in trained.keys() & stores.attrs.keys() - RECIPE_KEYS_IGNORED
                    if trained[k] != stores.attrs[k])
    if differ:
        log.warning("data.%s.features %s differ from the training features in %s; answers may suffer",
                    split, paths, ", ".join(f"{k} ({stores.attrs[k]!r} vs {trained[k]!r})" for k in differ))


@torch.no_grad()
def predict_vqa(model: UpDownVQA, loader: DataLoader, top_k: int = 0,
                dataset_name: str = "vqa2") -> tuple[list[dict], list[dict]]:
    """The best answer of every question in the loader's order, in the dataset's submission format,
    and (top_k > 0) its top_k answers."""
    dataset, answers = loader.dataset, model.hparams.answers
    k = max(1, min(top_k, len(answers)))
    scores = np.zeros((len(dataset), k), np.float32)
    indices = np.zeros((len(dataset), k), np.int64)
    for batch in loader:
        inputs = {key: value.to(model.device) for key, value in check_images(batch).items()}
        top = torch.sigmoid(model(inputs)).topk(k, dim=1)  # [B, k] each
        scores[batch["index"].numpy()] = top.values.float().cpu().numpy()
        indices[batch["index"].numpy()] = top.indices.cpu().numpy()
    question_ids = dataset.question_ids.tolist()
    results = get_reader(dataset_name).submission(question_ids, [answers[i] for i in indices[:, 0]])
    ranked = [] if top_k <= 0 else [
        {"question_id": q, "answers": [{"answer": answers[a], "score": round(float(s), 5)}
                                       for a, s in zip(row_answers, row_scores)]}
        for q, row_answers, row_scores in zip(question_ids, indices, scores)]
    return results, ranked


PREDICT = {"split": OneOf(("train", "val", "test")), "top_k": Number("int", 0, 10**4)}


def predict(cfg: DictConfig) -> dict:
    """Answer data.<split>, write the results, and return the official accuracy when annotated."""
    cfg.ckpt  # noqa: B018 (unset: one error naming ckpt, before anything else)
    check_group(cfg, "", PREDICT)
    check_group(cfg, "data", declared(cfg.data))
    if cfg.split not in cfg.data or not cfg.data[cfg.split]:
        raise UpdownError(f"split={cfg.split}: data.{cfg.split} is not configured; set "
                          f"data.{cfg.split}.questions=... data.{cfg.split}.features=... or pick another split")
    files = OmegaConf.to_container(cfg.data[cfg.split], resolve=True)
    inputs = {"checkpoint": cfg.ckpt, **{f"data.{cfg.split}.{k}": v for k, v in files.items()}}
    refuse_overwriting_inputs("out", cfg.out, inputs)
    if cfg.top_k:
        refuse_overwriting_inputs("top_k_out", cfg.top_k_out, {**inputs, "out": cfg.out})
    dataset = cfg.data.get("dataset", "vqa2")
    model = load_vqa_model(cfg.ckpt)
    loader = question_loader(model.hparams, files, cfg.split, cfg.data.batch_size,
                             cfg.data.get("num_workers", 0), cfg.data.get("pin_memory", False), dataset)
    results, ranked = predict_vqa(model, loader, cfg.top_k, dataset)
    write_json(cfg.out, results)
    print(f"{len(results)} answers written to {cfg.out}", flush=True)
    if ranked:
        write_json(cfg.top_k_out, ranked)
        print(f"top {cfg.top_k} answers with scores written to {cfg.top_k_out}", flush=True)
    return _evaluate(files, results, dataset)


def _evaluate(files: dict, results: list[dict], dataset: str = "vqa2") -> dict:
    """Official accuracy (current protocol) of the results when the split has annotations, else {}."""
    if dataset in ("gqa", "clevr"):
        return evaluate_exact(dataset, as_list(files["questions"]), results)
    annotations = as_list(files.get("annotations"))
    if not annotations:
        return {}
    if dataset == "vqacp2":
        questions = [q for p in as_list(files["questions"]) for q in load_list(p, "questions")]
        report = evaluate(questions, [a for p in annotations for a in load_list(p, "annotations")], results)
        return _print_vqa(report)
    questions = [q for path in as_list(files["questions"]) for q in load_json(path, "questions")]
    report = evaluate(questions, [a for p in annotations for a in load_json(p, "annotations")], results)
    return _print_vqa(report)


def _print_vqa(report: dict) -> dict:
    """Print the overall and per-answer-type accuracy of a VQA report; return them."""
    per_type = " ".join(f"{k} {v:.2f}" for k, v in report["perAnswerType"].items())
    print(f"accuracy {report['overall']:.2f} ({per_type})", flush=True)
    return {"overall": report["overall"], **report["perAnswerType"]}


def answer_image(ckpt, image: str, question: str, boxes=None, top_k: int = 5,
                 weights: str | None = None, device: str | None = None) -> list[tuple[str, float]]:
    """The top-k answers and their sigmoid scores; `ckpt` is a checkpoint path or a loaded model."""
    model = load_vqa_model(str(ckpt), "cpu") if isinstance(ckpt, (str, os.PathLike)) else ckpt
    source = str(ckpt) if isinstance(ckpt, (str, os.PathLike)) else "the checkpoint"
    return ask_image(model, image, question, boxes, top_k, weights, device, source)["answers"]


def ask_image(model: UpDownVQA, image, question: str, boxes=None, top_k: int = 5, weights: str | None = None,
              device: str | None = None, source: str = "the checkpoint") -> dict:
    """What `answer` computes for one image and question: the top-k `answers` [(answer, score)], the
    regions' `boxes` [K, 4] in image pixels with their top-down `attention` [K], and the question's
    `tokens` as the model read them. `image` is a path or an open binary file."""
    hp = model.hparams
    words, vocab = tokenize([question]), Vocabulary(hp.vocab)
    tokens, lengths = vocab.encode(words, hp.max_question_length)
    batch = {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths)}
    kept, features, mask = model_regions(model, image, boxes, weights, device, source)  # [K, 4], [1, K, D], [1, K]
    with torch.no_grad():
        inputs = {k: v.to(model.device) for k, v in batch.items()}
        logits, attention = model.eval().model(inputs["tokens"], inputs["lengths"], features, mask,
                                                return_attention=True)  # [1, A], [1, K]
    scores = torch.sigmoid(logits[0]).cpu()  # [A]
    top = scores.topk(min(top_k, len(scores)))
    return {"answers": [(hp.answers[i], float(s)) for s, i in zip(top.values, top.indices.tolist())],
            "boxes": kept.numpy(), "attention": attention[0].float().cpu().numpy(),
            "tokens": read_tokens(words[0], vocab, hp.max_question_length)}


def read_tokens(words: list[str], vocab: Vocabulary, max_length: int) -> list[dict]:
    """Each word of a question with whether the vocabulary knows it (else the model reads UNK) and
    whether it is among the first `max_length` words, the ones the model reads."""
    unk = vocab.index[UNK]
    return [{"word": word, "known": vocab.index.get(word, unk) > unk, "read": i < max_length}
            for i, word in enumerate(words)]
