"""The bottom-up detector's training: a torchvision Faster R-CNN plus Anderson et al.'s attribute head.

Anderson et al. (2018, section 3.1) add to Faster R-CNN an attribute classifier: the region's
feature concatenated with a learned embedding of its ground-truth object class feeds a softmax over
attributes and "no attribute". Here the region feature is the box head's output (torchvision's
TwoMLPHead, the counterpart of the paper's mean-pooled res5 output) at each ground-truth box, and an
object with several attributes contributes one softmax cross-entropy term per attribute, as the
original multi-label softmax does. The loss is the four Faster R-CNN losses plus
`attribute_loss_weight` times the attribute loss.

Validation logs `val/map50` (torchmetrics mean average precision at IoU 0.5, over the object classes),
`val/map` (IoU 0.5:0.95) and `val/attr_acc` (at ground-truth boxes, given the class: the fraction of
listed attributes that rank among the object's top-k attribute scores, k the number it lists).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import SIZE, Number, OneOf
from updown_vqa.detection import c4_training
from updown_vqa.detection.c4 import C4Detector
from updown_vqa.detection.c4_regions import C4_ARCHITECTURE
from updown_vqa.detection.model import ARCHITECTURE, box_features, build_detector
from updown_vqa.features.rois import load_resnet, weights_record


class AttributeHead(nn.Module):
    """concat(region feature, class embedding) -> hidden (ReLU) -> attribute logits."""

    def __init__(self, feature_dim: int, num_classes: int, num_attributes: int, embed_dim: int = 256,
                 hidden_dim: int = 512):
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes, embed_dim)
        self.hidden = nn.Linear(feature_dim + embed_dim, hidden_dim)
        self.classifier = nn.Linear(hidden_dim, num_attributes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, self.class_embedding(labels)], dim=-1)
        return self.classifier(F.relu(self.hidden(x)))


def attribute_loss(logits: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy with one term per listed attribute: logits [N, A], attributes [N, M] (-1 pads)."""
    if attributes.numel() == 0:
        return logits.sum() * 0
    targets = attributes.reshape(-1)
    repeated = logits.repeat_interleave(attributes.shape[1], dim=0)
    return F.cross_entropy(repeated, targets.clamp(min=0), reduction="none")[targets >= 0].mean()


