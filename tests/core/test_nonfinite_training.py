"""A NaN in one image's features: training stops naming the step and the image (nonfinite=error, the
default) without touching the last good checkpoint, or skips that batch and counts it (nonfinite=skip)."""

import csv
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides

from updown_vqa.core.checkpointing import read_checkpoint
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import train


@pytest.fixture
def poisoned(data_dir, tmp_path):
    """A copy of the tiny dataset where one train image's features hold NaN; returns (data dir, image id)."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(data_dir, "shapes"), root / "shapes", ignore=shutil.ignore_patterns("cache"))
    with h5py.File(root / "shapes" / "shapes_train_features.h5", "r+") as f:
        image_id = int(f["image_ids"][3])
        features = f["features"][3]
        features[0, 0] = np.nan
        f["features"][3] = features
        f.attrs["all_finite"] = False
    return str(root), image_id


def run_config(data, out, *extra):
    return compose_config(tiny_overrides(data, str(out)) + ["name=nan", "+trainer.enable_progress_bar=false",
                                                            "trainer.max_epochs=2", *extra], str(out))


@pytest.mark.slow
def test_a_nan_feature_stops_training_naming_step_and_image_and_keeps_the_last_checkpoint(poisoned, tmp_path):
    data, image_id = poisoned
    with pytest.raises(UpdownError, match=rf"training loss is nan at step \d+ .*image id {image_id} hold NaN"):
        train(run_config(data, tmp_path))
    checkpoints = tmp_path / "checkpoints"
    for name in os.listdir(checkpoints) if checkpoints.is_dir() else []:  # whatever was saved is finite
        state = read_checkpoint(str(checkpoints / name))["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_nonfinite_skip_trains_on_and_counts_the_skipped_batches(poisoned, tmp_path):
    data, _ = poisoned
    metrics = train(run_config(data, tmp_path, "nonfinite=skip", "trainer.log_every_n_steps=1"))
    assert np.isfinite(metrics["best"])
    state = read_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    with open(tmp_path / "metrics.csv") as f:
        skipped = [float(r["train/nonfinite_skipped"]) for r in csv.DictReader(f) if r.get("train/nonfinite_skipped")]
    assert max(skipped) >= 2  # the poisoned image is in at least one batch of each of the 2 epochs


def test_nonfinite_takes_error_or_skip_only(tmp_path, data_dir):
    with pytest.raises(UpdownError, match="nonfinite='ignore': must be one of error, skip"):
        train(run_config(data_dir, tmp_path, "nonfinite=ignore"))
