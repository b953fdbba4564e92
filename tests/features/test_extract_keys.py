"""`extract` over a folder whose file names are not integer ids (GQA's "n161313.jpg"): a store with
`image_keys`, looked up by the names' stems."""

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.images import list_images, list_keyed_images
from updown_vqa.features.store import FeatureStore


def write(folder, names):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / name)


def test_integer_names_keep_integer_ids_and_other_names_become_keys(tmp_path):
    write(tmp_path / "coco", ["COCO_val2014_000000000042.jpg", "17.png"])
    assert list_keyed_images(str(tmp_path / "coco")) == (list_images(str(tmp_path / "coco")), None)
    write(tmp_path / "gqa", ["2354786.jpg", "n161313.jpg", "n1.png"])
    assert list_keyed_images(str(tmp_path / "gqa"))[1] is None  # every name ends in an integer
    images, keys = list_keyed_images(str(tmp_path / "gqa"), by_name=True)
    assert keys == ["2354786", "n1", "n161313"] and images[2].endswith("n161313.jpg")
    write(tmp_path / "names", ["2354786.jpg", "cat.jpg"])  # not every name ends in an integer: keys
    assert list_keyed_images(str(tmp_path / "names")) == ({0: str(tmp_path / "names" / "2354786.jpg"),
                                                           1: str(tmp_path / "names" / "cat.jpg")}, ["2354786", "cat"])
    write(tmp_path / "gqa", ["n1.jpg"])
    with pytest.raises(UpdownError, match=r"n1\.jpg and n1\.png both have image key n1"):
        list_keyed_images(str(tmp_path / "gqa"), by_name=True)


@pytest.mark.slow
def test_extract_writes_image_keys_and_is_up_to_date_on_a_rerun(tmp_path, capsys):
    write(tmp_path / "images", ["2354786.jpg", "n161313.jpg"])
    out = str(tmp_path / "f.h5")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("extract/config", overrides=[f"images={tmp_path / 'images'}", f"out={out}", "backbone=resnet18",
                                                   "allow_random_weights=true", "image_size=64", "num_workers=0", "ids=name"])
    extract(cfg)
    store = FeatureStore(out)
    assert store.image_keys.tolist() == ["2354786", "n161313"]
    assert store.rows(["n161313"]).tolist() == [1] and store.has("2354786") and not store.has("n1")
    capsys.readouterr()
    extract(cfg)
    assert "up to date" in capsys.readouterr().out
