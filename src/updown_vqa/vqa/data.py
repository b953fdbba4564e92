"""Batches of questions and region features: Dataset, batch sampler and LightningDataModule."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.loading import StoreSet, feature_loader, gather_regions, open_table
from updown_vqa.features.regions import RegionTable
from updown_vqa.vqa.preprocess import as_list, load_cache, preprocess


class VQADataset(Dataset):
    """Indexed by a list of question indices (a whole batch), returning a collated batch.

    Reading a batch at once lets the feature store gather all of its images in one sorted read.
    """

    def __init__(self, arrays: dict[str, np.ndarray], split: str, stores: StoreSet, num_answers: int,
                 source: str = "", with_accuracy: bool = True):
        self.tokens = torch.from_numpy(arrays[f"{split}/tokens"])
        self.lengths = torch.from_numpy(arrays[f"{split}/lengths"])
        self.question_ids = arrays[f"{split}/question_ids"]
        self.image_ids = arrays[f"{split}/image_ids"]
        self.num_answers = num_answers
        self.stores = stores
        self.which, self.rows = stores.locate(self.image_ids, source or split)
        self.region_starts, self.region_counts = stores.regions(self.which, self.rows)
        self.annotated = f"{split}/target_rows" in arrays
        self.with_accuracy = with_accuracy  # the metric's inputs; training batches need only `targets`
        if self.annotated:
            self.targets = _csr(arrays, split, "target", len(self.tokens))
            self.accuracy = _csr(arrays, split, "acc", len(self.tokens))
            self.answer_type = torch.from_numpy(arrays[f"{split}/answer_type"])

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        starts, counts = self.region_starts[index], self.region_counts[index]
        lengths = self.lengths[index]
        batch = {
            "index": torch.from_numpy(index),
            "tokens": self.tokens[index, : int(lengths.max())],  # [B, T]: padding beyond the longest cut
            "lengths": lengths,  # [B]
            **self.stores.batch(starts, counts),  # mask [B, K], features [B, K, D], boxes [B, K, 4]
        }
        if self.annotated:
            batch["targets"] = _dense(self.targets, index, self.num_answers)  # [B, A]
        if self.annotated and self.with_accuracy:
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
    """Rows `index` of a CSR matrix as a dense [B, A] tensor."""
    indptr, cols, vals = csr
    counts = indptr[index + 1] - indptr[index]
    ends = np.cumsum(counts)
    entries = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts - indptr[index], counts)
    out = torch.zeros(len(index), num_answers)
    out[torch.from_numpy(np.repeat(np.arange(len(index)), counts)), torch.from_numpy(cols[entries])] = \
        torch.from_numpy(vals[entries].astype(np.float32))
    return out


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
                 feature_cache: str = "none", worker_buffer_mb: int = 1024):
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

    def _preprocess(self) -> str:
        return preprocess(self.splits, self.cache_dir, **self.preprocess_args)

    def prepare_data(self) -> None:
        if self.builder is not None:
            self.builder()
        self._preprocess()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess())
        paths = dict.fromkeys(p for files in self.splits.values() for p in as_list(files.get("features")))
        # one table for all splits: a store used by two splits is cached once
        self.table = open_table(paths, self.feature_cache, self.pin_memory)
        for split, files in self.splits.items():
            stores = StoreSet(as_list(files.get("features")), self.table)
            self.datasets[split] = VQADataset(arrays, split, stores, len(self.answers), with_accuracy=split != "train",
                                              source=", ".join(as_list(files.get("questions"))))
        dims = {d.stores.feature_dim for d in self.datasets.values()}
        if len(dims) > 1:
            raise UpdownError(f"splits have different feature sizes {sorted(dims)}; use one extractor")
        if self.feature_cache == "device":
            self.table.to(self.trainer.strategy.root_device if self.trainer else "cpu")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """In `device` mode, gather the batch's region features from the table where the batch is."""
        return gather_regions(self.table, batch)

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
        return feature_loader(self.datasets[split], sampler, self.datasets[split].stores, self.batch_size,
                              self.num_workers, self.pin_memory, self.persistent_workers, self.prefetch_factor,
                              self.worker_buffer_mb)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val", shuffle=False)
