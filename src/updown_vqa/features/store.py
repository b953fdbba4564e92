"""The HDF5 feature store: one schema that every feature source writes and the loader reads.

Datasets (see the README for the full table):
  image_ids int64 [N], image_w / image_h / num_boxes int32 [N],
  boxes float32 (pixels, x1 y1 x2 y2) and features float32|float16, either
  padded [N, K, 4] / [N, K, D] or flat [R, 4] / [R, D] with offsets int64 [N+1].
Optional: skipped int64 [S]; image_keys UTF-8 strings [N] where image ids are not integers (GQA's):
a store with image_keys is looked up by key (image_ids then only number the rows).
Optional, laid out like boxes ([N, K] or [R]): object_ids / attribute_ids int32 and object_scores /
  attribute_scores float32, what the C4 detector saw in each box (PER_BOX). Optional datasets
  are added without changing format_version, and readers ignore datasets they do not know.
File attributes record how the features were made, plus `format_version`.

The extension rule: later features add OPTIONAL datasets (per-image or per-box labels, string image
keys, ...) without changing `format_version`, which changes only when a required dataset changes
meaning; readers ignore datasets they do not know, so old readers open new stores and new readers
open old stores (checking for an optional dataset before using it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import h5py
import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_path
from updown_vqa.features.checks import check_store
from updown_vqa.features.finite import check_features

FORMAT_VERSION = 1
REQUIRED = ("image_ids", "image_w", "image_h", "num_boxes", "boxes", "features")
PER_IMAGE = {"image_ids": np.int64, "image_w": np.int32, "image_h": np.int32, "num_boxes": np.int32}
# Optional datasets with one value per box (what a detector saw), laid out like `boxes`.
PER_BOX = {"object_ids": np.int32, "object_scores": np.float32, "attribute_ids": np.int32,
           "attribute_scores": np.float32}


def write_store(
    path: str,
    image_ids: Iterable[int],
    image_sizes: Iterable[tuple[int, int]],
    boxes: list[np.ndarray],
    features: list[np.ndarray],
    attrs: Mapping[str, object] | None = None,
    layout: str = "padded",
    dtype: str = "float32",
    allow_nonfinite: bool = False,
) -> None:
    """Write a finished, contiguous store atomically; `boxes[i]` is [n_i, 4], `features[i]` [n_i, D].
    NaN or inf features are refused unless `allow_nonfinite`; the `all_finite` attribute records them."""
    image_ids = np.asarray(list(image_ids), dtype=np.int64)
    sizes = np.asarray(list(image_sizes), dtype=np.int32).reshape(-1, 2)
    num_boxes = np.array([len(b) for b in boxes], dtype=np.int32)
    if not (len(image_ids) == len(sizes) == len(boxes) == len(features)):
        raise ValueError("image_ids, image_sizes, boxes and features must have one entry per image")
    if len(np.unique(image_ids)) != len(image_ids):
        raise UpdownError(f"{path}: duplicate image ids; each image may appear once in a store")
    finite = [check_features(path, i, np.asarray(x), allow_nonfinite) for i, x in zip(image_ids, features)]
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
        f.attrs["all_finite"] = all(finite)


class FeatureStore:
    """A store's index: image ids, region counts, layout and attributes (the small arrays only).

    Region features are read through `updown_vqa.features.loading.StoreSet` (one read path for every
    task); this class keeps no file handle, so it pickles into DataLoader workers as it is.
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
                self.image_keys = f["image_keys"].asstr()[:] if "image_keys" in f else None
                check_store(self.path, f, self.image_ids, self.num_boxes, self.offsets)  # before any read
        except OSError as e:
            raise UpdownError(
                f"{self.path}: cannot read the features file ({e}); re-create it"
            ) from e
        self.max_boxes = int(self.num_boxes.max()) if len(self.num_boxes) else 0
        self._order = np.argsort(self.image_ids, kind="stable")  # rows by image id, for `find`
        self._keyed = {str(k): r for r, k in enumerate(self.image_keys)} if self.image_keys is not None else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def find(self, image_ids) -> np.ndarray:
        """Store row of each image id, -1 where the store does not have it: integer ids, or strings in a
        store with `image_keys` (a numeric string also finds an integer-id store)."""
        image_ids = np.asarray(image_ids).reshape(-1)
        if self._keyed is not None:
            return np.array([self._keyed.get(str(i), -1) for i in image_ids], np.int64)
        ids, valid = _integer_ids(image_ids)
        if not len(self.image_ids):
            return np.full(len(ids), -1, np.int64)
        sorted_ids = self.image_ids[self._order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(valid & (sorted_ids[at] == ids), self._order[at], -1).astype(np.int64)

    def has(self, image_id) -> bool:
        return bool(self.find([image_id])[0] >= 0)

    def rows(self, image_ids, source: str = "") -> np.ndarray:
        """Store rows of the given image ids; an unknown id is an error naming it and the store."""
        image_ids = np.asarray(image_ids if isinstance(image_ids, np.ndarray) else list(image_ids))
        rows = self.find(image_ids)
        if (rows < 0).any():
            raise UpdownError(
                f"{source or 'questions'}: image id {image_ids.reshape(-1)[rows < 0][0]} is not in the features file "
                f"{self.path}; extract features for it or drop its questions"
            )
        return rows


def _integer_ids(image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image ids as int64, and which of them are integers at all (GQA's "n161313" is not)."""
    if image_ids.dtype.kind in "iu":
        return image_ids.astype(np.int64), np.ones(len(image_ids), bool)
    ids = np.zeros(len(image_ids), np.int64)
    valid = np.zeros(len(image_ids), bool)
    for n, value in enumerate(image_ids):
        try:
            ids[n], valid[n] = int(value), True
        except (TypeError, ValueError):
            pass
    return ids, valid


def _plain(value):
    """HDF5 attribute values as plain Python (bytes to str, numpy scalars to Python)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
