"""`extract`: image ids from names, grid/boxes/regions features equal to their recipes, resuming, skips."""

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import extract_config, run_module, write_images
from PIL import Image
from torch import nn

from updown_vqa.core.errors import UpdownError
from updown_vqa.detection.model import build_detector
from updown_vqa.extraction.extractors import build_extractor, extract
from updown_vqa.extraction.one_image import image_features
from updown_vqa.features.boxes import extract_box_features
from updown_vqa.features.images import extract_to_store, image_id, list_images
from updown_vqa.features.loading import read_rows
from updown_vqa.features.rois import roi_features
from updown_vqa.features.store import FeatureStore

SIZE = 64  # image_size: a 2x2 grid of cells at stride 32


def by_hand(paths, size=SIZE):
    """The preprocessing recipe written out: RGB, bilinear resize, [0, 1], ImageNet mean and std."""
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A randomly initialised resnet18 saved as a state dict: the weights a user would pass."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


def test_image_ids_come_from_the_end_of_file_names(tmp_path):
    assert image_id("COCO_val2014_000000000042.jpg") == 42 and image_id("17.png") == 17
    assert image_id("cat.jpg") is None
    for name in ("COCO_val2014_000000000042.jpg", "17.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list_images(str(tmp_path)) == {42: str(tmp_path / "COCO_val2014_000000000042.jpg"),
                                           17: str(tmp_path / "17.png")}
    (tmp_path / "cat.jpg").write_bytes(b"")
    with pytest.raises(UpdownError, match=r"do not end in an integer image id.*cat\.jpg"):
        list_images(str(tmp_path))
    os.remove(tmp_path / "cat.jpg")
    (tmp_path / "0017.jpg").write_bytes(b"")
    with pytest.raises(UpdownError, match=r"0017\.jpg and 17\.png both have image id 17"):
        list_images(str(tmp_path))


def test_grid_features_are_the_resnet_recipe_by_hand(tmp_path, resnet18_file):
    paths = write_images(tmp_path / "images")
    out = str(tmp_path / "grid.h5")
    extract(extract_config(f"images={tmp_path / 'images'}", f"out={out}", "backbone=resnet18",
                           f"weights={resnet18_file}", f"image_size={SIZE}", "num_workers=0"))
    resnet = torchvision.models.resnet18()
    resnet.load_state_dict(torch.load(resnet18_file))
    with torch.no_grad():
        grid = nn.Sequential(*list(resnet.children())[:-2]).eval()(by_hand(paths.values()))
    expected = grid.flatten(2).transpose(1, 2).numpy()  # [B, 4 cells, 512]
    store = FeatureStore(out)
    batch = read_rows(store, store.rows(list(paths)))
    np.testing.assert_allclose(batch["features"], expected, rtol=1e-4, atol=1e-5)
    w, h = 50, 70  # image 2: cells are quarters of the original image, row by row
    assert batch["boxes"][1].tolist() == [[0, 0, w / 2, h / 2], [w / 2, 0, w, h / 2],
                                          [0, h / 2, w / 2, h], [w / 2, h / 2, w, h]]
    assert store.attrs["extractor"] == "grid" and store.attrs["weights"] == resnet18_file
    assert len(store.attrs["weights_sha256"]) == 64 and store.attrs["image_size"] == SIZE


def test_unusual_images_are_converted_and_unreadable_ones_skipped(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, sizes=((40, 30),))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(folder / "2.png")  # gray
    Image.new("CMYK", (40, 30), (0, 255, 0, 0)).save(folder / "3.jpg")
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(folder / "4.png")  # fully transparent
    (folder / "5.jpg").write_bytes(b"\xff\xd8 truncated")
    out = str(tmp_path / "f.h5")
    extract(extract_config(f"images={folder}", f"out={out}", "backbone=resnet18",
                           "allow_random_weights=true", f"image_size={SIZE}", "num_workers=1",
                           "dtype=float16"))
    store = FeatureStore(out)
    assert store.image_ids.tolist() == [1, 2, 3, 4] and store.skipped.tolist() == [5]
    assert store.dtype == np.float16
    assert np.isfinite(read_rows(store, store.rows([1, 2, 3, 4]))["features"]).all()


