"""Draw what a checkpoint looks at: `python -m updown_vqa.visualize ckpt=PATH question_id=N [out=FILE.png]`.

A VQA checkpoint: the question's image with its regions shaded by their top-down attention weight,
the question, the top-5 answers with their scores and the ground-truth answers. A captioning
checkpoint takes `image_id=N` instead: one panel per generated word, shaded by the attention at that
word. Images come from `images` (the split's folder, COCO-style names ending in the 12-digit image id),
regions from `data.<split>.features`, questions from `data.<split>.questions` (conf/visualize.yaml).

`mode=detections image=IMG weights=FILE [out=PNG]` draws instead the regions of the C4 detector
(`extract detector.arch=c4`) with "attribute class" labels, as the bottom-up attention demo does.

In a notebook: `picture = updown_vqa.vqa.pictures.vqa_picture(model, files, question_id, image_dir)`,
then `updown_vqa.core.viz.figure(picture)`.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.checkpointing import checkpoint_task, read_checkpoint
from updown_vqa.core.cli import hydra_command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.core.settings import FLAG, Number, OneOf, check_group
from updown_vqa.detection.selection import check_detector_settings


def checkpoint_kind(path: str) -> str:
    """"vqa" or "caption": the task the checkpoint records (read without running pickled code)."""
    task = checkpoint_task(read_checkpoint(path, mmap=True, key="ckpt"))
    if task not in ("vqa", "caption"):
        raise UpdownError(f"ckpt={path}: not a VQA or captioning checkpoint of python -m updown_vqa.train")
    return task


def split_files(cfg: DictConfig) -> dict:
    """data.<split> as plain paths, refusing a split that is not configured."""
    if cfg.split not in cfg.data or not cfg.data[cfg.split]:
        raise UpdownError(f"split={cfg.split}: data.{cfg.split} is not configured; pick another split")
    return OmegaConf.to_container(cfg.data[cfg.split], resolve=True)


def image_file(key: str, value) -> None:
    """A file name matplotlib can write: its extension names a format it has."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if os.path.splitext(str(value))[1].lower().lstrip(".") not in formats:
        raise UpdownError(f"{key}={value}: name a file ending in one of "
                          f"{', '.join('.' + f for f in sorted(formats))}")


SETTINGS = {"mode": OneOf(("attention", "detections")), "split": OneOf(("train", "val", "test")),
            "top_k": Number("int", 1, 10**4), "question_id": Number("int"), "image_id": Number("int"),
            "out": image_file, "min_size": Number("int", 32, 8192), "max_size": Number("int", 32, 8192),
            "allow_random_weights": FLAG, "seed": Number("int", 0, 2**32 - 1)}


def visualize(cfg: DictConfig) -> dict:
    """Draw the configured question (or image) and save the PNG; returns what was drawn and `out`."""
    check_group(cfg, "", SETTINGS)
    check_detector_settings(cfg)
    refuse_overwriting_inputs("out", cfg.out, {"checkpoint": cfg.ckpt, "image": cfg.image, "weights file": cfg.weights})
    from updown_vqa.captioning.inference import caption_picture, load_captioner
    from updown_vqa.core.viz import figure
    from updown_vqa.vqa.inference import load_vqa_model
    from updown_vqa.vqa.pictures import vqa_picture

    if cfg.get("mode", "attention") == "detections":
        return draw_detections(cfg)
    if not cfg.ckpt:
        raise UpdownError("ckpt=PATH is required: a checkpoint of python -m updown_vqa.train "
                          "(or mode=detections image=IMG weights=FILE)")
    files, kind = split_files(cfg), checkpoint_kind(cfg.ckpt)
    if kind == "vqa":
        if cfg.question_id is None:
            raise UpdownError("question_id=N is required for a VQA checkpoint (an id of "
                              f"data.{cfg.split}.questions)")
        picture = vqa_picture(load_vqa_model(cfg.ckpt), files, int(cfg.question_id), cfg.images,
                              cfg.top_k, split=cfg.split)
        default_name = f"attention_q{cfg.question_id}.png"
    else:
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


def draw_detections(cfg: DictConfig) -> dict:
    """The C4 detector's regions on `cfg.image`, labelled "attribute class", saved to `out`."""
    from updown_vqa.detection.c4_regions import C4RegionExtractor, build_c4, read_vocab
    from updown_vqa.detection.drawing import detection_figure

    if not cfg.image:
        raise UpdownError("mode=detections needs image=IMG (and weights=FILE)")
    d = cfg.detector
    if not cfg.weights and not cfg.allow_random_weights:
        raise UpdownError("mode=detections needs weights=FILE: the published .pth / .pkl or a "
                          "train_detector checkpoint of detector.arch=c4")
    detector = build_c4(int(d.depth), cfg.weights, int(d.num_classes), int(d.num_attributes), cfg.seed)
    classes, attributes = detector.cls_score.out_features, detector.attributes.score.out_features
    names = [read_vocab(d[key], size - 1, f"detector.{key}") if d.get(key) else None
             for key, size in (("objects_vocab", classes), ("attributes_vocab", attributes))]
    extractor = C4RegionExtractor(detector, cfg.min_size, cfg.max_size, min_boxes=int(d.min_boxes),
                                  max_boxes=int(d.max_boxes), score_threshold=float(d.score_threshold))
    fig, labels = detection_figure(cfg.image, extractor, *names)
    out = cfg.out or os.path.join(cfg.paths.output_dir, "detections.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"{len(labels)} regions of {cfg.image} drawn in {out}", flush=True)
    return {"labels": labels, "out": out}


@hydra_command("visualize")
def main(cfg: DictConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    visualize(cfg)


if __name__ == "__main__":
    main()
