"""Convert GQA's own features (gqadataset.org) into a feature store keyed by GQA's string image ids.

- objects: `objects/gqa_objects_{i}.h5` (features [N, 100, 2048], bboxes [N, 100, 4] in pixels) and
  `gqa_objects_info.json` ({imageId: {file, idx, objectsNum, width, height}}): the first `objectsNum`
  boxes of each image become its regions.
- spatial: `spatial/gqa_spatial_{i}.h5` (features [N, 2048, 7, 7]) and `gqa_spatial_info.json`
  ({imageId: {file, idx}}): the 49 cells become regions [49, 2048] with their cell boxes (in pixels
  when gqa_objects_info.json lies beside it, else in cell units on a 7x7 image).

Streams one block of images at a time through the resumable StoreWriter (an interrupted run resumes),
and writes the finished store atomically with `image_keys`:

    python -m updown_vqa.features.convert_gqa objects --root GQA_FEATURES --out data/gqa/gqa_objects.h5
    python -m updown_vqa.features.convert_gqa spatial --root GQA_FEATURES --out data/gqa/gqa_spatial.h5
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py
import numpy as np
from tqdm import tqdm

from updown_vqa.core.cache import read_json
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.features.writer import StoreWriter

BLOCK = 64  # images read from an h5 file at a time: 64 x 100 x 2048 float32 = 52 MB


def _plan(info: dict, root: str, kind: str) -> list[tuple[str, list[tuple[int, str, int]]]]:
    """[(h5 path, [(row, imageId, position), ...] sorted by row)] with each image's position in the
    sorted ids (its integer id in the writer, the same in every run, so resuming works)."""
    keys = sorted(info)
    by_file: dict[int, list] = {}
    for position, key in enumerate(keys):
        entry = info[key]
        if not isinstance(entry, dict) or "file" not in entry or "idx" not in entry:
            raise UpdownError(f"gqa_{kind}_info.json: entry {key} has no 'file' and 'idx'; use the file as distributed")
        by_file.setdefault(int(entry["file"]), []).append((int(entry["idx"]), key, position))
    plan = []
    for index in sorted(by_file):
        path = os.path.join(root, kind, f"gqa_{kind}_{index}.h5")
        if not os.path.isfile(path):
            raise UpdownError(f"{path}: not found, but gqa_{kind}_info.json lists images in it")
        plan.append((path, sorted(by_file[index])))
    return plan


def _cell_boxes(width: float, height: float, grid: int) -> np.ndarray:
    """Boxes [grid * grid, 4] (x1 y1 x2 y2) of the cells, row-major as the features are flattened."""
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    cell = np.stack([xs, ys, xs + 1, ys + 1], axis=-1).reshape(-1, 4).astype(np.float32)
    return cell * np.array([width, height, width, height], np.float32) / grid


def _regions(kind: str, f: h5py.File, rows: np.ndarray, entries: list[dict]):
    """(boxes, features) per image of one block of rows of an h5 file."""
    feats = f["features"][rows.tolist()]  # objects [b, 100, D] | spatial [b, D, g, g]
    if kind == "objects":
        boxes = f["bboxes"][rows.tolist()]
        for k, e in enumerate(entries):
            n = int(e["objectsNum"])
            yield boxes[k, :n], feats[k, :n]
    else:
        grid = feats.shape[-1]
        cells = feats.reshape(len(rows), feats.shape[1], grid * grid).transpose(0, 2, 1)  # [b, g*g, D]
        for k, e in enumerate(entries):
            yield _cell_boxes(e.get("width", grid), e.get("height", grid), grid), cells[k]


def _convert_file(writer: StoreWriter, kind: str, path: str, todo: list, entries: dict, bar: tqdm) -> None:
    """Add the `todo` images [(row, imageId, integer id)] of one h5 file, a block of rows at a time."""
    with h5py.File(path, "r") as f:
        for lo in range(0, len(todo), BLOCK):
            block = todo[lo : lo + BLOCK]
            block_entries = [entries[key] for _, key, _ in block]
            rows = np.array([row for row, _, _ in block])
            for (_, _, image_id), e, (boxes, feats) in zip(block, block_entries,
                                                          _regions(kind, f, rows, block_entries)):
                writer.add(image_id, e.get("width", 7), e.get("height", 7), boxes, feats)
            bar.update(len(block))


def convert(kind: str, root: str, out: str, dtype: str = "float32", layout: str = "padded",
            restart: bool = False, progress: bool = True) -> dict:
    """Write the store at `out` from GQA's `kind` (objects | spatial) features under `root`."""
    info = read_json(os.path.join(root, f"gqa_{kind}_info.json"))
    sizes_path = os.path.join(root, "gqa_objects_info.json")
    sizes = info if kind == "objects" else (read_json(sizes_path) if os.path.isfile(sizes_path) else {})
    plan = _plan(info, root, kind)
    refuse_overwriting_inputs("--out", out, {"GQA features file": [path for path, _ in plan],
                                             "GQA info file": [os.path.join(root, f"gqa_{kind}_info.json"), sizes_path]})
    with h5py.File(plan[0][0], "r") as f:
        dim = f["features"].shape[2 if kind == "objects" else 1]
    attrs = {"extractor": f"gqa-{kind}", "source": f"gqa_{kind}_*.h5", "dtype": dtype}
    keys, resumed = sorted(info), 0
    bar = tqdm(total=len(keys), unit="img", desc=f"convert {kind}", disable=not progress)
    with bar, StoreWriter(out, dim, dtype, attrs, not restart) as writer:
        for path, images in plan:
            todo = [item for item in images if item[2] not in writer.done_ids]
            resumed += len(images) - len(todo)
            bar.update(len(images) - len(todo))
            _convert_file(writer, kind, path, todo, {k: {**info[k], **sizes.get(k, {})} for _, k, _ in todo}, bar)
        writer.finalize(layout, image_keys=keys)
    return {"images": len(keys), "resumed": resumed}


def main(argv: list[str] | None = None) -> int:
    """Command line: convert, print a summary; errors are one line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.features.convert_gqa",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("objects", "spatial"))
    parser.add_argument("--root", required=True, help="folder with objects/ or spatial/ and the info json")
    parser.add_argument("--out", required=True, help="output feature store (.h5)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--layout", choices=("padded", "flat"), default="padded")
    parser.add_argument("--restart", action="store_true", help="discard an unfinished run's work")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.kind, args.root, args.out, args.dtype, args.layout, args.restart)
    except UpdownError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to resume into {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {args.out}: {summary['images']} images ({summary['resumed']} from an earlier run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