def load_trunk(detector: nn.Module, backbone: str, weights: str) -> None:
    """Start the detector's ResNet body from classification weights: a torchvision weight name found
    in the local torch cache (e.g. IMAGENET1K_V1) or a state-dict path."""
    try:
        weights_record(backbone, weights)  # a clear error when the file is not in the cache
    except UpdownError as e:
        raise UpdownError(f"model.backbone_weights={weights}: {e}") from None
    state = {k: v for k, v in load_resnet(backbone, weights).state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = detector.backbone.body.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.endswith("num_batches_tracked")]:
        raise UpdownError(f"model.backbone_weights={weights}: not a {backbone} state dict "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


class BottomUpDetector(pl.LightningModule):
    """Trains the detector; its checkpoint is a `weights=` for `extract mode=regions`.

    `detector` holds the architecture (build_detector's arguments: backbone, anchor_sizes,
    aspect_ratios, fpn_channels, representation_size, roi_sampling_ratio, norm) and is saved in the
    checkpoint, with the class and attribute names, so that extraction rebuilds the same network from
    the file alone. `backbone_weights` starts the ResNet body from classification weights;
    `trainable_layers` (with norm "frozen") is how many of its last stages train, as in torchvision.
    """

    TASK = "detect"  # recorded in its checkpoints (core.checkpointing.checkpoint_task)
    LOGGED = ("train/*", "val/map50", "val/map", "val/attr_acc")
    SETTINGS = {"image_size": Number("int", 16, 8192), "lr": Number("float", 1e-12, 10),
                "weight_decay": Number("float", 0), "warmup_steps": Number("int", 0),
                "lr_decay_rate": Number("float", 0, 1), "attribute_loss_weight": Number("float", 0),
                "attribute_embed_dim": SIZE, "attribute_hidden_dim": SIZE, "proposals": Number("int", 1, 10**5),
                "box_batch_size_per_image": Number("int", 1), "rpn_batch_size_per_image": Number("int", 1),
                "trainable_layers": Number("int", 0, 5), "detector.arch": OneOf(("fpn", "c4")),
                "detector.depth": OneOf((18, 34, 50, 101, 152)), "detector.norm": OneOf(("batch", "frozen")),
                "detector.representation_size": SIZE, "detector.fpn_channels": SIZE, "detector.width": SIZE,
                "detector.pool_size": Number("int", 1, 64), "detector.rpn_hidden": SIZE,
                "detector.rois_per_image": Number("int", 1), "detector.min_box": Number("float", 0)}

    def __init__(self, classes: list[str], attributes: list[str], detector: dict, image_size: int = 600,
                 lr: float = 1e-3, weight_decay: float = 1e-4, warmup_steps: int = 200,
                 lr_milestones: tuple[int, ...] = (), lr_decay_rate: float = 0.1,
                 attribute_loss_weight: float = 0.5, attribute_embed_dim: int = 256,
                 attribute_hidden_dim: int = 512, box_batch_size_per_image: int = 512,
                 rpn_batch_size_per_image: int = 256, proposals: int = 300,
                 backbone_weights: str | None = None, trainable_layers: int = 3, seed: int = 0):
        super().__init__()
        classes, attributes = [str(c) for c in classes], [str(a) for a in attributes]
        detector = {**dict(detector), "num_classes": len(classes) + 1}
        self.arch = detector.setdefault("arch", "fpn")
        if self.arch not in ("fpn", "c4"):
            raise UpdownError(f"model.detector.arch={self.arch!r}: choose fpn or c4")
        if self.arch == "c4":  # the paper's detector; its attribute head counts "no attribute"
            detector["num_attributes"] = len(attributes) + 1
        lr_milestones = [int(m) for m in lr_milestones]
        self.save_hyperparameters()  # plain containers: the checkpoint loads with weights_only
        self.map = MeanAveragePrecision(iou_type="bbox", class_metrics=False)
        self.attr_correct = self.attr_total = 0
        if self.arch == "c4":
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                spec = {k: detector[k] for k in C4_ARCHITECTURE if k in detector}
                self.detector = C4Detector(**spec, post_nms=proposals).train()
            return
        self.detector = build_detector(image_size=image_size, proposals=proposals, seed=seed,
                                       trainable_layers=trainable_layers,
                                       **{k: v for k, v in detector.items() if k in ARCHITECTURE})
        if backbone_weights:
            load_trunk(self.detector, detector["backbone"], backbone_weights)
        self.detector.train()  # built for inference; Lightning keeps each module's mode
        heads = self.detector.roi_heads
        heads.fg_bg_sampler.batch_size_per_image = box_batch_size_per_image
        self.detector.rpn.fg_bg_sampler.batch_size_per_image = rpn_batch_size_per_image
        representation = heads.box_predictor.cls_score.in_features
        self.attribute_head = AttributeHead(representation, len(classes) + 1, len(attributes),
                                            attribute_embed_dim, attribute_hidden_dim)

    def _detect(self, images: list[torch.Tensor], targets: list[dict]):
        """torchvision's GeneralizedRCNN forward, keeping what the attribute head needs: detections
        (in the images' pixels; in eval mode), losses (in training mode), and the attribute logits at
        the ground-truth boxes given their classes, all from one backbone pass."""
        detector = self.detector
        image_list, scaled = detector.transform(images, [dict(t) for t in targets])
        features = detector.backbone(image_list.tensors)
        proposals, rpn_losses = detector.rpn(image_list, features, scaled if self.training else None)
        detections, box_losses = detector.roi_heads(features, proposals, image_list.image_sizes,
                                                    scaled if self.training else None)
        if not self.training:
            detections = detector.transform.postprocess(detections, image_list.image_sizes,
                                                        [image.shape[-2:] for image in images])
        regions = box_features(detector, features, [t["boxes"] for t in scaled], image_list.image_sizes)
        logits = self.attribute_head(regions, torch.cat([t["labels"] for t in targets]))
        return detections, {**rpn_losses, **box_losses}, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.arch == "c4":
            losses = c4_training.training_losses(self.detector, images, targets,
                                                 self.hparams.rpn_batch_size_per_image,
                                                 self.hparams.detector.get("rois_per_image", 64))
            attr_loss = losses.pop("loss_attributes")
        else:
            _, losses, logits = self._detect(images, targets)
            attr_loss = attribute_loss(logits, torch.cat([t["attributes"] for t in targets]))
        loss = sum(losses.values()) + self.hparams.attribute_loss_weight * attr_loss
        size = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss_attributes", attr_loss, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        """Detections per image: {"boxes", "labels", "scores"} in the images' pixels."""
        return self.detector(images)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        # detections, and the attributes at the ground-truth boxes given the class (as in training)
        if self.arch == "c4":
            detections, res4 = c4_training.predict(self.detector, images)
            features = self.detector.region_features(res4, [t["boxes"] for t in targets])
            labels = torch.cat([t["labels"] for t in targets])
            logits = self.detector.attributes(features, labels)[:, 1:]  # without "no attribute"
        else:
            detections, _, logits = self._detect(images, targets)
        self.map.update([{k: d[k] for k in ("boxes", "scores", "labels")} for d in detections],
                        [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        attributes = torch.cat([t["attributes"] for t in targets])  # [N, M], -1 pads
        listed = (attributes >= 0).sum(dim=1, keepdim=True)
        # each listed attribute counts as found when it ranks among the object's top-(number listed)
        ranks = (logits.unsqueeze(1) > logits.gather(1, attributes.clamp(min=0)).unsqueeze(2)).sum(dim=2)
        found = (ranks < listed) & (attributes >= 0)
        self.attr_correct += int(found.sum())
        self.attr_total += int(listed.sum())

    def on_validation_epoch_end(self) -> None:
        result = self.map.compute()
        self.map.reset()
        self.log("val/map50", float(result["map_50"]), prog_bar=True)
        self.log("val/map", float(result["map"]))
        # per-process ratios, averaged across processes under DDP (mAP is synchronised by torchmetrics)
        self.log("val/attr_acc", self.attr_correct / max(self.attr_total, 1), sync_dist=True)
        self.attr_correct = self.attr_total = 0

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

        def factor(step: int) -> float:  # linear warm-up, then steps down at the milestones (epochs)
            warm = min(1.0, (step + 1) / max(hp.warmup_steps, 1))
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
            return warm * hp.lr_decay_rate ** sum(epoch >= m for m in hp.lr_milestones)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
