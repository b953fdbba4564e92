"""`python -m updown_vqa.features.compare`: box matching by IoU, cosine of matched features, one JSON
line, exit 1 below the thresholds; references as TSV, store or a folder of MILVLG .npz files."""

import json

import numpy as np
import pytest
from conftest import run_module

from updown_vqa.features.compare import compare, main
from updown_vqa.features.store import write_store
from updown_vqa.features.tsv import write_tsv


def images(seed=0, count=4, boxes=12, dim=16):
    rng = np.random.default_rng(seed)
    out = []
    for number in range(1, count + 1):
        xy = rng.uniform(0, 300, (boxes, 2))
        b = np.hstack([xy, xy + rng.uniform(30, 120, (boxes, 2))]).astype(np.float32)
        out.append((number, 500, 400, b, rng.normal(size=(boxes, dim)).astype(np.float32)))
    return out


def store(path, rows):
    write_store(str(path), [r[0] for r in rows], [(r[1], r[2]) for r in rows], [r[3] for r in rows],
                [r[4] for r in rows])
    return str(path)


def test_identical_features_match_fully_from_every_reference_format(tmp_path):
    rows = images()
    ours = store(tmp_path / "ours.h5", rows)
    write_tsv(str(tmp_path / "ref.tsv"), rows)
    (tmp_path / "npz").mkdir()
    for number, w, h, boxes, feats in rows:  # MILVLG's fields, with a pickled info it never reads
        np.savez(tmp_path / "npz" / f"{number}.npz", x=feats, bbox=boxes, num_bbox=len(boxes),
                 image_h=h, image_w=w, info=np.array([{"objects_id": [1]}], dtype=object))
    for reference in (tmp_path / "ref.tsv", tmp_path / "npz", ours):
        report = compare(ours, str(reference))
        assert report["matched"] == 1.0 and report["cosine_median"] == pytest.approx(1.0)
        assert report["images"] == 4 and report["missing_images"] == 0


def test_perturbed_and_shuffled_boxes_still_match_their_own_features(tmp_path):
    rows = images()
    rng = np.random.default_rng(1)
    mine = []
    for number, w, h, boxes, feats in rows:
        order = rng.permutation(len(boxes))
        noisy = feats + rng.normal(scale=0.1, size=feats.shape).astype(np.float32)
        mine.append((number, w, h, boxes[order] + 2.0, noisy[order]))
    report = compare(store(tmp_path / "ours.h5", mine), store(tmp_path / "ref.h5", rows))
    assert report["matched"] == 1.0 and 0.98 < report["cosine_median"] < 1.0
    assert main([str(tmp_path / "ours.h5"), str(tmp_path / "ref.h5")]) == 0
    assert main([str(tmp_path / "ours.h5"), str(tmp_path / "ref.h5"), "--min-cosine", "0.999"]) == 1


def test_missing_images_and_unrelated_features_fail_the_thresholds(tmp_path, capsys):
    rows = images()
    other = images(seed=5)[:2]  # other boxes and features, and images 3 and 4 missing
    ours = store(tmp_path / "ours.h5", other)
    assert main([ours, store(tmp_path / "ref.h5", rows)]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["missing_images"] == 2 and report["matched"] < 0.5 and report["passed"] is False


def test_a_missing_reference_is_one_error_line(tmp_path):
    ours = store(tmp_path / "ours.h5", images(count=1))
    result = run_module("updown_vqa.features.compare", ours, str(tmp_path / "nope.tsv"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}/nope.tsv: no such file or "
                                                  "folder; pass a TSV file, a feature store or a "
                                                  "folder of .npz files"]
