"""The bottom-up detector's training (train_detector) and its checkpoint as extraction weights."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import compose_config, extract_config, run_module
from PIL import Image

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import train
from updown_vqa.detection.data import DetectionDataModule, read_objects
from updown_vqa.detection.model import build_detector
from updown_vqa.detection.module import BottomUpDetector, attribute_loss
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore


def test_attribute_loss_has_one_softmax_term_per_listed_attribute():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    attributes = torch.tensor([[1, 3, -1], [0, -1, -1]])  # object 0: two attributes; object 1: none (0)
    terms = [F.cross_entropy(logits[0:1], torch.tensor([1])), F.cross_entropy(logits[0:1], torch.tensor([3])),
             F.cross_entropy(logits[1:2], torch.tensor([0]))]
    assert torch.isclose(attribute_loss(logits, attributes), torch.stack(terms).mean())


def test_backbone_weights_start_the_detector_body(tmp_path):
    trunk = torchvision.models.resnet18()
    torch.nn.init.normal_(trunk.conv1.weight)
    torch.save(trunk.state_dict(), tmp_path / "resnet18.pt")
    spec = {"backbone": "resnet18", "norm": "frozen", "fpn_channels": 32, "representation_size": 64}
    model = BottomUpDetector(["a"], ["__no_attribute__"], spec, image_size=64,
                             backbone_weights=str(tmp_path / "resnet18.pt"), trainable_layers=2)
    body = model.detector.backbone.body
    assert torch.equal(body.conv1.weight, trunk.conv1.weight)
    assert torch.equal(body.layer2[0].bn1.running_var, trunk.layer2[0].bn1.running_var)
    assert not body.layer2[0].conv1.weight.requires_grad and body.layer3[0].conv1.weight.requires_grad
    with pytest.raises(UpdownError, match="model.backbone_weights=IMAGENET_NOPE: .*neither a file nor a torchvision weight name"):
        BottomUpDetector(["a"], ["__no_attribute__"], spec, backbone_weights="IMAGENET_NOPE")


def write_vg(tmp_path, records, image_ids):
    folder = tmp_path / "vg_images"
    folder.mkdir()
    for i in image_ids:
        Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / f"{i}.jpg")
    path = tmp_path / "attributes.json"
    path.write_text(json.dumps(records))
    return str(path), str(folder)


def test_visual_genome_records_give_classes_attributes_and_targets(tmp_path):
    records = [{"image_id": 7, "attributes": [
        {"x": 1, "y": 2, "w": 10, "h": 5, "names": ["Dog"], "attributes": ["brown", "small"]},
        {"x": 0, "y": 0, "w": 20, "h": 20, "names": ["dog"]},
        {"x": 5, "y": 5, "w": 0, "h": 3, "names": ["cat"], "attributes": ["black"]}]},  # degenerate box
        {"image_id": 9, "objects": [{"x": 3, "y": 3, "w": 8, "h": 8, "names": ["cat"], "attributes": ["brown"]}]}]
    annotations, images = write_vg(tmp_path, records, (7, 9))
    split = {"annotations": annotations, "images": images}
    dm = DetectionDataModule(train=split, val=split, max_classes=10, max_attributes=10)
    dm.setup()
    assert dm.classes == ["dog", "cat"] and dm.attributes[:3] == ["__no_attribute__", "brown", "small"]
    images_, targets = dm.datasets["train"][[0]]
    assert images_[0].shape == (3, 30, 40) and 0 <= images_[0].min() and images_[0].max() <= 1
    assert targets[0]["boxes"].tolist() == [[1, 2, 11, 7], [0, 0, 20, 20]]  # the zero-width box is dropped
    assert targets[0]["labels"].tolist() == [1, 1]  # 0 is the background
    assert targets[0]["attributes"].tolist() == [[1, 2, -1, -1], [0, -1, -1, -1]]


def test_annotations_of_images_not_in_the_folder_are_named(tmp_path):
    dog = {"x": 1, "y": 1, "w": 5, "h": 5, "names": ["dog"]}
    records = [{"image_id": 7, "objects": [dog]}, {"image_id": 8, "objects": [dog]}]
    annotations, images = write_vg(tmp_path, records, (7,))
    split = {"annotations": annotations, "images": images}
    with pytest.raises(UpdownError, match=r"attributes.json: 1 annotated images are not in the image folder \(ids \[8\]\)"):
        DetectionDataModule(train=split, val=split).setup()
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UpdownError, match="broken.json: cannot read the detection annotations"):
        read_objects(str(tmp_path / "broken.json"))


def detector_config(data_dir: str, out_dir: str, *overrides: str):
    shapes = os.path.join(data_dir, "shapes")
    return compose_config([
        f"paths.data_dir={data_dir}", f"paths.log_dir={out_dir}", f"paths.output_dir={out_dir}/run",
        "data.builder=null", f"data.train.images={shapes}/images/train", "model.image_size=64",
        "data.batch_size=4", "data.eval_batch_size=20", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", *overrides], config_name="train_detector")


@pytest.mark.slow
def test_a_trained_detector_checkpoint_is_the_weights_of_region_extraction(data_dir, tmp_path):
    cfg = detector_config(data_dir, str(tmp_path))
    metrics = train(cfg)
    assert {"val/map50", "val/map", "val/attr_acc"} <= set(metrics)
    checkpoint = metrics["best_checkpoint"]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert sorted(saved["hyper_parameters"]["classes"]) == ["circle", "square", "triangle"]
    # extraction rebuilds the recorded architecture (ResNet-18 FPN, small anchors, 4 classes)
    detector = build_detector("resnet152", checkpoint, num_classes=91, image_size=64)
    trained = {k[len("detector."):]: v for k, v in saved["state_dict"].items() if k.startswith("detector.")}
    for name, value in detector.state_dict().items():
        assert torch.equal(value, trained[name]), name
    images = os.path.join(data_dir, "shapes", "images", "val")
    out = str(tmp_path / "regions.h5")
    extract(extract_config(
        f"images={images}", f"out={out}", "mode=regions", f"weights={checkpoint}", "image_size=64",
        "detector.min_boxes=3", "detector.max_boxes=3", "num_workers=0", "spatial_features=true"))
    store = FeatureStore(out)
    assert store.feature_dim == 512 + 4 and len(store.image_ids) == len(glob.glob(f"{images}/*.png"))
    assert store.attrs["backbone"] == "resnet18" and store.attrs["num_classes"] == 4
    assert np.isfinite(read_rows(store, np.arange(2))["features"]).all()
    # the box head's output instead of C5: its width, then the box coordinates
    head_out = str(tmp_path / "regions_box_head.h5")
    extract(extract_config(
        f"images={images}", f"out={head_out}", "mode=regions", f"weights={checkpoint}", "image_size=64",
        "detector.min_boxes=3", "detector.max_boxes=3", "num_workers=0", "spatial_features=true",
        "detector.region_features=box_head"))
    heads = FeatureStore(head_out)
    batch = read_rows(heads, np.arange(2))
    assert heads.feature_dim == 256 + 4 and heads.attrs["region_features"] == "box_head"
    np.testing.assert_allclose(batch["features"][..., -4:], batch["boxes"] / 64, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_command_line_names_unreadable_annotations(tmp_path):
    done = run_module("updown_vqa.train_detector", "data.builder=null",
                      f"data.train.annotations={tmp_path / 'missing.json'}", f"paths.log_dir={tmp_path}")
    assert done.returncode == 1
    assert f"error: {tmp_path / 'missing.json'}: cannot read the detection annotations" in done.stderr
