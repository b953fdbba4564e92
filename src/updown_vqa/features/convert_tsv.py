"""Convert the public bottom-up-attention TSV files (Anderson et al. 2018) into a feature store.

Format (peteanderson80/bottom-up-attention, tools/generate_tsv.py): tab-separated, no header, fields
image_id, image_w, image_h, num_boxes, boxes, features, where boxes and features are base64 float32
arrays [num_boxes, 4] (pixels, x1 y1 x2 y2) and [num_boxes, D]. Streams in bounded memory and resumes
from the StoreWriter work file after an interruption:

    python -m updown_vqa.features.convert_tsv trainval_36/*.tsv --out features.h5 --dtype float16

`-` reads standard input, so the TSV need never be on the disk (49 GB for trainval_36), e.g.
`unzip -p trainval_36.zip | python -m updown_vqa.features.convert_tsv - --tsv-bytes N --out ...`; give
the stream's size (`unzip -l`) for the up-front disk check and the progress bar.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

from updown_vqa.core.cache import file_identity, file_state
from updown_vqa.core.cli import as_error
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.features.tsv import (
    STDIN,
    BadLine,
    input_name,
    parse_line,
    peek_feature_dim,
    read_lines,
)
from updown_vqa.features.work import check_inputs, check_space, remove_inputs
from updown_vqa.features.writer import StoreWriter


class Converter:
    """Streams TSV lines into a StoreWriter, skipping ids a previous run already wrote."""

    def __init__(self, writer: StoreWriter, skip_bad: bool, progress: tqdm):
        self.writer, self.skip_bad, self.progress = writer, skip_bad, progress
        self.seen: set[int] = set()
        self.bad: list[str] = []
        self.resumed, self.bytes = 0, 0

    def convert_file(self, path: str, lines) -> None:
        """Add every line of one TSV input (`lines`: read_lines of it)."""
        path = input_name(path)
        for number, (fields, size) in enumerate(lines, 1):
            self.progress.update(size)
            self.bytes += size
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
    tsv_bytes: int | None = None,
) -> dict[str, object]:
    """Convert TSV files (`-`: standard input, of about `tsv_bytes` if given) into the store at `out`;
    returns counts of images, resumed and bad lines, and the bytes read."""
    files = [p for p in paths if p != STDIN]
    if len(files) < len(paths) - 1:
        raise UpdownError("- (standard input) is given more than once; it can be read only once")
    refuse_overwriting_inputs("--out", out, {"input TSV": files})
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
        raise UpdownError(f"TSV file(s) not found: {', '.join(missing)}")
    attrs = {
        "extractor": "bottom-up-tsv",
        "source": [os.path.basename(input_name(p)) for p in paths],
        "dtype": dtype,
    }
    known = files == paths or tsv_bytes is not None
    total = sum(os.path.getsize(p) for p in files) + (tsv_bytes or 0)
    lines, dim = {p: read_lines(p) for p in paths}, None
    for path in paths:
        dim, lines[path] = peek_feature_dim(lines[path])
        if dim is not None:
            break
    if dim is None:
        raise UpdownError(f"{', '.join(map(input_name, paths))}: no valid bottom-up-attention TSV lines")
    if known:
        check_space(out, store_bytes(total, dim, dtype), restart, "convert with --dtype float16"
                    if dtype == "float32" else "convert fewer shards")
    else:
        print("convert_tsv: standard input's size is unknown, so the disk's free space is not checked up front "
              "(give --tsv-bytes)", file=sys.stderr)
    # size, mtime and the ends' hash, and ctime and inode: an edit in the middle that keeps size and mtime
    # still moves the ctime, which no user can set back. Standard input cannot be identified: a resume
    # from it keeps the images already written and adds the others.
    check_inputs(out, {f"input {i + 1}": file_identity(p) | file_state(p) if p != STDIN else "stdin"
                       for i, p in enumerate(paths)}, restart, "--restart")
    bar = tqdm(total=total if known else None, unit="B", unit_scale=True, desc="convert", disable=not progress)
    with bar, StoreWriter(out, dim, dtype, attrs, not restart, allow_nonfinite) as writer:
        converter = Converter(writer, skip_bad, bar)
        for path in paths:
            converter.convert_file(path, lines[path])
        if not writer.done_ids:
            raise UpdownError(f"{', '.join(map(input_name, paths))}: no valid lines; nothing to write to {out}")
        bar.set_postfix(images=len(writer.done_ids), bad=len(converter.bad), refresh=False)
        bar.close()
        writer.finalize(layout)
    remove_inputs(out)
    return {"images": len(writer.done_ids), "resumed": converter.resumed, "bad": converter.bad,
            "tsv_bytes": converter.bytes}


def store_bytes(tsv_bytes: int, dim: int, dtype: str) -> int:
    """About the size of the store of `tsv_bytes` of TSV: per region the base64 of 4 + D float32 in
    (4/3 bytes per byte), 16 bytes of box + D values of `dtype` out."""
    regions = tsv_bytes * 3 / 4 / ((4 + dim) * 4)
    return int(regions * (16 + dim * np.dtype(dtype).itemsize))


def main(argv: list[str] | None = None) -> int:
    """Command line: convert TSV files, print a summary; errors are one line on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tsv", nargs="+", help="input TSV file(s), e.g. all shards of one split; - reads "
                        "standard input")
    parser.add_argument("--tsv-bytes", type=int, help="the size of standard input's TSV, if known: for the "
                        "up-front disk check and the progress bar")
    parser.add_argument("--out", required=True, help="output feature store (.h5)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--layout", choices=("padded", "flat"), default="padded")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count malformed lines")
    parser.add_argument("--restart", action="store_true", help="discard an unfinished run's work")
    parser.add_argument("--allow-nonfinite", action="store_true", help="keep NaN or inf features")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.tsv, args.out, args.dtype, args.layout, args.skip_bad, args.restart,
                          allow_nonfinite=args.allow_nonfinite, tsv_bytes=args.tsv_bytes)
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
