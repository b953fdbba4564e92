"""Captioning with a trained checkpoint: every image of a split (`predict_caption`) with its metrics,
and the per-word attention of one image (`visualize`)."""

from __future__ import annotations

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from updown_vqa.captioning.metrics import bleu, cider_d
from updown_vqa.captioning.module import UpDownCaptioning, caption_attention, write_caption_results
from updown_vqa.core.cache import as_list
from updown_vqa.core.checkpointing import load_module
from updown_vqa.core.devices import choose_device
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.core.settings import Number, OneOf, check_group, declared
from updown_vqa.extraction.one_image import model_regions
from updown_vqa.features.finite import require_finite
from updown_vqa.features.loading import StoreSet
from updown_vqa.vqa.pictures import find_image


def load_captioner(path: str, device: str | None = None) -> UpDownCaptioning:
    """The captioner of a checkpoint, on the GPU when there is one."""
    return load_module(UpDownCaptioning, str(path)).to(choose_device(device))


PREDICT = {"split": OneOf(("train", "val", "test")), "beam_size": Number("int", 1, 1000),
           "max_length": Number("int", 1, 1024)}


def predict(cfg: DictConfig) -> dict:
    """Caption every image of `cfg.split`; returns the metrics ({} without references)."""
    check_group(cfg, "", PREDICT)
    check_group(cfg, "data", declared(cfg.data))
    split = cfg.data.get(cfg.split) or {}
    refuse_overwriting_inputs("out", cfg.out, {"checkpoint": cfg.ckpt, **{f"data.{cfg.split}.{k}": v
                                                                           for k, v in split.items()}})
    model = load_captioner(cfg.ckpt)
    grid = model.hparams.get("visual") == "grid"
    # each image is read once: nothing to cache; images at the size the trunk learnt from
    sizes = {"image_size": int(model.hparams.image_size)} if grid and "image_size" in cfg.data else {}
    datamodule = instantiate(cfg.data, feature_cache="none", **sizes)
    datamodule.prepare_data()
    datamodule.setup("predict")
    check_visual(cfg.ckpt, model, datamodule.feature_dim, cfg.split)
    loader = datamodule.predict_dataloader(cfg.split)
    results = write_caption_results(model, loader, cfg.out, cfg.beam_size, cfg.max_length)
    print(f"{len(results)} captions written to {cfg.out}", flush=True)
    references = loader.dataset.references
    if references is None:
        return {}
    candidates = {r["image_id"]: r["caption"] for r in results}
    refs = dict(zip(loader.dataset.image_ids.tolist(), references))
    metrics = {f"bleu{n}": s for n, s in enumerate(bleu(candidates, refs), start=1)}
    metrics["cider"] = cider_d(candidates, refs)[0]
    print(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    return metrics


def check_visual(ckpt: str, model: UpDownCaptioning, data_feature_dim: int | None, split: str) -> None:
    """Refuse data that gives the model something else than it reads: images for a model.visual=grid
    checkpoint (the data's feature size None), features of its size otherwise."""
    grid = model.hparams.get("visual") == "grid"
    if grid and data_feature_dim is not None:
        raise UpdownError(f"ckpt={ckpt}: a model.visual=grid checkpoint reads images, but the data gives feature "
                          "stores; use an image data config (data=shapes_caption_e2e, or images: per split)")
    if not grid and data_feature_dim is None:
        raise UpdownError(f"ckpt={ckpt}: the checkpoint reads feature stores, but the data gives images; use "
                          "a data config with features (data=shapes_caption)")
    if not grid and data_feature_dim != model.hparams.feature_dim:
        raise UpdownError(f"ckpt={ckpt}: the model takes {model.hparams.feature_dim}-d features but "
                          f"data.{split}.features are {data_feature_dim}-d")


def caption_picture(model, files: dict, image_id: int, image_dir: str) -> dict:
    """Everything `show_caption_attention` draws: the greedy caption's words and attention [L, K]."""
    stores = StoreSet(as_list(files.get("features")))
    for store in stores.stores:  # NaN features would draw confident attention
        require_finite(store.path)
    read = stores.read([image_id], f"image_id={image_id}")  # features [1, K, D], boxes [1, K, 4], num_boxes [1]
    count = int(read["num_boxes"][0])
    batch = {"features": torch.from_numpy(np.asarray(read["features"])),
             "mask": torch.arange(read["features"].shape[1])[None] < count}
    words, attention = caption_attention(model, batch)  # [L], [L, K]
    return {"kind": "caption", "image_id": image_id, "words": words, "boxes": read["boxes"][0, :count],
            "attention": attention[:, :count].float().numpy(), "image": find_image(image_dir, image_id)}


def caption_image(model: UpDownCaptioning, image, boxes=None, weights: str | None = None,
                  device: str | None = None, source: str = "the checkpoint") -> dict:
    """The greedy caption of any image, its features made by the checkpoint's recorded recipe (as
    `answer` makes them), or by its own trunk (model.visual=grid): its `words`, the regions' `boxes`
    [K, 4] and the `attention` [L, K] per word."""
    kept, features, mask = model_regions(model, image, boxes, weights, device, source)  # [K, 4], [1, K, D], [1, K]
    batch = {"features": features, "mask": mask}
    words, attention = caption_attention(model, batch)  # [L], [L, K]
    return {"words": words, "boxes": kept.numpy(), "attention": attention.float().numpy()}
