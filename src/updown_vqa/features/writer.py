"""An appending, resumable feature-store writer: images go to a work file, `finalize` makes the store.

Appends land in `{path}.work.h5`, whose chunked flat datasets grow as images arrive. The work file is
only touched inside `flush()`, and the committed counts (attrs `num_images`, `num_rows`,
`num_skipped`) are written last, so a run killed at any other moment leaves a work file that the next
run reopens and trims to what was committed. `finalize` copies it into a contiguous store (which
the loader reads with one pread per image, see features/regions.py), sorted by image id, and renames that onto `path` atomically.

Over 300 lines by intent: the writer, its work-file recovery, the per-box labels and the sorted final
copy are one mechanism (the work file's format is private to them), and splitting it would expose that
format; the non-finite checks live in features/finite.py.
"""

from __future__ import annotations

import atexit
import errno
import os
import sys
from collections.abc import Mapping

import h5py
import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_path, no_space, write_error
from updown_vqa.features.finite import ATTR as ALL_FINITE
from updown_vqa.features.finite import check_features
from updown_vqa.features.store import FORMAT_VERSION

BLOCK_IMAGES = 256  # images buffered in memory before a write
BLOCK_BYTES = 64 << 20  # ... or this many bytes of features, whichever comes first
SLICE_BYTES = 128 << 20  # features per slice copied by `finalize`
CHUNK_BYTES = 1 << 20  # target chunk size of the work file's growing datasets
SPACE_MARGIN = 1 << 20  # free bytes kept beyond a block's features and boxes (HDF5's metadata)
EXIT_STATUS = [1]  # the status of a process ended by skip_hdf5_shutdown: a write failed
COUNTS = ("num_images", "num_rows", "num_skipped")  # attrs: what the work file holds for sure
PER_IMAGE = {"image_ids": np.int64, "image_w": np.int32, "image_h": np.int32, "num_boxes": np.int32}
# Optional datasets with one value per box (what a detector saw), laid out like `boxes`.
PER_BOX = {"object_ids": np.int32, "object_scores": np.float32, "attribute_ids": np.int32,
           "attribute_scores": np.float32}


