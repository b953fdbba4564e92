"""Every `data.feature_cache` mode gives exactly the batches of a naive per-question h5py reader."""

import h5py
import numpy as np
import pytest
import torch
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from updown_vqa.bench.loader import NaiveDataset
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler
from updown_vqa.datasets.random_stores import write_random_questions
from updown_vqa.features.store import write_store
from updown_vqa.vqa.data import VQADataModule

BATCH = 16


def write_regions(path, image_ids, layout, dtype, seed):
    """A store whose images have 1 to 6 regions of 8-d random features."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, len(image_ids))
    boxes = [rng.uniform(0, 50, (n, 4)).astype(np.float32) for n in counts]
    feats = [rng.normal(size=(n, 8)).astype(np.float32) for n in counts]
    write_store(str(path), image_ids, [(64, 48)] * len(image_ids), boxes, feats, layout=layout, dtype=dtype)


def rechunk(path):
    """Rewrite a store with chunked, compressed region datasets (what an unfinished store looks like)."""
    with h5py.File(path) as f:
        data = {key: f[key][:] for key in f}
        attrs = dict(f.attrs)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            big = key in ("features", "boxes")
            f.create_dataset(key, data=value, chunks=True if big else None, compression="gzip" if big else None)
        f.attrs.update(attrs)


@pytest.fixture(scope="module", params=[("padded", "float32"), ("flat", "float32"), ("padded", "float16")],
                ids=lambda p: "-".join(p))
def files(request, tmp_path_factory):
    """Two stores (the training split reads both, like train+val) and questions over their images."""
    layout, dtype = request.param
    root = tmp_path_factory.mktemp(f"{layout}-{dtype}")
    write_regions(root / "a.h5", list(range(1, 31)), layout, dtype, seed=1)
    write_regions(root / "b.h5", list(range(101, 121)), layout, dtype, seed=2)
    questions = write_random_questions(str(root), np.r_[1:31, 101:121], 3, num_answers=12)
    (root / "val").mkdir()
    val_questions = write_random_questions(str(root / "val"), np.r_[101:121], 1, num_answers=12)
    split = questions | {"features": [str(root / "a.h5"), str(root / "b.h5")]}
    return {"train": split, "val": val_questions | {"features": str(root / "b.h5")},
            "cache_dir": str(root / "cache"), "min_answer_count": 1}


def project_batches(files, feature_cache="none", num_workers=0, **extra):
    dm = VQADataModule(**files, batch_size=BATCH, num_workers=num_workers, feature_cache=feature_cache, seed=3,
                       **extra)
    dm.prepare_data()
    dm.setup("fit")
    return dm, [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]


def naive_batches(dm):
    dataset = dm.datasets["train"]
    sampler = BatchSampler(len(dataset), BATCH, shuffle=True, seed=3)
    return list(DataLoader(NaiveDataset(dataset), batch_sampler=sampler))


def assert_same_batches(project, naive):
    assert len(project) == len(naive) > 2
    for ours, theirs in zip(project, naive):
        assert_same_batch(ours, theirs)


def assert_same_batch(ours, theirs):
    assert ours["features"].dtype == theirs["features"].dtype
    assert torch.equal(ours["features"], theirs["features"])
    assert torch.equal(ours["boxes"], theirs["boxes"])
    assert torch.equal(ours["mask"], torch.arange(ours["mask"].shape[1]) < theirs["num_boxes"][:, None])
    assert torch.equal(ours["tokens"], theirs["tokens"][:, : ours["tokens"].shape[1]])
    assert torch.equal(ours["lengths"], theirs["lengths"])
    assert torch.equal(ours["targets"], theirs["targets"])


@pytest.mark.parametrize("feature_cache", ["none", "ram", "device"])
def test_every_mode_gives_the_naive_readers_batches(files, feature_cache):
    dm, batches = project_batches(files, feature_cache)
    assert_same_batches(batches, naive_batches(dm))


@pytest.mark.parametrize("feature_cache, read_threads", [("none", 2), ("none", 1), ("none", 5), ("ram", 2)])
def test_workers_give_the_same_batches(files, feature_cache, read_threads):
    dm, batches = project_batches(files, feature_cache, num_workers=1, worker_read_threads=read_threads)
    assert dm.table.worker_threads == read_threads  # what the worker's copy of the table reads with
    assert_same_batches(batches, naive_batches(dm))


@pytest.mark.parametrize("feature_cache", ["none", "ram"])
def test_workers_recycle_their_buffers_once_batches_are_dropped(files, feature_cache):
    dm, _ = project_batches(files, feature_cache)
    expected = naive_batches(dm)
    dm.num_workers = 1
    loader = dm.train_dataloader()
    for _ in range(2):  # two epochs through one persistent worker
        for ours, theirs in zip(loader, expected):
            assert_same_batch(ours, theirs)
    assert loader.pool.fresh == 0 and len(expected) * 2 > len(loader.pool.busy)  # every batch in a reused slot


def test_ram_mode_holds_the_features_once_in_shared_memory(files):
    dm, _ = project_batches(files, "ram")
    assert dm.table.features.is_shared() and dm.table.boxes.is_shared()
    regions = 0
    for path in files["train"]["features"]:
        with h5py.File(path) as f:
            regions += int(np.prod(f["features"].shape[:-1]))  # [N, K] padded or [R] flat
    assert dm.table.features.shape[0] == regions + 1  # once, plus one zero row for padding slots


@pytest.mark.parametrize("feature_cache", ["none", "ram"])
def test_chunked_compressed_stores_read_the_same(files, tmp_path, feature_cache):
    chunked = dict(files, cache_dir=str(tmp_path / "cache"))
    paths = []
    for path in files["train"]["features"]:
        copy = tmp_path / path.rsplit("/", 1)[1]
        copy.write_bytes(open(path, "rb").read())
        rechunk(copy)
        paths.append(str(copy))
    chunked["train"] = dict(files["train"], features=paths)
    chunked["val"] = dict(files["val"], features=paths[1])
    dm, batches = project_batches(chunked, feature_cache)
    assert_same_batches(batches, naive_batches(dm))


def test_device_mode_batches_carry_indices_until_the_transfer(files):
    dm = VQADataModule(**files, batch_size=BATCH, num_workers=2, feature_cache="device")
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 0  # a batch is an index gather: nothing for workers to do
    batch = next(iter(loader))
    assert "features" not in batch and batch["region_starts"].shape == (BATCH,)


def test_unknown_feature_cache_is_named(files):
    dm = VQADataModule(**files, feature_cache="gpu")
    dm.prepare_data()
    with pytest.raises(UpdownError, match="data.feature_cache='gpu': must be one of none, ram, device"):
        dm.setup("fit")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["data.feature_cache=device", "trainer.precision=bf16-mixed"],
                                   ["data.feature_cache=ram", "data.num_workers=1"]], ids=["device-bf16", "ram"])
def test_training_runs_in_cache_modes_and_mixed_precision(data_dir, tmp_path, extra):
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "trainer.fast_dev_run=true",
                        "name=modes", *extra)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_compiled_model_trains_and_keeps_its_checkpoint_keys(data_dir, tmp_path):
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + ["model.compile=true"], str(tmp_path))
    model_cfg = OmegaConf.to_container(cfg.model)
    model_cfg.pop("feature_dim", None)
    model = instantiate(model_cfg, vocab=["<pad>", "<unk>", "a", "b"], answers=["yes", "no", "2"], feature_dim=8)
    keys = list(model.state_dict())
    model.on_fit_start()
    batch = {"tokens": torch.tensor([[2, 3, 0], [3, 3, 2]]), "lengths": torch.tensor([2, 3]),
             "features": torch.randn(2, 4, 8), "mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool(),
             "targets": torch.tensor([[1.0, 0, 0], [0, 0.3, 1]])}
    model.training_step(batch, 0).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert list(model.state_dict()) == keys  # in-place compile: checkpoints load with or without it
