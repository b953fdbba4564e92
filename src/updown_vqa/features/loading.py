"""The one read path for region features: VQA, captioning, prediction and visualisation all use it.

A data module opens its feature stores once as a `RegionTable` (`open_table`, which is where
`data.feature_cache` applies); each split looks its images up in a `StoreSet` over that table, and its
batches come from `StoreSet.batch` through `feature_loader` (recycled worker buffers, see
`updown_vqa.core.batch_slots`) and `gather_regions` (the `device` mode's gather after the transfer).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from updown_vqa.core.batch_slots import SlotDataLoader, SlotPool
from updown_vqa.core.cache import as_list
from updown_vqa.core.datamodule import SplitDataModule
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import Number, OneOf
from updown_vqa.features.regions import WORKER_THREADS, RegionTable
from updown_vqa.features.store import FeatureStore


def open_table(paths, cache: str = "none", pin_memory: bool = False) -> RegionTable | None:
    """One table over every store in `paths` (a store named twice is opened, and cached, once)."""
    paths = list(dict.fromkeys(str(p) for p in paths))
    if not paths:
        return None
    table = RegionTable([FeatureStore(p) for p in paths], cache)
    table.pin = pin_memory and torch.cuda.is_available()  # main-process batches go straight to pinned memory
    return table


class StoreSet:
    """One or several feature stores looked up by image id (train+val training uses two), read through
    `table`, which a data module shares between its splits."""

    def __init__(self, paths: list[str], table: RegionTable | None = None):
        if not paths:
            raise UpdownError("no features file configured for this split (set data.<split>.features)")
        paths = [str(p) for p in paths]
        self.table = table or open_table(paths)
        self.positions = np.array([self.table.position(p) for p in paths], np.int64)
        self.stores = [self.table.stores[k] for k in self.positions]
        self.feature_dim = self.table.feature_dim
        self.max_boxes = max(s.max_boxes for s in self.stores)
        self.attrs = self.stores[0].attrs

    def locate(self, image_ids: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(store index, row) of each image id; the first store that has an image serves it."""
        image_ids = np.asarray(image_ids)  # integers, or strings for stores with image_keys
        which = np.full(len(image_ids), -1, np.int64)
        rows = np.zeros(len(image_ids), np.int64)
        for k, store in enumerate(self.stores):
            todo = np.flatnonzero(which < 0)
            found = store.find(image_ids[todo])
            mine = todo[found >= 0]
            which[mine], rows[mine] = k, found[found >= 0]
        if (which < 0).any():
            self.stores[0].rows(image_ids[which < 0][:1], source)  # raises, naming the id and file
        return which, rows

    def regions(self, which: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Table start and region count (at most `max_boxes`) of each (store index, row)."""
        return self.table.regions(self.positions[which], rows, self.max_boxes)

    def batch(self, starts: np.ndarray, counts: np.ndarray) -> dict[str, torch.Tensor]:
        """The regions of a batch: mask [B, K] (True = a real region) and features [B, K, D] (store
        dtype) + boxes [B, K, 4], or in `device` mode the (start, count) runs that `gather_regions`
        turns into them once the batch is on the accelerator."""
        k = self.max_boxes
        out = {"mask": torch.arange(k)[None, :] < torch.from_numpy(counts)[:, None]}  # [B, K]
        if self.table.cache == "device":
            return out | {"region_starts": torch.from_numpy(starts), "region_counts": torch.from_numpy(counts)}
        return out | self.table.read(starts, counts, k)

    def read(self, image_ids, source: str = "") -> dict[str, np.ndarray]:
        """Features [B, K, D], boxes [B, K, 4] and num_boxes [B] of the given images, read at once."""
        starts, counts = self.regions(*self.locate(np.asarray(image_ids), source))
        regions = self.table.read(starts, counts, self.max_boxes)
        return {"features": regions["features"].numpy(), "boxes": regions["boxes"].numpy(), "num_boxes": counts}


def gather_regions(table: RegionTable | None, batch: dict) -> dict:
    """`on_after_batch_transfer` of `device` mode: the batch's features [B, K, D] and boxes [B, K, 4],
    gathered from the table on the device the batch is on."""
    if "region_starts" in batch:
        table = table.to(batch["index"].device)
        batch.update(table.gather(batch.pop("region_starts"), batch.pop("region_counts"), batch["mask"].shape[1]))
    return batch


def feature_loader(dataset: Dataset, sampler: Sampler, stores: StoreSet, batch_size: int, num_workers: int = 0,
                   pin_memory: bool = False, persistent_workers: bool = True, prefetch_factor: int = 2,
                   worker_buffer_mb: int = 1024) -> DataLoader:
    """A DataLoader of whole batches (the sampler yields index lists) whose workers hand them over
    through recycled shared-memory slots; no workers in `device` mode, where batches are index lists."""
    num_workers = 0 if stores.table.cache == "device" else num_workers
    workers = num_workers > 0
    make = DataLoader
    if workers:
        pool = SlotPool(num_workers, batch_bytes(dataset, batch_size), max_slots=prefetch_factor + 2,  # queued, held
                        budget=worker_buffer_mb << 20)
        make = partial(SlotDataLoader, pool=pool)
    # Its own generator: a new iterator then draws nothing from the global RNG, which resuming restores.
    return make(dataset, sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                persistent_workers=persistent_workers and workers,
                prefetch_factor=prefetch_factor if workers else None, generator=torch.Generator())


def batch_bytes(dataset: Dataset, batch_size: int) -> int:
    """Bytes of the tensors of a full batch (read once, here), with room for longer token rows."""
    batch = dataset[list(range(min(batch_size, len(dataset))))]
    nbytes = sum(v.nbytes for v in batch.values() if torch.is_tensor(v))
    return int(nbytes * 1.05) + (1 << 20)


class FeatureDataModule(SplitDataModule):
    """A data module whose batches carry region features: one RegionTable over every split's stores
    (where `feature_cache` none | ram | device applies), batches handed over by workers through recycled
    buffers (`worker_buffer_mb` each) and read on `worker_read_threads` threads each, and `device` mode's
    gather after the transfer."""

    SETTINGS = {**SplitDataModule.SETTINGS, "feature_cache": OneOf(("none", "ram", "device")),
                "worker_buffer_mb": Number("int", 1, 2**20), "worker_read_threads": Number("int", 1, 256)}

    def __init__(self, splits: dict, builder=None, batch_size: int = 512, eval_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = True,
                 prefetch_factor: int = 2, seed: int = 0, feature_cache: str = "none", worker_buffer_mb: int = 1024,
                 worker_read_threads: int = WORKER_THREADS):
        super().__init__(splits, builder, batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers,
                         prefetch_factor, seed)
        self.feature_cache = feature_cache  # none | ram | device: see updown_vqa.features.regions
        self.worker_buffer_mb = worker_buffer_mb  # recycled batch buffers per worker: see batch_slots
        self.worker_read_threads = worker_read_threads  # threads of each worker's reads: see regions._fill
        self.table: RegionTable | None = None

    def open_table(self, splits: dict | None = None) -> None:
        """One table for all splits (or those given): a store used by two splits is opened (and cached) once."""
        paths = [p for files in (splits or self.splits).values() for p in as_list(files.get("features"))]
        self.table = open_table(paths, self.feature_cache, self.pin_memory)
        self.table.worker_threads = self.worker_read_threads
        if self.feature_cache == "device":
            self.table.to(self.trainer.strategy.root_device if self.trainer else "cpu")

    def stores(self, split: str) -> StoreSet:
        return StoreSet(as_list(self.splits[split].get("features")), self.table)

    def check_feature_sizes(self) -> None:
        dims = {d.stores.feature_dim for d in self.datasets.values()}
        if len(dims) > 1:
            raise UpdownError(f"splits have different feature sizes {sorted(dims)}; use one extractor")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """In `device` mode, gather the batch's region features from the table where the batch is."""
        return gather_regions(self.table, batch)

    @property
    def feature_dim(self) -> int:
        return self.datasets["train" if "train" in self.datasets else next(iter(self.datasets))].stores.feature_dim

    @property
    def feature_attrs(self) -> dict:
        return self.datasets["train" if "train" in self.datasets else next(iter(self.datasets))].stores.attrs

    def make_loader(self, dataset, sampler, batch_size: int) -> DataLoader:
        return feature_loader(dataset, sampler, dataset.stores, batch_size, self.num_workers, self.pin_memory,
                              self.persistent_workers, self.prefetch_factor, self.worker_buffer_mb)


def read_rows(store: FeatureStore, rows, max_boxes: int | None = None) -> dict[str, np.ndarray]:
    """Features [B, K, D], boxes [B, K, 4] and num_boxes [B] of rows of one store (scripts, tests)."""
    rows = np.asarray(rows, np.int64)
    table = RegionTable([store])
    starts, counts = table.regions(np.zeros(len(rows), np.int64), rows, max_boxes or store.max_boxes)
    regions = table.read(starts, counts, max_boxes or store.max_boxes)
    return {"features": regions["features"].numpy(), "boxes": regions["boxes"].numpy(), "num_boxes": counts}