class StoreWriter:
    """Append images to a feature store one at a time; resumable, and atomic when finalized."""

    def __init__(
        self,
        path: str,
        feature_dim: int,
        dtype: str = "float32",
        attrs: Mapping[str, object] | None = None,
        resume: bool = True,
        allow_nonfinite: bool = False,
        per_box: tuple[str, ...] = (),
    ):
        self.path = str(path)
        self.allow_nonfinite = allow_nonfinite  # else NaN or inf features are refused, naming the image
        self.per_box = tuple(per_box)  # names from PER_BOX that every add() gives
        self.work_path = f"{self.path}.work.h5"
        self.feature_dim = int(feature_dim)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise UpdownError(f"{self.path}: dtype must be float32 or float16, not {dtype!r}")
        self.attrs = dict(attrs or {})
        if not resume and os.path.exists(self.work_path):
            os.remove(self.work_path)
        self._file = self._open_work()
        self._committed = tuple(int(self._file.attrs[k]) for k in COUNTS)
        known = self._file.attrs.get(ALL_FINITE)  # None: a work file of an older version, not known
        self.all_finite = None if known is None else bool(known)
        self.done_ids = set(self._file["image_ids"][:].tolist())
        self.skipped_ids = set(self._file["skipped"][:].tolist())
        # Reused block buffers: a fresh array per image or per flush costs page faults, not just copies.
        rows = max(1, BLOCK_BYTES // (self.feature_dim * self.dtype.itemsize))
        self._features = np.empty((rows, self.feature_dim), self.dtype)
        self._boxes = np.empty((rows, 4), np.float32)
        self._labels = {name: np.empty(rows, PER_BOX[name]) for name in self.per_box}
        self._rows = 0
        self._images: list[tuple[int, int, int, int]] = []  # id, w, h, num_boxes
        self._skips: list[tuple[int, str]] = []

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open_work(self) -> h5py.File:
        """Reopen the work file (trimmed to its last committed flush) or create an empty one."""
        if not os.path.exists(self.work_path):
            return self._create_work()
        try:
            f = h5py.File(self.work_path, "r+", rdcc_nbytes=4 * CHUNK_BYTES)
        except OSError as e:
            raise UpdownError(
                f"{self.work_path}: cannot reopen the unfinished work file ({e}); "
                "if no other run is writing it, start over (--restart, restart=true)"
            ) from e
        found = (int(f.attrs.get("feature_dim", -1)), str(f.attrs.get("dtype", "?")))
        if tuple(f.attrs.get("per_box", ())) != self.per_box:
            f.close()
            raise UpdownError(f"{self.work_path}: unfinished work file has other per-box datasets "
                              f"than this run writes ({', '.join(self.per_box) or 'none'}); rerun "
                              "with the same settings or start over (--restart / resume=False)")
        if found != (self.feature_dim, self.dtype.name):
            f.close()
            raise UpdownError(
                f"{self.work_path}: unfinished work file has feature_dim={found[0]}, "
                f"dtype={found[1]} but this run writes feature_dim={self.feature_dim}, "
                f"dtype={self.dtype.name}; rerun with the same settings or start over "
                "(--restart / resume=False)"
            )
        _trim(f)
        return f

    def _create_work(self) -> h5py.File:
        """An empty work file with growing, chunked datasets."""
        f = h5py.File(self.work_path, "w", rdcc_nbytes=4 * CHUNK_BYTES)
        for name, dtype in PER_IMAGE.items():
            f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))
        rows = max(1, CHUNK_BYTES // (self.feature_dim * self.dtype.itemsize))
        for name, width, dtype in (
            ("boxes", 4, np.float32),
            ("features", self.feature_dim, self.dtype),
        ):
            f.create_dataset(name, (0, width), dtype, maxshape=(None, width), chunks=(rows, width))
        for name in self.per_box:
            f.create_dataset(name, (0,), PER_BOX[name], maxshape=(None,), chunks=(4096,))
        f.attrs["per_box"] = list(self.per_box)
        f.create_dataset("skipped", (0,), np.int64, maxshape=(None,), chunks=(1024,))
        string = h5py.string_dtype()
        f.create_dataset("skipped_reasons", (0,), string, maxshape=(None,), chunks=(1024,))
        f.attrs.update(feature_dim=self.feature_dim, dtype=self.dtype.name)
        f.attrs.update(dict.fromkeys(COUNTS, 0))
        f.attrs[ALL_FINITE] = True
        f.flush()
        return f

    def add(
        self, image_id: int, image_w: int, image_h: int, boxes: np.ndarray, features: np.ndarray,
        labels: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Buffer one image: `boxes` [n, 4] pixels x1y1x2y2, `features` [n, D], `labels` [n] each
        for the writer's `per_box` names."""
        image_id = int(image_id)
        if image_id in self.done_ids:
            raise UpdownError(
                f"{self.path}: image id {image_id} added twice; each image may appear once"
            )
        boxes, features = np.asarray(boxes), np.asarray(features)
        n = len(features)
        if boxes.shape != (n, 4) or features.shape != (n, self.feature_dim):
            raise UpdownError(
                f"{self.path}: image id {image_id} has boxes {boxes.shape} and features "
                f"{features.shape}; expected [n, 4] and [n, {self.feature_dim}]"
            )
        labels = {name: np.asarray((labels or {}).get(name, ())) for name in self.per_box}
        if any(values.shape != (n,) for values in labels.values()):
            raise UpdownError(f"{self.path}: image id {image_id} needs {n} values of each of "
                              f"{', '.join(self.per_box)}")
        if self._rows + n > len(self._features):
            self.flush()
        if n > len(self._features):  # one image larger than a block: grow the buffers
            self._features = np.empty((n, self.feature_dim), self.dtype)
            self._boxes = np.empty((n, 4), np.float32)
            self._labels = {name: np.empty(n, PER_BOX[name]) for name in self.per_box}
        finite = check_features(self.path, image_id, features, self.allow_nonfinite)
        if self.all_finite is not None:
            self.all_finite = self.all_finite and finite
        rows = slice(self._rows, self._rows + n)
        self._copy_features(image_id, features, rows)
        self._boxes[rows] = boxes
        for name, values in labels.items():
            self._labels[name][rows] = values
        self._rows += n
        self.done_ids.add(image_id)
        self._images.append((image_id, int(image_w), int(image_h), n))
        if len(self._images) >= BLOCK_IMAGES:
            self.flush()

    def _copy_features(self, image_id: int, features: np.ndarray, rows: slice) -> None:
        """Cast into the buffer; values beyond float16's range are an error, not inf."""
        with np.errstate(over="ignore"):
            self._features[rows] = features
        if features.dtype == self.dtype or not len(features):
            return
        limit = np.finfo(self.dtype).max
        if features.max() <= limit and features.min() >= -limit:  # a NaN takes the slow path
            return
        if (np.isinf(self._features[rows]) & np.isfinite(features)).any():
            largest = np.abs(features[np.isfinite(features)]).max()
            raise UpdownError(
                f"{self.path}: image id {image_id} has features beyond the {self.dtype.name} "
                f"range (largest {largest:g}); store them as float32"
            )

    def skip(self, image_id: int, reason: str) -> None:
        """Record an image that could not be processed; skipping an id twice keeps the first reason."""
        image_id = int(image_id)
        if image_id not in self.skipped_ids:
            self.skipped_ids.add(image_id)
            self._skips.append((image_id, str(reason)))

    def flush(self) -> None:
        """Write the buffered images and skips, then commit their counts and flush the file.

        Writes go to the committed counts, not the dataset ends, so a flush interrupted part way
        (Ctrl-C) and run again by `close` rewrites the same places instead of appending twice.
        """
        try:
            self._check_space()
            self._write_blocks()
        except (OSError, RuntimeError) as e:  # a full disk: what was committed before stays, a rerun resumes
            full = no_space(e)
            if full is None:
                raise
            self._close_quietly()
            raise write_error(self.work_path, full, "the features") from None

    def _check_space(self) -> None:
        """Refuse a block that the disk cannot hold before writing any of it: HDF5 recovers badly from
        a write that fails half way (its file can then neither flush nor close)."""
        need = self._rows * (self.feature_dim * self.dtype.itemsize + 16) + SPACE_MARGIN
        stats = os.statvfs(os.path.dirname(os.path.abspath(self.work_path)))
        if self._rows and stats.f_bavail * stats.f_frsize < need:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _write_blocks(self) -> None:
        f, (images, rows, skips) = self._file, self._committed
        if self._images:
            for name, values in zip(PER_IMAGE, zip(*self._images)):
                _write_at(f[name], images, np.asarray(values, PER_IMAGE[name]))
            _write_at(f["boxes"], rows, self._boxes[: self._rows])
            _write_at(f["features"], rows, self._features[: self._rows])
            for name, values in self._labels.items():
                _write_at(f[name], rows, values[: self._rows])
        if self._skips:
            ids, reasons = zip(*self._skips)
            _write_at(f["skipped"], skips, np.asarray(ids, np.int64))
            _write_at(f["skipped_reasons"], skips, np.asarray(reasons, dtype=object))
        committed = (images + len(self._images), rows + self._rows, skips + len(self._skips))
        f.attrs.update(zip(COUNTS, committed))
        if self.all_finite is not None:
            f.attrs[ALL_FINITE] = self.all_finite
        f.flush()
        self._committed, self._images, self._rows, self._skips = committed, [], 0, []

    def _close_quietly(self) -> None:
        """Close the work file after a failed write without writing again (HDF5 would retry and fail)."""
        self._images, self._rows, self._skips = [], 0, []
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 - the write error is what the user needs to see
            pass
        skip_hdf5_shutdown()

    def close(self) -> None:
        """Flush and close the work file without finalizing, so a later run can resume."""
        if self._file.id.valid:
            self.flush()
            self._file.close()
        self._features = self._boxes = None  # the buffers are not needed any more

    def finalize(self, layout: str = "padded", image_keys: list[str] | None = None) -> str:
        """Copy the work file into a contiguous store sorted by image id, rename it onto `path`.

        `image_keys[i]`, when given, is the string key of image id i (the store's `image_keys`)."""
        self.close()
        attrs = {**self.attrs, "dtype": self.dtype.name, "format_version": FORMAT_VERSION}
        if self.all_finite is not None:  # else unknown: the first reader scans it once
            attrs[ALL_FINITE] = self.all_finite
        # On any failure the work file is intact and a rerun finalizes again.
        with h5py.File(self.work_path, "r") as work:
            write_sorted(work, self.path, attrs, layout, image_keys)
        os.remove(self.work_path)
        return self.path


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


def skip_hdf5_shutdown() -> None:
    """After a write failed mid-way, HDF5's own shutdown retries the lost writes and crashes the
    interpreter (a segmentation fault after the error line): end the process before it runs, once the
    other exit handlers registered after h5py's have run and the output is flushed."""
    if not getattr(skip_hdf5_shutdown, "armed", False):
        skip_hdf5_shutdown.armed = True
        atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STATUS[0])


def _write_at(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Resize a growing dataset to end after `values`, written from row `start`."""
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values
    dataset.flush()  # a full disk raises here; at the dataset's close HDF5 would only print it and lose the rows


def _trim(f: h5py.File) -> None:
    """Drop whatever an interrupted flush wrote past the last committed counts."""
    images, rows, skips = (int(f.attrs[k]) for k in COUNTS)
    counts = dict.fromkeys(PER_IMAGE, images)
    counts.update(boxes=rows, features=rows, skipped=skips, skipped_reasons=skips)
    counts.update(dict.fromkeys(f.attrs.get("per_box", ()), rows))
    for name, count in counts.items():
        if len(f[name]) != count:
            f[name].resize(count, axis=0)


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
