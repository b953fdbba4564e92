"""Region features of a batch of images, read one of three ways (`data.feature_cache`).

Every store is viewed as a table of regions [R, D] (a padded store [N, K, D] as [N*K, D]); an image
is the run of `count` rows from `start`, and the stores of a data module are concatenated into one
table, so a batch is described by two int64 vectors whatever the stores' layouts.

- `none`: one positioned read (pread) per image, in file order, straight into the batch tensor. The
  file is never memory-mapped, so a DataLoader worker's memory stays small whatever the store's size.
  Chunked or compressed stores (unfinished ones) fall back to one h5py read per image.
- `ram`: the whole table is loaded once into shared memory; forked workers gather from it, no copy.
- `device`: the table on the accelerator; batches carry (start, count) and are gathered there.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import torch
from torch.utils.data import get_worker_info

from updown_vqa.core.batch_slots import worker_tensor
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.store import FeatureStore

MODES = ("none", "ram", "device")
_LOAD_CHUNK_BYTES = 64 << 20
WORKER_THREADS = 2  # a worker's reads run on 2 threads: one worker then outpaces reading in the main process


class _Layout:
    """One store's region runs and, when contiguous, the byte offsets of `features` and `boxes`."""

    def __init__(self, store: FeatureStore):
        with h5py.File(store.path, "r") as f:
            features, boxes = f["features"], f["boxes"]
            self.feature_offset = _offset(features)
            self.box_offset = _offset(boxes) if boxes.dtype == np.float32 else None
            self.width = features.shape[1] if store.layout == "padded" else 1  # regions per row
            self.num_regions = len(store) * self.width if store.layout == "padded" else len(features)
        if store.layout == "padded":
            self.starts = np.arange(len(store), dtype=np.int64) * self.width
            self.counts = np.minimum(store.num_boxes, self.width).astype(np.int64)
        else:
            self.starts = store.offsets[:-1].astype(np.int64)
            self.counts = np.diff(store.offsets).astype(np.int64)


def _offset(dataset: h5py.Dataset) -> int | None:
    """Byte offset of a contiguous, uncompressed dataset in its file; None when it must go via h5py."""
    if dataset.chunks is not None or dataset.compression is not None:
        return None
    return dataset.id.get_offset()


