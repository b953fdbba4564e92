"""extract: NaN features refused (unless allow_nonfinite=true), and an unfinished store resumes only on
the image folder it was started on."""

import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.extraction.extractors import build_extractor, extract
from updown_vqa.features import images as images_module
from updown_vqa.features.images import extract_to_store
from updown_vqa.features.store import FeatureStore

SIZE = 64
RECIPE = {"extractor": "grid", "backbone": "resnet18", "weights": "random", "seed": 0, "image_size": SIZE,
          "spatial_features": False, "stage": "layer2"}


def write_images(folder, count=4):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(1, count + 1):
        paths[i] = os.path.join(folder, f"COCO_val2014_{i:012d}.png")
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(paths[i])
    return paths


def poisoning(extractor, image_id):
    """The extractor, with NaN in one image's features."""
    def run(images, sizes, ids):
        out = extractor(images, sizes, ids)
        return [(b, f.clone().fill_(float("nan")) if i == image_id else f) for i, (b, f) in zip(ids, out)]
    return run


def killed_after_one_batch(monkeypatch, extract_once) -> None:
    """Run `extract_once()` with the writer stopped (Ctrl-C) after its first batch, then unpatched."""
    original, calls = images_module._write_batch, []

    def write_one(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(images_module, "_write_batch", write_one)
    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        extract_once()
    monkeypatch.setattr(images_module, "_write_batch", original)


def test_extract_refuses_nan_features_unless_allowed(tmp_path):
    paths = write_images(tmp_path / "images")
    grid = poisoning(build_extractor(RECIPE), 3)
    out = str(tmp_path / "f.h5")
    with pytest.raises(UpdownError, match=r"f.h5: non-finite features \(NaN or inf\) for image id 3;.*allow_nonfinite"):
        extract_to_store(paths, grid, 128, out, RECIPE, SIZE, batch_size=2)
    extract_to_store(paths, grid, 128, out, RECIPE, SIZE, batch_size=2, resume=False, allow_nonfinite=True)
    assert FeatureStore(out).attrs["all_finite"] is False


def test_an_unfinished_extraction_resumes_only_on_its_own_image_folder(tmp_path, monkeypatch):
    write_images(tmp_path / "a")
    write_images(tmp_path / "b")
    out = str(tmp_path / "f.h5")
    def config(folder, *extra):
        with initialize_config_dir(config_dir(), version_base="1.3"):
            return compose("extract/config", overrides=[
                f"images={tmp_path / folder}", f"out={out}", "backbone=resnet18", "allow_random_weights=true",
                f"image_size={SIZE}", "trunk=layer2", "batch_size=2", "num_workers=0", *extra])

    killed_after_one_batch(monkeypatch, lambda: extract(config("a")))
    with pytest.raises(UpdownError, match=rf"other inputs \(image_files: .*images: '{tmp_path / 'a'}' -> "
                                          rf"'{tmp_path / 'b'}'\).*restart=true"):
        extract(config("b"))
    extract(config("b", "restart=true"))
    assert FeatureStore(out).image_ids.tolist() == [1, 2, 3, 4]


def test_an_unfinished_extraction_does_not_resume_onto_an_edited_image(tmp_path, monkeypatch):
    """The folder is the same, one image's content is not: its ctime moved (a stat, no read)."""
    write_images(tmp_path / "a")
    out = str(tmp_path / "f.h5")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        config = compose("extract/config", overrides=[
            f"images={tmp_path / 'a'}", f"out={out}", "backbone=resnet18", "allow_random_weights=true",
            f"image_size={SIZE}", "stage=layer2", "batch_size=2", "num_workers=0"])
    killed_after_one_batch(monkeypatch, lambda: extract(config))
    last = sorted((tmp_path / "a").iterdir())[-1]
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(last)
    with pytest.raises(UpdownError, match=r"other inputs \(image_files: '4 files, sha1 \w+' -> '4 files, sha1 \w+'\)"):
        extract(config)
