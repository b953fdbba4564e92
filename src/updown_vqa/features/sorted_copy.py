"""The sorted final copy of a store: a work file (`StoreWriter`'s, or anything read like one, such as
the merge's parts side by side) copied into contiguous datasets sorted by image id, padded or flat,
and renamed onto the store's path atomically.

What it reads of its source: the per-image datasets (store.PER_IMAGE), `features`, `boxes` and the
per-box datasets its `per_box` attribute names, each flat in source order, and `skipped` /
`skipped_reasons`.
"""

from __future__ import annotations

from collections.abc import Mapping

import h5py
import numpy as np

from updown_vqa.core.io import atomic_path
from updown_vqa.features.store import PER_IMAGE

SLICE_BYTES = 128 << 20  # features per slice copied at a time


def write_sorted(source, path: str, attrs: Mapping[str, object], layout: str = "padded",
                 image_keys: Mapping[int, str] | None = None) -> None:
    """Write the store `path` atomically from `source`, a work file (or anything read like one: the
    merge's parts side by side), sorted by image id; `image_keys[i]` is the key of image id i."""
    if layout not in ("padded", "flat"):
        raise ValueError(f"layout must be 'padded' or 'flat', not {layout!r}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        _SortedCopy(source, out, layout).run()
        out.attrs.update(attrs)
        out.attrs["layout"] = layout
        if image_keys is not None:
            keys = [image_keys[i] for i in out["image_ids"][:].tolist()]
            out.create_dataset("image_keys", data=keys, dtype=h5py.string_dtype())


class _SortedCopy:
    """Copies a work file into contiguous datasets sorted by image id, a bounded slice at a time.

    The work file is read sequentially; each slice's images are written where they belong in the
    sorted output, one write per stretch of images that are already in order. The per-row datasets
    (features, boxes and any per-box labels) go through the same reused slice buffers, so memory
    stays bounded whatever the store's size.
    """

    def __init__(self, work: h5py.File, out: h5py.File, layout: str):
        self.work, self.out, self.layout = work, out, layout
        order = np.argsort(work["image_ids"][:], kind="stable")
        for name in PER_IMAGE:
            out.create_dataset(name, data=work[name][:][order])
        self.num_boxes = work["num_boxes"][:]
        self.source_offsets = np.concatenate([[0], np.cumsum(self.num_boxes, dtype=np.int64)])
        self.destination = np.empty_like(order)
        self.destination[order] = np.arange(len(order))
        self.max_boxes = int(self.num_boxes.max()) if len(order) else 0
        if layout == "flat":
            self.offsets = np.concatenate([[0], np.cumsum(self.num_boxes[order], dtype=np.int64)])
            out.create_dataset("offsets", data=self.offsets)
            shape = (int(self.offsets[-1]),)
        else:
            shape = (len(order), self.max_boxes)
        dim, dtype = work["features"].shape[1], work["features"].dtype
        self.per_slice = max(1, SLICE_BYTES // max(1, self.max_boxes * dim * dtype.itemsize))
        rows = min(self.per_slice * self.max_boxes, len(work["features"]))
        images = (min(self.per_slice, len(order)), self.max_boxes)
        self.names = ("features", "boxes", *work.attrs.get("per_box", ()))
        self.targets, self.row_buffers, self.padded = {}, {}, {}
        for name in self.names:  # row buffers reused by every slice (untouched pages cost nothing)
            tail, dtype = work[name].shape[1:], work[name].dtype
            self.targets[name] = out.create_dataset(name, shape + tail, dtype)
            self.row_buffers[name] = np.empty((rows,) + tail, dtype)
            if layout == "padded":
                self.padded[name] = np.empty(images + tail, dtype)

    def run(self) -> None:
        """Copy every slice of images, then the skip list."""
        for start in range(0, len(self.num_boxes), self.per_slice):
            images = slice(start, min(start + self.per_slice, len(self.num_boxes)))
            for name in self.names:
                rows = self._read(name, images)
                if self.layout == "flat":
                    self._write_flat(name, images, rows)
                else:
                    self._write_padded(name, images, rows)
        _copy_skipped(self.work, self.out, set(self.work["image_ids"][:].tolist()))

    def _read(self, name: str, images: slice) -> np.ndarray:
        """Rows of one dataset for consecutive work-file images, read into its reused buffer."""
        first, end = int(self.source_offsets[images.start]), int(self.source_offsets[images.stop])
        rows = self.row_buffers[name][: end - first]
        if end > first:
            self.work[name].read_direct(rows, np.s_[first:end])
        return rows

    def _write_flat(self, name: str, images: slice, rows: np.ndarray) -> None:
        local = (
            self.source_offsets[images.start : images.stop + 1] - self.source_offsets[images.start]
        )
        targets = self.destination[images]
        for first, end in _runs(targets):
            source = slice(int(local[first]), int(local[end]))
            dst = slice(int(self.offsets[targets[first]]), int(self.offsets[targets[end - 1] + 1]))
            self.targets[name][dst] = rows[source]

    def _write_padded(self, name: str, images: slice, rows: np.ndarray) -> None:
        padded = _pad(rows, self.num_boxes[images], self.padded[name])
        targets = self.destination[images]
        for first, end in _runs(targets):
            dst = slice(int(targets[first]), int(targets[end - 1]) + 1)
            self.targets[name][dst] = padded[first:end]


def _runs(destination: np.ndarray):
    """(first, last + 1) index pairs of the stretches where destinations go up one by one."""
    breaks = np.flatnonzero(np.diff(destination) != 1) + 1
    return zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(destination)]]))


def _pad(rows: np.ndarray, counts: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Flat rows [R, ...] of consecutive images as zero-padded [B, K, ...] (in `buffer` if needed)."""
    k = buffer.shape[1]
    if (counts == k).all():
        return rows.reshape((len(counts), k) + rows.shape[1:])
    start = 0
    for image, count in enumerate(counts.tolist()):
        buffer[image, :count] = rows[start : start + count]
        buffer[image, count:] = 0
        start += count
    return buffer[: len(counts)]


def _copy_skipped(work: h5py.File, out: h5py.File, present: set[int]) -> None:
    """The skip list sorted by id, minus ids that a later run did manage to add."""
    skipped = work["skipped"][:]
    keep = np.array([int(i) not in present for i in skipped], dtype=bool)
    if not keep.any():
        return
    order = np.argsort(skipped[keep], kind="stable")
    out.create_dataset("skipped", data=skipped[keep][order])
    reasons = work["skipped_reasons"][:][keep][order]
    out.create_dataset("skipped_reasons", data=reasons.astype(object), dtype=h5py.string_dtype())
