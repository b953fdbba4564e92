"""One read path for region features: the captioner's batches are the same in every `data.feature_cache`
mode and with workers, and the store is read, never memory-mapped."""

import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.loading import StoreSet, read_rows
from updown_vqa.features.store import FeatureStore

MODES = [("none", 0), ("ram", 0), ("device", 0), ("none", 1), ("ram", 1)]


def caption_batches(data_dir, out, feature_cache, num_workers):
    """Training and validation batches of the shapes captioner, gathered as the trainer would."""
    cfg = compose_config(tiny_overrides(data_dir, out) + ["task=caption", f"data.feature_cache={feature_cache}",
                                                          f"data.num_workers={num_workers}"], out)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loaders = [dm.train_dataloader(), dm.val_dataloader()]
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in dm.on_after_batch_transfer(b, 0).items()}
            for loader in loaders for b in loader]


@pytest.mark.slow
def test_caption_batches_are_the_same_in_every_cache_mode(data_dir, tmp_path):
    expected = caption_batches(data_dir, str(tmp_path / "ref"), "none", 0)
    assert expected and {"features", "boxes", "mask", "tokens"} <= expected[0].keys()
    for feature_cache, workers in MODES[1:]:
        got = caption_batches(data_dir, str(tmp_path / f"{feature_cache}{workers}"), feature_cache, workers)
        assert len(got) == len(expected), (feature_cache, workers)
        for a, b in zip(expected, got):
            assert a.keys() == b.keys(), (feature_cache, workers)
            for key in a:
                if torch.is_tensor(a[key]):
                    assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (feature_cache, workers, key)
                else:
                    assert a[key] == b[key]


def test_caption_features_are_the_stores_own_regions(data_dir, tmp_path):
    batch = caption_batches(data_dir, str(tmp_path), "ram", 0)[0]
    store = FeatureStore(f"{data_dir}/shapes/shapes_train_features.h5")
    read = read_rows(store, store.rows(batch["image_ids"].numpy()), batch["features"].shape[1])
    np.testing.assert_array_equal(batch["features"].numpy(), read["features"])
    assert batch["mask"].sum(1).tolist() == read["num_boxes"].tolist()
    assert read["num_boxes"].tolist() == store.num_boxes[store.rows(batch["image_ids"].numpy())].tolist()


def test_reading_never_maps_the_store(data_dir):
    """The README's promise: features are read (pread) into the batch; the file is not memory-mapped,
    so a worker's memory does not grow with the part of the store it has read."""
    path = f"{data_dir}/shapes/shapes_val_features.h5"
    stores = StoreSet([path])
    stores.read(stores.stores[0].image_ids[:4])
    with open("/proc/self/maps") as f:
        assert path not in f.read()


def test_an_unknown_image_is_named_with_its_source(data_dir):
    stores = StoreSet([f"{data_dir}/shapes/shapes_val_features.h5"])
    with pytest.raises(UpdownError, match="captions.json: image id 123456789 is not in the features file"):
        stores.locate(np.array([123456789]), "captions.json")
