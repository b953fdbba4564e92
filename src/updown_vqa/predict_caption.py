"""Caption a split with a checkpoint: `python -m updown_vqa.predict_caption ckpt=PATH [split=test]`.

Writes COCO-format results [{"image_id", "caption"}] (the format of the COCO caption evaluation server)
and, when the split has reference captions, prints its CIDEr-D and BLEU-1..4
(`updown_vqa.captioning.inference`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command


@hydra_command("predict_caption")
def main(cfg: DictConfig) -> None:
    from updown_vqa.captioning.inference import predict

    predict(cfg)


if __name__ == "__main__":
    main()
