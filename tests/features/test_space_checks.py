"""Refusal before exhaustion: a RAM or device cache larger than the memory available, and a conversion or
extraction larger than the disk's free space, are refused up front in one line that gives both sizes."""

import os

import numpy as np
import pytest
import torch
from conftest import extract_config, run_module, tiny_overrides, write_images
from test_convert_tsv import make_rows, write_shards

from updown_vqa.core.errors import UpdownError
from updown_vqa.datasets.random_stores import write_random_store
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.convert_tsv import main as convert_main
from updown_vqa.features.convert_tsv import store_bytes
from updown_vqa.features.regions import RegionTable, available_memory
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.tsv import write_tsv


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "features.h5")
    write_random_store(path, 20, boxes=4, dim=8)  # 20 x 4 regions x (8 x 4 + 16) bytes = 3,840
    return path


def test_available_memory_is_what_the_machine_reports():
    available, where = available_memory(torch.device("cpu"))
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < available <= total and where in ("MemAvailable", "free in /dev/shm")


@pytest.mark.parametrize("mode", ["ram", "device"])
def test_a_cache_larger_than_the_memory_is_refused_before_loading(store, monkeypatch, mode):
    monkeypatch.setenv("UPDOWN_AVAILABLE_BYTES", "3000")
    with pytest.raises(UpdownError) as error:
        RegionTable([FeatureStore(store)], mode).to("cpu")
    message = str(error.value)
    assert f"data.feature_cache={mode}" in message and store in message
    assert "0.0 GiB" in message and "need" in message  # both sizes
    assert "data.feature_cache=none" in message and "float16" in message and "smaller split" in message


def test_a_cache_that_fits_is_loaded(store, monkeypatch):
    monkeypatch.setenv("UPDOWN_AVAILABLE_BYTES", "4000")
    table = RegionTable([FeatureStore(store)], "ram")
    assert table.features.shape == (81, 8)


@pytest.mark.slow  # a training command
def test_train_refuses_a_ram_cache_larger_than_the_memory_in_one_line(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UPDOWN_AVAILABLE_BYTES", "1000")
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "data.feature_cache=ram")
    lines = [line for line in result.stderr.splitlines() if "error: " in line]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "GiB but 0.0 GiB is available (UPDOWN_AVAILABLE_BYTES)" in lines[0]
    assert "data.feature_cache=none" in lines[0]


def test_the_store_size_estimate_is_close_to_the_store(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "a.tsv")
    write_tsv(path, [(i, 640, 480, rng.uniform(0, 600, (36, 4)), rng.random((36, 512))) for i in range(1, 17)])
    for dtype in ("float32", "float16"):
        out = str(tmp_path / f"{dtype}.h5")
        assert convert_main([path, "--out", out, "--dtype", dtype]) == 0
        estimate = store_bytes(os.path.getsize(path), 512, dtype)
        assert 0.9 < estimate / os.path.getsize(out) < 1.1


def test_convert_refuses_a_store_larger_than_the_free_space_up_front(tmp_path, monkeypatch, capsys):
    paths, _ = write_shards(tmp_path, make_rows(range(1, 9)))
    monkeypatch.setenv("UPDOWN_FREE_BYTES", "1000")
    out = str(tmp_path / "features.h5")
    assert convert_main([*paths, "--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "1000" not in err[0], err
    assert "GB free" in err[0] and "--dtype float16" in err[0] and "store needs about" in err[0]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("features.h5")]  # nothing begun
    monkeypatch.setenv("UPDOWN_FREE_BYTES", str(10 << 20))
    assert convert_main([*paths, "--out", out]) == 0


def test_standard_input_of_a_given_size_is_checked_up_front(tmp_path, monkeypatch, capsys):
    """`unzip -p ... | convert_tsv - --tsv-bytes N`: N sizes the store before anything is written."""
    paths, _ = write_shards(tmp_path, make_rows(range(1, 9)))
    monkeypatch.setenv("UPDOWN_FREE_BYTES", "1000")
    with open(paths[0], "rb") as f:
        monkeypatch.setattr("sys.stdin", f)
        assert convert_main(["-", "--out", str(tmp_path / "features.h5"), "--tsv-bytes", "1000000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "store needs about" in err[0] and "GB free" in err[0], err
    assert not [p for p in os.listdir(tmp_path) if p.startswith("features.h5")]


def test_a_resumed_conversion_counts_the_work_already_on_disk(tmp_path, monkeypatch):
    from updown_vqa.features.work import check_space

    out = str(tmp_path / "features.h5")
    with open(f"{out}.work.h5", "wb") as f:
        f.write(b"\0" * 1000)
    monkeypatch.setenv("UPDOWN_FREE_BYTES", "1500")
    check_space(out, 1200, restart=False, fix="")  # 2 x 1200 - 1000 = 1400 more
    with pytest.raises(UpdownError, match="1400 GB|0.0 GB more"):
        check_space(out, 1200, restart=True, fix="")


def test_extract_refuses_a_store_larger_than_the_free_space(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    write_images(folder)
    monkeypatch.setenv("UPDOWN_FREE_BYTES", "1000")
    out = str(tmp_path / "grid.h5")
    cfg = extract_config(f"images={folder}", f"out={out}", "image_size=64", "backbone=resnet18",
                         "allow_random_weights=true", "num_workers=0")
    with pytest.raises(UpdownError, match=r"grid.h5: the store needs about .* GB free; .*dtype=float16"):
        extract(cfg)
    assert not os.path.exists(f"{out}.work.h5")
