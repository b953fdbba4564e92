"""`extract mode=regions detector.arch=c4`: the stored regions are the detector's selected proposals
with their labels; vocabularies are checked against the heads; bad images are skipped."""

import os

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.detection.c4_regions import build_c4
from updown_vqa.detection.selection import select_indices
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.store import FeatureStore

C4 = ("mode=regions", "detector.arch=c4", "detector.depth=18", "allow_random_weights=true",
      "weights=random", "detector.num_classes=5", "detector.num_attributes=4", "min_size=64",
      "max_size=96", "detector.min_boxes=2", "detector.max_boxes=6", "num_workers=0", "batch_size=2")


def config(*overrides):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("extract/config", overrides=list(overrides))


def images(folder, sizes=((90, 60), (50, 70), (64, 64))):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes, start=1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
    return folder


@pytest.mark.slow
def test_c4_regions_are_the_selected_proposals_with_their_labels(tmp_path):
    folder = images(tmp_path / "img")
    with open(folder / "4.jpg", "wb") as f:
        f.write(b"not a jpeg")
    out = str(tmp_path / "c4.h5")
    extract(config(f"images={folder}", f"out={out}", *C4))
    store = FeatureStore(out)
    assert store.attrs["detector_arch"] == "c4" and store.feature_dim == 512
    assert store.skipped.tolist() == [4]
    detector = build_c4(depth=18, num_classes=5, num_attributes=4, seed=0)
    image = torch.from_numpy(np.array(Image.open(folder / "1.png"))).permute(2, 0, 1)
    [out1] = detector.detect([image], 64, 96)
    order, _, _ = select_indices(out1["boxes"], out1["class_probs"][:, 1:], 0.3, 0.2, 2, 6,
                                 pixel_offset=1)
    with h5py.File(out) as f:
        row = int(np.flatnonzero(f["image_ids"][:] == 1)[0])
        count = int(f["num_boxes"][row])
        assert count == len(order) and 2 <= count <= 6
        assert np.allclose(f["boxes"][row, :count], out1["boxes"][order].numpy(), atol=1e-3)
        assert np.allclose(f["features"][row, :count], out1["features"][order].numpy(), atol=1e-3)
        ids = out1["class_probs"][order, 1:].argmax(dim=1).numpy()
        assert (f["object_ids"][row, :count] == ids).all()
        for name in ("object_scores", "attribute_ids", "attribute_scores"):
            assert f[name].shape == f["boxes"].shape[:2]


def test_a_vocabulary_that_does_not_match_the_head_is_an_error(tmp_path):
    folder = images(tmp_path / "img", ((40, 40),))
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("dog,dogs\ncat\nball\n")  # 3 names, the head has 4 besides background
    with pytest.raises(UpdownError, match="objects_vocab.txt: 3 names but the detector's head has 4"):
        extract(config(f"images={folder}", f"out={tmp_path}/x.h5", *C4,
                       f"detector.objects_vocab={vocab}"))
    vocab.write_text("dog,dogs\ncat\nball\ntree\n")
    extract(config(f"images={folder}", f"out={tmp_path}/x.h5", *C4, f"detector.objects_vocab={vocab}"))
    assert FeatureStore(f"{tmp_path}/x.h5").attrs["object_names"] == '["dog", "cat", "ball", "tree"]'


def test_a_checkpoint_of_another_depth_is_an_error_naming_the_keys(tmp_path):
    folder = images(tmp_path / "img", ((40, 40),))
    torch.save({"model": {"proposal_generator.rpn_head.objectness_logits.weight": torch.zeros(24, 512, 1, 1)}},
               tmp_path / "bua.pth")
    with pytest.raises(UpdownError, match="bua.pth: does not match this C4 detector.*missing"):
        extract(config(f"images={folder}", f"out={tmp_path}/x.h5", *C4[:-4], "detector.min_boxes=2",
                       "detector.max_boxes=6", "num_workers=0", f"weights={tmp_path}/bua.pth"))
