"""Random parts of a sharded extraction, for measuring the merge at any size (docs/extraction.md):

    python -m updown_vqa.datasets.random_parts OUT --images 36000 --parts 4 --min-boxes 10 --max-boxes 36

writes OUT.part-I-of-N.h5 as `extract ... shard=I/N` would (flat, sorted blocks of image ids, a recipe),
with noise for features. Written a block at a time from one pool of random values, so memory stays
small and gigabytes take seconds.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from updown_vqa.core.io import atomic_path
from updown_vqa.features.shards import Shard, part_path
from updown_vqa.features.store import FORMAT_VERSION

POOL_VALUES = 16 << 20  # random float32 values drawn once (64 MB) and reused, shifted, for every block
RECIPE = {"extractor": "regions", "backbone": "random", "weights": "random", "seed": 0}


def write_random_parts(out: str, num_images: int, parts: int, min_boxes: int = 10, max_boxes: int = 36,
                       dim: int = 2048, seed: int = 0) -> list[str]:
    """The `parts` flat part stores of `num_images` images of min..max random boxes; their paths."""
    rng = np.random.default_rng(seed)
    pool = rng.random(POOL_VALUES, dtype=np.float32)
    counts = rng.integers(min_boxes, max_boxes + 1, num_images).astype(np.int32)
    ids = np.arange(1, num_images + 1)
    paths = []
    for index in range(parts):
        mine = np.array(sorted(Shard(index, parts).select(dict.fromkeys(ids.tolist()))), np.int64)
        paths.append(part_path(out, index, parts))
        _write_part(paths[-1], mine, counts[mine - 1], dim, pool, rng)
    return paths


def _write_part(path: str, ids: np.ndarray, counts: np.ndarray, dim: int, pool: np.ndarray, rng) -> None:
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    rows = int(offsets[-1])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["image_ids"], f["num_boxes"], f["offsets"] = ids, counts, offsets
        f["image_w"], f["image_h"] = np.full(len(ids), 640, np.int32), np.full(len(ids), 480, np.int32)
        corners = rng.uniform(0, 320, (rows, 2)).astype(np.float32)
        f["boxes"] = np.concatenate([corners, corners + 100], axis=1)
        features = f.create_dataset("features", (rows, dim), np.float32)
        step = max(1, (POOL_VALUES // 2) // dim)
        for first in range(0, rows, step):
            end = min(first + step, rows)
            start = int(rng.integers(0, POOL_VALUES // 2))
            features[first:end] = pool[start : start + (end - first) * dim].reshape(-1, dim)
        f.attrs.update(RECIPE | {"dtype": "float32", "format_version": FORMAT_VERSION,
                                 "all_finite": True, "layout": "flat"})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the merged store's path; the parts are written beside it")
    parser.add_argument("--images", type=int, default=36000)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--min-boxes", type=int, default=10)
    parser.add_argument("--max-boxes", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args(argv)
    paths = write_random_parts(args.out, args.images, args.parts, args.min_boxes, args.max_boxes, args.dim)
    print("\n".join(paths))


if __name__ == "__main__":
    main()
