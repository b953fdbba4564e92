"""`seed` alone decides what a run draws: the run that builds the data trains like every later one."""

import csv

import pytest
from conftest import compose_config, tiny_overrides

from updown_vqa.core.training import train


def logged_losses(data_dir, out_dir, seed: int) -> list[str]:
    """train/loss at every step of a short deterministic run, as metrics.csv wrote it."""
    overrides = tiny_overrides(str(data_dir), str(out_dir)) + [
        f"seed={seed}", "trainer.deterministic=true", "trainer.log_every_n_steps=1", "trainer.max_steps=12"]
    train(compose_config(overrides, str(out_dir)))
    with open(out_dir / "metrics.csv", newline="") as f:
        return [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow
def test_first_run_on_a_fresh_data_folder_trains_like_the_next(tmp_path):
    data = tmp_path / "data"  # empty: the first run builds the shapes data and the caches
    first = logged_losses(data, tmp_path / "first", seed=7)
    second = logged_losses(data, tmp_path / "second", seed=7)
    other_seed = logged_losses(data, tmp_path / "other", seed=8)
    assert len(first) == 12
    assert first == second  # to the last digit written
    assert first != other_seed
