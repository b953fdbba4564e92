"""convert_tsv: bottom-up-attention TSV shards into a store, bit for bit, with clear bad-line errors."""

import base64
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from updown_vqa.features import tsv, writer
from updown_vqa.features.convert_tsv import main
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.tsv import write_tsv

D = 16


def make_rows(ids, float16_range=False, seed=0):
    """TSV rows with 10 to 100 boxes (the adaptive files); features use every finite float32 bit pattern,
    or with `float16_range` span float16's whole range, subnormals included."""
    rng = np.random.default_rng(seed)
    rows = []
    for image_id in ids:
        n = int(rng.integers(10, 101))
        boxes = rng.uniform(0, 600, (n, 4)).astype(np.float32)
        if float16_range:
            features = rng.uniform(-65000, 65000, (n, D)) * 10 ** rng.uniform(-12, 0, (n, D))
        else:
            bits = rng.integers(0, 2**32, (n, D), dtype=np.uint32)
            nonfinite = (bits & 0x7F800000) == 0x7F800000  # NaN and inf are refused: one exponent bit less
            features = np.where(nonfinite, bits ^ 0x00800000, bits).astype(np.uint32).view(np.float32)
        rows.append((image_id, 640, 427, boxes, features.astype(np.float32)))
    return rows


def write_shards(tmp_path, rows):
    """Two TSV shards; returns (paths, rows by id)."""
    paths = [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")]
    write_tsv(paths[0], rows[:5])
    write_tsv(paths[1], rows[5:])
    return paths, {r[0]: r for r in rows}


@pytest.fixture
def shards(tmp_path):
    """Two TSV shards with mixed box counts and unsorted ids; returns (paths, rows by id)."""
    return write_shards(tmp_path, make_rows([9, 3, 27, 1, 14, 5, 100, 8]))


def read_back(path):
    """{image_id: (w, h, boxes, features)} of every image in a store."""
    store = FeatureStore(path)
    batch = read_rows(store, np.arange(len(store)))
    out = {}
    for b, image_id in enumerate(store.image_ids.tolist()):
        n = batch["num_boxes"][b]
        size = (store.image_w[b], store.image_h[b])
        out[image_id] = (*size, batch["boxes"][b, :n], batch["features"][b, :n])
    return out


def assert_bits_equal(path, rows, dtype=np.float32):
    stored = read_back(path)
    assert sorted(stored) == sorted(rows)
    for image_id, (w, h, boxes, feats) in stored.items():
        _, w0, h0, boxes0, feats0 = rows[image_id]
        assert (w, h) == (w0, h0)
        assert boxes.tobytes() == boxes0.tobytes()  # bit for bit, NaN payloads included
        assert feats.dtype == dtype and feats.tobytes() == feats0.astype(dtype).tobytes()


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_two_shards_convert_bit_for_bit(shards, tmp_path, layout):
    paths, rows = shards
    out = str(tmp_path / "out.h5")
    assert main([*paths, "--out", out, "--layout", layout]) == 0
    assert_bits_equal(out, rows)
    store = FeatureStore(out)
    assert store.layout == layout
    assert store.attrs["extractor"] == "bottom-up-tsv"
    assert store.attrs["source"] == ["a.tsv", "b.tsv"] and store.attrs["dtype"] == "float32"
    assert not os.path.exists(out + ".work.h5") and not os.path.exists(out + ".tmp")


def test_standard_input_converts_bit_for_bit_through_a_pipe(shards, tmp_path):
    """`cat shards | convert_tsv -`: the store of the files themselves, the TSV read once from the pipe."""
    paths, rows = shards
    out = str(tmp_path / "out.h5")
    cat = subprocess.Popen(["cat", *paths], stdout=subprocess.PIPE)
    result = subprocess.run([sys.executable, "-m", "updown_vqa.features.convert_tsv", "-", "--out", out],
                            stdin=cat.stdout, capture_output=True, text=True, timeout=120)
    cat.wait()
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out}: 8 images" in result.stdout
    assert "not checked up front (give --tsv-bytes)" in result.stderr  # a stream of unknown size
    assert_bits_equal(out, rows)
    assert FeatureStore(out).attrs["source"] == ["stdin"]


