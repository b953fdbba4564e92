"""The LightningModule that trains the Up-Down captioner with cross-entropy, or with self-critical
CIDEr-D optimisation (`scst`), and reports CIDEr-D and BLEU.

Also the pieces other entry points reuse: decoding a batch to strings, writing COCO-format results
(`write_caption_results`) and the attention over regions for each generated word (`caption_attention`).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from updown_vqa.captioning.data import BOS, EOS
from updown_vqa.captioning.metrics import bleu, cider_d
from updown_vqa.captioning.model import UpDownCaptioner, caption_loss
from updown_vqa.captioning.scst import check_scst, mean_of_others, reward_scorer, rewards, scst_loss
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import write_json
from updown_vqa.core.settings import FLAG, SIZE, Number
from updown_vqa.features.grid import GRID_SETTINGS, encode_regions, parameter_groups, visual_encoder
from updown_vqa.features.pixels import check_images


def tokens_to_words(tokens: torch.Tensor, vocab: list[str], eos_index: int = 3) -> list[list[str]]:
    """Decoded ids [B, L] -> the words of each caption, up to (without) EOS, padding dropped."""
    out = []
    for row in tokens.tolist():
        row = row[: row.index(eos_index)] if eos_index in row else row
        out.append([vocab[i] for i in row if i != 0])
    return out


class UpDownCaptioning(pl.LightningModule):
    """Wraps `UpDownCaptioner`. The vocabulary and decoding settings are hyperparameters, so a
    checkpoint alone is enough to caption images: no training caches are needed.

    `scst` ({samples, baseline}; stage=scst) trains on the CIDEr-D reward of `samples` sampled captions
    per image against a greedy or mean-of-the-other-samples baseline (`captioning.scst`).
    Adam (Kingma and Ba 2015) with step decay: lr times `lr_decay_rate` every `lr_decay_every` epochs.
    Validation decodes each image once, greedily (beam_size=1) or with beam search, and logs
    val/bleu1..4 (0-1) and val/cider (CIDEr-D; 1.0 here is reported as 100 in papers).

    `visual="features"` reads precomputed regions (`features`, `mask` in the batch); `"grid"` reads
    images (`images` [N, 3, S, S] uint8 and `image_index` [B], each row's image) and learns a
    `GridEncoder` (the `trunk*` settings; `image_size` comes from the data) with the captioning loss.
    """

    TASK = "caption"  # recorded in its checkpoints (core.checkpointing.checkpoint_task)
    LOGGED = ("train/loss", "train/reward", "train/reward_baseline", "val/bleu[1-4]", "val/cider")
    SETTINGS = {"feature_dim": SIZE, "embed_dim": SIZE, "hidden_dim": SIZE, "attention_dim": SIZE,
                "dropout": Number("float", 0, 0.999), "use_image": FLAG, "lr": Number("float", 1e-12, 10),
                "lr_decay_every": Number("int", 1), "lr_decay_rate": Number("float", 0, 1),
                "beam_size": Number("int", 1, 1000), "max_decode_length": Number("int", 1, 1024),
                "length_penalty": Number("float"), "max_caption_length": Number("int", 1, 1024), **GRID_SETTINGS}

    def __init__(self, vocab: list[str], feature_dim: int = 2048, embed_dim: int = 1000,
                 hidden_dim: int = 1000, attention_dim: int = 512, dropout: float = 0.5,
                 use_image: bool = True, lr: float = 5e-4, lr_decay_every: int = 3,
                 lr_decay_rate: float = 0.8, beam_size: int = 1, max_decode_length: int = 20,
                 length_penalty: float = 0.0, max_caption_length: int = 16,
                 feature_attrs: dict | None = None, scst: dict | None = None, visual: str = "features",
                 image_size: int | None = None, trunk: str = "resnet18", trunk_layer: str = "layer3",
                 trunk_weights: str | None = None, trunk_bn: str = "train", trunk_lr_mult: float = 1.0,
                 trunk_frozen_stages: int = 0):
        super().__init__()
        self.encoder = visual_encoder(visual, image_size, trunk, trunk_layer, trunk_weights, trunk_bn,
                                      trunk_frozen_stages, image_data="data=shapes_caption_e2e")
        if self.encoder is not None:
            feature_dim = self.encoder.feature_dim  # what the trunk gives, not what a store held
        # Plain Python, not the OmegaConf nodes Hydra passes, so that checkpoints load with weights_only.
        vocab = [str(word) for word in vocab]
        if isinstance(feature_attrs, DictConfig):
            feature_attrs = OmegaConf.to_container(feature_attrs)
        scst = check_scst(scst) if scst is not None else None  # None: cross-entropy (stage=xe)
        if vocab[2:4] != [BOS, EOS]:
            raise UpdownError(f"vocab must hold {BOS} and {EOS} at indices 2 and 3, got {vocab[:4]}; "
                              "build it with updown_vqa.captioning.data.preprocess_captions")
        self.save_hyperparameters()
        self.model = UpDownCaptioner(len(vocab), feature_dim, embed_dim, hidden_dim, attention_dim,
                                     dropout, use_image, pad_index=0, bos_index=2, eos_index=3)
        self.candidates: dict[int, str] = {}
        self.references: dict[int, list[str]] = {}
        self.reward_scorer = None  # SCST: the reward (CIDEr-D with the training set's idf), built when training starts

    def regions(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's region features [B, K, D] and mask [B, K]: read, or encoded from its image."""
        if self.encoder is None:
            return batch["features"].to(self.dtype), batch["mask"]
        return encode_regions(self.encoder, batch)

    def forward(self, batch: dict) -> torch.Tensor:
        """Teacher-forced logits [B, T-1, V] predicting batch["tokens"][:, 1:]."""
        return self.model(*self.regions(batch), batch["tokens"])

    def on_train_start(self) -> None:
        if self.hparams.scst and self.reward_scorer is None:
            train = self.trainer.datamodule.datasets["train"]
            if getattr(train, "references", None) is None:
                raise UpdownError("stage=scst trains on images with their references: set data.train_items=images")
            scst = self.hparams.scst
            self.reward_scorer = reward_scorer(train.image_ids.tolist(), train.references,
                                               scst["cider_weight"], scst["bleu_weight"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.hparams.scst:
            return self.scst_step(batch)
        loss = caption_loss(self(batch), batch["tokens"][:, 1:], self.model.pad_index)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["tokens"]))
        return loss

    def scst_step(self, batch: dict) -> torch.Tensor:
        """Self-critical step: sample captions, reward them by CIDEr-D, raise those above the baseline."""
        terms = self.scst_terms(batch)
        size = len(batch["image_ids"])
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=size)
        self.log("train/reward", terms["rewards"].mean(), prog_bar=True, batch_size=size)
        self.log("train/reward_baseline", terms["baselines"].mean(), batch_size=size)
        return terms["loss"]

    def scst_terms(self, batch: dict) -> dict:
        """The sampled tokens [B * n, L], their rewards and baselines [B * n] and the SCST loss."""
        hp, model = self.hparams, self.model
        samples, (features, mask) = hp.scst["samples"], self.regions(batch)
        tokens, log_probs = model.sample(features, mask, samples, hp.max_decode_length)
        image_ids = batch["image_ids"].tolist()
        sampled = rewards(self.reward_scorer, tokens, [i for i in image_ids for _ in range(samples)],
                          hp.vocab, model.eos_index)  # [B * n]
        if hp.scst["baseline"] == "greedy":  # the test-time decoding: dropout off
            model.eval()
            greedy, _ = model.greedy(features, mask, hp.max_decode_length)
            model.train()
            baseline = rewards(self.reward_scorer, greedy, image_ids, hp.vocab, model.eos_index)
            baseline = baseline.repeat_interleave(samples)
        else:
            baseline = mean_of_others(sampled, samples)
        loss = scst_loss(log_probs, tokens, (sampled - baseline).to(self.device), model.eos_index)
        return {"tokens": tokens, "rewards": sampled, "baselines": baseline, "loss": loss}

    def decode(self, batch: dict, beam_size: int | None = None,
               max_length: int | None = None) -> list[str]:
        """One caption per image of the batch (greedy for beam size 1, else beam search)."""
        hp = self.hparams
        beam_size, max_length = beam_size or hp.beam_size, max_length or hp.max_decode_length
        features, mask = self.regions(batch)
        if beam_size == 1:
            tokens, _ = self.model.greedy(features, mask, max_length)
        else:
            tokens = self.model.beam_search(features, mask, beam_size, max_length, hp.length_penalty)
        return [" ".join(words) for words in tokens_to_words(tokens, hp.vocab, self.model.eos_index)]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "references" not in batch:
            raise UpdownError("the validation split has no captions: set data.val.captions")
        for image_id, caption, refs in zip(batch["image_ids"].tolist(), self.decode(batch),
                                           batch["references"]):
            self.candidates[image_id], self.references[image_id] = caption, refs

    def on_validation_epoch_end(self) -> None:
        # Single-process: the strings are not gathered across devices.
        if not self.candidates:
            return
        cider, _ = cider_d(self.candidates, self.references)
        for n, score in enumerate(bleu(self.candidates, self.references), start=1):
            self.log(f"val/bleu{n}", score)
        self.log("val/cider", cider, prog_bar=True)
        self.candidates, self.references = {}, {}

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [{"image_id": image_id, "caption": caption}
                for image_id, caption in zip(batch["image_ids"].tolist(), self.decode(batch))]

    def configure_optimizers(self):
        hp = self.hparams
        # The trunk (model.visual=grid) learns at lr * trunk_lr_mult (features.grid.parameter_groups).
        optimizer = torch.optim.Adam(parameter_groups(self.model, self.encoder, hp.lr, hp.trunk_lr_mult), lr=hp.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, hp.lr_decay_every, hp.lr_decay_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@torch.no_grad()
def write_caption_results(model: UpDownCaptioning, loader, path: str | None = None,
                          beam_size: int | None = None, max_length: int | None = None) -> list[dict]:
    """Caption every image `loader` yields -> COCO results [{"image_id", "caption"}], written to `path`."""
    model.eval()
    results = []
    for batch in loader:
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in check_images(batch).items()}
        captions = model.decode(batch, beam_size, max_length)
        results += [{"image_id": i, "caption": c} for i, c in zip(batch["image_ids"].tolist(), captions)]
    if path:
        write_json(path, results)
    return results


@torch.no_grad()
def caption_attention(model: UpDownCaptioning | UpDownCaptioner, batch: dict, index: int = 0,
                      vocab: list[str] | None = None, max_length: int = 20) -> tuple[list[str], torch.Tensor]:
    """Greedy caption of image `index` of the batch -> (its words, attention [L, K] over regions per word)."""
    if isinstance(model, UpDownCaptioning):
        vocab, max_length = vocab or model.hparams.vocab, model.hparams.max_decode_length
        model = model.model
    if vocab is None:
        raise ValueError("caption_attention needs the vocab when given a bare UpDownCaptioner")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = batch["features"][index : index + 1].to(device, next(model.parameters()).dtype)
    tokens, attention = model.greedy(features, batch["mask"][index : index + 1].to(device), max_length)
    model.train(was_training)
    words = tokens_to_words(tokens, vocab, model.eos_index)[0]
    return words, attention[0, : len(words)].cpu()  # [L, K]
