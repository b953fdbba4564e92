"""Batches of questions and region features: Dataset, batch sampler and LightningDataModule."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from updown_vqa.core.batch_slots import SlotDataLoader, SlotPool
from updown_vqa.core.cache import as_list, load_cache
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.regions import RegionTable
from updown_vqa.features.store import FeatureStore
from updown_vqa.vqa.preprocess import preprocess


class StoreSet:
    """One or several feature stores looked up by image id (train+val training uses two).

    Their regions are read through `table`, which a data module shares between its splits.
    """

    def __init__(self, paths: list[str], table: RegionTable | None = None):
        if not paths:
            raise UpdownError("no features file configured for this split (set data.<split>.features)")
        paths = [str(p) for p in paths]
        self.table = table or RegionTable([FeatureStore(p) for p in dict.fromkeys(paths)])
        self.positions = np.array([self.table.position(p) for p in paths], np.int64)
        self.stores = [self.table.stores[k] for k in self.positions]
        self.feature_dim = self.table.feature_dim
        self.max_boxes = max(s.max_boxes for s in self.stores)
        self.attrs = self.stores[0].attrs

    def locate(self, image_ids: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(store index, row) of each image id."""
        which = np.full(len(image_ids), -1, np.int64)
        rows = np.zeros(len(image_ids), np.int64)
        for k, store in enumerate(self.stores):
            todo = which < 0
            found = np.array([int(i) in store._row for i in image_ids[todo]], bool)
            idx = np.flatnonzero(todo)[found]
            which[idx], rows[idx] = k, store.rows(image_ids[idx])
        if (which < 0).any():
            self.stores[0].rows(image_ids[which < 0][:1], source)  # raises, naming the id and file
        return which, rows

    def regions(self, which: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Table start and region count (at most `max_boxes`) of each (store index, row)."""
        return self.table.regions(self.positions[which], rows, self.max_boxes)

    def read(self, which: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Features [B, K, D], boxes [B, K, 4] and num_boxes [B] of the given rows, in one sorted read."""
        starts, counts = self.regions(which, rows)
        regions = self.table.read(starts, counts, self.max_boxes)
        return {"features": regions["features"].numpy(), "boxes": regions["boxes"].numpy(), "num_boxes": counts}


class VQADataset(Dataset):
    """Indexed by a list of question indices (a whole batch), returning a collated batch.

    Reading a batch at once lets the feature store gather all of its images in one sorted read.
    """

    def __init__(self, arrays: dict[str, np.ndarray], split: str, stores: StoreSet, num_answers: int,
                 source: str = ""):
        self.tokens = torch.from_numpy(arrays[f"{split}/tokens"])
        self.lengths = torch.from_numpy(arrays[f"{split}/lengths"])
        self.question_ids = arrays[f"{split}/question_ids"]
        self.image_ids = arrays[f"{split}/image_ids"]
        self.num_answers = num_answers
        self.stores = stores
        self.which, self.rows = stores.locate(self.image_ids, source or split)
        self.region_starts, self.region_counts = stores.regions(self.which, self.rows)
        self.annotated = f"{split}/target_rows" in arrays
        if self.annotated:
            self.targets = _csr(arrays, split, "target", len(self.tokens))
            self.accuracy = _csr(arrays, split, "acc", len(self.tokens))
            self.answer_type = torch.from_numpy(arrays[f"{split}/answer_type"])

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        starts, counts = self.region_starts[index], self.region_counts[index]
        k, lengths = self.stores.max_boxes, self.lengths[index]
        batch = {
            "index": torch.from_numpy(index),
            "tokens": self.tokens[index, : int(lengths.max())],  # [B, T]: padding beyond the longest cut
            "lengths": lengths,  # [B]
            "mask": torch.arange(k)[None, :] < torch.from_numpy(counts)[:, None],  # [B, K]
        }
        if self.stores.table.cache == "device":  # gathered on the accelerator, after the transfer
            batch["region_starts"], batch["region_counts"] = torch.from_numpy(starts), torch.from_numpy(counts)
        else:  # features [B, K, D] in the store's dtype, boxes [B, K, 4]
            batch.update(self.stores.table.read(starts, counts, k))
        if self.annotated:
            batch["targets"] = _dense(self.targets, index, self.num_answers)  # [B, A]
            batch["accuracy"] = _dense(self.accuracy, index, self.num_answers)  # [B, A]
            batch["answer_type"] = self.answer_type[index]
        return batch


def _csr(arrays, split: str, name: str, num_rows: int):
    """COO (row, col, value) arrays as CSR pieces for fast per-row lookup."""
    rows, cols, vals = (arrays[f"{split}/{name}_{k}"] for k in ("rows", "cols", "vals"))
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(num_rows + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols[order], vals[order]


def _dense(csr, index: np.ndarray, num_answers: int) -> torch.Tensor:
    indptr, cols, vals = csr
    out = np.zeros((len(index), num_answers), np.float32)
    for b, i in enumerate(index):
        out[b, cols[indptr[i] : indptr[i + 1]]] = vals[indptr[i] : indptr[i + 1]]
    return torch.from_numpy(out)


class BatchSampler(Sampler):
    """Yields whole batches of indices; reshuffled each epoch from (seed, epoch); sharded per process.

    Its position (epoch and batches already yielded) is part of the training state, so a resumed run
    continues with the exact batch that would have come next.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0, pad: bool = True):
        self.num_items, self.batch_size, self.shuffle = num_items, batch_size, shuffle
        self.seed, self.drop_last = seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.pad = pad  # wrap around so every process gets as many batches (training); else each item once
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start_batch = epoch, 0

    def _shard(self) -> np.ndarray:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).numpy()
        else:
            order = np.arange(self.num_items)
        if self.pad:  # as DistributedSampler; unpadded shards differ by one item at most
            order = np.resize(order, math.ceil(self.num_items / self.num_replicas) * self.num_replicas)
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        shard = self._shard()
        for b in range(self.start_batch, len(self)):
            self.start_batch = b + 1
            yield shard[b * self.batch_size : (b + 1) * self.batch_size].tolist()
        self.start_batch = 0

    def __len__(self) -> int:
        if self.pad:
            per_replica = math.ceil(self.num_items / self.num_replicas)
        else:
            per_replica = len(range(self.rank, self.num_items, self.num_replicas))
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(per_replica / self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start_batch = state["epoch"], state["start_batch"]


def shard(trainer, split: str) -> dict:
    """This process's share of a split, as BatchSampler arguments: under DDP every process gets as
    many training batches (padded), and each evaluation item is seen once."""
    return {"num_replicas": trainer.world_size if trainer else 1,
            "rank": trainer.global_rank if trainer else 0, "pad": split == "train"}


def use_sampler(datamodule, split: str, sampler: BatchSampler) -> BatchSampler:
    """Make `sampler` the data module's sampler of `split`; a resumed run's training sampler starts
    at the batch that would have come next (`datamodule.train_position`, set by ResumeState)."""
    if split == "train" and datamodule.train_position:
        sampler.load_state_dict(datamodule.train_position)
        datamodule.train_position = None
    datamodule.samplers[split] = sampler
    return sampler


class VQADataModule(pl.LightningDataModule):
    """VQA v2-format questions/annotations and feature stores per split (`train`, `val`, `test`).

    Each split is {questions, annotations, features}, each a path or a list of paths. `builder`, when
    given, is called by `prepare_data` to create missing files (the built-in `shapes` dataset).
    `feature_cache` (none | ram | device) says where region features are read from during training;
    `worker_buffer_mb` bounds each worker's recycled batch buffers (more: faster workers, more memory).
    """

    def __init__(self, train: dict, val: dict, cache_dir: str, test: dict | None = None,
                 builder: Callable[[], None] | None = None, max_question_length: int = 14,
                 min_answer_count: int = 9, answer_splits=("train",), vocab_splits=("train",),
                 batch_size: int = 512, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = True, prefetch_factor: int = 2, seed: int = 0,
                 feature_cache: str = "none", worker_buffer_mb: int = 256):
        super().__init__()
        self.splits = {k: dict(v) for k, v in {"train": train, "val": val, "test": test}.items() if v}
        self.cache_dir, self.builder = cache_dir, builder
        self.preprocess_args = {"max_question_length": max_question_length,
                                "min_answer_count": min_answer_count,
                                "answer_splits": list(answer_splits), "vocab_splits": list(vocab_splits)}
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.persistent_workers, self.prefetch_factor, self.seed = persistent_workers, prefetch_factor, seed
        self.feature_cache = feature_cache  # none | ram | device: see updown_vqa.features.regions
        self.worker_buffer_mb = worker_buffer_mb  # recycled batch buffers per worker: see batch_slots
        self.table: RegionTable | None = None
        self.datasets: dict[str, VQADataset] = {}
        self.samplers: dict[str, BatchSampler] = {}
        self.train_position: dict | None = None  # {"epoch", "start_batch"} a resumed run starts from

    def _stage_splits(self, stage: str | None) -> dict:
        """The splits a stage reads: training needs only train and val (and any split the answer or
        word vocabulary is counted on), not the test files; other stages read every configured split."""
        if stage not in (None, "fit", "validate"):
            return self.splits
        needed = {"train", "val", *self.preprocess_args["answer_splits"], *self.preprocess_args["vocab_splits"]}
        return {k: v for k, v in self.splits.items() if k in needed}

    def _preprocess(self, stage: str | None = None) -> str:
        return preprocess(self._stage_splits(stage), self.cache_dir, **self.preprocess_args)

    def prepare_data(self) -> None:
        if self.builder is not None:
            self.builder()
        self._preprocess()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess(stage))
        splits = self._stage_splits(stage)
        paths = dict.fromkeys(p for files in splits.values() for p in as_list(files.get("features")))
        if paths:  # one table for all splits: a store used by two splits is cached once
            self.table = RegionTable([FeatureStore(p) for p in paths], self.feature_cache)
            self.table.pin = self.pin_memory and torch.cuda.is_available()
        for split, files in splits.items():
            stores = StoreSet(as_list(files.get("features")), self.table)
            self.datasets[split] = VQADataset(arrays, split, stores, len(self.answers),
                                              source=", ".join(as_list(files.get("questions"))))
        dims = {d.stores.feature_dim for d in self.datasets.values()}
        if len(dims) > 1:
            raise UpdownError(f"splits have different feature sizes {sorted(dims)}; use one extractor")
        if self.feature_cache == "device":
            self.table.to(self.trainer.strategy.root_device if self.trainer else "cpu")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """In `device` mode, gather the batch's region features from the table where the batch is."""
        if "region_starts" in batch:
            table = self.table.to(batch["tokens"].device)
            batch.update(table.gather(  # features [B, K, D], boxes [B, K, 4]
                batch.pop("region_starts"), batch.pop("region_counts"), batch["mask"].shape[1]))
        return batch

    @property
    def vocab(self) -> list[str]:
        return self.meta["vocab"]

    @property
    def answers(self) -> list[str]:
        return self.meta["answers"]

    @property
    def feature_dim(self) -> int:
        return self.datasets["train" if "train" in self.datasets else "val"].stores.feature_dim

    @property
    def feature_attrs(self) -> dict:
        return self.datasets["train" if "train" in self.datasets else "val"].stores.attrs

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler = use_sampler(self, split, BatchSampler(len(self.datasets[split]), self.batch_size,
                                                        shuffle=shuffle, seed=self.seed,
                                                        **shard(self.trainer, split)))
        num_workers = 0 if self.feature_cache == "device" else self.num_workers  # batches are index lists
        workers = num_workers > 0
        make = partial(SlotDataLoader, pool=self._slot_pool(split, num_workers)) if workers else DataLoader
        # Its own generator: a new iterator then draws nothing from the global RNG, which resuming restores.
        return make(self.datasets[split], sampler=sampler, batch_size=None,
                          num_workers=num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers and workers,
                          prefetch_factor=self.prefetch_factor if workers else None,
                          generator=torch.Generator())

    def _slot_pool(self, split: str, num_workers: int) -> SlotPool:
        """Recycled buffers for the features of `num_workers` workers' batches (see batch_slots)."""
        table, boxes = self.table, self.datasets[split].stores.max_boxes
        slot_bytes = self.batch_size * boxes * table.feature_dim * table.dtype.itemsize
        return SlotPool(num_workers, slot_bytes, max_slots=self.prefetch_factor + 3,  # queued, held, freed late
                        budget=self.worker_buffer_mb << 20)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val", shuffle=False)
