"""StoreWriter: appends, resumes after an interruption, and finalizes into a contiguous store."""

import os

import h5py
import numpy as np
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.features import sorted_copy
from updown_vqa.features import writer as writer_module
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.writer import StoreWriter

D = 8


def make_images(ids, seed=0):
    """{image_id: (w, h, boxes [n, 4], features [n, D])} with a different box count per image."""
    rng = np.random.default_rng(seed)
    images = {}
    for image_id in ids:
        n = int(rng.integers(1, 7))
        boxes = rng.uniform(0, 400, (n, 4)).astype(np.float32)
        images[image_id] = (640, 480 + image_id, boxes, rng.standard_normal((n, D), np.float32))
    return images


def add_all(writer, images):
    for image_id, (w, h, boxes, feats) in images.items():
        writer.add(image_id, w, h, boxes, feats)


def assert_store_matches(path, images, dtype=np.float32):
    """Every image reads back from FeatureStore with its own boxes, features and size."""
    store = FeatureStore(path)
    assert store.image_ids.tolist() == sorted(images)
    batch = read_rows(store, store.rows(list(images)))
    for b, (image_id, (w, h, boxes, feats)) in enumerate(images.items()):
        n = len(boxes)
        assert batch["num_boxes"][b] == n
        np.testing.assert_array_equal(batch["boxes"][b, :n], boxes)
        np.testing.assert_array_equal(batch["features"][b, :n], feats.astype(dtype))
        assert not batch["features"][b, n:].any()
        row = store.rows([image_id])[0]
        assert (store.image_w[row], store.image_h[row]) == (w, h)
    return store


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_finalize_gives_a_contiguous_sorted_store(tmp_path, layout):
    path = str(tmp_path / "f.h5")
    images = make_images([42, 7, 19, 3, 100])
    with StoreWriter(path, D, attrs={"extractor": "test"}) as writer:
        add_all(writer, images)
        assert writer.finalize(layout) == path
    store = assert_store_matches(path, images)
    assert store.layout == layout
    assert store.attrs["extractor"] == "test" and store.attrs["format_version"] == 1
    with h5py.File(path) as f:
        for name in ("features", "boxes"):
            assert f[name].chunks is None and f[name].compression is None
            assert f[name].id.get_offset() is not None  # so the loader can pread it at a byte offset
    assert os.listdir(tmp_path) == ["f.h5"]  # work and tmp files are gone


def test_float16_store_equals_the_cast(tmp_path):
    path = str(tmp_path / "f.h5")
    images = make_images(range(5))
    with StoreWriter(path, D, dtype="float16") as writer:
        add_all(writer, images)
        writer.finalize("flat")
    assert FeatureStore(path).dtype == np.float16
    assert_store_matches(path, images, np.float16)


def test_float16_overflow_is_an_error_but_inf_and_nan_pass(tmp_path):
    with StoreWriter(str(tmp_path / "f.h5"), D, dtype="float16", allow_nonfinite=True) as writer:
        features = np.full((2, D), 7e4, np.float32)
        with pytest.raises(UpdownError, match="image id 4 has features beyond the float16 range"):
            writer.add(4, 10, 10, np.zeros((2, 4)), features)
        features[:] = [np.inf], [np.nan]
        writer.add(4, 10, 10, np.zeros((2, 4)), features)


def test_resume_after_interruption_keeps_the_written_images(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "BLOCK_IMAGES", 3)  # several flushes before the crash
    path = str(tmp_path / "f.h5")
    images = make_images(range(10))
    first, rest = dict(list(images.items())[:7]), dict(list(images.items())[7:])
    with pytest.raises(KeyboardInterrupt), StoreWriter(path, D) as writer:
        add_all(writer, first)
        raise KeyboardInterrupt
    assert not os.path.exists(path)  # nothing that looks finished
    with StoreWriter(path, D) as writer:
        assert writer.done_ids == set(first)
        add_all(writer, rest)
        writer.finalize("padded")
    assert_store_matches(path, images)


def test_flush_interrupted_part_way_is_not_written_twice(tmp_path, monkeypatch):
    path = str(tmp_path / "f.h5")
    images = make_images(range(4))
    real_write_at, calls = writer_module._write_at, []

    def interrupt_third_write(*args):
        calls.append(args)
        if len(calls) == 3:  # image ids and widths written, heights not yet
            raise KeyboardInterrupt
        real_write_at(*args)

    monkeypatch.setattr(writer_module, "_write_at", interrupt_third_write)
    with pytest.raises(KeyboardInterrupt), StoreWriter(path, D) as writer:
        add_all(writer, images)
        writer.flush()  # interrupted; leaving the `with` flushes again
    with StoreWriter(path, D) as writer:
        assert writer.done_ids == set(images)
        writer.finalize()
    assert_store_matches(path, images)


