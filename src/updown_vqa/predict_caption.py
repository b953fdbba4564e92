"""Caption a split with a checkpoint: `python -m updown_vqa.predict_caption ckpt=PATH [split=test]`.

Writes COCO-format results [{"image_id", "caption"}] (the format of the COCO caption evaluation server)
and, when the split has reference captions, prints its CIDEr-D and BLEU-1..4.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from updown_vqa.captioning.metrics import bleu, cider_d
from updown_vqa.captioning.module import UpDownCaptioning, write_caption_results
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir

log = logging.getLogger(__name__)


def load_captioner(path: str) -> UpDownCaptioning:
    """The captioner of a checkpoint, on the GPU when there is one."""
    if not os.path.isfile(path):
        raise UpdownError(f"ckpt={path}: checkpoint not found")
    try:
        model = UpDownCaptioning.load_from_checkpoint(path, map_location="cpu")
    except Exception as e:  # truncated, or not a captioning checkpoint
        raise UpdownError(f"ckpt={path}: cannot load it as a captioning checkpoint "
                          f"({type(e).__name__}: {e})") from e
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def predict(cfg: DictConfig) -> dict:
    """Caption every image of `cfg.split`; returns the metrics ({} without references)."""
    model = load_captioner(cfg.ckpt)
    datamodule = instantiate(cfg.data, feature_cache="none")  # each image is read once: nothing to cache
    datamodule.prepare_data()
    datamodule.setup("predict")
    if datamodule.feature_dim != model.hparams.feature_dim:
        raise UpdownError(f"ckpt={cfg.ckpt}: the model takes {model.hparams.feature_dim}-d features but "
                          f"data.{cfg.split}.features are {datamodule.feature_dim}-d")
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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict_caption")
def main(cfg: DictConfig) -> None:
    try:
        predict(cfg)
    except UpdownError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
