"""Batches of indices, reshuffled per epoch from the seed, sharded per DDP process, and resumable:
the samplers every data module uses."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler


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

    def _order(self) -> np.ndarray:
        """This epoch's order of all items, before sharding."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return torch.randperm(self.num_items, generator=generator).numpy()
        return np.arange(self.num_items)

    def _shard(self) -> np.ndarray:
        order = self._order()
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
