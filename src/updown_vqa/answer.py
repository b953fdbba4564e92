"""Answer a question about any image with a trained checkpoint, its features made as in training.

    python -m updown_vqa.answer ckpt=PATH image=IMG.jpg question="what color is the bus?"

The checkpoint carries the record of how its training features were made (hparams `feature_attrs`,
the store's attributes); the image's features are extracted by that same recipe, so the same
weights (checked by sha256), image size, stage and thresholds. In a notebook:
`updown_vqa.vqa.inference.answer_image(ckpt, image, question) -> [(answer, score), ...]`. Features of
mode `boxes` need boxes: `boxes=[[x1, y1, x2, y2], ...]` in image pixels, or, when none are given, the
cells of the trunk's grid.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from updown_vqa.core.cli import hydra_command
from updown_vqa.core.settings import Number, check_group


def quote_free_text(argv: list[str], keys=("question", "image", "ckpt", "weights")) -> list[str]:
    """Quote free-text values (apostrophes, commas) so Hydra's override grammar takes them as is."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in keys and value and value[0] not in "'\"":
            arg = f"{key}='" + value.replace("'", "\\'") + "'"
        out.append(arg)
    return out


TYPED: dict[str, str] = {}  # free text taken from the command line as typed, out of Hydra's reach
PLACEHOLDER = "as_typed"


def take_typed(argv: list[str], keys=("question",)) -> list[str]:
    """Keep `key=TEXT` verbatim in TYPED (Hydra would resolve `${...}` in it and refuse `???`); Hydra sees
    a placeholder instead."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys:
            TYPED[key] = value
            arg = f"{key}={PLACEHOLDER}"
        out.append(arg)
    return out


@hydra_command("extract/answer")
def _main(cfg: DictConfig) -> None:
    from updown_vqa.vqa.inference import answer_image

    check_group(cfg, "", {"top_k": Number("int", 1, 10**4)})
    boxes = OmegaConf.to_container(cfg.boxes) if cfg.boxes is not None else None
    question = TYPED.get("question", cfg.question)
    answers = answer_image(cfg.ckpt, cfg.image, question, boxes, cfg.top_k, cfg.weights, cfg.device)
    print(question)
    for answer, score in answers:
        print(f"  {answer:<20} {score:.3f}")


def main() -> None:
    sys.argv[1:] = quote_free_text(take_typed(sys.argv[1:]))
    _main()


if __name__ == "__main__":
    main()