class Interrupting:
    """Wraps an extractor; raises KeyboardInterrupt on call `stop_at`, and records the ids it saw."""

    def __init__(self, extractor, stop_at=None):
        self.extractor, self.stop_at, self.seen = extractor, stop_at, []

    def __call__(self, images, sizes, ids):
        if len(self.seen) // 2 == self.stop_at:
            raise KeyboardInterrupt
        self.seen += list(ids)
        return self.extractor(images, sizes, ids)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    paths = write_images(tmp_path / "images", sizes=[(40, 40)] * 5)
    recipe = {"extractor": "grid", "backbone": "resnet18", "weights": "random", "seed": 0,
              "image_size": SIZE, "spatial_features": False, "stage": "layer2"}
    grid = build_extractor(recipe)
    out = str(tmp_path / "f.h5")
    first = Interrupting(grid, stop_at=1)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(paths, first, 128, out, recipe, SIZE, batch_size=2)
    assert first.seen == [1, 2] and not os.path.exists(out)
    with pytest.raises(UpdownError, match="other settings.*stage.*restart=true"):
        extract_to_store(paths, grid, 128, out, recipe | {"stage": "layer3"}, SIZE, batch_size=2)
    second = Interrupting(grid)
    extract_to_store(paths, second, 128, out, recipe, SIZE, batch_size=2)
    assert second.seen == [3, 4, 5]
    store = FeatureStore(out)
    assert store.image_ids.tolist() == [1, 2, 3, 4, 5] and store.attrs["stage"] == "layer2"
    fresh = str(tmp_path / "fresh.h5")
    extract_to_store(paths, grid, 128, fresh, recipe, SIZE, batch_size=5)
    np.testing.assert_allclose(read_rows(FeatureStore(fresh), np.arange(5))["features"],
                               read_rows(store, np.arange(5))["features"], rtol=1e-4, atol=1e-5)


