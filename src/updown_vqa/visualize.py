"""Draw what a checkpoint looks at: `python -m updown_vqa.visualize ckpt=PATH question_id=N [out=FILE.png]`.

A VQA checkpoint: the question's image with its regions shaded by their top-down attention weight,
the question, the top-5 answers with their scores and the ground-truth answers. A captioning
checkpoint takes `image_id=N` instead: one panel per generated word, shaded by the attention at that
word. Images come from `images` (the split's folder, COCO-style names ending in the 12-digit image id),
regions from `data.<split>.features`, questions from `data.<split>.questions` (conf/visualize.yaml).

In a notebook: `picture = vqa_picture(model, files, question_id, image_dir)` then `figure(picture)`.
"""

from __future__ import annotations

import glob
import logging
import os
import sys

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from updown_vqa.answer import _HPARAM_GLOBALS, load_model
from updown_vqa.core.checkpointing import read_checkpoint
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.core.viz import show_attention, show_caption_attention
from updown_vqa.predict import question_loader
from updown_vqa.vqa.preprocess import as_list, load_json

log = logging.getLogger(__name__)


def find_image(folder: str, image_id: int) -> str:
    """The image of `folder` whose name ends in the zero-padded 12-digit id (COCO and shapes naming)."""
    found = sorted(glob.glob(os.path.join(glob.escape(folder), f"*{image_id:012d}.*")))
    if not found:
        raise UpdownError(f"images={folder}: no image file named *{image_id:012d}.png|jpg for image id "
                          f"{image_id}; set images= to the folder of the split's images")
    return found[0]


def question_record(files: dict, question_id: int) -> dict:
    """The question's text, image id and template, and its human answers when annotated."""
    questions = [q for path in as_list(files.get("questions")) for q in load_json(path, "questions")]
    question = next((q for q in questions if q["question_id"] == question_id), None)
    if question is None:
        raise UpdownError(f"question_id={question_id} is not in {as_list(files.get('questions'))}; "
                          f"pick one of its ids, e.g. {questions[0]['question_id'] if questions else '?'}")
    annotations = [a for path in as_list(files.get("annotations")) for a in load_json(path, "annotations")]
    annotation = next((a for a in annotations if a["question_id"] == question_id), None)
    truth = [a["answer"] for a in annotation["answers"]] if annotation else []
    return {"question": question["question"], "image_id": int(question["image_id"]),
            "template": question.get("template"), "ground_truth": truth}


