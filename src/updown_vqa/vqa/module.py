"""The LightningModule that trains UpDown with soft-score BCE and reports the official VQA accuracy."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from updown_vqa.core.settings import FLAG, SIZE, Number, OneOf
from updown_vqa.core.text import load_glove
from updown_vqa.features.grid import GRID_SETTINGS, encode_regions, parameter_groups, visual_encoder
from updown_vqa.vqa.metrics import VQAAccuracy
from updown_vqa.vqa.model import UpDown, init_weights
from updown_vqa.vqa.preprocess import ANSWER_TYPES


def lr_factor(epoch: float, warmup_epochs: float, warmup_start: float, decay_start: int,
              decay_every: int, decay_rate: float) -> float:
    """Linear warm-up from `warmup_start` to 1 over `warmup_epochs`, then step decay.

    From epoch `decay_start` on, the rate is multiplied by `decay_rate` every `decay_every` epochs
    (the schedule of Kim et al. 2018 and Jiang et al. 2018 for Up-Down with Adamax).
    """
    if epoch < warmup_epochs:
        return warmup_start + (1 - warmup_start) * epoch / warmup_epochs
    if epoch < decay_start:
        return 1.0
    return decay_rate ** (1 + math.floor((epoch - decay_start) / decay_every))


class UpDownVQA(pl.LightningModule):
    """Wraps `UpDown`. The vocabulary, answer list and feature record are hyperparameters, so a
    checkpoint alone is enough to answer questions: no training caches are needed.

    `visual="features"` reads precomputed regions (`features`, `mask` in the batch); `"grid"` reads
    images (`images` [N, 3, S, S] uint8 and `image_index` [B], each question's image) and learns a
    `GridEncoder` (the `trunk*` settings; `image_size` comes from the data) with the VQA loss.
    """

    TASK = "vqa"  # recorded in its checkpoints (core.checkpointing.checkpoint_task)
    LOGGED = ("train/loss", "val/loss", "val/acc", "val/acc_*")  # checkpoint.monitor names one
    SETTINGS = {"feature_dim": SIZE, "embed_dim": SIZE, "hidden_dim": SIZE, "dropout": Number("float", 0, 0.999),
                "nonlinearity": OneOf(("gated_tanh", "relu")), "attention": OneOf(("concat", "product")),
                "weight_norm": FLAG, "use_image": FLAG, "compile": FLAG, "lr": Number("float", 1e-12, 10),
                "warmup_epochs": Number("float", 0), "warmup_start": Number("float", 0, 1),
                "decay_start": Number("int", 0), "decay_every": Number("int", 1), "decay_rate": Number("float", 0, 1),
                **GRID_SETTINGS}

    def __init__(self, vocab: list[str], answers: list[str], feature_dim: int = 2048,
                 embed_dim: int = 300, hidden_dim: int = 1024, nonlinearity: str = "gated_tanh",
                 weight_norm: bool = False, dropout: float = 0.5, use_image: bool = True,
                 attention: str = "concat", lr: float = 2e-3, warmup_epochs: float = 3.0,
                 warmup_start: float = 0.25,
                 decay_start: int = 10, decay_every: int = 2, decay_rate: float = 0.25,
                 max_question_length: int = 14, feature_attrs: dict | None = None, compile: bool = False,
                 glove: str | None = None, answer_types: list[str] | None = None,
                 visual: str = "features", image_size: int | None = None, trunk: str = "resnet18",
                 trunk_layer: str = "layer3", trunk_weights: str | None = None, trunk_bn: str = "train",
                 trunk_lr_mult: float = 1.0, trunk_frozen_stages: int = 0):
        super().__init__()
        self.encoder = visual_encoder(visual, image_size, trunk, trunk_layer, trunk_weights, trunk_bn,
                                      trunk_frozen_stages, image_data="data=shapes_e2e")
        if self.encoder is not None:
            feature_dim = self.encoder.feature_dim  # what the trunk gives, not what a store held
        self.save_hyperparameters(ignore=["glove"])  # a checkpoint holds the vectors, not the file's path
        self.model = UpDown(len(vocab), len(answers), feature_dim, embed_dim, hidden_dim, nonlinearity,
                            weight_norm, dropout, use_image, attention)
        self.model.apply(init_weights)
        if glove:  # GloVe rows for the words it has; the others keep their random init
            rows, vectors = load_glove(glove, vocab, embed_dim)
            with torch.no_grad():
                self.model.question.embedding.weight[torch.from_numpy(rows)] = torch.from_numpy(vectors)
        self.val_acc = VQAAccuracy(answer_types or ANSWER_TYPES)  # GQA: binary/open; CLEVR: its 5 types

    def on_fit_start(self) -> None:
        if self.hparams.get("compile"):  # in place: the state dict keeps its keys, checkpoints stay portable
            self.model.compile()

    def regions(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each question's region features [B, K, D] and mask [B, K]: read, or encoded from its image."""
        if self.encoder is None:
            return batch.get("features"), batch.get("mask")
        return encode_regions(self.encoder, batch)

    def forward(self, batch: dict, return_attention: bool = False):
        features, mask = self.regions(batch)
        return self.model(batch["tokens"], batch["lengths"], features, mask,
                          return_attention=return_attention)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        # Mean over answers, times A: the per-question sum of BCE terms (Teney et al., eq. 7).
        loss = F.binary_cross_entropy_with_logits(logits, batch["targets"]) * logits.shape[1]
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch["targets"]) * logits.shape[1]
        self.log("val/loss", loss, batch_size=len(logits), sync_dist=True)
        self.val_acc.update(logits, batch["accuracy"], batch["answer_type"])

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_acc.compute().items():
            self.log(f"val/{name}", value, prog_bar=name == "acc")
        self.val_acc.reset()

    def predict_step(self, batch: dict, batch_idx: int, top_k: int = 5) -> dict:
        logits, attention = self(batch, return_attention=True)
        scores, indices = torch.sigmoid(logits).topk(min(top_k, logits.shape[1]), dim=1)
        return {"index": batch["index"], "scores": scores, "answers": indices, "attention": attention}

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adamax(self.parameter_groups(), lr=hp.lr)
        total_steps = self.trainer.estimated_stepping_batches
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = max(1, int(total_steps) // epochs)

        def schedule(step: int) -> float:
            return lr_factor(step / steps_per_epoch, hp.warmup_epochs, hp.warmup_start,
                             hp.decay_start, hp.decay_every, hp.decay_rate)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self) -> list[dict]:
        """The trainable parameters; the trunk's learn at `trunk_lr_mult` times the rate (frozen: none)."""
        return parameter_groups(self.model, self.encoder, self.hparams.lr, self.hparams.trunk_lr_mult)
