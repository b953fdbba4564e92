"""Stores that would mislead training are refused when opened, naming the store and what is wrong:
duplicated image ids, no regions at all, integer features, boxes not [..., 4], ids of another type."""

import logging

import h5py
import numpy as np
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.store import FeatureStore, write_store


def good_store(path, num_boxes=(2, 3, 1)):
    """A padded store of three images, ids 1..3, with the given region counts."""
    n = len(num_boxes)
    boxes = [np.array([[0, 0, 5, 5]] * k, np.float32).reshape(k, 4) for k in num_boxes]
    features = [np.ones((k, 4), np.float32) for k in num_boxes]
    write_store(str(path), range(1, n + 1), [(10, 10)] * n, boxes, features)
    return str(path)


def rewrite(path, name, data):
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)


@pytest.mark.parametrize("name,data,says", [
    ("image_ids", np.array([1, 2, 1], np.int64), "image id 1 appears 2 times"),
    ("image_ids", np.array([b"1", b"2", b"3"]), "image_ids hold strings (dtype |S1), not integers"),
    ("image_ids", np.array([1.0, 2.0, 3.0]), "image_ids hold float64 values, not integers"),
    ("features", np.ones((3, 3, 4), np.int16), "features of int16 values; a store holds float32 or float16"),
    ("boxes", np.zeros((3, 3, 3), np.float32), "boxes of shape (3, 3, 3), not [..., 4]"),
    ("num_boxes", np.zeros(3, np.int32), "none of its 3 images has a region"),
])
def test_a_misleading_store_is_refused_naming_what_is_wrong(tmp_path, name, data, says):
    path = good_store(tmp_path / "f.h5")
    rewrite(path, name, data)
    with pytest.raises(UpdownError) as error:
        FeatureStore(path)
    assert says in str(error.value) and str(error.value).startswith(path)


def test_duplicated_string_keys_are_refused(tmp_path):
    path = good_store(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("image_keys", data=np.array(["a", "b", "a"], dtype=h5py.string_dtype()))
    with pytest.raises(UpdownError, match="image key a appears 2 times"):
        FeatureStore(path)


def test_a_few_images_without_regions_warn_with_their_count(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(good_store(tmp_path / "f.h5", num_boxes=(2, 0, 1)))
    assert len(store) == 3 and "1 of 3 images have no regions (e.g. image 2)" in caplog.text
