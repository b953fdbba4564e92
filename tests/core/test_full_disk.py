"""A full disk is one line naming the file and the folder to free, whatever wraps the ENOSPC (torch's zip
writer, h5py), and the previous file is kept; on a real small file system (tmpfs, where the test may
mount one) convert_tsv stops cleanly, without a segmentation fault, and a rerun resumes to the same store."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from updown_vqa.core.checkpointing import AtomicCheckpointIO, read_checkpoint
from updown_vqa.core.cli import command
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.tsv import write_tsv


def wrapped_enospc(*args, **kwargs):
    """What torch.save raises when the disk fills under its zip writer."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as e:
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
                           "file data/0: file write failed; unexpected pos 64 vs 0") from e


def test_a_checkpoint_write_on_a_full_disk_names_file_and_folder_and_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(2)}, path)
    monkeypatch.setattr(torch, "save", wrapped_enospc)
    with pytest.raises(UpdownError, match=rf"last.ckpt: cannot write the checkpoint \(No space left on device\); "
                                          rf".*Free space in {tmp_path}, then rerun the same command"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.zeros(2)}, path)
    assert read_checkpoint(str(path))["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left


def test_the_command_wrapper_turns_a_wrapped_enospc_into_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        command(wrapped_enospc)()
    assert stop.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: a write failed (No space left on device); free space")


def test_other_errors_still_raise_through_the_wrapper():
    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        command(broken)()


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB tmpfs (needs root and a kernel that allows it; else the test is skipped)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(folder)], capture_output=True)
    if mount.returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)  # lazily: a finished child may still hold it


@pytest.mark.slow
def test_convert_tsv_on_a_really_full_disk_stops_in_one_line_and_resumes(tmp_path, small_disk):
    rng = np.random.default_rng(0)
    rows = [(i, 100, 80, np.zeros((36, 4), np.float32), rng.standard_normal((36, 256)).astype(np.float32))
            for i in range(400)]  # 15 MB of features: the first block of 256 images fits, the second does not
    tsv, out = str(tmp_path / "a.tsv"), str(small_disk / "o.h5")
    write_tsv(tsv, rows)
    run = [sys.executable, "-m", "updown_vqa.features.convert_tsv", tsv, "--out", out]
    refused = subprocess.run(run, capture_output=True, text=True)  # the estimate does not fit: refused up front
    assert refused.returncode == 1 and refused.stderr.count("error: ") == 1, refused.stderr[-2000:]
    assert "the store needs about" in refused.stderr and not os.listdir(small_disk)
    fills = {**os.environ, "UPDOWN_FREE_BYTES": str(10**12)}  # a disk that fills anyway, say by another writer
    first = subprocess.run(run, capture_output=True, text=True, env=fills)
    assert first.returncode == 1, first.stderr[-2000:]  # not 139: no segmentation fault
    assert first.stderr.count("error: ") == 1 and "Traceback" not in first.stderr
    assert "No space left on device" in first.stderr and f"Free space in {small_disk}" in first.stderr
    subprocess.run(["mount", "-o", "remount,size=60m", str(small_disk)], check=True)  # space was freed
    second = subprocess.run(run, capture_output=True, text=True, env=fills)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "(256 from an earlier run)" in second.stdout
    store = FeatureStore(out)
    read = read_rows(store, store.rows(range(400)))
    assert all(np.array_equal(read["features"][i], rows[i][4]) for i in range(400))


def test_a_full_disk_while_building_the_shapes_dataset_names_its_folder(tmp_path, monkeypatch):
    from updown_vqa.datasets import shapes

    monkeypatch.setattr(shapes, "generate_split", wrapped_enospc)
    with pytest.raises(UpdownError, match=rf"{tmp_path / 'shapes'}: the shapes dataset could not be written there "
                                          r"\(No space left on device\); free space in that folder"):
        shapes.ShapesBuilder(str(tmp_path / "shapes"), num_train_images=4, num_val_images=2, image_size=32)()
