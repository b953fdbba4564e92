"""Feature stores: NaN features refused by every writer and by predict; hostile indexes refused when
opened; a full disk during writing is one line and the next run resumes."""

import errno
import logging
import os
import shutil

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir
from updown_vqa.features import finite
from updown_vqa.features import writer as writer_module
from updown_vqa.features.convert_tsv import main as convert_main
from updown_vqa.features.store import FeatureStore, write_store
from updown_vqa.features.tsv import write_tsv
from updown_vqa.features.writer import StoreWriter
from updown_vqa.vqa.inference import predict

D = 4


def rows(ids, nan_at=None):
    """TSV rows (id, w, h, boxes [n, 4], features [n, D]); image `nan_at` gets one NaN."""
    out = []
    for i in ids:
        features = np.full((3, D), float(i), np.float32)
        if i == nan_at:
            features[1, 2] = np.nan
        out.append((i, 100, 80, np.array([[0, 0, 10, 10]] * 3, np.float32), features))
    return out


def test_writers_refuse_nan_naming_the_image_and_record_all_finite(tmp_path):
    path = str(tmp_path / "f.h5")
    with StoreWriter(path, D) as writer, pytest.raises(UpdownError, match=r"f.h5: non-finite .* image id 7;"):
        writer.add(7, 10, 10, np.zeros((1, 4)), np.array([[1, np.inf, 0, 0]], np.float32))
    with StoreWriter(path, D, resume=False, allow_nonfinite=True) as writer:
        writer.add(7, 10, 10, np.zeros((1, 4)), np.array([[1, np.nan, 0, 0]], np.float32))
        writer.finalize()
    assert FeatureStore(path).attrs["all_finite"] is False
    with pytest.raises(UpdownError, match=r"g.h5: non-finite .* image id 3;"):
        write_store(str(tmp_path / "g.h5"), [3], [(9, 9)], [np.zeros((1, 4))], [np.full((1, D), np.nan)])
    write_store(str(tmp_path / "g.h5"), [3], [(9, 9)], [np.zeros((1, 4))], [np.ones((1, D))])
    assert FeatureStore(str(tmp_path / "g.h5")).attrs["all_finite"] is True


def test_convert_tsv_refuses_nan_unless_allowed(tmp_path, capsys):
    tsv, out = str(tmp_path / "a.tsv"), str(tmp_path / "o.h5")
    write_tsv(tsv, rows([1, 2, 3], nan_at=2))
    assert convert_main([tsv, "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "a.tsv:2:" in err and "image id 2" in err and "--allow-nonfinite" in err
    assert not os.path.exists(out)
    assert convert_main([tsv, "--out", out, "--allow-nonfinite"]) == 0
    assert FeatureStore(out).attrs["all_finite"] is False


def test_a_store_without_the_attribute_is_scanned_once_and_the_answer_cached(tmp_path, monkeypatch):
    path = str(tmp_path / "old.h5")
    features = [np.ones((2, D)), np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]]), np.ones((1, D))]
    write_store(path, [5, 6, 9], [(9, 9)] * 3, [np.zeros((len(x), 4)) for x in features], features,
                layout="flat", allow_nonfinite=True)
    with h5py.File(path, "r+") as f:  # as a store written before the attribute existed
        del f.attrs["all_finite"]
    assert finite.nonfinite_images(path) == [6]
    assert os.path.isfile(path + ".finite.json")
    monkeypatch.setattr(finite, "_scan", lambda path: pytest.fail("scanned twice"))
    assert finite.nonfinite_images(path) == [6]
    with pytest.raises(UpdownError, match=r"old.h5: non-finite features \(NaN or inf\) for image id 6"):
        finite.require_finite(path)


def save_untrained(path: str, feature_dim: int) -> None:
    """An untrained VQA checkpoint."""
    import pytorch_lightning as pl

    from updown_vqa.vqa.module import UpDownVQA

    model = UpDownVQA(["<pad>", "<unk>", "what"], ["yes", "no"], feature_dim=feature_dim, embed_dim=8, hidden_dim=8)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


def test_predict_refuses_a_store_with_nan_features_naming_it_and_the_image(data_dir, tmp_path):
    store = str(tmp_path / "val.h5")
    shutil.copy(os.path.join(data_dir, "shapes", "shapes_val_features.h5"), store)
    with h5py.File(store, "r+") as f:
        image_id = int(f["image_ids"][2])
        f["features"][2] = np.full(f["features"].shape[1:], np.nan, f["features"].dtype)
        del f.attrs["all_finite"]
    ckpt = str(tmp_path / "model.ckpt")
    save_untrained(ckpt, FeatureStore(store).feature_dim)
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=[f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}",
                                            f"ckpt={ckpt}", "split=val", f"data.val.features={store}"])
    with pytest.raises(UpdownError, match=rf"val.h5: non-finite features \(NaN or inf\) for image id {image_id};"):
        predict(cfg)


