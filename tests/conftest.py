"""Shared fixtures: a tiny `shapes` dataset built once per session, and Hydra composition."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from updown_vqa.core.paths import config_dir
from updown_vqa.datasets.shapes import ShapesBuilder

TINY_SHAPES = {"num_train_images": 120, "num_val_images": 40, "image_size": 64}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A data folder holding a tiny shapes dataset with its features."""
    root = tmp_path_factory.mktemp("data")
    ShapesBuilder(str(root / "shapes"), **TINY_SHAPES)()
    return str(root)


def tiny_overrides(data_dir: str, out_dir: str, builder: bool = True) -> list[str]:
    """Overrides that point a run at the tiny dataset and keep it small and fast.

    `builder=False` leaves out the shapes generator's settings, for data configs that have none.
    """
    builder = [f"data.builder.{k}={v}" for k, v in TINY_SHAPES.items()] if builder else []
    return [f"paths.data_dir={data_dir}", f"paths.log_dir={out_dir}", *builder,
            "data.batch_size=32", "model.hidden_dim=32",
            "model.embed_dim=16", "trainer.max_epochs=1"]


def compose_config(overrides: list[str], output_dir: str | None = None):
    """The run config as `python -m updown_vqa.train` would compose it, without running."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose("config", overrides=overrides + extra)


def run_module(module: str, *args: str, cwd: str | None = None, timeout: int = 300):
    """Run `python -m module args` as a user would, returning the completed process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
