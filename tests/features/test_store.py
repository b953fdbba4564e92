"""The feature store: both layouts round-trip, reads are batch gathers, bad files give clear errors."""

import h5py
import numpy as np
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore, write_store


def regions(num_images=5, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, num_images)
    boxes = [rng.uniform(0, 50, (n, 4)).astype(np.float32) for n in counts]
    feats = [rng.normal(size=(n, dim)).astype(np.float32) for n in counts]
    return [10 * i + 7 for i in range(num_images)], [(64, 48)] * num_images, boxes, feats


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_round_trip(tmp_path, layout):
    ids, sizes, boxes, feats = regions()
    path = str(tmp_path / "f.h5")
    write_store(path, ids, sizes, boxes, feats, attrs={"extractor": "test"}, layout=layout)
    store = FeatureStore(path)
    assert store.layout == layout and store.attrs["extractor"] == "test"
    assert store.feature_dim == 6 and store.max_boxes == max(len(b) for b in boxes)
    rows = store.rows([ids[3], ids[0], ids[3]])
    batch = read_rows(store, rows)
    for j, i in enumerate([3, 0, 3]):
        n = len(boxes[i])
        assert batch["num_boxes"][j] == n
        np.testing.assert_array_equal(batch["features"][j, :n], feats[i])
        np.testing.assert_array_equal(batch["boxes"][j, :n], boxes[i])
        assert np.all(batch["features"][j, n:] == 0)


def test_float16_store_is_read_as_float16(tmp_path):
    ids, sizes, boxes, feats = regions()
    write_store(str(tmp_path / "f.h5"), ids, sizes, boxes, feats, dtype="float16")
    batch = read_rows(FeatureStore(str(tmp_path / "f.h5")), np.array([0, 1]))
    assert batch["features"].dtype == np.float16
    np.testing.assert_array_equal(batch["features"][0, : len(feats[0])], feats[0].astype(np.float16))


def test_chunked_store_reads_like_a_contiguous_one(tmp_path):
    ids, sizes, boxes, feats = regions()
    write_store(str(tmp_path / "a.h5"), ids, sizes, boxes, feats)
    with h5py.File(tmp_path / "a.h5") as src, h5py.File(tmp_path / "b.h5", "w") as dst:
        for key in src:
            data = src[key][:]
            dst.create_dataset(key, data=data, chunks=True if data.ndim > 1 else None,
                               compression="gzip" if data.ndim > 1 else None)
    rows = np.array([4, 2, 2, 0])
    a, b = read_rows(FeatureStore(str(tmp_path / "a.h5")), rows), read_rows(FeatureStore(str(tmp_path / "b.h5")), rows)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_missing_file_and_wrong_file_are_named(tmp_path):
    with pytest.raises(UpdownError, match="nope.h5: features file not found"):
        FeatureStore(str(tmp_path / "nope.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(UpdownError, match="other.h5: not a feature store"):
        FeatureStore(str(tmp_path / "other.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UpdownError, match="junk.h5: cannot read"):
        FeatureStore(str(tmp_path / "junk.h5"))


def test_unknown_image_id_is_named(tmp_path):
    ids, sizes, boxes, feats = regions()
    write_store(str(tmp_path / "f.h5"), ids, sizes, boxes, feats)
    with pytest.raises(UpdownError, match="q.json: image id 99 is not in the features file"):
        FeatureStore(str(tmp_path / "f.h5")).rows([7, 99], source="q.json")


def test_write_is_atomic_and_rejects_duplicates(tmp_path):
    ids, sizes, boxes, feats = regions()
    path = tmp_path / "f.h5"
    write_store(str(path), ids, sizes, boxes, feats)
    before = path.read_bytes()
    with pytest.raises(UpdownError, match="duplicate image ids"):
        write_store(str(path), [1, 1, 2, 3, 4], sizes, boxes, feats)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


def test_a_store_with_an_unknown_extra_dataset_still_opens_and_reads(tmp_path):
    """The extension rule: optional datasets added later never break a reader that does not know them."""
    ids, sizes, boxes, feats = regions()
    path = str(tmp_path / "f.h5")
    write_store(path, ids, sizes, boxes, feats)
    plain = read_rows(FeatureStore(path), np.arange(len(ids)))
    with h5py.File(path, "a") as f:
        f["object_labels_from_the_future"] = np.arange(sum(len(b) for b in boxes))
    store = FeatureStore(path)
    extended = read_rows(store, np.arange(len(ids)))
    assert store.attrs.get("format_version") == 1
    for key in ("features", "boxes", "num_boxes"):
        np.testing.assert_array_equal(extended[key], plain[key])
