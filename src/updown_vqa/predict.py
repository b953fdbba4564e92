"""Answer every question of a split with a checkpoint: `python -m updown_vqa.predict ckpt=PATH split=test`.

Writes the EvalAI results file [{"question_id": int, "answer": str}] (and, with `top_k=K`, each
question's K best answers with their scores, for ensembling). The questions are tokenised with the
checkpoint's own vocabulary and answered from its own answer list: no training cache is read. When the
split has annotations, the official accuracy is printed too.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.text import UNK, Vocabulary, tokenize
from updown_vqa.evaluate import evaluate
from updown_vqa.features.loading import StoreSet
from updown_vqa.vqa.data import BatchSampler, VQADataset
from updown_vqa.vqa.module import UpDownVQA
from updown_vqa.vqa.preprocess import as_list, load_json, read_split

log = logging.getLogger(__name__)
RECIPE_KEYS_IGNORED = {"format_version", "layout"}  # how a store is laid out, not how features were made


def load_vqa_model(path: str) -> UpDownVQA:
    """The VQA model of a checkpoint, in eval mode, on the GPU when there is one."""
    if not os.path.isfile(path):
        raise UpdownError(f"ckpt={path}: checkpoint not found")
    try:
        model = UpDownVQA.load_from_checkpoint(path, map_location="cpu")
    except Exception as e:  # truncated, or another kind of checkpoint
        raise UpdownError(f"ckpt={path}: cannot load it as a VQA checkpoint ({type(e).__name__}: {e}); "
                          "captioning checkpoints go to python -m updown_vqa.predict_caption") from e
    return model.eval().to("cuda" if torch.cuda.is_available() else "cpu")


def question_loader(hparams, files: dict, split: str, batch_size: int = 512, num_workers: int = 0,
                    pin_memory: bool = False) -> DataLoader:
    """Batches of a split's questions, encoded with the checkpoint's vocabulary, in file order."""
    questions = as_list(files.get("questions"))
    if not questions:
        raise UpdownError(f"data.{split}.questions is not set; give the questions file to answer")
    data = read_split(questions, [])
    vocab = Vocabulary(hparams.vocab)
    tokens = tokenize(data["questions"])
    ids, lengths = vocab.encode(tokens, hparams.max_question_length)
    unknown = sum(w not in vocab.index for t in tokens for w in t) / max(1, sum(map(len, tokens)))
    log.info("%s: %d questions; %.1f%% of their words are not in the checkpoint's vocabulary (%s)",
             split, len(ids), 100 * unknown, UNK)
    arrays = {f"{split}/tokens": ids, f"{split}/lengths": lengths,
              f"{split}/question_ids": np.asarray(data["question_ids"], np.int64),
              f"{split}/image_ids": np.asarray(data["image_ids"], np.int64)}
    stores = StoreSet(as_list(files.get("features")))
    _check_features(hparams, stores, split)
    dataset = VQADataset(arrays, split, stores, len(hparams.answers), source=", ".join(questions))
    sampler = BatchSampler(len(dataset), batch_size, shuffle=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
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
def predict_vqa(model: UpDownVQA, loader: DataLoader, top_k: int = 0) -> tuple[list[dict], list[dict]]:
    """The best answer of every question in the loader's order, and (top_k > 0) its top_k answers."""
    dataset, answers = loader.dataset, model.hparams.answers
    k = max(1, min(top_k, len(answers)))
    scores = np.zeros((len(dataset), k), np.float32)
    indices = np.zeros((len(dataset), k), np.int64)
    for batch in loader:
        inputs = {key: value.to(model.device) for key, value in batch.items()}
        top = torch.sigmoid(model(inputs)).topk(k, dim=1)  # [B, k] each
        scores[batch["index"].numpy()] = top.values.float().cpu().numpy()
        indices[batch["index"].numpy()] = top.indices.cpu().numpy()
    question_ids = [int(q) for q in dataset.question_ids]
    results = [{"question_id": q, "answer": answers[i]} for q, i in zip(question_ids, indices[:, 0])]
    ranked = [] if top_k <= 0 else [
        {"question_id": q, "answers": [{"answer": answers[a], "score": round(float(s), 5)}
                                       for a, s in zip(row_answers, row_scores)]}
        for q, row_answers, row_scores in zip(question_ids, indices, scores)]
    return results, ranked


def write_json(path: str, data) -> None:
    """Write `data` as json, atomically, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def predict(cfg: DictConfig) -> dict:
    """Answer data.<split>, write the results, and return the official accuracy when annotated."""
    if cfg.split not in cfg.data or not cfg.data[cfg.split]:
        raise UpdownError(f"split={cfg.split}: data.{cfg.split} is not configured; set "
                          f"data.{cfg.split}.questions=... data.{cfg.split}.features=... or pick another split")
    files = OmegaConf.to_container(cfg.data[cfg.split], resolve=True)
    model = load_vqa_model(cfg.ckpt)
    loader = question_loader(model.hparams, files, cfg.split, cfg.data.batch_size,
                             cfg.data.get("num_workers", 0), cfg.data.get("pin_memory", False))
    results, ranked = predict_vqa(model, loader, cfg.top_k)
    write_json(cfg.out, results)
    print(f"{len(results)} answers written to {cfg.out}", flush=True)
    if ranked:
        write_json(cfg.top_k_out, ranked)
        print(f"top {cfg.top_k} answers with scores written to {cfg.top_k_out}", flush=True)
    return _evaluate(files, results)


def _evaluate(files: dict, results: list[dict]) -> dict:
    """Official accuracy (current protocol) of the results when the split has annotations, else {}."""
    annotations = as_list(files.get("annotations"))
    if not annotations:
        return {}
    questions = [q for path in as_list(files["questions"]) for q in load_json(path, "questions")]
    report = evaluate(questions, [a for p in annotations for a in load_json(p, "annotations")], results)
    per_type = " ".join(f"{k} {v:.2f}" for k, v in report["perAnswerType"].items())
    print(f"accuracy {report['overall']:.2f} ({per_type})", flush=True)
    return {"overall": report["overall"], **report["perAnswerType"]}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        predict(cfg)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
