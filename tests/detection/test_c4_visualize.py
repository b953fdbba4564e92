"""`visualize mode=detections`: the C4 detector's regions drawn with "attribute class" labels."""

import numpy as np
from conftest import run_module
from hydra import compose, initialize_config_dir
from PIL import Image

from updown_vqa.core.paths import config_dir
from updown_vqa.visualize import visualize

SETTINGS = ("mode=detections", "allow_random_weights=true", "detector.depth=18",
            "detector.num_classes=4", "detector.num_attributes=3", "min_size=64", "max_size=96",
            "detector.min_boxes=3", "detector.max_boxes=5")


def test_detections_are_drawn_with_vocabulary_names(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(
        tmp_path / "7.jpg")
    (tmp_path / "objects.txt").write_text("dog,dogs\ncat\ntree\n")
    (tmp_path / "attributes.txt").write_text("red\nfurry\n")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("visualize", overrides=[*SETTINGS, f"image={tmp_path}/7.jpg",
                                              f"out={tmp_path}/d.png",
                                              f"detector.objects_vocab={tmp_path}/objects.txt",
                                              f"detector.attributes_vocab={tmp_path}/attributes.txt",
                                              f"paths.log_dir={tmp_path}"])
    drawn = visualize(cfg)
    assert (tmp_path / "d.png").stat().st_size > 1000
    assert 3 <= len(drawn["labels"]) <= 5
    assert all(label.split()[-1] in ("dog", "cat", "tree") for label in drawn["labels"])


def test_an_image_that_will_not_decode_is_one_error_line(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    result = run_module("updown_vqa.visualize", *SETTINGS, f"image={tmp_path}/bad.jpg",
                        f"out={tmp_path}/d.png", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bad.jpg: cannot decode it as an image" in errors[0]
