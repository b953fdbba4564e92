"""Loader and training throughput, as commands rather than timed tests; `--json` prints the numbers last.

    python -m updown_vqa.bench loader (--features F.h5 | --synthetic N --boxes K --dim D) \
        --batch-size B --num-workers W --batches M [--feature-cache none|ram|device] [--memory] [--json]
    python -m updown_vqa.bench train --batch-size B --batches M [--nonlinearity gated_tanh|relu] \
        [--precision 32-true|bf16-mixed] [--compile] [--feature-cache none|ram|device] [--json]

`loader` times the project's loader, a naive reference (one h5py read per question under a default
DataLoader, as most VQA code does) and a numpy gather of the same bytes from the page-cached file (the
physical reference). `train` times Lightning training steps and a plain PyTorch loop with the same
model, data and batch size. Throughput is steady state: samples/s over M batches after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import check_int_args
from updown_vqa.datasets.random_stores import synthetic_data, write_random_questions
from updown_vqa.features.store import FeatureStore
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


def _forever(loader):
    while True:
        yield from loader


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
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
    _sync(device)
    samples, start = 0, time.perf_counter()
    for _ in range(count):
        batch = step(next(batches))
        consume(batch)
        samples += len(batch["features"] if isinstance(batch, dict) else batch)
    _sync(device)
    seconds = time.perf_counter() - start
    result = {"samples_per_s": samples / seconds, "mb_per_s": samples * bytes_per_sample / seconds / 1e6,
              "batches": count, "seconds": seconds}
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


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def loader_throughput(dm: VQADataModule, batches: int, warmup: int, device: torch.device,
                      memory: bool = False) -> dict:
    """The project's training loader, each batch moved to `device` (pinned copies are non-blocking)."""
    table = dm.table
    item = table.feature_dim * table.dtype.itemsize * dm.datasets["train"].stores.max_boxes
    feature_bytes = int(table.base[-1]) * table.feature_dim * table.dtype.itemsize
    def step(batch):
        return dm.on_after_batch_transfer(_to(batch, device), 0)
    return time_batches(_forever(dm.train_dataloader()), batches, warmup, item, step, device,
                        memory_probe(feature_bytes) if memory else None)


def datamodule(data: dict, batch_size: int, num_workers: int, pin_memory: bool = False,
               feature_cache: str = "none", **extra) -> VQADataModule:
    """A set-up VQADataModule over `data` (keyword arguments such as `synthetic_data` returns)."""
    dm = VQADataModule(**data, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                       feature_cache=feature_cache, **extra)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _data(args, root: str) -> dict:
    """VQADataModule arguments: random questions over `--features`, or a random store and questions."""
    if not args.features:
        return synthetic_data(root, args.synthetic, args.boxes, args.dim, args.answers, args.questions_per_image,
                              args.dtype, args.seed)
    image_ids = FeatureStore(args.features).image_ids
    split = write_random_questions(root, image_ids, args.questions_per_image, args.answers, args.seed)
    split["features"] = args.features
    return {"train": split, "val": split, "cache_dir": os.path.join(root, "cache"), "min_answer_count": 1}


def _read_through(path: str) -> None:
    """Read a file once so that it is in the page cache."""
    buffer = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


def run_loader(args, root: str) -> dict:
    data = _data(args, root)
    _read_through(data["train"]["features"])
    dm = datamodule(data, args.batch_size, args.num_workers, args.pin_memory, args.feature_cache,
                    seed=args.seed, worker_buffer_mb=args.worker_buffer_mb)
    device, dataset = _device(args.device), dm.datasets["train"]
    item = dataset.stores.max_boxes * dm.table.feature_dim * dm.table.dtype.itemsize
    runs = {"project": [], "naive": [], "memcpy": []}
    for _ in range(args.rounds):  # alternated, so that a busy moment of the machine hurts all three alike
        runs["project"].append(loader_throughput(dm, args.batches, args.warmup, device, args.memory))
        naive = naive_loader(dataset, args.batch_size, args.num_workers, args.seed)
        runs["naive"].append(time_batches(_forever(naive), args.naive_batches or args.batches, args.warmup, item,
                                          lambda b: _to(b, device), device))
        gathers = gather_batches(dataset, args.batch_size, args.seed)
        runs["memcpy"].append(time_batches(gathers, args.batches, args.warmup, item))
    return {name: best(r) for name, r in runs.items()}


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs, with every run's samples/s."""
    return max(runs, key=lambda r: r["samples_per_s"]) | {"runs": [r["samples_per_s"] for r in runs]}


