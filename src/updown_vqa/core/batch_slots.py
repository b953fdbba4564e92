"""Recycled shared-memory slots through which DataLoader workers hand whole batches to the main process.

The usual way (torch pickling each tensor) costs, per batch and per tensor, a fresh shared-memory
segment, a file descriptor passed over a socket and a new mapping in the main process whose pages all
fault in again: on the machine of docs/throughput.md, 280 ms for the 150 MB of a 512 x 36 x 2048 float32
batch, three times the reads that fill it, and why workers used to be slower than none. Instead, slots are
made once in the main process before the workers start, so both sides map them once and for good: a
worker reads the features straight into a free slot (`worker_tensor`), copies the batch's other tensors
after them (`SlotPool.pack`, the loader's collate function) and sends only their (offset, dtype, shape);
the main process builds the tensors as views of its own mapping (`SlotPool.unpack`). A slot is free again
once every tensor of its batch is gone (a finaliser on the buffer they share), or at once when the loader
pins a copy. A worker whose slots are all taken (a caller that keeps its batches) sends the batch the
usual way.
"""

from __future__ import annotations

import ctypes
import math
import weakref
from functools import cache

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

_WORKER_POOL: SlotPool | None = None  # this worker process's pool, set by `SlotPool.init_worker`
_ALIGN = 64


class SlotPool:
    """Slots of `slot_bytes` for each worker, as many as fit in `budget` bytes (at least one, at most
    `max_slots`); a slot takes memory once a worker first fills it."""

    def __init__(self, num_workers: int, slot_bytes: int, max_slots: int = 4, budget: int = 1 << 30):
        self.slot_bytes = _aligned(max(1, slot_bytes))
        self.slots_per_worker = min(max_slots, max(1, budget // self.slot_bytes))
        count = num_workers * self.slots_per_worker
        self.busy = torch.zeros(count, dtype=torch.uint8).share_memory_()
        self.storages = [torch.UntypedStorage._new_shared(self.slot_bytes) for _ in range(count)]  # lazy pages
        self.claimed: int | None = None  # in a worker: the slot of the batch being read
        self.fresh = 0  # in the main process: batches that came the usual way, all slots being taken

    def init_worker(self, worker_id: int) -> None:
        """`worker_init_fn`: batches this worker reads go into this pool's slots."""
        global _WORKER_POOL
        _WORKER_POOL = self

    def _claim(self) -> int | None:
        first = get_worker_info().id * self.slots_per_worker
        for slot in range(first, first + self.slots_per_worker):
            if not self.busy[slot]:
                self.busy[slot] = 1
                self.claimed = slot
                return slot
        return None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """In a worker: an empty tensor at the start of a free slot (a fresh shared tensor if none is free)."""
        nbytes = math.prod(shape) * _itemsize(dtype)
        if self.claimed is None and nbytes <= self.slot_bytes and self._claim() is not None:
            return _view(self.storages[self.claimed], 0, dtype, shape)
        return torch.empty(shape, dtype=dtype).share_memory_()

    def pack(self, batch: dict) -> dict:
        """In a worker (the loader's collate function): the batch's tensors copied into its slot, after
        the features already read there; sent as {"slot", "tensors": {key: (offset, dtype, shape)}, ...}."""
        if get_worker_info() is None:
            return batch
        slot = self.claimed if self.claimed is not None else self._claim()
        self.claimed = None
        if slot is None:
            return batch
        storage, used, layout = self.storages[slot], 0, {}
        base = storage.data_ptr()
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        for key, value in tensors.items():  # features first: they are in place already
            if value.untyped_storage().data_ptr() == base:
                layout[key] = value.data_ptr() - base
                used = max(used, _aligned(layout[key] + value.nbytes))
        for key, value in tensors.items():
            if key not in layout:
                if used + value.nbytes > self.slot_bytes:
                    self.busy[slot] = 0  # does not fit: send the usual way
                    return {k: v.clone() if k in layout else v for k, v in batch.items()}
                _view(storage, used, value.dtype, value.shape).copy_(value)
                layout[key], used = used, _aligned(used + value.nbytes)
        described = {k: (layout[k], str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()}
        return {k: v for k, v in batch.items() if k not in tensors} | {"slot": slot, "tensors": described}

    def unpack(self, batch: dict) -> dict:
        """In the main process: the tensors of a packed batch as views of the slot, freed when all are gone."""
        if "tensors" not in batch:
            self.fresh += 1
            return batch
        slot, described = batch.pop("slot"), batch.pop("tensors")
        lease = _lease_type(self.slot_bytes).from_address(self.storages[slot].data_ptr())
        lease.storage = self.storages[slot]  # the mapping outlives the loader while a view of it lives
        weakref.finalize(lease, self.busy.__setitem__, slot, 0)
        for key, (offset, dtype, shape) in described.items():
            array = np.frombuffer(lease, np.uint8, math.prod(shape) * _itemsize(getattr(torch, dtype)), offset)
            batch[key] = torch.from_numpy(array).view(getattr(torch, dtype)).view(shape)
        return batch


def worker_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """In a worker of the project's loaders: an empty tensor in a slot of its pool; else None."""
    return _WORKER_POOL.take(shape, dtype) if _WORKER_POOL is not None else None


class SlotDataLoader(DataLoader):
    """A DataLoader of whole batches whose workers hand them over through the slots of `pool`."""

    def __init__(self, *args, pool: SlotPool, pin_memory: bool = False, **kwargs):
        super().__init__(*args, worker_init_fn=pool.init_worker, collate_fn=pool.pack, **kwargs)
        self.pool, self.pin = pool, pin_memory and torch.cuda.is_available()

    def __iter__(self):
        for batch in super().__iter__():
            batch = self.pool.unpack(batch)
            if self.pin:  # the pinned copy goes on; the slot is free once the views are dropped here
                batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
            yield batch


def _view(storage: torch.UntypedStorage, offset: int, dtype: torch.dtype, shape) -> torch.Tensor:
    return torch.empty(0, dtype=dtype).set_(storage, offset // _itemsize(dtype), tuple(shape))


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


@cache
def _lease_type(nbytes: int) -> type:
    """A ctypes byte array over a slot: a new one per batch, whose end (the end of every view) frees it."""
    return type("SlotLease", (ctypes.c_uint8 * nbytes,), {})
