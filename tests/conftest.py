"""Shared fixtures: a tiny `shapes` dataset built once per session, and Hydra composition."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from PIL import Image
from slurm_cluster import slurm_cluster  # noqa: F401  (the session's SLURM cluster, for tests/slurm/)

from updown_vqa.core.paths import config_dir
from updown_vqa.datasets.shapes import ShapesBuilder

TINY_SHAPES = {"num_train_images": 120, "num_val_images": 40, "image_size": 64}
# For tests that signal or cancel a tiny training while it runs: batch 4 makes about 140 steps an
# epoch, so a run is still training seconds after its first checkpoint (at batch 32 an epoch took
# about 0.2 s, and a run could end before the signal reached it).
SLOW_EPOCHS = ["data.batch_size=4", "trainer.max_epochs=3"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A data folder holding a tiny shapes dataset with its features."""
    root = tmp_path_factory.mktemp("data")
    ShapesBuilder(str(root / "shapes"), **TINY_SHAPES)()
    return str(root)


def tiny_overrides(data_dir: str, out_dir: str, builder: bool = True, model: bool = True) -> list[str]:
    """Overrides that point a run at the tiny dataset and keep it small and fast.

    `builder=False` leaves out the shapes generator's settings, for data configs that have none;
    `model=False` the VQA and captioning model sizes (the detector has its own).
    """
    builder = [f"data.builder.{k}={v}" for k, v in TINY_SHAPES.items()] if builder else []
    sizes = ["model.hidden_dim=32", "model.embed_dim=16"] if model else []
    return [f"paths.data_dir={data_dir}", f"paths.log_dir={out_dir}", *builder, "data.batch_size=32", *sizes,
            "trainer.max_epochs=1"]


def compose_config(overrides: list[str], output_dir: str | None = None, config_name: str = "config",
                   hydra: bool = False):
    """A command's config as it would compose it, without running: `config` (train), `extract/config`,
    `extract/answer`, `predict`, `predict_caption`, `visualize`, `train_detector`, `sweep_loader`
    (`hydra`: with the `hydra` node, e.g. the run folder and the launcher)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose(config_name, overrides=list(overrides) + extra, return_hydra_config=hydra)


def shapes_file(data_dir: str, name: str) -> str:
    """A file of the tiny shapes dataset."""
    return os.path.join(data_dir, "shapes", name)


def save_module(model: pl.LightningModule, path) -> str:
    """A checkpoint of `model` (untrained) as `train` writes it: Lightning's format, the task recorded."""
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(str(path))
    return str(path)


def extract_config(*overrides: str):
    """The config of `python -m updown_vqa.extract`."""
    return compose_config(list(overrides), config_name="extract/config")


def assert_extract_holds_trunk_cells(model, dm, data_dir: str, tmp_path) -> None:
    """`extract mode=grid weights=<model's checkpoint>` on the val images stores exactly the cells the
    end-to-end model's own trunk (`model.encoder`, ResNet-18 to layer2 at 32 px) makes of them."""
    import torch

    from updown_vqa.extraction.extractors import extract
    from updown_vqa.features.loading import read_rows
    from updown_vqa.features.store import FeatureStore

    ckpt = save_module(model, tmp_path / "e2e.ckpt")
    out = str(tmp_path / "learned.h5")
    extract(extract_config(f"images={shapes_file(data_dir, 'images/val')}", f"out={out}", "mode=grid",
                           f"weights={ckpt}", "num_workers=0", "device=cpu"))
    store = FeatureStore(out)
    assert store.attrs["backbone"] == "resnet18" and store.attrs["stage"] == "layer2"
    assert store.attrs["image_size"] == 32 and store.feature_dim == model.hparams.feature_dim
    batch = dm.datasets["val"][[0]]
    with torch.no_grad():
        expected = model.encoder(batch["images"])[0]  # [K, D]
    image_id = int(dm.datasets["val"].image_ids[0])
    stored = torch.from_numpy(read_rows(store, store.find([image_id]))["features"][0])
    assert torch.allclose(stored, expected, atol=1e-4)


def write_images(folder, sizes=((80, 60), (50, 70), (64, 64)), first_id=1) -> dict[int, str]:
    """RGB PNGs of the given (w, h), named COCO style; returns their paths by id."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(first_id)
    paths = {}
    for k, (w, h) in enumerate(sizes):
        i = first_id + k
        paths[i] = os.path.join(folder, f"COCO_val2014_{i:012d}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[i])
    return paths


class _ForkServer:
    """One `tests/forkserver.py` per session: each command runs in a child forked from a process that
    has imported torch, Lightning and Hydra once (saves 5-9 CPU-seconds a run)."""

    process: subprocess.Popen | None = None

    @classmethod
    def run(cls, module: str, args: list[str], cwd: str, env: dict, timeout: int) -> tuple:
        from forkserver import read_frame, write_frame

        if cls.process is None or cls.process.poll() is not None:
            cls.process = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "forkserver.py")],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        write_frame(cls.process.stdin, (module, list(args), cwd, env, timeout))
        reply = read_frame(cls.process.stdout)
        if reply is None:
            raise RuntimeError("tests/forkserver.py ended; rerun with UPDOWN_TESTS_FORK=0 to see the command alone")
        return reply

    @classmethod
    def stop(cls) -> None:
        if cls.process is not None and cls.process.poll() is None:
            cls.process.stdin.close()  # the server's loop ends; its interpreter's teardown may take a while
            try:
                cls.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.process.kill()


def run_module(module: str, *args: str, cwd: str | None = None, timeout: int = 300, fork: bool = True,
               env: dict | None = None):
    """Run `python -m module args` as a user would, returning the completed process (in a child of
    the fork server unless `fork=False` or UPDOWN_TESTS_FORK=0: see tests/forkserver.py); `env` adds
    to the environment."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", **(env or {})}
    command = [sys.executable, "-m", module, *args]
    if not fork or os.environ.get("UPDOWN_TESTS_FORK", "1") == "0":
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    returncode, out, err, timed_out = _ForkServer.run(module, args, os.path.abspath(cwd or os.getcwd()), env, timeout)
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, out, err)
    return subprocess.CompletedProcess(command, returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def pytest_sessionfinish(session, exitstatus):
    """A test that made a write fail arms `writer.skip_hdf5_shutdown` (an exit that skips HDF5's own
    shutdown, which would crash): let that exit report pytest's status, not the command's 1."""
    from updown_vqa.features import writer

    _ForkServer.stop()
    writer.EXIT_STATUS[0] = int(exitstatus)


def assert_same_store(path, expected, ignore_attrs=()) -> None:
    """Two HDF5 stores hold the same datasets (names, dtypes, shapes, values) and attributes."""
    import h5py

    with h5py.File(path, "r") as f, h5py.File(expected, "r") as g:
        assert sorted(f) == sorted(g), f"{path}: datasets {sorted(f)}, expected {sorted(g)}"
        for name in g:
            assert (f[name].dtype, f[name].shape) == (g[name].dtype, g[name].shape), f"{path}: {name}"
            assert np.array_equal(f[name][:], g[name][:]), f"{path}: {name} differs from {expected}"
        kept = sorted(set(g.attrs) - set(ignore_attrs))
        assert sorted(set(f.attrs) - set(ignore_attrs)) == kept, f"{path}: attributes"
        for key in kept:
            mine, theirs = f.attrs[key], g.attrs[key]
            assert type(mine) is type(theirs) and np.array_equal(mine, theirs), f"{path}: attribute {key}"


@pytest.fixture
def same_store():
    """`assert_same_store`, for a test folder whose own conftest.py hides this one from `import conftest`."""
    return assert_same_store
