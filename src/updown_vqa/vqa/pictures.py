"""What `visualize` draws for a VQA checkpoint: a question's image regions with their top-down attention
weights, its top answers and the human answers (drawn by `core.viz.figure`)."""

from __future__ import annotations

import glob
import os

import numpy as np
import torch

from updown_vqa.core.cache import as_list
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.pixels import check_images
from updown_vqa.vqa.inference import question_loader
from updown_vqa.vqa.preprocess import load_json


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
    batch = check_images(dataset[[int(where[0])]])
    inputs = {k: v.to(model.device) for k, v in batch.items() if torch.is_tensor(v)}
    logits, attention = model.eval()(inputs, return_attention=True)  # [1, A], [1, K]
    if "boxes" in batch:
        boxes = batch["boxes"][0, : int(batch["mask"][0].sum())].float()  # [K, 4]
    else:  # grid cells: each feature ends with its box x1/w y1/h x2/w y2/h (features.grid)
        w, h = batch["image_sizes"][0].tolist()
        boxes = model.regions(inputs)[0][0, :, -4:].float().cpu() * torch.tensor([w, h, w, h])  # [K, 4]
    top = torch.sigmoid(logits[0]).topk(min(top_k, logits.shape[1]))
    answers = [(model.hparams.answers[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]
    return {"boxes": boxes.numpy(), "weights": attention[0, : len(boxes)].float().cpu().numpy(),
            "answers": answers}


def vqa_picture(model, files: dict, question_id: int, image_dir: str, top_k: int = 5,
                dataset=None, split: str = "val") -> dict:
    """Everything `show_attention` draws for one question; `dataset` (a split's questions encoded
    with the checkpoint's vocabulary, `question_loader(...).dataset`) is made when not given."""
    if dataset is None:  # an end-to-end model reads the images of data.<split>.images, else image_dir
        dataset = question_loader(model.hparams, {"images": image_dir} | files, split).dataset
    record = question_record(files, question_id)
    picture = question_attention(model, dataset, question_id, top_k)
    return {"kind": "vqa", "question_id": question_id, **record, **picture,
            "image": find_image(image_dir, record["image_id"])}
