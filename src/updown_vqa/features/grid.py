"""The visual encoder of `model.visual=grid`: a torchvision ResNet trunk that turns images into a grid
of cells, each cell a region (its feature, then its box x1/w y1/h x2/w y2/h, as a store's spatial
features), trained end to end by the task's loss (Jiang et al., "In Defense of Grid Features for
VQA", CVPR 2020, https://arxiv.org/abs/2001.03615). The VQA model and the captioner share it, with the
model keys that build it (`GRID_SETTINGS`), the check that model and data agree (`visual_encoder`), the
per-row regions (`encode_regions`) and the trunk's learning rate (`parameter_groups`).

Dimensions: N images, B rows (questions or captions), G_h x G_w cells, C trunk channels, D = C + 4.
"""

from __future__ import annotations

import torch
from torch import nn

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import Number, OneOf
from updown_vqa.features.rois import build_trunk, grid_boxes, normalize_images

TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101")
LAYERS = ("layer2", "layer3", "layer4")
BN_MODES = ("frozen", "train")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # what trunk_frozen_stages counts, in order
_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")  # the trunk's
GRID_SETTINGS = {"visual": OneOf(("features", "grid")), "image_size": Number("int", 8, 8192),
                 "trunk": OneOf(TRUNKS), "trunk_layer": OneOf(LAYERS), "trunk_bn": OneOf(BN_MODES),
                 "trunk_lr_mult": Number("float", 0, 1000), "trunk_frozen_stages": Number("int", 0, 5)}


class GridEncoder(nn.Module):
    """uint8 images [N, 3, S, S] -> cells [N, G_h*G_w, C + 4], normalised on the images' device.

    `weights`: None (random), a torchvision weight name in the local torch cache, or a state-dict file.
    `bn="frozen"` keeps batch-norm statistics and affine terms fixed (pretrained trunks, small
    batches); `"train"` trains them (a random trunk needs it). `frozen_stages` freezes the first n
    of stem, layer1, ..., layer4.
    """

    def __init__(self, trunk: str = "resnet18", layer: str = "layer3", weights: str | None = None,
                 bn: str = "train", frozen_stages: int = 0):
        super().__init__()
        _check_choice("model.trunk", trunk, TRUNKS)
        _check_choice("model.trunk_layer", layer, LAYERS)
        _check_choice("model.trunk_bn", bn, BN_MODES)
        num_stages = STAGES.index(layer) + 1
        if not 0 <= frozen_stages <= num_stages:
            raise UpdownError(f"model.trunk_frozen_stages={frozen_stages}: a number from 0 (train all) to "
                              f"{num_stages} (stem to {layer}, the whole trunk)")
        weights = None if weights in (None, "none", "random") else str(weights)
        self.trunk, channels, self.stride = build_trunk(trunk, weights, layer)
        self.feature_dim = channels + 4
        self.bn = bn
        frozen = {"conv1", "bn1"} if frozen_stages else set()
        frozen |= set(STAGES[1:frozen_stages])
        for name, child in zip(_CHILDREN, self.trunk.children()):
            for module in child.modules():
                is_bn = isinstance(module, nn.BatchNorm2d)
                if name in frozen or (is_bn and bn == "frozen"):
                    module.requires_grad_(False)
        self.frozen_stages = frozen_stages
        self.train()

    def train(self, mode: bool = True) -> GridEncoder:
        """Frozen batch norm and frozen stages stay in eval mode: their statistics do not move."""
        super().train(mode)
        for module in self.trunk.modules():
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.trunk(normalize_images(images))  # [N, C, G_h, G_w]
        cells = grid.flatten(2).transpose(1, 2)  # [N, G_h*G_w, C]
        coords = self.cell_boxes(grid.shape[-2:], images.shape[-2:]).to(cells)  # [G_h*G_w, 4] in [0, 1]
        return torch.cat([cells, coords.expand(len(cells), -1, -1)], dim=-1)  # [N, G_h*G_w, D]

    def cell_boxes(self, grid: tuple[int, int], input_size: tuple[int, int],
                   image_size: tuple[int, int] = (1, 1)) -> torch.Tensor:
        """Boxes [G_h*G_w, 4] of the cells, row by row, in pixels of a w x h image (default: 0..1)."""
        return grid_boxes(tuple(grid), self.stride, tuple(input_size), tuple(image_size))


def visual_encoder(visual: str, image_size: int | None, trunk: str, layer: str, weights: str | None,
                   bn: str, frozen_stages: int, image_data: str) -> GridEncoder | None:
    """The grid encoder of `visual="grid"` (None for "features"); refuses a model and data that disagree
    on what they read. `image_data` names the task's image data config (data=shapes_e2e)."""
    if visual not in ("features", "grid"):
        raise UpdownError(f"model.visual={visual!r}: choose features (a feature store) or grid (images)")
    if visual == "grid" and image_size is None:
        raise UpdownError("model.visual=grid learns from images, but the data gives feature stores: use "
                          f"an image data config ({image_data}, or images: per split as in it)")
    if visual == "features" and image_size is not None:
        raise UpdownError(f"the data gives images (an image data config such as {image_data}): set "
                          "model.visual=grid, or use a data config with feature stores")
    return GridEncoder(trunk, layer, weights, bn, frozen_stages) if visual == "grid" else None


def encode_regions(encoder: GridEncoder, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's regions [B, K, D] and mask [B, K] from the batch's `images` [N, 3, S, S] (each image
    encoded once, however many rows ask about it) and `image_index` [B] (each row's image)."""
    cells = encoder(batch["images"])  # [N, K, D]
    features = cells[batch["image_index"]]  # [B, K, D]
    return features, torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)


def parameter_groups(head: nn.Module, encoder: GridEncoder | None, lr: float, trunk_lr_mult: float) -> list[dict]:
    """The trainable parameters of `head` and `encoder`; the trunk's learn at `trunk_lr_mult` times the
    rate (0, or a wholly frozen trunk: not in the optimizer)."""
    groups = [{"params": [p for p in head.parameters() if p.requires_grad]}]
    trunk = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    if trunk and trunk_lr_mult > 0:
        groups.append({"params": trunk, "lr": lr * trunk_lr_mult})
    return groups


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UpdownError(f"{key}={value!r}: choose one of {', '.join(choices)}")
