"""Training-step throughput for `python -m updown_vqa.bench train` and the loader sweep: Lightning
`fit` steps, and the same steps in a plain PyTorch loop (autocast, gradient clipping, Adamax)."""

from __future__ import annotations

import time

import torch

from updown_vqa.bench.loader import forever, pick_device, sync, time_batches, to_device
from updown_vqa.core.errors import UpdownError
from updown_vqa.vqa.data import VQADataModule


class _StepTimer:
    """Lightning callback: wall time and samples of the steps after the warm-up."""

    def __init__(self, warmup: int, batches: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, warmup + batches, device
        self.samples, self.images, self.start, self.seconds = 0, 0, None, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > self.warmup:
            self.samples += len(batch["tokens"])
            self.images += len(batch.get("images", ()))  # end to end: the distinct images encoded
        if step in (self.warmup, self.last):
            sync(self.device)
            if step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.seconds = time.perf_counter() - self.start


def lightning_throughput(module, dm: VQADataModule, batches: int, warmup: int, precision: str = "32-true",
                         accelerator: str = "auto") -> dict:
    """Samples/s of `trainer.fit` steps (no validation, logging or checkpoints) after `warmup` steps."""
    import pytorch_lightning as pl

    timer = type("StepTimer", (_StepTimer, pl.Callback), {})(warmup, batches, torch.device("cpu"))
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + batches,
                         max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         gradient_clip_val=0.25, use_distributed_sampler=False, callbacks=[timer])
    timer.device = trainer.strategy.root_device
    trainer.fit(module, datamodule=dm)
    images = {"images_per_s": timer.images / timer.seconds} if timer.images else {}
    return {"samples_per_s": timer.samples / timer.seconds, "batches": batches, "seconds": timer.seconds,
            "step_s": timer.seconds / batches, **images}


def plain_step(module, dm: VQADataModule, precision: str, device: torch.device):
    """One plain PyTorch training step of `module`'s model (autocast, clip 0.25, Adamax, a scheduler), as
    a function of a batch already on `device`: what Lightning's step does, without Lightning."""
    model = module.model.to(device).train()
    if module.hparams.get("compile"):
        model.compile()
    optimizer = torch.optim.Adamax(model.parameters(), lr=module.hparams.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if half is None and precision not in ("32-true", "32"):
        raise UpdownError(f"--precision {precision}: the plain loop knows 32-true, bf16-mixed and 16-mixed")
    scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)

    def step(batch):
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            logits = model(batch["tokens"], batch["lengths"], batch["features"], batch["mask"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"]) * logits.shape[1]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return batch
    return step


def plain_throughput(module, dm: VQADataModule, batches: int, warmup: int, precision: str = "32-true",
                     device: torch.device | None = None) -> dict:
    """The same steps as `lightning_throughput` in a plain PyTorch loop over the same loader."""
    device = device or pick_device("auto")
    step = plain_step(module, dm, precision, device)
    result = time_batches(forever(dm.train_dataloader()), batches, warmup, 0,
                          lambda batch: step(dm.on_after_batch_transfer(to_device(batch, device), 0)), device)
    return {k: result[k] for k in ("samples_per_s", "batches", "seconds")}


def in_memory_throughput(module, dm: VQADataModule, batches: int, warmup: int, precision: str = "32-true",
                         device: torch.device | None = None) -> dict:
    """The model alone: the plain loop's steps on one batch already on `device` (no loader, no copy)."""
    device = device or pick_device("auto")
    step = plain_step(module, dm, precision, device)
    batch = dm.on_after_batch_transfer(to_device(next(iter(dm.train_dataloader())), device), 0)
    result = time_batches(forever([batch]), batches, warmup, 0, step, device)
    return {k: result[k] for k in ("samples_per_s", "batches", "seconds")}


def train_model(dm: VQADataModule, args) -> torch.nn.Module:
    """A freshly initialised UpDownVQA (same seed, same weights every call) for the data module."""
    from updown_vqa.vqa.module import UpDownVQA

    torch.manual_seed(args.seed)
    return UpDownVQA(dm.vocab, dm.answers, dm.feature_dim, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                     nonlinearity=args.nonlinearity, compile=args.compile)
