"""Region features for any folder of images: `python -m updown_vqa.extract images=DIR out=F.h5`.

Modes (`mode=`): `grid`, the cells of a ResNet's last feature map (448 px -> 14x14 cells); `boxes`,
RoI features at boxes given per image id in a json file; `regions`, bottom-up attention regions of a
Faster R-CNN. Image ids are the integer ending each file name (COCO_val2014_000000000042.jpg -> 42).
The store records its recipe (mode, backbone, weights and their sha256, sizes, thresholds); `answer`
rebuilds the same extractor from it. See conf/extract/config.yaml, docs/extraction.md and
`updown_vqa.extraction.extractors`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command


@hydra_command("extract/config")
def main(cfg: DictConfig) -> None:
    if cfg.bench:
        from updown_vqa.bench.extraction import bench

        bench(cfg)
    else:
        from updown_vqa.core.slurm import RequeueOnSignal
        from updown_vqa.extraction.extractors import extract

        with RequeueOnSignal():  # SLURM's SIGUSR1: requeued at once; the store resumes where it was
            extract(cfg)


if __name__ == "__main__":
    main()
