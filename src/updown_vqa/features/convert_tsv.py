"""Convert the public bottom-up-attention TSV files (Anderson et al. 2018) into a feature store.

Format (peteanderson80/bottom-up-attention, tools/generate_tsv.py): tab-separated, no header, fields
image_id, image_w, image_h, num_boxes, boxes, features, where boxes and features are base64 float32
arrays [num_boxes, 4] (pixels, x1 y1 x2 y2) and [num_boxes, D]. Streams in bounded memory and resumes
from the StoreWriter work file after an interruption:

    python -m updown_vqa.features.convert_tsv trainval_36/*.tsv --out features.h5 --dtype float16
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import sys
from collections.abc import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from updown_vqa.core.cache import file_identity
from updown_vqa.core.cli import as_error
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.work import check_inputs, remove_inputs
from updown_vqa.features.writer import StoreWriter

FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
READ_BYTES = 16 << 20  # bytes read from the TSV at a time


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


def read_lines(path: str) -> Iterator[tuple[list[memoryview], int]]:
    """Each line's tab-separated fields and its size in bytes, read in large blocks.

    The fields are views into one reused buffer, valid until the next line is asked for: the big
    base64 fields go to the decoder without being copied (fresh copies cost page faults too).
    """
    buf, start, end = bytearray(READ_BYTES), 0, 0  # buf[start:end] is read but not yet yielded
    with open(path, "rb", buffering=0) as f:
        while True:
            newline = buf.find(b"\n", start, end)
            if newline >= 0:
                yield _split_fields(buf, start, newline), newline + 1 - start
                start = newline + 1
                continue
            buf, end = _keep_partial_line(buf, start, end)
            start, read = 0, f.readinto(memoryview(buf)[end:])
            if not read:
                break
            end += read
    if end:
        yield _split_fields(buf, 0, end), end


def _keep_partial_line(buf: bytearray, start: int, end: int) -> tuple[bytearray, int]:
    """Move buf[start:end] to the front (into a buffer twice as big if it fills this one)."""
    partial = end - start
    if start == 0 and partial == len(buf):
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


def first_feature_dim(paths: list[str]) -> int:
    """The feature size D of the first valid line (bad lines are reported during the conversion)."""
    for path in paths:
        for fields, _ in read_lines(path):
            try:
                return parse_line(fields)[4].shape[1]
            except BadLine:
                continue
    raise UpdownError(f"{', '.join(paths)}: no valid bottom-up-attention TSV lines")


class Converter:
    """Streams TSV lines into a StoreWriter, skipping ids a previous run already wrote."""

    def __init__(self, writer: StoreWriter, skip_bad: bool, progress: tqdm):
        self.writer, self.skip_bad, self.progress = writer, skip_bad, progress
        self.seen: set[int] = set()
        self.bad: list[str] = []
        self.resumed = 0

    def convert_file(self, path: str) -> None:
        """Add every line of one TSV file."""
        for number, (fields, size) in enumerate(read_lines(path), 1):
            self.progress.update(size)
            if len(fields) > 1 or len(fields[0]):  # blank lines are ignored
                try:
                    self.convert_line(fields)
                except BadLine as e:
                    self.reject(f"{path}:{number}: {e}", e.image_id)
                except UpdownError as e:  # from the writer: not the line's fault, so never skipped
                    raise UpdownError(f"{path}:{number}: {e}") from None
            if number % 64 == 0:
                self.progress.set_postfix(images=len(self.writer.done_ids), bad=len(self.bad))

    def convert_line(self, fields: list[memoryview]) -> None:
        """Add one line, unless a previous run already added its image."""
        image_id = _leading_id(fields)
        if image_id in self.writer.done_ids and image_id not in self.seen:
            self.seen.add(image_id)
            self.resumed += 1
            return
        if image_id in self.seen:
            raise BadLine(f"duplicate image id {image_id}; it appeared earlier in the input")
        image_id, image_w, image_h, boxes, features = parse_line(fields, self.writer.feature_dim)
        self.seen.add(image_id)
        self.writer.add(image_id, image_w, image_h, boxes, features)

    def reject(self, message: str, image_id: int | None) -> None:
        """Stop on a bad line, or with --skip-bad count it and record its image as skipped."""
        if not self.skip_bad:
            raise UpdownError(f"{message}; fix or remove the line, or pass --skip-bad")
        self.bad.append(message)
        if image_id is not None and image_id not in self.seen:
            self.writer.skip(image_id, message)


def _leading_id(fields: list[memoryview]) -> int | None:
    """The image id of a line (None if it is not an integer), without decoding the rest."""
    try:
        return int(bytes(fields[0])) if len(fields[0]) <= 20 else None  # int64 has 19 digits
    except ValueError:
        return None


def convert(
    paths: list[str],
    out: str,
    dtype: str = "float32",
    layout: str = "padded",
    skip_bad: bool = False,
    restart: bool = False,
    progress: bool = True,
    allow_nonfinite: bool = False,
) -> dict[str, object]:
    """Convert TSV files into the store at `out`; returns counts of images, resumed and bad lines."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UpdownError(f"TSV file(s) not found: {', '.join(missing)}")
    attrs = {
        "extractor": "bottom-up-tsv",
        "source": [os.path.basename(p) for p in paths],
        "dtype": dtype,
    }
    total = sum(os.path.getsize(p) for p in paths)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress)
    check_inputs(out, {f"input {i + 1}": file_identity(p) for i, p in enumerate(paths)}, restart, "--restart")
    dim = first_feature_dim(paths)
    with bar, StoreWriter(out, dim, dtype, attrs, not restart, allow_nonfinite) as writer:
        converter = Converter(writer, skip_bad, bar)
        for path in paths:
            converter.convert_file(path)
        if not writer.done_ids:
            raise UpdownError(f"{', '.join(paths)}: no valid lines; nothing to write to {out}")
        bar.set_postfix(images=len(writer.done_ids), bad=len(converter.bad), refresh=False)
        bar.close()
        writer.finalize(layout)
    remove_inputs(out)
    return {"images": len(writer.done_ids), "resumed": converter.resumed, "bad": converter.bad}


def main(argv: list[str] | None = None) -> int:
    """Command line: convert TSV files, print a summary; errors are one line on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", nargs="+", help="input TSV file(s), e.g. all shards of one split")
    parser.add_argument("--out", required=True, help="output feature store (.h5)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--layout", choices=("padded", "flat"), default="padded")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count malformed lines")
    parser.add_argument("--restart", action="store_true", help="discard an unfinished run's work")
    parser.add_argument("--allow-nonfinite", action="store_true", help="keep NaN or inf features")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.tsv, args.out, args.dtype, args.layout, args.skip_bad, args.restart,
                          allow_nonfinite=args.allow_nonfinite)
    except (UpdownError, OSError, RuntimeError) as e:
        e = e if isinstance(e, UpdownError) else as_error(e)
        if e is None:
            raise
        work = f"{args.out}.work.h5"
        kept = (
            f" (images so far are kept in {work}; a rerun resumes)" if os.path.exists(work) else ""
        )
        print(f"error: {e}{kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to resume into {args.out}", file=sys.stderr)
        return 130
    print(
        f"wrote {args.out}: {summary['images']} images ({summary['resumed']} from an earlier run)"
    )
    if summary["bad"]:
        print(f"skipped {len(summary['bad'])} bad line(s), first: {summary['bad'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
