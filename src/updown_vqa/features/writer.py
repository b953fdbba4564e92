"""An appending, resumable feature-store writer: images go to a work file, `finalize` makes the store.

Appends land in `{path}.work.h5`, whose chunked flat datasets grow as images arrive. The work file is
only touched inside `flush()`, and the committed counts (attrs `num_images`, `num_rows`,
`num_skipped`) are written last, so a run killed at any other moment leaves a work file that the next
run reopens and trims to what was committed. `finalize` copies it into a contiguous store (which
the loader reads with one pread per image, see features/regions.py), sorted by image id, and renames that onto `path` atomically.

The sorted final copy is features/sorted_copy.py (the merge of parts uses it too), the non-finite
checks features/finite.py.
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
from updown_vqa.core.io import no_space, write_error
from updown_vqa.features.finite import ATTR as ALL_FINITE
from updown_vqa.features.finite import check_features
from updown_vqa.features.sorted_copy import write_sorted
from updown_vqa.features.store import FORMAT_VERSION, PER_BOX, PER_IMAGE

BLOCK_IMAGES = 256  # images buffered in memory before a write
BLOCK_BYTES = 64 << 20  # ... or this many bytes of features, whichever comes first
CHUNK_BYTES = 1 << 20  # target chunk size of the work file's growing datasets
SPACE_MARGIN = 1 << 20  # free bytes kept beyond a block's features and boxes (HDF5's metadata)
EXIT_STATUS = [1]  # the status of a process ended by skip_hdf5_shutdown: a write failed
COUNTS = ("num_images", "num_rows", "num_skipped")  # attrs: what the work file holds for sure


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