def test_resume_drops_rows_of_an_unfinished_flush(tmp_path):
    path = str(tmp_path / "f.h5")
    images = make_images(range(4))
    with StoreWriter(path, D) as writer:
        add_all(writer, dict(list(images.items())[:2]))
    with h5py.File(f"{path}.work.h5", "r+") as f:  # a flush killed before it committed its counts
        for name in ("image_ids", "features"):
            f[name].resize(len(f[name]) + 1, axis=0)
        f["image_ids"][-1] = 2
    with StoreWriter(path, D) as writer:
        assert writer.done_ids == {0, 1}
        add_all(writer, dict(list(images.items())[2:]))
        writer.finalize()
    assert_store_matches(path, images)


def test_restart_discards_the_work_file(tmp_path):
    path = str(tmp_path / "f.h5")
    with StoreWriter(path, D) as writer:
        add_all(writer, make_images([1, 2]))
    with StoreWriter(path, D, resume=False) as writer:
        assert writer.done_ids == set()


def test_resume_with_other_settings_is_an_error(tmp_path):
    path = str(tmp_path / "f.h5")
    with StoreWriter(path, D) as writer:
        add_all(writer, make_images([1]))
    with pytest.raises(UpdownError, match=r"feature_dim=8, dtype=float32 .*feature_dim=16"):
        StoreWriter(path, 16)
    with pytest.raises(UpdownError, match="dtype=float16"):
        StoreWriter(path, D, dtype="float16")


def test_duplicate_id_is_an_error_naming_it(tmp_path):
    images = make_images([5])
    with StoreWriter(str(tmp_path / "f.h5"), D) as writer:
        add_all(writer, images)
        with pytest.raises(UpdownError, match="image id 5 added twice"):
            add_all(writer, images)


def test_duplicate_of_an_earlier_run_is_an_error(tmp_path):
    path = str(tmp_path / "f.h5")
    images = make_images([5])
    with StoreWriter(path, D) as writer:
        add_all(writer, images)
    with StoreWriter(path, D) as writer, pytest.raises(UpdownError, match="image id 5"):
        add_all(writer, images)


def test_wrong_shapes_are_an_error(tmp_path):
    with StoreWriter(str(tmp_path / "f.h5"), D) as writer:
        with pytest.raises(UpdownError, match=r"image id 3 .*expected \[n, 4\] and \[n, 8\]"):
            writer.add(3, 10, 10, np.zeros((2, 4)), np.zeros((2, D + 1)))
        with pytest.raises(UpdownError, match="image id 3"):
            writer.add(3, 10, 10, np.zeros((3, 4)), np.zeros((2, D)))
        assert writer.done_ids == set()  # a rejected image can still be added


def test_skipped_ids_and_reasons_are_recorded(tmp_path):
    path = str(tmp_path / "f.h5")
    with StoreWriter(path, D) as writer:
        add_all(writer, make_images([1, 2]))
        writer.skip(9, "unreadable image")
        writer.skip(4, "no boxes")
        writer.skip(3, "not found")
    with StoreWriter(path, D) as writer:  # skips survive a resume; an id added later is unskipped
        writer.skip(4, "no boxes")
        add_all(writer, make_images([3]))
        writer.finalize()
    assert FeatureStore(path).skipped.tolist() == [4, 9]
    with h5py.File(path) as f:
        assert [r.decode() for r in f["skipped_reasons"][:]] == ["no boxes", "unreadable image"]


def test_empty_skip_list_leaves_no_dataset(tmp_path):
    path = str(tmp_path / "f.h5")
    with StoreWriter(path, D) as writer:
        add_all(writer, make_images([1]))
        writer.finalize()
    assert FeatureStore(path).skipped.tolist() == []


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_finalize_copies_in_several_slices(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(sorted_copy, "SLICE_BYTES", 3 * 6 * D * 4)  # three images per slice
    monkeypatch.setattr(writer_module, "BLOCK_IMAGES", 4)
    path = str(tmp_path / "f.h5")
    images = make_images(np.random.default_rng(1).permutation(40).tolist())
    with StoreWriter(path, D) as writer:
        add_all(writer, images)
        writer.finalize(layout)
    assert_store_matches(path, images)
