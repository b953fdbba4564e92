"""Recycled shared-memory buffers for the feature tensors that DataLoader workers send.

A worker's batch reaches the main process through shared memory, and a fresh segment per batch means
faulting in every page of it: on the machine of docs/throughput.md, 280 ms for the 150 MB of a
512 x 36 x 2048 float32 batch, three times the reads that fill it. So each worker writes its features
into one of a few slots made once, and the main process frees a slot once nothing there refers to the
batch any more (a weak reference to its storage has expired), or at once when the loader pinned a
copy. A worker whose slots are all taken (a caller that keeps its batches) sends a fresh segment.
"""

from __future__ import annotations

import math

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, get_worker_info

_WORKER_POOL: SlotPool | None = None  # this worker process's pool, set by `SlotPool.init_worker`


class SlotPool:
    """Slots of `slot_bytes` for each worker, as many as fit in `budget` bytes (at most `max_slots`), made
    in the main process before the workers start; a slot takes memory once a worker first fills it."""

    def __init__(self, num_workers: int, slot_bytes: int, max_slots: int = 4, budget: int = 256 << 20):
        self.slot_bytes, self.slots_per_worker = slot_bytes, min(max_slots, max(1, budget // slot_bytes))
        count = num_workers * self.slots_per_worker
        self.busy = torch.zeros(count, dtype=torch.uint8).share_memory_()
        self.storages = [torch.UntypedStorage._new_shared(max(1, slot_bytes)) for _ in range(count)]  # lazy pages
        self._handed_out: list[tuple[int, StorageWeakRef]] = []  # in the main process
        self.fresh = 0  # batches that came in a fresh segment, all slots being taken

    def init_worker(self, worker_id: int) -> None:
        """`worker_init_fn`: batches this worker reads go into this pool's slots."""
        global _WORKER_POOL
        _WORKER_POOL = self

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        """In a worker: an empty tensor in a free slot, and the slot (-1: a fresh segment, none free)."""
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        first = get_worker_info().id * self.slots_per_worker
        for slot in range(first, first + self.slots_per_worker):
            if not self.busy[slot] and nbytes <= self.slot_bytes:
                self.busy[slot] = 1
                return torch.empty(0, dtype=dtype).set_(self.storages[slot], 0, shape), slot
        return torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(max(1, nbytes)), 0, shape), -1

    def hand_out(self, batch: dict) -> dict:
        """In the main process: free the slots of batches that are gone, and track this one's."""
        still_out = []
        for slot, ref in self._handed_out:
            if ref.expired():
                self.busy[slot] = 0
            else:
                still_out.append((slot, ref))
        self._handed_out = still_out
        slot = int(batch.pop("feature_slot", -1))
        self.fresh += slot < 0
        if slot >= 0 and batch["features"].is_pinned():  # the pinned copy is what goes on
            self.busy[slot] = 0
        elif slot >= 0:
            self._handed_out.append((slot, StorageWeakRef(batch["features"].untyped_storage())))
        return batch


def worker_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int] | None:
    """A slot of this worker's pool, if it has one (the project's loaders with workers)."""
    return _WORKER_POOL.take(shape, dtype) if _WORKER_POOL is not None else None


class SlotDataLoader(DataLoader):
    """A DataLoader whose workers write features into the recycled slots of `pool`."""

    def __init__(self, *args, pool: SlotPool, **kwargs):
        super().__init__(*args, worker_init_fn=pool.init_worker, **kwargs)
        self.pool = pool

    def __iter__(self):
        iterator = super().__iter__()
        return (self.pool.hand_out(batch) for batch in iterator)
