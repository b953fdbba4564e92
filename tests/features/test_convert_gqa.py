"""`python -m updown_vqa.features.convert_gqa`: GQA's objects and spatial h5 files into a store keyed by
GQA's string image ids, resumable and atomic."""

import json

import h5py
import numpy as np
import pytest
from conftest import run_module

from updown_vqa.datasets.gqa_synthetic import image_ids, write_features
from updown_vqa.features import convert_gqa
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.writer import StoreWriter


@pytest.fixture(scope="module")
def gqa_features(tmp_path_factory):
    root = tmp_path_factory.mktemp("gqa_features")
    write_features(str(root), image_ids(11), per_file=4, boxes=6, dim=5, grid=3)
    return root


def source(root, kind: str, key: str):
    """The (features, boxes or None, entry) GQA's files hold for image `key`."""
    info = json.loads((root / f"gqa_{kind}_info.json").read_text())[key]
    with h5py.File(root / kind / f"gqa_{kind}_{info['file']}.h5") as f:
        boxes = f["bboxes"][info["idx"]] if kind == "objects" else None
        return f["features"][info["idx"]], boxes, info


def test_objects_keep_the_first_objectsNum_boxes_under_the_string_key(gqa_features, tmp_path):
    out = str(tmp_path / "objects.h5")
    assert convert_gqa.convert("objects", str(gqa_features), out, progress=False) == {"images": 11, "resumed": 0}
    store = FeatureStore(out)
    assert sorted(store.image_keys.tolist()) == sorted(image_ids(11)) and store.feature_dim == 5
    for key in ("n1004", "2300010"):
        features, boxes, info = source(gqa_features, "objects", key)
        row = read_rows(store, store.rows([key]))
        n = info["objectsNum"]
        assert row["num_boxes"][0] == n and (store.image_w[store.rows([key])[0]], store.image_h[store.rows([key])[0]]) == (640, 480)
        np.testing.assert_array_equal(row["features"][0, :n], features[:n])
        np.testing.assert_array_equal(row["boxes"][0, :n], boxes[:n])
    assert not store.has("n9999") and store.has(2300010)  # an int id is looked up as its string


def test_spatial_cells_become_49_regions_with_pixel_boxes(gqa_features, tmp_path):
    out = str(tmp_path / "spatial.h5")
    convert_gqa.convert("spatial", str(gqa_features), out, progress=False)
    store = FeatureStore(out)
    features, _, _ = source(gqa_features, "spatial", "n1004")  # [D, 3, 3]
    row = read_rows(store, store.rows(["n1004"]))
    np.testing.assert_array_equal(row["features"][0], features.reshape(5, 9).T)  # [9, D], row-major cells
    np.testing.assert_allclose(row["boxes"][0, 1], [640 / 3, 0, 2 * 640 / 3, 160])  # sizes from objects info


def test_an_interrupted_conversion_resumes_where_it_stopped(gqa_features, tmp_path, monkeypatch):
    out = str(tmp_path / "objects.h5")
    calls = {"n": 0}
    real_add = StoreWriter.add

    def add_then_fail(self, *args):
        calls["n"] += 1
        if calls["n"] == 6:
            self.flush()
            raise KeyboardInterrupt
        real_add(self, *args)

    monkeypatch.setattr(StoreWriter, "add", add_then_fail)
    with pytest.raises(KeyboardInterrupt):
        convert_gqa.convert("objects", str(gqa_features), out, progress=False)
    monkeypatch.setattr(StoreWriter, "add", real_add)
    assert convert_gqa.convert("objects", str(gqa_features), out, progress=False) == {"images": 11, "resumed": 5}
    reference = str(tmp_path / "reference.h5")
    convert_gqa.convert("objects", str(gqa_features), reference, progress=False)
    a, b = FeatureStore(out), FeatureStore(reference)
    assert a.image_keys.tolist() == b.image_keys.tolist()
    np.testing.assert_array_equal(read_rows(a, np.arange(11))["features"], read_rows(b, np.arange(11))["features"])


def test_a_missing_h5_file_is_one_error_line(gqa_features, tmp_path):
    root = tmp_path / "copy"
    root.mkdir()
    (root / "gqa_objects_info.json").write_text((gqa_features / "gqa_objects_info.json").read_text())
    done = run_module("updown_vqa.features.convert_gqa", "objects", "--root", str(root), "--out", str(tmp_path / "x.h5"))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "error: " in done.stderr and "gqa_objects_0.h5: not found" in done.stderr
