"""The optional per-box datasets (object_ids, object_scores, attribute_ids, attribute_scores):
written beside boxes, sorted by image id, padded or flat, kept across a resume."""

import h5py
import numpy as np
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.writer import StoreWriter

NAMES = ("object_ids", "object_scores", "attribute_ids", "attribute_scores")


def labels(image_id, n):
    return {"object_ids": np.arange(n) + 10 * image_id, "object_scores": np.full(n, image_id / 10),
            "attribute_ids": np.arange(n)[::-1].copy(), "attribute_scores": np.full(n, 0.5)}


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_per_box_labels_follow_their_boxes_through_resume_and_sorting(tmp_path, layout):
    path = str(tmp_path / "s.h5")
    counts = {7: 3, 2: 1, 5: 2}
    with StoreWriter(path, 4, per_box=NAMES) as writer:
        writer.add(7, 10, 10, np.zeros((3, 4)), np.ones((3, 4)), labels(7, 3))
    with StoreWriter(path, 4, per_box=NAMES) as writer:  # resumed
        for i in (2, 5):
            writer.add(i, 10, 10, np.zeros((counts[i], 4)), np.ones((counts[i], 4)), labels(i, counts[i]))
        writer.finalize(layout)
    store = FeatureStore(path)  # readers ignore the extra datasets
    assert store.image_ids.tolist() == [2, 5, 7]
    with h5py.File(path) as f:
        ids = f["object_ids"][:]
        if layout == "padded":
            assert ids.tolist() == [[20, 0, 0], [50, 51, 0], [70, 71, 72]]
        else:
            assert ids.tolist() == [20, 50, 51, 70, 71, 72]
        assert f["object_scores"].dtype == np.float32 and f["attribute_ids"].dtype == np.int32


def test_resuming_with_other_per_box_datasets_is_an_error(tmp_path):
    path = str(tmp_path / "s.h5")
    with StoreWriter(path, 4, per_box=NAMES) as writer:
        writer.add(1, 10, 10, np.zeros((1, 4)), np.ones((1, 4)), labels(1, 1))
    with pytest.raises(UpdownError, match="other per-box datasets"):
        StoreWriter(path, 4)