@torch.no_grad()
def question_attention(model, dataset, question_id: int, top_k: int = 5) -> dict:
    """Boxes [K, 4] and attention weights [K] of the question's image regions, and the top-k answers."""
    where = np.flatnonzero(np.asarray(dataset.question_ids) == question_id)
    if not len(where):
        raise UpdownError(f"question_id={question_id} is not among the split's questions")
    batch = dataset[[int(where[0])]]
    inputs = {k: v.to(model.device) for k, v in batch.items() if torch.is_tensor(v)}
    logits, attention = model.eval()(inputs, return_attention=True)  # [1, A], [1, K]
    count = int(batch["mask"][0].sum())
    top = torch.sigmoid(logits[0]).topk(min(top_k, logits.shape[1]))
    answers = [(model.hparams.answers[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]
    return {"boxes": batch["boxes"][0, :count].float().numpy(),
            "weights": attention[0, :count].float().cpu().numpy(), "answers": answers}


def vqa_picture(model, files: dict, question_id: int, image_dir: str, top_k: int = 5,
                dataset=None, split: str = "val") -> dict:
    """Everything `show_attention` draws for one question; `dataset` (a split's questions encoded
    with the checkpoint's vocabulary, `question_loader(...).dataset`) is made when not given."""
    if dataset is None:
        dataset = question_loader(model.hparams, files, split).dataset
    record = question_record(files, question_id)
    picture = question_attention(model, dataset, question_id, top_k)
    return {"kind": "vqa", "question_id": question_id, **record, **picture,
            "image": find_image(image_dir, record["image_id"])}


def caption_picture(model, files: dict, image_id: int, image_dir: str) -> dict:
    """Everything `show_caption_attention` draws: the greedy caption's words and attention [L, K]."""
    from updown_vqa.captioning.module import caption_attention
    from updown_vqa.features.loading import StoreSet

    read = StoreSet(as_list(files.get("features"))).read([image_id], f"image_id={image_id}")  # [1, K, D], [1, K, 4]
    count = int(read["num_boxes"][0])
    batch = {"features": torch.from_numpy(np.asarray(read["features"])),
             "mask": torch.arange(read["features"].shape[1])[None] < count}
    words, attention = caption_attention(model, batch)  # [L], [L, K]
    return {"kind": "caption", "image_id": image_id, "words": words, "boxes": read["boxes"][0, :count],
            "attention": attention[:, :count].float().numpy(), "image": find_image(image_dir, image_id)}


def figure(picture: dict):
    """The matplotlib Figure of a `vqa_picture` or `caption_picture`."""
    if picture["kind"] == "caption":
        return show_caption_attention(picture["image"], picture["boxes"], picture["words"],
                                      picture["attention"],
                                      title=f"image {picture['image_id']}: {' '.join(picture['words'])}")
    return show_attention(picture["image"], picture["boxes"], picture["weights"], picture["question"],
                          picture["answers"], picture["ground_truth"],
                          title=f"question {picture['question_id']}, image {picture['image_id']}")


def checkpoint_kind(path: str) -> str:
    """"vqa" or "caption", from the checkpoint's hyperparameters (read without running pickled code)."""
    try:
        with torch.serialization.safe_globals(_HPARAM_GLOBALS):  # the OmegaConf containers of hparams
            checkpoint = read_checkpoint(path, mmap=True)
    except UpdownError as e:
        raise UpdownError(f"ckpt={e}") from None
    if "hyper_parameters" not in checkpoint:
        raise UpdownError(f"ckpt={path}: no hyper_parameters; give a checkpoint of python -m updown_vqa.train")
    return "vqa" if "answers" in checkpoint["hyper_parameters"] else "caption"


def split_files(cfg: DictConfig) -> dict:
    """data.<split> as plain paths, refusing a split that is not configured."""
    if cfg.split not in cfg.data or not cfg.data[cfg.split]:
        raise UpdownError(f"split={cfg.split}: data.{cfg.split} is not configured; pick another split")
    return OmegaConf.to_container(cfg.data[cfg.split], resolve=True)


def visualize(cfg: DictConfig) -> dict:
    """Draw the configured question (or image) and save the PNG; returns what was drawn and `out`."""
    files, kind = split_files(cfg), checkpoint_kind(cfg.ckpt)
    if kind == "vqa":
        if cfg.question_id is None:
            raise UpdownError("question_id=N is required for a VQA checkpoint (an id of "
                              f"data.{cfg.split}.questions)")
        picture = vqa_picture(load_model(cfg.ckpt), files, int(cfg.question_id), cfg.images,
                              cfg.top_k, split=cfg.split)
        default_name = f"attention_q{cfg.question_id}.png"
    else:
        from updown_vqa.predict_caption import load_captioner

        if cfg.image_id is None:
            raise UpdownError(f"ckpt={cfg.ckpt} is a captioning checkpoint: give image_id=N "
                              f"(an image of data.{cfg.split}.features) instead of question_id")
        picture = caption_picture(load_captioner(cfg.ckpt).eval(), files, int(cfg.image_id), cfg.images)
        default_name = f"attention_i{cfg.image_id}.png"
    out = cfg.out or os.path.join(cfg.paths.output_dir, default_name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    figure(picture).savefig(out, dpi=120)
    print(f"attention of {kind} checkpoint {cfg.ckpt} drawn in {out}", flush=True)
    return {**picture, "out": out}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="visualize")
def main(cfg: DictConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    try:
        visualize(cfg)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
