"""Train a model: `python -m updown_vqa.train [key=value ...]` (Hydra; `-m` for sweeps).

The loop is `updown_vqa.core.training.train`; in a multirun a failed job is recorded in its folder's
failed.json and the other jobs go on (core.cli.command).
"""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command


@hydra_command("config")
def main(cfg: DictConfig) -> float | None:
    from updown_vqa.core.training import train

    return train(cfg).get("best")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
