"""The public bottom-up TSV format (`generate_tsv.py`'s output: image_id, image_w, image_h, num_boxes,
base64 boxes and features per line): streaming reading, parsing with errors naming file and line, and
writing (for tests and conversions back)."""

from __future__ import annotations

import base64
import binascii
import itertools
import sys
from collections.abc import Iterable, Iterator

import numpy as np

from updown_vqa.core.errors import UpdownError

FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
READ_BYTES = 16 << 20  # bytes read from the TSV at a time
STDIN = "-"  # an input path that means standard input (e.g. `unzip -p trainval_36.zip | ...`)


class BadLine(UpdownError):
    """One malformed TSV line; `--skip-bad` skips these, anything else stops the conversion."""

    def __init__(self, message: str, image_id: int | None = None):
        super().__init__(message)
        self.image_id = image_id


def write_tsv(path: str, rows: Iterable[tuple[int, int, int, np.ndarray, np.ndarray]]) -> None:
    """Write (image_id, image_w, image_h, boxes [n, 4], features [n, D]) rows in the TSV format."""
    with open(path, "wb") as f:
        for image_id, image_w, image_h, boxes, features in rows:
            encoded = [
                base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes())
                for a in (boxes, features)
            ]
            head = f"{image_id}\t{image_w}\t{image_h}\t{len(boxes)}\t".encode()
            f.write(head + encoded[0] + b"\t" + encoded[1] + b"\r\n")  # csv's line ending


def input_name(path: str) -> str:
    """How errors and the store's attributes name an input."""
    return "stdin" if path == STDIN else path


def read_lines(path: str) -> Iterator[tuple[list[memoryview], int]]:
    """Each line's tab-separated fields and its size in bytes, read in large blocks from the file at
    `path` or, for `-`, from standard input (read once: a pipe cannot be read again).

    The fields are views into one reused buffer, valid until the next line is asked for: the big
    base64 fields go to the decoder without being copied (fresh copies cost page faults too).
    """
    buf, start, end = bytearray(READ_BYTES), 0, 0  # buf[start:end] is read but not yet yielded
    searched = 0  # buf[start:searched] has no newline: a pipe gives 64 KB a read, a line is 400 KB
    source = (sys.stdin.fileno(), False) if path == STDIN else (path, True)
    with open(source[0], "rb", buffering=0, closefd=source[1]) as f:
        while True:
            newline = buf.find(b"\n", max(start, searched), end)
            if newline >= 0:
                yield _split_fields(buf, start, newline), newline + 1 - start
                start = newline + 1
                continue
            buf, end = _keep_partial_line(buf, start, end)
            start, searched, read = 0, end, f.readinto(memoryview(buf)[end:])
            if not read:
                break
            end += read
    if end:
        yield _split_fields(buf, 0, end), end


def _keep_partial_line(buf: bytearray, start: int, end: int) -> tuple[bytearray, int]:
    """Move buf[start:end] to the front (into a buffer twice as big if it fills this one)."""
    partial = end - start
    if start == 0 and partial < len(buf):
        return buf, end  # at the front already, with room to read more
    if start == 0:
        bigger = bytearray(2 * len(buf))  # a new buffer: views of the old one may still be alive
        bigger[:partial] = buf
        return bigger, partial
    buf[:partial] = buf[start:end]  # same size, so allowed while views exist
    return buf, partial


def _split_fields(buf: bytearray, start: int, stop: int) -> list[memoryview]:
    """Views of the tab-separated fields of buf[start:stop], without a trailing carriage return."""
    view = memoryview(buf)
    if stop > start and buf[stop - 1] == 13:  # \r\n, as csv.writer ends lines
        stop -= 1
    fields = []
    while (tab := buf.find(b"\t", start, stop)) >= 0:
        fields.append(view[start:tab])
        start = tab + 1
    fields.append(view[start:stop])
    return fields


def _decode(field: memoryview, name: str, image_id: int) -> np.ndarray:
    """A base64 float32 field as a flat array."""
    if field[:2] == b"b'" and field[-1:] == b"'":  # written by Python 3 without .decode()
        field = field[2:-1]
    try:
        return np.frombuffer(binascii.a2b_base64(field), dtype=np.float32)
    except (binascii.Error, ValueError) as e:
        raise BadLine(
            f"image {image_id}: {name} is not valid base64 float32 ({e})", image_id
        ) from None


def parse_line(fields: list[memoryview], feature_dim: int | None = None):
    """(image_id, image_w, image_h, boxes [n, 4], features [n, D]) of one line; BadLine if malformed."""
    if len(fields) != len(FIELDS):
        raise BadLine(
            f"{len(fields)} tab-separated fields, expected {len(FIELDS)}: {', '.join(FIELDS)}"
        )
    try:
        image_id, image_w, image_h, num_boxes = (int(bytes(x)) for x in fields[:4])
    except ValueError:
        shown = b" ".join(bytes(x[:20]) for x in fields[:4]).decode(errors="replace")
        raise BadLine(
            f"image_id, image_w, image_h, num_boxes must be integers, got: {shown}"
        ) from None
    if num_boxes <= 0:
        raise BadLine(
            f"image {image_id}: num_boxes={num_boxes}, expected at least one box", image_id
        )
    boxes = _decode(fields[4], "boxes", image_id)
    if len(boxes) != 4 * num_boxes:
        raise BadLine(
            f"image {image_id}: {len(boxes)} box values for num_boxes={num_boxes}", image_id
        )
    features = _decode(fields[5], "features", image_id)
    dim = feature_dim or len(features) // num_boxes
    if len(features) != num_boxes * dim:
        raise BadLine(
            f"image {image_id}: {len(features)} feature values, expected num_boxes={num_boxes} "
            f"x feature size {dim} (the first valid line's)",
            image_id,
        )
    return image_id, image_w, image_h, boxes.reshape(num_boxes, 4), features.reshape(num_boxes, dim)


def peek_feature_dim(lines: Iterator[tuple[list[memoryview], int]]) -> tuple[int | None, Iterator]:
    """The feature size D of the first valid line of `lines` (None if there is none), and the lines
    again from the start: those read to find it are copied (the views die with the next read) and put
    back, so a pipe is read once. Bad lines are reported during the conversion."""
    read = []
    for fields, size in lines:
        read.append(([memoryview(bytes(f)) for f in fields], size))
        try:
            return parse_line(fields)[4].shape[1], itertools.chain(read, lines)
        except BadLine:
            continue
    return None, iter(read)