def test_a_bad_line_on_standard_input_is_named_by_its_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "a.tsv"
    write_tsv(str(path), make_rows([1, 2]))
    path.write_bytes(path.read_bytes() + b"3\t640\n")
    with open(path, "rb") as f:
        monkeypatch.setattr(sys, "stdin", f)
        assert main(["-", "--out", str(tmp_path / "o.h5"), "--tsv-bytes", str(path.stat().st_size)]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # and the progress bar
    assert line.startswith("error: stdin:3: ") and "a rerun resumes" in line


def test_standard_input_can_be_given_once(shards, tmp_path, capsys):
    assert main(["-", shards[0][0], "-", "--out", str(tmp_path / "o.h5")]) == 1
    assert "given more than once" in capsys.readouterr().err


def test_float16_equals_the_numpy_cast(tmp_path):
    paths, rows = write_shards(tmp_path, make_rows(range(8), float16_range=True))
    out = str(tmp_path / "out.h5")
    assert main([*paths, "--out", out, "--dtype", "float16"]) == 0
    assert_bits_equal(out, rows, np.float16)
    with h5py.File(out) as f:
        assert f["features"].chunks is None  # contiguous, so the loader can pread it at a byte offset


def test_float16_overflow_is_an_error_naming_the_line(tmp_path, capsys):
    rows = make_rows([1, 2], float16_range=True)
    rows[1][4][0, 0] = 1e6
    write_tsv(str(tmp_path / "a.tsv"), rows)
    assert (
        main([str(tmp_path / "a.tsv"), "--out", str(tmp_path / "o.h5"), "--dtype", "float16"]) == 1
    )
    assert "a.tsv:2: " in capsys.readouterr().err.splitlines()[-1]


def test_fixed_36_boxes_and_lf_line_endings(tmp_path):
    rows = [(i, 500, 375, np.ones((36, 4), np.float32) * i, np.full((36, 2048), i, np.float32))
            for i in (2, 1)]  # fmt: skip
    tsv = tmp_path / "a.tsv"
    write_tsv(str(tsv), rows)
    tsv.write_bytes(tsv.read_bytes().replace(b"\r\n", b"\n"))
    out = str(tmp_path / "out.h5")
    assert main([str(tsv), "--out", out]) == 0
    assert_bits_equal(out, {r[0]: r for r in rows})


def encode(array):
    return base64.b64encode(np.asarray(array, np.float32).tobytes())


def good_line(image_id, n=2):
    head = f"{image_id}\t10\t10\t{n}\t".encode()
    return head + encode(np.zeros((n, 4))) + b"\t" + encode(np.ones((n, D)))


BAD_LINES = {
    "fields": (b"4\t10\t10\t2\tAAAA", "5 tab-separated fields, expected 6"),
    "base64": (b"4\t10\t10\t2\tAAA\t" + encode(np.ones((2, D))), "image 4: boxes is not valid base64"),
    "integers": (b"x" + good_line(4), "must be integers"),
    "num_boxes": (good_line(4, 2).replace(b"\t2\t", b"\t3\t", 1), "image 4: 8 box values for num_boxes=3"),
    "feature size": (good_line(4).rsplit(b"\t", 1)[0] + b"\t" + encode(np.ones(2 * D + 2)),
                     "image 4: 34 feature values, expected num_boxes=2 x feature size 16"),
    "duplicate": (good_line(1), "duplicate image id 1"),
}  # fmt: skip


def write_with_bad_line(tmp_path, bad):
    """A TSV whose third line is `bad`, between good lines for images 1, 2 and 5."""
    tsv = tmp_path / "in.tsv"
    tsv.write_bytes(b"\n".join([good_line(1), good_line(2), bad, good_line(5)]) + b"\n")
    return str(tsv)


@pytest.mark.parametrize("kind", BAD_LINES)
def test_bad_line_is_a_one_line_error_naming_file_and_line(tmp_path, capsys, kind):
    bad, message = BAD_LINES[kind]
    tsv = write_with_bad_line(tmp_path, bad)
    out = str(tmp_path / "out.h5")
    assert main([tsv, "--out", out]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]  # the rest is the progress bar
    assert line.startswith(f"error: {tsv}:3: ") and message in line and "--skip-bad" in line
    assert "Traceback" not in err
    assert not os.path.exists(out)


@pytest.mark.parametrize("kind", BAD_LINES)
def test_skip_bad_counts_and_continues(tmp_path, capsys, kind):
    tsv = write_with_bad_line(tmp_path, BAD_LINES[kind][0])
    out = str(tmp_path / "out.h5")
    assert main([tsv, "--out", out, "--skip-bad"]) == 0
    assert f"skipped 1 bad line(s), first: {tsv}:3:" in capsys.readouterr().out
    store = FeatureStore(out)
    assert store.image_ids.tolist() == [1, 2, 5]
    recorded = kind in ("base64", "num_boxes", "feature size")  # the id is known and never written
    assert store.skipped.tolist() == ([4] if recorded else [])


def test_missing_input_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "o.h5")]) == 1
    assert "nope.tsv" in capsys.readouterr().err


