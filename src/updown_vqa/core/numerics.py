"""A non-finite training loss stops training (`nonfinite=error`, the default) before it reaches the
weights, or skips that batch (`nonfinite=skip`), counted in the logged metric `train/nonfinite_skipped`.

The check runs before the backward pass, so the optimizer never steps on NaN gradients and nothing
non-finite is ever written into a checkpoint: `last.ckpt` stays the last good state.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)
MODES = ("error", "skip")
SHOWN = 5  # image ids named in a message


class NonFiniteLoss(Callback):
    """Stops (`error`) or skips the optimizer step (`skip`) at a NaN or infinite training loss."""

    def __init__(self, mode: str = "error"):
        if mode not in MODES:
            raise UpdownError(f"nonfinite={mode}: use one of {', '.join(MODES)}")
        self.mode, self.skipped, self._skip_step = mode, 0, False
        self._batch: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch, self._skip_step = batch, False

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).any().float()
        if trainer.world_size > 1:  # every DDP process stops, or skips, at the same step
            bad = trainer.strategy.reduce(bad, reduce_op="max")
        if not bool(bad):
            return
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch})"
        cause = self._cause(trainer)
        if self.mode == "error":
            raise UpdownError(f"training loss is {loss.item()} at {where}{cause}; stopped before it reached the "
                              "weights (the last checkpoint is the last good state). Fix the data, lower "
                              "model.lr, or skip such batches with nonfinite=skip")
        self.skipped += 1
        self._skip_step = True
        log.warning("training loss is %s at %s%s; batch skipped (nonfinite=skip)", loss.item(), where, cause)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._skip_step:  # parameters without gradients are left as they are by the optimizer
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.mode == "skip":
            pl_module.log("train/nonfinite_skipped", float(self.skipped), reduce_fx="max")
        self._batch = None

    def _cause(self, trainer) -> str:
        """', where the features of image ids ... are not finite' when the batch's features are the cause."""
        features = (self._batch or {}).get("features")
        if not isinstance(features, torch.Tensor):
            return ""
        bad = ~torch.isfinite(features.detach().float()).flatten(1).all(dim=1)  # [B]
        if not bool(bad.any()):
            return ""
        rows = bad.nonzero().flatten().cpu().numpy()
        ids = batch_image_ids(trainer, self._batch, rows)
        shown = ", ".join(map(str, ids[:SHOWN])) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
        return f", where the features of image id {shown} hold NaN or inf"


def batch_image_ids(trainer, batch: dict, rows: np.ndarray) -> list[int]:
    """Image ids of some rows of a training batch: its `image_ids`, or its question indices looked up in
    the train dataset; else the rows themselves, as `batch row N`."""
    if isinstance(batch.get("image_ids"), torch.Tensor):
        return [int(i) for i in batch["image_ids"][torch.as_tensor(rows)].tolist()]
    dataset = getattr(getattr(trainer, "datamodule", None), "datasets", {}).get("train")
    if dataset is not None and hasattr(dataset, "image_ids") and "index" in batch:
        index = batch["index"].cpu().numpy()[rows]
        return [int(i) for i in np.asarray(dataset.image_ids)[index]]
    return [f"(batch row {int(r)})" for r in rows]