class RegionTable:
    """All the region features of a list of stores, read by (start, count) runs of table rows."""

    def __init__(self, stores: list[FeatureStore], cache: str = "none"):
        if cache not in MODES:
            raise UpdownError(f"data.feature_cache={cache!r}: must be one of {', '.join(MODES)}")
        dims = {s.feature_dim for s in stores}
        if len(dims) > 1:
            raise UpdownError(f"feature stores {[s.path for s in stores]} have different feature sizes "
                              f"{sorted(dims)}; use one extractor")
        self.stores, self.cache = stores, cache
        self.layouts = [_Layout(s) for s in stores]
        self.base = np.cumsum([0] + [lay.num_regions for lay in self.layouts])  # first row of each store
        self.feature_dim = dims.pop()
        self.dtype = np.result_type(*[s.dtype for s in stores])
        self.features = self.boxes = None  # [R + 1, D], [R + 1, 4] once loaded; row R is all zeros
        self.pin = False  # batches read in the main process go straight to pinned memory
        self.worker_threads = WORKER_THREADS  # reading threads of each DataLoader worker
        self._pid, self._fds, self._files, self._threads = None, None, None, None
        if cache == "ram":
            self.load()

    def __getstate__(self):
        return self.__dict__ | {"_pid": None, "_fds": None, "_files": None, "_threads": None}  # stay in their process

    def position(self, path: str) -> int:
        return [s.path for s in self.stores].index(str(path))

    def regions(self, positions: np.ndarray, rows: np.ndarray, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
        """Table start and region count (at most `max_boxes`) of each (store position, row)."""
        starts, counts = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
        for p, layout in enumerate(self.layouts):
            mine = positions == p
            starts[mine] = self.base[p] + layout.starts[rows[mine]]
            counts[mine] = np.minimum(layout.counts[rows[mine]], max_boxes)
        return starts, counts

    def read(self, starts: np.ndarray, counts: np.ndarray, max_boxes: int) -> dict[str, torch.Tensor]:
        """Features [B, K, D] (store dtype) and boxes [B, K, 4], zero beyond each image's count; in a
        worker of the project's loaders the features are read straight into its batch slot (batch_slots)."""
        if self.features is not None and self.features.device.type != "cpu":
            return self.gather(torch.from_numpy(starts), torch.from_numpy(counts), max_boxes)
        shape, dtype = (len(starts), max_boxes), _torch_dtype(self.dtype)
        features = worker_tensor((*shape, self.feature_dim), dtype)
        out = {"features": features if features is not None else self._batch_tensor((*shape, self.feature_dim), dtype),
               "boxes": self._batch_tensor((*shape, 4), torch.float32)}
        self._fill(starts, counts, out["features"].numpy(), out["boxes"].numpy())
        return out

    def gather(self, starts: torch.Tensor, counts: torch.Tensor, max_boxes: int) -> dict[str, torch.Tensor]:
        """Index gather from the loaded table, on the table's device; `starts`, `counts` are [B]."""
        device = self.features.device
        if device.type == "cpu":  # a copy per image: no index tensor, no threads
            return self.read(starts.numpy(), counts.numpy(), max_boxes)
        starts, counts = starts.to(device), counts.to(device)
        slots = torch.arange(max_boxes, device=device)  # [K]
        zero_row = self.features.shape[0] - 1
        index = torch.where(slots < counts[:, None], starts[:, None] + slots, zero_row)  # [B, K]
        shape = (len(starts), max_boxes)
        features = self._batch_tensor((*shape, self.feature_dim), self.features.dtype, device)
        boxes = self._batch_tensor((*shape, 4), torch.float32, device)
        torch.index_select(self.features, 0, index.view(-1), out=features.view(-1, self.feature_dim))
        torch.index_select(self.boxes, 0, index.view(-1), out=boxes.view(-1, 4))
        return {"features": features, "boxes": boxes}

    def _batch_tensor(self, shape: tuple[int, ...], dtype: torch.dtype, device=None) -> torch.Tensor:
        """An empty batch tensor; fresh pages cost more than the copy into them, so in the main process:
        pinned when the loader pins (cached pinned blocks, no pinning copy), else a numpy array, which
        asks for transparent huge pages (about 3x faster to fault in than torch's 4 KiB pages). A
        worker's small tensors are copied into its batch slot (batch_slots), so they stay plain."""
        if device is not None and device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        if get_worker_info() is not None:
            return torch.empty(shape, dtype=dtype)
        if self.pin:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        return torch.from_numpy(np.empty(shape, torch.empty(0, dtype=dtype).numpy().dtype))

    def to(self, device: torch.device | str) -> RegionTable:
        """In `device` mode, load the table onto `device` (or move it there); a no-op once there."""
        device = torch.device(device)
        if self.cache != "device":
            return self
        if self.features is None:
            self.load(device)
        elif self.features.device != device:
            self.features, self.boxes = self.features.to(device), self.boxes.to(device)
        return self

    def load(self, device: torch.device | str = "cpu") -> None:
        """Read every store into one table: shared memory in `ram` mode, else on `device`."""
        device = torch.device(device)
        shared = self.cache == "ram" and device.type == "cpu"
        rows = int(self.base[-1]) + 1
        self._check_fits(rows * (self.feature_dim * self.dtype.itemsize + 16), device)
        try:
            self.features = _empty((rows, self.feature_dim), _torch_dtype(self.dtype), shared, device)
            self.boxes = _empty((rows, 4), torch.float32, shared, device)
        except RuntimeError as e:
            nbytes = rows * self.feature_dim * self.dtype.itemsize
            raise UpdownError(
                f"data.feature_cache={self.cache}: cannot allocate {nbytes / 2**30:.1f} GiB for the features "
                f"of {[s.path for s in self.stores]} on {device}{' in /dev/shm' if shared else ''} ({e}); "
                "use data.feature_cache=none, or give the machine (or container, --shm-size) more memory"
            ) from e
        self.features[-1], self.boxes[-1] = 0, 0
        for p, store in enumerate(self.stores):
            self._load_store(p, store)

    def _check_fits(self, nbytes: int, device: torch.device) -> None:
        """Refuse a table larger than the memory available for it, before any of it is loaded."""
        available, where = available_memory(device)
        if nbytes <= available:
            return
        smaller = "a float16 store (convert_tsv --dtype float16), " if self.dtype.itemsize > 2 else ""
        raise UpdownError(
            f"data.feature_cache={self.cache}: the features of {[s.path for s in self.stores]} need "
            f"{nbytes / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is available ({where}); use "
            f"data.feature_cache=none (reads from the file, in little memory), {smaller}or a smaller split")

    def _load_store(self, p: int, store: FeatureStore) -> None:
        layout, base = self.layouts[p], int(self.base[p])
        rows = max(1, _LOAD_CHUNK_BYTES // (layout.width * self.feature_dim * self.dtype.itemsize))
        step = rows * layout.width  # whole padded rows per read
        with h5py.File(store.path, "r") as f:
            features, boxes = f["features"], f["boxes"]
            for lo in range(0, layout.num_regions, step):
                hi = min(lo + step, layout.num_regions)
                chunk = _rows(features, lo, hi, layout.width, self.feature_dim)
                self.features[base + lo : base + hi].copy_(torch.from_numpy(chunk.astype(self.dtype)))
                self.boxes[base + lo : base + hi].copy_(torch.from_numpy(_rows(boxes, lo, hi, layout.width, 4)))

    def _fill(self, starts: np.ndarray, counts: np.ndarray, features: np.ndarray, boxes: np.ndarray) -> None:
        """Fill the batch with one copy (from the table) or read (from the file) per image, in table and
        so file order; a repeated image is copied from its first copy. A DataLoader worker splits its
        file reads between `worker_threads` threads (a pread releases the GIL); the main process reads
        on its one thread, the one that trains."""
        table = (self.features.numpy(), self.boxes.numpy()) if self.features is not None else None
        fds = None if table else self._open()
        order = np.argsort(starts, kind="stable")
        threads = self.worker_threads if fds is not None and get_worker_info() is not None else 1
        if threads > 1 and (len(order) < 2 * threads or
                            not all(self._by_pread(p, fd, features.dtype) for p, fd in enumerate(fds))):
            threads = 1  # h5py reads hold its lock: no gain from threads
        parts = np.array_split(order, threads)
        pending = [self._pool().submit(self._fill_part, part, starts, counts, features, boxes, table, fds)
                   for part in parts[1:]]
        self._fill_part(parts[0], starts, counts, features, boxes, table, fds)
        for future in pending:
            future.result()

    def _fill_part(self, order: np.ndarray, starts: np.ndarray, counts: np.ndarray, features: np.ndarray,
                   boxes: np.ndarray, table, fds) -> None:
        positions = np.searchsorted(self.base, starts[order], side="right") - 1
        previous = -1
        for b, p in zip(order, positions):
            start, count = int(starts[b]), int(counts[b])
            features[b, count:], boxes[b, count:] = 0, 0
            if previous >= 0 and starts[previous] == start:
                features[b], boxes[b] = features[previous], boxes[previous]
            elif count and table:
                features[b, :count], boxes[b, :count] = table[0][start : start + count], table[1][start : start + count]
            elif count:
                self._read_run(p, fds[p], start - int(self.base[p]), features[b, :count], boxes[b, :count])
            previous = b

    def _by_pread(self, p: int, fd: int | None, dtype: np.dtype) -> bool:
        """Store `p` is read with preads (contiguous, in the batch's dtype), not through h5py."""
        return fd is not None and self.stores[p].dtype == dtype

    def _pool(self) -> ThreadPoolExecutor:
        """This process's reading threads besides its own (made after a fork, in the process that reads)."""
        self._open()
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max(1, self.worker_threads - 1), thread_name_prefix="region-read")
        return self._threads

    def _read_run(self, p: int, fd: int | None, start: int, features: np.ndarray, boxes: np.ndarray) -> None:
        layout = self.layouts[p]
        if not self._by_pread(p, fd, features.dtype):  # chunked store: go through h5py
            f = self._h5(p)
            features[:] = _rows(f["features"], start, start + len(features), layout.width, features.shape[1])
            boxes[:] = _rows(f["boxes"], start, start + len(boxes), layout.width, 4)
            return
        _pread_into(fd, features, layout.feature_offset + start * features[0].nbytes)
        _pread_into(fd, boxes, layout.box_offset + start * boxes[0].nbytes)

    def _open(self) -> list[int | None]:
        """One read-only descriptor per contiguous store, opened in the reading process."""
        if self._pid != os.getpid():
            self._fds = [os.open(s.path, os.O_RDONLY) if lay.feature_offset is not None
                         and lay.box_offset is not None else None
                         for s, lay in zip(self.stores, self.layouts)]
            self._pid, self._files, self._threads = os.getpid(), {}, None
        return self._fds

    def _h5(self, p: int) -> h5py.File:
        """Store `p` opened with h5py in the reading process (h5py handles do not survive a fork)."""
        self._open()
        if p not in self._files:
            self._files[p] = h5py.File(self.stores[p].path, "r")
        return self._files[p]


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a table could take on `device`, and where that figure comes from: the accelerator's free
    memory, or MemAvailable (at most /dev/shm's free space, where `ram` mode allocates). UPDOWN_AVAILABLE_BYTES
    stands in for it where tests need a small machine."""
    if os.environ.get("UPDOWN_AVAILABLE_BYTES"):
        return int(os.environ["UPDOWN_AVAILABLE_BYTES"]), "UPDOWN_AVAILABLE_BYTES"
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {device}"
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    if os.path.isdir("/dev/shm"):
        shm = os.statvfs("/dev/shm")
        if shm.f_bavail * shm.f_frsize < available:
            return shm.f_bavail * shm.f_frsize, "free in /dev/shm"
    return available, "MemAvailable"


def _pread_into(fd: int, out: np.ndarray, offset: int) -> None:
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):  # preadv may return short reads on some file systems
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise UpdownError(f"feature store (fd {fd}) ended early at byte {offset + done}; re-create it")
        done += n


def _rows(dataset: h5py.Dataset, lo: int, hi: int, width: int, dim: int) -> np.ndarray:
    """Table rows lo:hi of a dataset, flat [R, dim] or padded [N, width, dim] (lo, hi within one row
    or whole rows)."""
    if width == 1:
        return dataset[lo:hi]
    if lo // width == (hi - 1) // width:
        return dataset[lo // width, lo % width : (hi - 1) % width + 1]
    first, last = lo // width, -(-hi // width)
    return dataset[first:last].reshape(-1, dim)[lo - first * width : hi - first * width]


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool, device="cpu") -> torch.Tensor:
    """An uninitialised tensor; in shared memory when `shared`, allocated there directly (no copy)."""
    if not shared:
        return torch.empty(shape, dtype=dtype, device=device)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(max(1, math.prod(shape)) * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
