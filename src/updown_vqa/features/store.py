"""The HDF5 feature store: one schema that every feature source writes and the loader reads.

Datasets (see the README for the full table):
  image_ids int64 [N], image_w / image_h / num_boxes int32 [N],
  boxes float32 (pixels, x1 y1 x2 y2) and features float32|float16, either
  padded [N, K, 4] / [N, K, D] or flat [R, 4] / [R, D] with offsets int64 [N+1].
Optional, laid out like boxes ([N, K] or [R]): object_ids / attribute_ids int32 and object_scores /
  attribute_scores float32, what the C4 detector saw in each box (writer.PER_BOX). Optional datasets
  are added without changing format_version, and readers ignore datasets they do not know.
File attributes record how the features were made, plus `format_version`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import h5py
import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_path

FORMAT_VERSION = 1
REQUIRED = ("image_ids", "image_w", "image_h", "num_boxes", "boxes", "features")


def write_store(
    path: str,
    image_ids: Iterable[int],
    image_sizes: Iterable[tuple[int, int]],
    boxes: list[np.ndarray],
    features: list[np.ndarray],
    attrs: Mapping[str, object] | None = None,
    layout: str = "padded",
    dtype: str = "float32",
) -> None:
    """Write a finished, contiguous store atomically; `boxes[i]` is [n_i, 4], `features[i]` [n_i, D]."""
    image_ids = np.asarray(list(image_ids), dtype=np.int64)
    sizes = np.asarray(list(image_sizes), dtype=np.int32).reshape(-1, 2)
    num_boxes = np.array([len(b) for b in boxes], dtype=np.int32)
    if not (len(image_ids) == len(sizes) == len(boxes) == len(features)):
        raise ValueError("image_ids, image_sizes, boxes and features must have one entry per image")
    if len(np.unique(image_ids)) != len(image_ids):
        raise UpdownError(f"{path}: duplicate image ids; each image may appear once in a store")
    dim = features[0].shape[1] if features else 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image_ids", data=image_ids)
        f.create_dataset("image_w", data=sizes[:, 0])
        f.create_dataset("image_h", data=sizes[:, 1])
        f.create_dataset("num_boxes", data=num_boxes)
        if layout == "padded":
            k = int(num_boxes.max()) if len(num_boxes) else 0
            padded_boxes = np.zeros((len(boxes), k, 4), np.float32)
            padded_feats = np.zeros((len(boxes), k, dim), dtype)
            for i, (b, x) in enumerate(zip(boxes, features)):
                padded_boxes[i, : len(b)] = b
                padded_feats[i, : len(b)] = x
            f.create_dataset("boxes", data=padded_boxes)
            f.create_dataset("features", data=padded_feats)
        elif layout == "flat":
            offsets = np.concatenate([[0], np.cumsum(num_boxes, dtype=np.int64)])
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("boxes", data=np.concatenate(boxes).astype(np.float32))
            f.create_dataset("features", data=np.concatenate(features).astype(dtype))
        else:
            raise ValueError(f"layout must be 'padded' or 'flat', not {layout!r}")
        f.attrs.update(dict(attrs or {}))
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["layout"] = layout


def _memmap(path: str, dataset: h5py.Dataset) -> np.ndarray | h5py.Dataset:
    """Map a contiguous, uncompressed dataset straight from the file; else the h5py dataset."""
    offset = dataset.id.get_offset()
    if dataset.chunks is not None or dataset.compression is not None or offset is None:
        return dataset
    return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


class FeatureStore:
    """Reads batches of region features from a store; opens the file lazily in each process.

    h5py handles do not survive a fork, so the handle (and the memory maps) are made on first use in
    whichever process reads, never in `__init__`, which only reads the small index arrays.
    """

    def __init__(self, path: str):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise UpdownError(
                f"{self.path}: features file not found; extract features first "
                "(or fix the data.*.features path)"
            )
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in REQUIRED if k not in f]
                if missing:
                    raise UpdownError(
                        f"{self.path}: not a feature store, missing datasets {missing}; "
                        "write it with updown_vqa.features.store.write_store"
                    )
                self.image_ids = f["image_ids"][:]
                self.num_boxes = f["num_boxes"][:]
                self.image_w = f["image_w"][:]
                self.image_h = f["image_h"][:]
                self.layout = "flat" if "offsets" in f else "padded"
                self.offsets = f["offsets"][:] if self.layout == "flat" else None
                self.feature_dim = int(f["features"].shape[-1])
                self.dtype = f["features"].dtype
                self.attrs = {k: _plain(v) for k, v in f.attrs.items()}
                self.skipped = f["skipped"][:] if "skipped" in f else np.zeros(0, np.int64)
        except OSError as e:
            raise UpdownError(
                f"{self.path}: cannot read the features file ({e}); re-create it"
            ) from e
        self.max_boxes = int(self.num_boxes.max()) if len(self.num_boxes) else 0
        self._row = {int(i): r for r, i in enumerate(self.image_ids)}
        self._pid = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_pid=None, _file=None, _features=None, _boxes=None)
        return state

    def rows(self, image_ids: Iterable[int], source: str = "") -> np.ndarray:
        """Store rows of the given image ids; an unknown id is an error naming it and the store."""
        try:
            return np.array([self._row[int(i)] for i in image_ids], dtype=np.int64)
        except KeyError as e:
            raise UpdownError(
                f"{source or 'questions'}: image id {e.args[0]} is not in the features file "
                f"{self.path}; extract features for it or drop its questions"
            ) from None

    def _open(self) -> None:
        if self._pid == os.getpid():
            return
        self._file = h5py.File(self.path, "r")
        self._features = _memmap(self.path, self._file["features"])
        self._boxes = _memmap(self.path, self._file["boxes"])
        self._pid = os.getpid()

    def read(self, rows: np.ndarray, max_boxes: int | None = None) -> dict[str, np.ndarray]:
        """Gather the given rows in one sorted, deduplicated read, padded to `max_boxes` regions.

        Returns features [B, K, D] (store dtype), boxes [B, K, 4] and num_boxes [B].
        """
        self._open()
        k = max_boxes or self.max_boxes
        unique, inverse = np.unique(rows, return_inverse=True)
        if self.layout == "padded":
            feats = _gather(self._features, unique)[inverse, :k]
            boxes = _gather(self._boxes, unique)[inverse, :k]
        else:
            feats = np.zeros((len(unique), k, self.feature_dim), self.dtype)
            boxes = np.zeros((len(unique), k, 4), np.float32)
            for j, r in enumerate(unique):
                start, end = self.offsets[r], min(self.offsets[r + 1], self.offsets[r] + k)
                feats[j, : end - start] = self._features[start:end]
                boxes[j, : end - start] = self._boxes[start:end]
            feats, boxes = feats[inverse], boxes[inverse]
        num_boxes = np.minimum(self.num_boxes[rows], k)
        if feats.shape[1] < k:  # a padded store narrower than the requested width
            pad = k - feats.shape[1]
            feats = np.pad(feats, ((0, 0), (0, pad), (0, 0)))
            boxes = np.pad(boxes, ((0, 0), (0, pad), (0, 0)))
        return {"features": feats, "boxes": boxes, "num_boxes": num_boxes}


def _gather(data, unique_rows: np.ndarray) -> np.ndarray:
    """Rows of a memory map (plain fancy indexing) or an h5py dataset (sorted point selection)."""
    if isinstance(data, np.ndarray):
        return np.asarray(data[unique_rows])
    return data[unique_rows.tolist()] if len(unique_rows) else data[:0]


def _plain(value):
    """HDF5 attribute values as plain Python (bytes to str, numpy scalars to Python)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
