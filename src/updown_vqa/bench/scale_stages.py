"""The stages of `python -m updown_vqa.bench scale`, each run in a process of its own (bench/scale.py)
so that each stage's peak RSS is its own:

    python -m updown_vqa.bench.scale_stages STAGE SPEC.json RESULT.json
    python -m updown_vqa.bench.scale_stages command - RESULT.json -m MODULE ARGS...   (a project command)

SPEC.json holds the run's paths and sizes (`scale.spec`); the stage writes what it measured to
RESULT.json, with its own peak RSS (VmHWM: the parent's accounting would also count the parent's pages
that the child held between fork and exec) and that of its largest child (a loader worker, which holds
its parent's pages too: their PSS is in the result where the stage samples it).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import runpy
import subprocess
import sys
import time

import numpy as np

from updown_vqa.core.io import write_json
from updown_vqa.datasets.vqa2_synthetic import FULL_SIZES

FEATURES_PER_BLOCK = 64  # images whose random features are drawn at once


def generate(spec: dict) -> dict:
    """VQA v2 json files at the fraction, and (`tsv: files`) bottom-up TSV shards of 36 x 2048 random
    float32 features; with `tsv: pipe` the convert stage generates the TSV into its standard input."""
    from updown_vqa.datasets.vqa2_synthetic import generate as generate_json
    from updown_vqa.features.tsv import write_tsv

    files = generate_json(spec["json_dir"], spec["fraction"], spec["seed"])
    image_ids = all_image_ids(spec)
    if spec["tsv"] == "files":
        rows = tsv_rows(spec, image_ids)
        os.makedirs(spec["tsv_dir"], exist_ok=True)
        for shard, ids in enumerate(np.array_split(image_ids, spec["shards"])):
            write_tsv(os.path.join(spec["tsv_dir"], f"trainval_36.tsv.{shard}"), itertools.islice(rows, len(ids)))
    return {"images": len(image_ids), "questions": {s: _count(files[s]["questions"]) for s in files}}


def all_image_ids(spec: dict) -> np.ndarray:
    """The train and val images of the generated questions."""
    def ids(subtype: str) -> np.ndarray:
        with open(spec["files"][subtype]["questions"]) as f:
            return np.unique([q["image_id"] for q in json.load(f)["questions"]])
    return np.concatenate([ids("train2014"), ids("val2014")])


def tsv_rows(spec: dict, image_ids: np.ndarray):
    """(image_id, w, h, boxes, features) of every image: 36 fixed boxes, random float32 features."""
    rng = np.random.default_rng(spec["seed"])
    boxes, dim = spec["boxes"], spec["dim"]
    corners = rng.uniform(0, 320, (boxes, 2)).astype(np.float32)
    box_rows = np.concatenate([corners, corners + 100], axis=1)  # [K, 4] x1 y1 x2 y2
    for lo in range(0, len(image_ids), FEATURES_PER_BLOCK):
        block = rng.random((FEATURES_PER_BLOCK, boxes, dim), dtype=np.float32)  # [n, K, D]
        for image_id, features in zip(image_ids[lo: lo + FEATURES_PER_BLOCK].tolist(), block):
            yield image_id, 640, 480, box_rows, features


def tsv(spec: dict) -> dict:
    """The TSV of every image, written to standard output (the convert stage's pipe)."""
    from updown_vqa.features.tsv import write_tsv

    write_tsv("/dev/stdout", tsv_rows(spec, all_image_ids(spec)))
    return {}


def tsv_bytes(spec: dict, images: int) -> int:
    """About the TSV's size: per line the id, sizes and base64 of the boxes and features."""
    def base64_bytes(floats: int) -> int:
        return -(-4 * floats // 3) * 4
    return images * (20 + base64_bytes(spec["boxes"] * 4) + base64_bytes(spec["boxes"] * spec["dim"]))


def _count(path: str) -> int:
    with open(path) as f:
        return len(json.load(f)["questions"])


def convert(spec: dict) -> dict:
    """The store, through the real bottom-up TSV converter: from the shards, or (`tsv: pipe`) from its
    standard input, fed by a `tsv` stage process, as `unzip -p trainval_36.zip | convert_tsv -` would
    be; the CPU time is then the converter's own, and the generator's is given beside it."""
    from updown_vqa.features.convert_tsv import convert as convert_tsv
    from updown_vqa.features.tsv import STDIN

    if spec["tsv"] == "files":
        shards = sorted(os.path.join(spec["tsv_dir"], n) for n in os.listdir(spec["tsv_dir"]))
        summary = convert_tsv(shards, spec["store"], spec["dtype"], progress=False)
        return {"images": summary["images"], "tsv_gb": summary["tsv_bytes"] / 1e9}
    producer_result = os.path.join(spec["work"], "tsv.result.json")
    producer = subprocess.Popen([sys.executable, "-m", "updown_vqa.bench.scale_stages", "tsv",
                                 os.path.join(spec["work"], "spec.json"), producer_result], stdout=subprocess.PIPE)
    os.dup2(producer.stdout.fileno(), sys.stdin.fileno())
    producer.stdout.close()
    images = sum(round(count * spec["fraction"]) for _, count in FULL_SIZES.values())  # as the report sizes them
    try:
        summary = convert_tsv([STDIN], spec["store"], spec["dtype"], progress=False,
                              tsv_bytes=tsv_bytes(spec, images))
    except BaseException:
        producer.kill()  # before its broken pipe's traceback, so the converter's error is the log's last line
        producer.wait()
        raise
    if producer.wait() != 0:
        raise RuntimeError(f"the TSV generator exited with {producer.returncode}")
    own, generator = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(producer_result) as f:
        generator_rss = json.load(f)["peak_rss_mb"]
    return {"images": summary["images"], "tsv_gb": summary["tsv_bytes"] / 1e9, "cpu_s": own.ru_utime + own.ru_stime,
            "tsv_cpu_s": generator.ru_utime + generator.ru_stime, "tsv_peak_rss_mb": generator_rss}


def _datamodule(spec: dict, num_workers: int, batch_size: int | None = None):
    from updown_vqa.vqa.data import VQADataModule

    split = {s: {"questions": spec["files"][f"{s}2014"]["questions"],
                 "annotations": spec["files"][f"{s}2014"]["annotations"], "features": spec["store"]}
             for s in ("train", "val")}
    return VQADataModule(**split, cache_dir=spec["cache_dir"], min_answer_count=spec["min_answer_count"],
                         batch_size=batch_size or spec["batch_size"], num_workers=num_workers,
                         feature_cache="none", seed=spec["seed"])


def preprocess(spec: dict) -> dict:
    """Questions and answers into the cache, as `data=vqa2` does (answers from train)."""
    dm = _datamodule(spec, 0)
    dm.prepare_data()
    dm.setup("fit")
    return {"answers": len(dm.answers), "vocab": len(dm.vocab),
            "questions": {s: len(d) for s, d in dm.datasets.items()}}


def load(spec: dict, num_workers: int, cold: bool) -> dict:
    """One epoch of the training loader (every train question once), features read from the store."""
    from updown_vqa.bench.loader import consume, memory_probe

    if not cold:
        _read_through(spec["store"])
    dm = _datamodule(spec, num_workers)
    dm.setup("fit")
    table = dm.table
    probe = memory_probe(int(table.base[-1]) * table.feature_dim * table.dtype.itemsize)
    samples, batches, worker_pss, main_pss = 0, 0, [0.0], 0.0
    start = time.perf_counter()
    for batch in dm.train_dataloader():
        consume(batch)
        samples, batches = samples + len(batch["features"]), batches + 1
        if batches % 20 == 1:
            memory = probe()
            worker_pss.append(memory["max_worker_mb"])
            main_pss = max(main_pss, memory["main_mb"])
    seconds = time.perf_counter() - start
    return {"samples": samples, "batches": batches, "epoch_s": seconds, "samples_per_s": samples / seconds,
            "mb_per_s": samples * dm.datasets["train"].stores.max_boxes * table.feature_dim
            * table.dtype.itemsize / seconds / 1e6, "max_worker_pss_mb": max(worker_pss), "main_pss_mb": main_pss}


def _read_through(path: str) -> None:
    """Read a file once so that it is in the page cache."""
    buffer = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


def train(spec: dict) -> dict:
    """`steps` Lightning training steps of the paper's model, RSS sampled every 10; then a checkpoint."""
    import pytorch_lightning as pl
    import torch

    from updown_vqa.bench.scale_memory import RssSampler
    from updown_vqa.vqa.module import UpDownVQA

    torch.manual_seed(spec["seed"])
    dm = _datamodule(spec, spec["train_workers"], spec["train_batch_size"])
    dm.prepare_data()
    dm.setup("fit")
    module = UpDownVQA(dm.vocab, dm.answers, dm.feature_dim, hidden_dim=spec["hidden_dim"])
    sampler = type("Sampler", (RssSampler, pl.Callback), {})(every=10)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=spec["steps"], max_epochs=-1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=0.25,
                         use_distributed_sampler=False, callbacks=[sampler])
    trainer.fit(module, datamodule=dm)
    start = time.perf_counter()
    trainer.save_checkpoint(spec["ckpt"])
    save_s = time.perf_counter() - start
    return {"steps": trainer.global_step, "step_s": sampler.step_seconds(), **sampler.summary(),
            "parameters": sum(p.numel() for p in module.parameters()),
            "train_flops_per_sample": flops_per_sample(UpDownVQA(dm.vocab, dm.answers, dm.feature_dim), dm),
            "checkpoint": {"save_s": save_s, "size_mb": os.path.getsize(spec["ckpt"]) / 1e6}}


def flops_per_sample(module, dm, samples: int = 8) -> float:
    """FLOPs of one training sample (forward and backward, torch's counter) of `module` (the paper's
    sizes by default, whatever the trained model's) on real batch inputs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = dm.on_after_batch_transfer(dm.datasets["train"][list(range(samples))], 0)
    module.train()
    with FlopCounterMode(display=False) as counter:
        logits = module(batch)  # [B, A]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"]).backward()
    return counter.get_total_flops() / samples


STAGES = {"generate": generate, "tsv": tsv, "convert": convert, "preprocess": preprocess, "train": train,
          "load": lambda spec: load(spec, int(os.environ["SCALE_WORKERS"]), os.environ["SCALE_COLD"] == "1")}


def run_command(argv: list[str]) -> dict:
    """A project command (`-m MODULE ARGS...`) in this process; its error exit is this process's."""
    module, sys.argv = argv[1], [argv[1], *argv[2:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    return {}


def peak_memory() -> dict:
    """This process's own peak RSS (VmHWM) and its largest child's, in MB."""
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return {"peak_rss_mb": hwm / 1024,
            "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main(argv: list[str]) -> None:
    stage, spec_path, result_path, *command = argv
    if stage == "command":
        result = run_command(command)
    else:
        with open(spec_path) as f:
            result = STAGES[stage](json.load(f))
    write_json(result_path, result | peak_memory())


if __name__ == "__main__":
    from updown_vqa.core.cli import command

    command(main)(sys.argv[1:])  # a stage's error is one `error:` line, its log's last
