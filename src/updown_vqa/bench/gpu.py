"""`python -m updown_vqa.bench gpu` (`make bench-gpu`): the loader and training benchmarks at VQA v2 sizes
on one GPU in about 5 minutes, written as one JSON and a report (bench_gpu.json, bench_gpu.md).

- training steps (Lightning, the plain loop, the model alone) for `feature_cache` none, ram and device at
  precision 32-true and bf16-mixed, plus `compile` for device + bf16 (target: >= 15,000 samples/s);
- the loader alone in each `feature_cache` mode;
- the `num_workers` x `pin_memory` sweep (loader alone, Lightning steps, worker memory) and its report,
  which answers the note "one worker is about 20% faster than none, more add nothing" on a GPU.

It needs torch, Lightning, numpy and h5py only: no Hydra, no spaCy (the random questions are plain words).
"""

from __future__ import annotations

import json
import os
import platform
import time
from types import SimpleNamespace

import torch

from updown_vqa.bench.loader import datamodule, loader_throughput
from updown_vqa.bench.protocol import alternate
from updown_vqa.bench.report import report_text, rows_of
from updown_vqa.bench.training import (
    in_memory_throughput,
    lightning_throughput,
    plain_throughput,
    train_model,
)
from updown_vqa.core.errors import UpdownError
from updown_vqa.datasets.random_stores import synthetic_data

TARGET = 15000  # samples/s of the training step, feature_cache=device + bf16 (issue #18)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="outputs/bench_gpu", help="folder for bench_gpu.json and bench_gpu.md")
    parser.add_argument("--images", type=int, default=4000, help="images in the random store")
    parser.add_argument("--workers", default="0,1,2,4", help="num_workers values of the sweep")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a smoke test, not a figure)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the compiled row (smoke tests)")
    parser.set_defaults(batches=50, warmup=10, repeats=2)


def run(args, root: str) -> dict:
    """Every measurement of the plan; the result is also written to `args.out`."""
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise UpdownError("bench gpu: no CUDA GPU is visible (torch.cuda.is_available() is False); run it on "
                          "a GPU machine, or pass --allow-cpu for a smoke test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = synthetic_data(root, args.images, args.boxes, args.dim, args.answers, args.questions_per_image,
                          args.dtype, args.seed)
    start, result = time.perf_counter(), {"machine": machine(), "settings": vars(args).copy()}
    result["train"] = [train_row(data, args, device, cache, precision, compiled)
                       for cache in ("none", "ram", "device") for precision in ("32-true", "bf16-mixed")
                       for compiled in [False, True][: 1 + (cache == "device" and precision == "bf16-mixed"
                                                            and not args.skip_compile)]]
    result["loader"] = [loader_row(data, args, device, cache) for cache in ("none", "ram", "device")]
    result["sweep"] = [sweep_job(data, args, device, int(w), pin)
                       for pin in (True, False) for w in args.workers.split(",")]
    result["seconds"] = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_gpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "bench_gpu.md"), "w") as f:
        f.write(report(result))
    return result


def _model_args(args, compiled: bool) -> SimpleNamespace:
    return SimpleNamespace(seed=args.seed, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                           nonlinearity=args.nonlinearity, compile=compiled)


def train_row(data: dict, args, device: torch.device, cache: str, precision: str, compiled: bool) -> dict:
    """Best of `repeats` of each contender (compiled: one run each, the compile takes most of it)."""
    dm = datamodule(data, args.batch_size, 0, True, cache, seed=args.seed)
    model = _model_args(args, compiled)
    measure = {"lightning": lambda: lightning_throughput(train_model(dm, model), dm, args.batches, args.warmup,
                                                         precision, device.type),
               "plain_in_memory": lambda: in_memory_throughput(train_model(dm, model), dm, args.batches,
                                                               args.warmup, precision, device)}
    if not compiled:
        measure["plain"] = lambda: plain_throughput(train_model(dm, model), dm, args.batches, args.warmup,
                                                    precision, device)
    row = {"feature_cache": cache, "precision": precision, "compile": compiled}
    return row | alternate(measure, 1 if compiled else args.repeats)


def loader_row(data: dict, args, device: torch.device, cache: str) -> dict:
    dm = datamodule(data, args.batch_size, 0, True, cache, seed=args.seed)
    measure = {"project": lambda: loader_throughput(dm, args.batches, args.warmup, device)}
    return {"feature_cache": cache} | alternate(measure, args.repeats)


def sweep_job(data: dict, args, device: torch.device, workers: int, pin: bool) -> dict:
    """One job of the loader sweep, in the format of bench_sweep's result.json."""
    dm = datamodule(data, args.batch_size, workers, pin, "none", seed=args.seed)
    loader = loader_throughput(dm, args.batches, args.warmup, device, memory=True)
    train = lightning_throughput(train_model(dm, _model_args(args, False)), dm, args.batches, args.warmup,
                                 "bf16-mixed", device.type)
    return {"batch_size": args.batch_size, "num_workers": workers, "pin_memory": pin,
            "device": machine()["device"], "loader": loader, "train": train}


def machine() -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return {"device": gpu, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def report(result: dict) -> str:
    """bench_gpu.md: the training table with its targets, the loader alone, and the sweep's report."""
    m = result["machine"]
    lines = [f"# bench gpu on {m['device']} ({m['cpus']} CPUs, torch {m['torch']}), {result['seconds']:.0f} s",
             "", "| feature_cache | precision | compile | lightning | plain | plain_in_memory | "
             "lightning / plain_in_memory (>= 0.95) |", "|---|---|---|---:|---:|---:|---:|"]
    for r in result["train"]:
        speed = {k: r[k]["samples_per_s"] for k in ("lightning", "plain", "plain_in_memory") if k in r}
        lines.append(f"| {r['feature_cache']} | {r['precision']} | {r['compile']} | "
                     + " | ".join(f"{speed[k]:.0f}" if k in speed else "-"
                                  for k in ("lightning", "plain", "plain_in_memory"))
                     + f" | {speed['lightning'] / speed['plain_in_memory']:.3f} |")
    best = max(r["lightning"]["samples_per_s"] for r in result["train"]
               if (r["feature_cache"], r["precision"]) == ("device", "bf16-mixed"))
    lines += ["", f"Up-Down training step, feature_cache=device + bf16: {best:.0f} samples/s "
              f"(target >= {TARGET}: {'met' if best >= TARGET else 'NOT met'})", "",
              "| feature_cache | loader alone samples/s |", "|---|---:|"]
    lines += [f"| {r['feature_cache']} | {r['project']['samples_per_s']:.0f} |" for r in result["loader"]]
    lines += ["", "## num_workers x pin_memory (feature_cache=none, bf16-mixed training steps)", "",
              report_text(rows_of(result["sweep"]))]
    return "\n".join(lines)
