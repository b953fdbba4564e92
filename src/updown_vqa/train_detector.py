"""Train the bottom-up detector: `python -m updown_vqa.train_detector [key=value ...]` (Hydra).

The same run folders, checkpoints and resuming as `updown_vqa.train` (conf/train_detector.yaml).
The best checkpoint, by val/map50, is a `weights=` for `python -m updown_vqa.extract mode=regions`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command


@hydra_command("train_detector")
def main(cfg: DictConfig) -> float | None:
    from updown_vqa.core.training import train

    return train(cfg).get("best")


if __name__ == "__main__":
    main()
