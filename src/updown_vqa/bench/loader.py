"""Loader throughput: the project's loader, a naive per-question h5py reader and a numpy gather of the
same bytes (the physical reference), timed in steady state; `python -m updown_vqa.bench` (bench/cli.py)
is the command."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.data import VQADataModule, VQADataset


class NaiveDataset(Dataset):
    """The usual per-question reader: h5py opened lazily in each worker, one image read per question."""

    def __init__(self, dataset: VQADataset):
        self.paths = [s.path for s in dataset.stores.stores]
        self.which, self.rows, self.max_boxes = dataset.which, dataset.rows, dataset.stores.max_boxes
        self.tokens, self.lengths, self.targets = dataset.tokens, dataset.lengths, dataset.targets
        self.num_answers, self.files = dataset.num_answers, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.files is None:  # h5py handles do not survive a fork: open in the worker
            self.files = [h5py.File(p, "r") for p in self.paths]
        f, row, k = self.files[self.which[i]], int(self.rows[i]), self.max_boxes
        if "offsets" in f:
            start, end = (int(x) for x in f["offsets"][row : row + 2])
            features, boxes = f["features"][start:end], f["boxes"][start:end]
        else:
            count = int(f["num_boxes"][row])
            features, boxes = f["features"][row][:count], f["boxes"][row][:count]
        indptr, cols, vals = self.targets
        targets = torch.zeros(self.num_answers)
        targets[cols[indptr[i] : indptr[i + 1]]] = torch.from_numpy(vals[indptr[i] : indptr[i + 1]])
        return {"features": torch.from_numpy(_pad(features[:k], k)), "boxes": torch.from_numpy(_pad(boxes[:k], k)),
                "num_boxes": min(len(features), k), "tokens": self.tokens[i], "lengths": self.lengths[i],
                "targets": targets}


def _pad(x: np.ndarray, k: int) -> np.ndarray:
    return np.pad(x, ((0, k - len(x)), (0, 0)))


def naive_loader(dataset: VQADataset, batch_size: int, num_workers: int, seed: int = 0) -> DataLoader:
    """The naive reference: a default DataLoader (shuffled, default collate) over `NaiveDataset`."""
    return DataLoader(NaiveDataset(dataset), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def gather_batches(dataset: VQADataset, batch_size: int, seed: int = 0):
    """The physical reference: numpy gathers of the batches' features from a memory map of the store."""
    store = dataset.stores.stores[0]
    with h5py.File(store.path, "r") as f:
        offset, shape = f["features"].id.get_offset(), f["features"].shape
    if len(dataset.stores.stores) > 1 or offset is None:
        raise UpdownError(f"{store.path}: the numpy reference needs one contiguous store")
    features = np.memmap(store.path, dtype=store.dtype, mode="r", offset=offset, shape=shape)
    rng = np.random.default_rng(seed)
    slots = np.arange(dataset.stores.max_boxes)
    while True:
        for index in np.array_split(rng.permutation(len(dataset)), max(1, len(dataset) // batch_size)):
            if store.layout == "padded":
                yield features[dataset.rows[index]]  # [B, K, D]
            else:
                yield features[np.minimum(dataset.region_starts[index, None] + slots, len(features) - 1)]


def forever(loader):
    while True:
        yield from loader


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def consume(batch) -> None:
    """Read one value per 4 KiB page of the batch's features, as its consumer would (the model, or the
    host-to-device copy): the first read of a page that a worker filled maps it into this process, a
    cost that a loader which is never read would hide."""
    features = batch["features"] if isinstance(batch, dict) else batch
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if features.device.type == "cpu" and features.numel():
        features.reshape(-1)[:: max(1, 4096 // features.element_size())].sum()


def time_batches(batches, count: int, warmup: int, bytes_per_sample: int, step=None, device=None,
                 probe=None) -> dict:
    """Steady-state samples/s and MB/s of an iterator of batches, after `warmup` untimed batches;
    each batch is consumed (`consume`) as a training step would."""
    device = device or torch.device("cpu")
    step = step or (lambda batch: batch)
    for _ in range(warmup):
        consume(step(next(batches)))
    sync(device)
    samples, start = 0, time.perf_counter()
    for _ in range(count):
        batch = step(next(batches))
        consume(batch)
        samples += len(batch["features"] if isinstance(batch, dict) else batch)
    sync(device)
    seconds = time.perf_counter() - start
    result = {"samples_per_s": samples / seconds, "mb_per_s": samples * bytes_per_sample / seconds / 1e6,
              "batches": count, "seconds": seconds, "batches_per_s": count / seconds}
    return result | ({"memory": probe()} if probe else {})


def pss_mb(pid: int, field: str = "Pss") -> float:
    """Proportional set size of a process (shared pages divided among their users), in MB; `field`
    Pss_Anon, Pss_File or Pss_Shmem for a part of it."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


def children(pid: int) -> list[int]:
    """All descendants of a process (DataLoader workers)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found + [g for c in found for g in children(c)]


def memory_probe(feature_bytes: int):
    """A function returning PSS of this process, of each worker and of the tree, in MB."""
    def probe() -> dict:
        main, workers = pss_mb(os.getpid()), [pss_mb(c) for c in children(os.getpid())]
        tree = main + sum(workers)
        shmem = [pss_mb(c, "Pss_Shmem") for c in children(os.getpid())]  # batches in flight, slots
        return {"main_mb": main, "workers_mb": workers, "max_worker_mb": max(workers, default=0.0),
                "workers_shmem_mb": shmem, "tree_mb": tree, "feature_mb": feature_bytes / 1e6, "tree_over_features": tree * 1e6 / feature_bytes}
    return probe


def pick_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def loader_throughput(dm: VQADataModule, batches: int, warmup: int, device: torch.device,
                      memory: bool = False) -> dict:
    """The project's training loader, each batch moved to `device` (pinned copies are non-blocking)."""
    table = dm.table
    item = table.feature_dim * table.dtype.itemsize * dm.datasets["train"].stores.max_boxes
    feature_bytes = int(table.base[-1]) * table.feature_dim * table.dtype.itemsize
    def step(batch):
        return dm.on_after_batch_transfer(to_device(batch, device), 0)
    loader = dm.train_dataloader()
    warmup += len(loader.pool.storages) if hasattr(loader, "pool") else 0  # each slot's first fill faults it in
    return time_batches(forever(loader), batches, warmup, item, step, device,
                        memory_probe(feature_bytes) if memory else None)


def image_loader_throughput(dm, batches: int, warmup: int, device: torch.device) -> dict:
    """The image DataModule's training loader (decoding and resizing in its workers), each batch moved
    to `device`: questions/s as `samples_per_s`, and the distinct images decoded per second."""
    loader = forever(dm.train_dataloader())
    for _ in range(warmup):
        to_device(next(loader), device)
    sync(device)
    samples, images, start = 0, 0, time.perf_counter()
    for _ in range(batches):
        batch = to_device(next(loader), device)
        samples, images = samples + len(batch["tokens"]), images + len(batch["images"])
    sync(device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": samples / seconds, "images_per_s": images / seconds, "batches": batches,
            "seconds": seconds, "batches_per_s": batches / seconds}


def datamodule(data: dict, batch_size: int, num_workers: int, pin_memory: bool = False,
               feature_cache: str = "none", **extra) -> VQADataModule:
    """A set-up VQADataModule over `data` (keyword arguments such as `synthetic_data` returns)."""
    dm = VQADataModule(**data, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                       feature_cache=feature_cache, **extra)
    dm.prepare_data()
    dm.setup("fit")
    return dm