def test_interrupted_run_resumes_without_redoing_images(shards, tmp_path, monkeypatch, capsys):
    paths, rows = shards
    out = str(tmp_path / "out.h5")
    monkeypatch.setattr(writer, "BLOCK_IMAGES", 2)
    added, interrupted = [], []
    real_add = writer.StoreWriter.add

    def add_then_interrupt(self, image_id, *args):
        if len(added) == 6 and not interrupted:
            interrupted.append(image_id)
            raise KeyboardInterrupt
        added.append(image_id)
        real_add(self, image_id, *args)

    monkeypatch.setattr(writer.StoreWriter, "add", add_then_interrupt)
    assert main([*paths, "--out", out]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert not os.path.exists(out) and os.path.exists(out + ".work.h5")
    assert main([*paths, "--out", out]) == 0
    assert "(6 from an earlier run)" in capsys.readouterr().out
    assert len(added) == len(rows) and sorted(added) == sorted(rows)  # each image converted once
    assert_bits_equal(out, rows)


def test_restart_starts_over(shards, tmp_path):
    paths, rows = shards
    out = str(tmp_path / "out.h5")
    with writer.StoreWriter(out, D + 1) as w:  # an unfinished run with other settings
        w.add(1, 5, 5, np.zeros((1, 4)), np.zeros((1, D + 1)))
    assert main([*paths, "--out", out]) == 1
    assert main([*paths, "--out", out, "--restart"]) == 0
    assert_bits_equal(out, rows)


@pytest.mark.parametrize("read_bytes", [4, 7, 1 << 20])
def test_read_lines_across_block_boundaries(tmp_path, monkeypatch, read_bytes):
    monkeypatch.setattr(tsv, "READ_BYTES", read_bytes)  # 4: lines longer than the buffer
    path = tmp_path / "x.tsv"
    path.write_bytes(b"first\tline\r\nsecond\n\nlast\twithout\tnewline")
    lines = [
        ([bytes(f) for f in fields], size) for fields, size in tsv.read_lines(str(path))
    ]
    assert lines == [
        ([b"first", b"line"], 12),
        ([b"second"], 7),
        ([b""], 1),
        ([b"last", b"without", b"newline"], 20),
    ]


def test_a_resume_onto_a_tsv_edited_in_the_middle_with_size_and_mtime_kept_is_refused(shards, tmp_path, monkeypatch,
                                                                                      capsys):
    paths, _ = shards
    out = str(tmp_path / "out.h5")
    monkeypatch.setattr(writer, "BLOCK_IMAGES", 2)
    real_add, added = writer.StoreWriter.add, []

    def add_then_interrupt(self, image_id, *args):
        if len(added) == 2:
            raise KeyboardInterrupt
        added.append(image_id)
        real_add(self, image_id, *args)

    monkeypatch.setattr(writer.StoreWriter, "add", add_then_interrupt)
    assert main([*paths, "--out", out]) == 130
    monkeypatch.setattr(writer.StoreWriter, "add", real_add)
    stat, data = os.stat(paths[0]), bytearray(open(paths[0], "rb").read())
    middle = len(data) // 2
    data[middle] = ord("A") if data[middle] != ord("A") else ord("B")  # one base64 character, same size
    with open(paths[0], "r+b") as f:
        f.write(data)
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime set back
    capsys.readouterr()
    assert main([*paths, "--out", out]) == 1
    assert "was made from other inputs (input 1:" in capsys.readouterr().err
