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

import torch

from updown_vqa.bench.gpu import add_arguments as add_gpu_arguments
from updown_vqa.bench.gpu import report
from updown_vqa.bench.gpu import run as run_gpu
from updown_vqa.bench.loader import (
    datamodule,
    forever,
    gather_batches,
    loader_throughput,
    naive_loader,
    pick_device,
    time_batches,
    to_device,
)
from updown_vqa.bench.overlap import compute_step, step_throughput
from updown_vqa.bench.protocol import alternate
from updown_vqa.bench.scale import add_arguments as add_scale_arguments
from updown_vqa.bench.scale import run as run_scale
from updown_vqa.bench.scale_report import heading, table
from updown_vqa.bench.training import (
    in_memory_throughput,
    lightning_throughput,
    plain_throughput,
    train_model,
)
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import check_int_args
from updown_vqa.datasets.random_stores import synthetic_data, write_random_questions
from updown_vqa.features.regions import WORKER_THREADS
from updown_vqa.features.store import FeatureStore

LOADER_SAMPLES = 10240  # a loader run's default length: 20 batches of 512, 160 of 64 (20 of 64 took 0.1 s: noise)


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
                    seed=args.seed, worker_buffer_mb=args.worker_buffer_mb,
                    worker_read_threads=args.worker_read_threads)
    device, dataset = pick_device(args.device), dm.datasets["train"]
    item = dataset.stores.max_boxes * dm.table.feature_dim * dm.table.dtype.itemsize
    measure = {"project": lambda: loader_throughput(dm, args.batches, args.warmup, device, args.memory),
               "naive": lambda: time_batches(forever(naive_loader(dataset, args.batch_size, args.num_workers,
                                                                   args.seed)),
                                             args.naive_batches or args.batches, args.warmup, item,
                                             lambda b: to_device(b, device), device),
               "memcpy": lambda: time_batches(gather_batches(dataset, args.batch_size, args.seed), args.batches,
                                              args.warmup, item)}
    if args.compute_ms:
        work = compute_step(args.compute_ms)  # and one torch thread from here on
        measure["compute"] = lambda: time_batches(forever([torch.zeros(args.batch_size, 1)]), args.batches,
                                                  args.warmup, 0, work)
        measure["step"] = lambda: step_throughput(dm, args.batches, args.warmup, device, work)
    return alternate(measure, args.repeats)


def run_train(args, root: str) -> dict:
    dm = datamodule(_data(args, root), args.batch_size, args.num_workers, args.pin_memory, args.feature_cache,
                    seed=args.seed)
    device = pick_device(args.device)
    return alternate({
        "lightning": lambda: lightning_throughput(train_model(dm, args), dm, args.batches, args.warmup,
                                                  args.precision, device.type),
        "plain": lambda: plain_throughput(train_model(dm, args), dm, args.batches, args.warmup, args.precision,
                                          device),
        "plain_in_memory": lambda: in_memory_throughput(train_model(dm, args), dm, args.batches, args.warmup,
                                                        args.precision, device)}, args.repeats)


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
        model = result["plain_in_memory"]["samples_per_s"]
        lines.append(f"lightning/plain_in_memory {result['lightning']['samples_per_s'] / model:.3f}x (target >= 0.95); "
                     f"plain/plain_in_memory {result['plain']['samples_per_s'] / model:.3f}x; "
                     f"lightning/plain {result['lightning']['samples_per_s'] / result['plain']['samples_per_s']:.3f}x")
    if "step" in result:
        step_ms, compute_ms = 1e3 / result["step"]["batches_per_s"], 1e3 / result["compute"]["batches_per_s"]
        load_ms = 1e3 / result["project"]["batches_per_s"]
        lines.append(f"step {step_ms:.0f} ms = {step_ms / max(compute_ms, load_ms):.2f}x max(compute "
                     f"{compute_ms:.0f} ms, load {load_ms:.0f} ms) (target <= 1.15)")
    lines.append(f"(best of {args.repeats} alternated runs each; every run's samples/s is in the JSON)")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("loader", "train", "gpu"):
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
        p.add_argument("--batches", type=int, default=20,
                       help="timed batches, after the warm-up (default 20; loader: 10,240 samples, at least 20)")
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
        p.add_argument("--work-dir", help="keep the random data here (default: a temporary folder)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
        p.add_argument("--repeats", "--rounds", type=int, default=3, dest="repeats",
                       help="alternated runs of every contender; each reports its best (default 3)")
    add_scale_arguments(sub.add_parser("scale", help="the whole pipeline at a fraction of VQA v2 (bench/scale.py)"))
    loader, train, gpu = sub.choices["loader"], sub.choices["train"], sub.choices["gpu"]
    add_gpu_arguments(gpu)
    loader.set_defaults(batches=None)  # resolved below: at least LOADER_SAMPLES samples per run
    loader.add_argument("--naive-batches", type=int, help="timed batches of the naive reference (default M)")
    loader.add_argument("--memory", action="store_true", help="report PSS of the process and each worker")
    loader.add_argument("--compute-ms", type=float, default=0.0,
                        help="also time a fixed compute of this many ms per batch on one torch thread after "
                             "each batch (the step), against the compute and the loader alone")
    loader.add_argument("--worker-buffer-mb", type=int, default=1024,
                        help="recycled batch buffers per worker (data.worker_buffer_mb)")
    loader.add_argument("--worker-read-threads", type=int, default=WORKER_THREADS,
                        help="threads each worker reads with (data.worker_read_threads)")
    for p in (train, gpu):
        p.add_argument("--nonlinearity", default="gated_tanh", choices=["gated_tanh", "relu"])
        p.add_argument("--hidden-dim", type=int, default=1024)
        p.add_argument("--embed-dim", type=int, default=300)
    train.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args(argv)
    if args.command == "scale":
        return check_int_args(parser, args)
    args = check_int_args(parser, args, non_negative=("num_workers", "warmup", "seed"))
    if args.batches is None:
        args.batches = max(20, -(-LOADER_SAMPLES // args.batch_size))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "scale":
        return main_scale(args)
    try:
        with tempfile.TemporaryDirectory(prefix="updown-bench-") as tmp:
            root = args.work_dir or tmp
            result = {"loader": run_loader, "train": run_train, "gpu": run_gpu}[args.command](args, root)
    except UpdownError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "work_dir")}
    print("settings:", json.dumps(settings), f"device: {pick_device(args.device)}, cpus: {os.cpu_count()}")
    if args.command == "gpu":
        print(report(result) + f"\nwritten: {args.out}/bench_gpu.json, {args.out}/bench_gpu.md")
    else:
        print("\n".join(summary(args.command, args, result)))
    if args.json:
        print(json.dumps(result))


def main_scale(args) -> None:
    try:
        report = run_scale(args)
    except UpdownError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{heading(report)}\n{table(report)}\nwritten: {', '.join(report['written'])}")


if __name__ == "__main__":
    main()
