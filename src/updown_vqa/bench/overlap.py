"""Does loading overlap with compute? `bench loader --compute-ms C`: a fixed amount of compute per batch
on one torch thread (the other cores are the loader's), so that a step should take max(compute, load)."""

from __future__ import annotations

import time

import torch

from updown_vqa.bench.loader import forever, time_batches, to_device


def compute_step(milliseconds: float, size: int = 256):
    """A function doing the same matrix products on every call, about `milliseconds` of one thread's work
    (calibrated here, once); it returns its argument, so it can stand in for a training step."""
    torch.set_num_threads(1)
    a = torch.randn(size, size)

    def products(n: int) -> None:
        for _ in range(n):
            torch.mm(a, a)

    products(20)
    start = time.perf_counter()
    products(200)
    per_product = (time.perf_counter() - start) / 200
    count = max(1, round(milliseconds / 1e3 / per_product))

    def step(batch):
        products(count)
        return batch
    return step


def step_throughput(dm, batches: int, warmup: int, device: torch.device, work) -> dict:
    """Training loader batches, each moved to `device` and followed by `work` (a fixed compute)."""
    loader = dm.train_dataloader()
    warmup += len(loader.pool.storages) if hasattr(loader, "pool") else 0  # each slot's first fill faults it in
    return time_batches(forever(loader), batches, warmup, 0,
                        lambda batch: work(dm.on_after_batch_transfer(to_device(batch, device), 0)), device)