def run_train(args, root: str) -> dict:
    from updown_vqa.bench.training import lightning_throughput, plain_throughput, train_model

    dm = datamodule(_data(args, root), args.batch_size, args.num_workers, args.pin_memory, args.feature_cache,
                    seed=args.seed)
    device = _device(args.device)
    runs = {"lightning": [], "plain": []}
    measure = {"plain": lambda: plain_throughput(train_model(dm, args), dm, args.batches, args.warmup,
                                                 args.precision, device),
               "lightning": lambda: lightning_throughput(train_model(dm, args), dm, args.batches, args.warmup,
                                                         args.precision, device.type)}
    for i in range(args.repeats):  # alternated, each first in turn, so that a busy moment hurts both alike
        for name in sorted(measure, reverse=i % 2 == 1):
            runs[name].append(measure[name]())
    return {name: best(r) for name, r in runs.items()}


def summary(command: str, args, result: dict) -> list[str]:
    """Human-readable lines: each measurement, the ratios the targets are about, and the memory."""
    lines = [f"{name:9s} {r['samples_per_s']:10.0f} samples/s" + (f" {r['mb_per_s']:8.0f} MB/s" if "mb_per_s" in r else "")
             for name, r in result.items()]
    if command == "loader":
        p, n, m = result["project"], result["naive"], result["memcpy"]
        lines.append(f"project/naive {p['samples_per_s'] / n['samples_per_s']:.1f}x samples/s (target >= 5); "
                     f"project/memcpy {p['mb_per_s'] / m['mb_per_s']:.2f}x MB/s (target >= 0.5)")
        if "memory" in p:
            mem = p["memory"]
            lines.append(f"PSS: main {mem['main_mb']:.0f} MB, largest worker {mem['max_worker_mb']:.0f} MB "
                         f"(target < 500 in none mode), tree {mem['tree_mb']:.0f} MB = "
                         f"{mem['tree_over_features']:.2f}x the {mem['feature_mb']:.0f} MB of features "
                         "(target <= 1.2 in ram mode)")
    else:
        ratio = result["lightning"]["samples_per_s"] / result["plain"]["samples_per_s"]
        lines.append(f"lightning/plain {ratio:.2f}x (target >= 0.95)")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("loader", "train"):
        p = sub.add_parser(name)
        p.add_argument("--features", help="an existing store (random questions are made for its images)")
        p.add_argument("--synthetic", type=int, default=3000 if name == "loader" else 2000, metavar="N",
                       help="images in a random store written to a temporary folder")
        p.add_argument("--boxes", type=int, default=36)
        p.add_argument("--dim", type=int, default=2048)
        p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
        p.add_argument("--answers", type=int, default=3129)
        p.add_argument("--questions-per-image", type=int, default=5)
        p.add_argument("--batch-size", type=int, default=512)
        p.add_argument("--num-workers", type=int, default=0)
        p.add_argument("--pin-memory", action="store_true")
        p.add_argument("--feature-cache", default="none", choices=["none", "ram", "device"])
        p.add_argument("--batches", type=int, default=20, help="timed batches, after the warm-up")
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
        p.add_argument("--work-dir", help="keep the random data here (default: a temporary folder)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    loader, train = sub.choices["loader"], sub.choices["train"]
    loader.add_argument("--naive-batches", type=int, help="timed batches of the naive reference (default M)")
    loader.add_argument("--memory", action="store_true", help="report PSS of the process and each worker")
    loader.add_argument("--rounds", type=int, default=1, help="alternate the three, report the best of each")
    loader.add_argument("--worker-buffer-mb", type=int, default=256,
                        help="recycled batch buffers per worker (data.worker_buffer_mb)")
    train.add_argument("--nonlinearity", default="gated_tanh", choices=["gated_tanh", "relu"])
    train.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--hidden-dim", type=int, default=1024)
    train.add_argument("--embed-dim", type=int, default=300)
    train.add_argument("--repeats", type=int, default=1, help="alternate runs, report the best of each")
    return check_int_args(parser, parser.parse_args(argv), non_negative=("num_workers", "warmup", "seed"))


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="updown-bench-") as tmp:
            root = args.work_dir or tmp
            result = (run_loader if args.command == "loader" else run_train)(args, root)
    except UpdownError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "work_dir")}
    print("settings:", json.dumps(settings), f"device: {_device(args.device)}, cpus: {os.cpu_count()}")
    print("\n".join(summary(args.command, args, result)))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
