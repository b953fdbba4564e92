"""Two names, two meanings: `extract trunk=layerN` cuts the ResNet trunk, `stage=` is the training stage;
`extract stage=layerN` still works with a one-line deprecation warning."""

import logging

import numpy as np
import pytest
from conftest import extract_config, write_images
from omegaconf import OmegaConf

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import check_settings
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.loading import read_rows
from updown_vqa.features.rois import build_trunk
from updown_vqa.features.store import FeatureStore

SIZE = 64


def run_extract(tmp_path, name, *overrides):
    out = str(tmp_path / f"{name}.h5")
    extract(extract_config(f"images={tmp_path / 'images'}", f"out={out}", "backbone=resnet18",
                           "allow_random_weights=true", f"image_size={SIZE}", "num_workers=0", *overrides))
    return FeatureStore(out)


def test_trunk_cuts_the_grid_and_the_old_stage_name_gives_the_same_store_with_one_warning(tmp_path, caplog):
    write_images(tmp_path / "images", sizes=((80, 60), (64, 64)))
    with caplog.at_level(logging.WARNING, logger="updown_vqa.extraction"):
        default = run_extract(tmp_path, "default")
        new = run_extract(tmp_path, "new", "trunk=layer3")
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert default.attrs["stage"] == "layer4" and new.attrs["stage"] == "layer3"
    assert (default.max_boxes, default.feature_dim) == (4, 512)  # 64 px / stride 32: 2x2 cells of 512
    assert (new.max_boxes, new.feature_dim) == (16, 256)  # stride 16: 4x4 cells of 256

    with caplog.at_level(logging.WARNING, logger="updown_vqa.extraction"):
        old = run_extract(tmp_path, "old", "stage=layer3")
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == ["extract: stage=layer3 is deprecated, use trunk=layer3 (stage is the training stage)"]
    assert {k: v for k, v in old.attrs.items() if k != "created"} == \
        {k: v for k, v in new.attrs.items() if k != "created"}
    np.testing.assert_array_equal(read_rows(old, np.arange(2))["features"], read_rows(new, np.arange(2))["features"])


@pytest.mark.parametrize("override,message", [
    ("trunk=layer5", "trunk='layer5': must be one of layer1, layer2, layer3, layer4"),
    ("stage=scst", "stage='scst': must be one of layer1, layer2, layer3, layer4"),
])
def test_an_unknown_trunk_cut_is_one_error_naming_the_key(tmp_path, override, message):
    write_images(tmp_path / "images", sizes=((64, 64),))
    with pytest.raises(UpdownError, match=message):
        run_extract(tmp_path, "bad", override)
    assert not (tmp_path / "bad.h5").exists()


def test_build_trunk_refuses_an_unknown_cut_before_loading_weights():  # the shapes builder's path
    with pytest.raises(UpdownError, match="trunk='layer9': the trunk ends after one of layer1, layer2"):
        build_trunk("resnet18", "/nonexistent/weights.pt", "layer9")


def test_training_refuses_a_trunk_cut_as_its_stage():
    check_settings(OmegaConf.create({"stage": "scst"}))
    with pytest.raises(UpdownError, match="stage='layer3': must be one of xe, scst"):
        check_settings(OmegaConf.create({"stage": "layer3"}))