@pytest.mark.parametrize("num_boxes,match", [(2**31 - 1, r"num_boxes 2147483647, outside \[0, 3\]"),
                                             (-1, r"num_boxes -1, outside \[0, 3\]")])
def test_a_hostile_num_boxes_is_refused_when_the_store_is_opened(tmp_path, num_boxes, match):
    path = str(tmp_path / "f.h5")
    write_store(path, [1, 2], [(9, 9)] * 2, [np.zeros((3, 4))] * 2, [np.ones((3, D))] * 2)
    with h5py.File(path, "r+") as f:
        f["num_boxes"][1] = num_boxes
    with pytest.raises(UpdownError, match=rf"f.h5: image id 2 has {match}"):
        FeatureStore(path)


def test_flat_offsets_that_disagree_with_num_boxes_are_refused(tmp_path):
    path = str(tmp_path / "f.h5")
    write_store(path, [1, 2], [(9, 9)] * 2, [np.zeros((3, 4))] * 2, [np.ones((3, D))] * 2, layout="flat")
    with h5py.File(path, "r+") as f:
        f["num_boxes"][0] = 2
    with pytest.raises(UpdownError, match=r"f.h5: image id 1 has num_boxes that disagree with its offsets"):
        FeatureStore(path)


def test_boxes_beyond_the_image_warn_past_one_pixel_of_tolerance(tmp_path, caplog):
    path = str(tmp_path / "f.h5")
    boxes = [np.array([[0, 0, 101, 81]], np.float32), np.array([[0, 0, 103, 80]], np.float32)]
    write_store(path, [1, 2], [(100, 80)] * 2, boxes, [np.ones((1, D))] * 2)
    with caplog.at_level(logging.WARNING):
        FeatureStore(path)
    assert "1 images have boxes more than 1 pixel outside the image" in caplog.text
    assert "image ids [2]" in caplog.text


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_converting_is_one_line_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    tsv, out = str(tmp_path / "a.tsv"), str(tmp_path / "o.h5")
    write_tsv(tsv, rows(range(1, 9)))
    monkeypatch.setattr(writer_module, "BLOCK_IMAGES", 3)
    calls = {"n": 0}
    original = writer_module._write_at

    def fail_on_the_third_block(*args):
        calls["n"] += 1
        if calls["n"] > 12:  # two blocks of 6 datasets each are committed, the third fails
            no_space()
        return original(*args)

    monkeypatch.setattr(writer_module, "_write_at", fail_on_the_third_block)
    assert convert_main([tsv, "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "No space left on device" in err and f"Free space in {tmp_path}" in err
    monkeypatch.setattr(writer_module, "_write_at", original)  # space was freed
    assert convert_main([tsv, "--out", out]) == 0
    assert "(6 from an earlier run)" in capsys.readouterr().out
    assert FeatureStore(out).image_ids.tolist() == list(range(1, 9))


def test_convert_tsv_resumes_only_onto_the_same_input(tmp_path, capsys, monkeypatch):
    big, good, out = str(tmp_path / "big.tsv"), str(tmp_path / "good.tsv"), str(tmp_path / "o.h5")
    write_tsv(big, rows(range(1, 9)))
    write_tsv(good, rows(range(20, 23)))
    monkeypatch.setattr(writer_module, "BLOCK_IMAGES", 3)
    original = writer_module._write_at
    calls = {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(writer_module, "_write_at", interrupted)
    assert convert_main([big, "--out", out]) == 130  # killed with a work file of big.tsv's images
    monkeypatch.setattr(writer_module, "_write_at", original)
    assert convert_main([good, "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "big.tsv" in err and "good.tsv" in err and "--restart" in err
    assert convert_main([good, "--out", out, "--restart"]) == 0
    assert FeatureStore(out).image_ids.tolist() == [20, 21, 22]


def test_visualize_of_a_captioning_checkpoint_refuses_nan_features(tmp_path):
    from updown_vqa.captioning.inference import caption_picture

    path = str(tmp_path / "f.h5")
    write_store(path, [1, 2], [(9, 9)] * 2, [np.zeros((1, 4))] * 2, [np.ones((1, D)), np.full((1, D), np.inf)],
                allow_nonfinite=True)
    with pytest.raises(UpdownError, match=r"f.h5: non-finite features \(NaN or inf\) for image id 2"):
        caption_picture(None, {"features": path}, 1, str(tmp_path))