def test_boxes_mode_and_the_shapes_builder_share_one_path(tmp_path, resnet18_file):
    paths = write_images(tmp_path / "images", sizes=((80, 60), (50, 70)))
    boxes = {1: [[0, 0, 40, 30], [10, 10, 80, 60]], 2: [[5, 5, 45, 65]]}
    (tmp_path / "boxes.json").write_text(json.dumps({str(k): v for k, v in boxes.items()}))
    cli = str(tmp_path / "cli.h5")
    extract(extract_config(f"images={tmp_path / 'images'}", f"out={cli}", "mode=boxes",
                           f"boxes={tmp_path / 'boxes.json'}", "backbone=resnet18", "trunk=layer3",
                           "roi_output_size=2", "spatial_features=true",
                           f"weights={resnet18_file}", f"image_size={SIZE}", "num_workers=0"))
    builder = str(tmp_path / "builder.h5")
    extract_box_features(paths, {k: np.asarray(v) for k, v in boxes.items()}, builder,
                         backbone="resnet18", weights=resnet18_file, stage="layer3", output_size=2,
                         image_size=SIZE)
    resnet = torchvision.models.resnet18()
    resnet.load_state_dict(torch.load(resnet18_file))
    trunk = nn.Sequential(*list(resnet.children())[:-3]).eval()  # up to layer3, stride 16
    expected = roi_features(trunk, by_hand(paths.values()),
                            [torch.tensor(boxes[i], dtype=torch.float32) for i in (1, 2)],
                            stride=16, output_size=2, image_sizes=[(80, 60), (50, 70)])
    for path in (cli, builder):
        batch = read_rows(FeatureStore(path), np.arange(2))
        assert batch["features"].shape == (2, 2, 256 * 4 + 4)
        np.testing.assert_allclose(batch["features"][0], expected[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batch["features"][1, :1], expected[1], rtol=1e-4, atol=1e-5)
    (tmp_path / "boxes.json").write_text(json.dumps({"1": boxes[1]}))
    with pytest.raises(UpdownError, match=r"boxes.json: no boxes for image ids \[2\]"):
        extract(extract_config(f"images={tmp_path / 'images'}", f"out={cli}", "mode=boxes",
                               f"boxes={tmp_path / 'boxes.json'}", "backbone=resnet18",
                               f"weights={resnet18_file}", "restart=true"))


def test_region_mode_selects_boxes_and_pools_c5_of_the_detector(tmp_path):
    detector = build_detector("resnet18", num_classes=4, image_size=SIZE, seed=1)
    detector_file = str(tmp_path / "detector.pt")
    torch.save(detector.state_dict(), detector_file)
    paths = write_images(tmp_path / "images", sizes=((80, 60), (64, 64)))
    out = str(tmp_path / "regions.h5")
    extract(extract_config(f"images={tmp_path / 'images'}", f"out={out}", "mode=regions",
                           "backbone=resnet18", f"weights={detector_file}", f"image_size={SIZE}",
                           "detector.num_classes=4", "detector.proposals=40",
                           "detector.min_boxes=5", "detector.max_boxes=5", "num_workers=0"))
    store = FeatureStore(out)
    batch = read_rows(store, np.arange(2))
    assert store.num_boxes.tolist() == [5, 5] and store.feature_dim == 512
    assert (batch["boxes"][0, :, [0, 2]] <= 80).all() and (batch["boxes"][0, :, [1, 3]] <= 60).all()
    # the documented choice: RoIAlign 1x1 on the layer4 output of the detector's own ResNet body
    trunk = nn.Sequential(*detector.backbone.body.values())
    expected = roi_features(trunk, by_hand(paths.values()), [torch.from_numpy(b) for b in batch["boxes"]],
                            stride=32, output_size=1, image_sizes=[(80, 60), (64, 64)], spatial=False)
    np.testing.assert_allclose(batch["features"], torch.stack(expected).numpy(), rtol=1e-4, atol=1e-5)
    assert store.attrs["extractor"] == "regions" and store.attrs["nms_iou"] == 0.3
    boxes, features = image_features(store.attrs, paths[1])  # as `answer` remakes them
    np.testing.assert_allclose(boxes.numpy(), batch["boxes"][0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(features.numpy(), batch["features"][0], rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_stays_close_to_float32(tmp_path):
    paths = write_images(tmp_path / "images", sizes=((40, 40), (30, 50)))
    recipe = {"extractor": "grid", "backbone": "resnet18", "weights": "random", "seed": 0,
              "image_size": SIZE, "spatial_features": False, "stage": "layer3"}
    grid = build_extractor(recipe)
    for name, autocast in (("f32.h5", False), ("bf16.h5", True)):
        extract_to_store(paths, grid, 256, str(tmp_path / name), recipe, SIZE, autocast=autocast)
    full, half = (read_rows(FeatureStore(tmp_path / n), np.arange(2))["features"] for n in ("f32.h5", "bf16.h5"))
    assert not np.array_equal(full, half)
    np.testing.assert_allclose(half, full, rtol=0.1, atol=0.1 * np.abs(full).mean())


@pytest.mark.slow
def test_the_command_line_reports_missing_weights_and_how_to_provide_them(tmp_path):
    write_images(tmp_path / "images", sizes=((40, 40),))
    done = run_module("updown_vqa.extract", f"images={tmp_path / 'images'}", f"out={tmp_path / 'f.h5'}",
                      "backbone=resnet18", f"paths.log_dir={tmp_path / 'logs'}")
    assert done.returncode == 1
    assert "error: resnet18: weights=DEFAULT" in done.stderr
    assert "allow_random_weights=true" in done.stderr and "weights=PATH" in done.stderr
