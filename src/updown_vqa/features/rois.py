"""Features at given boxes: RoIAlign on a torchvision ResNet trunk with its classification head removed."""

from __future__ import annotations

import hashlib
import logging
import os

import torch
import torchvision
from torch import nn
from torchvision.ops import roi_align

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Output channels and stride of each stage of resnet18/34 (basic blocks); bottleneck nets have 4x channels.
_STAGES = {"layer1": (64, 4), "layer2": (128, 8), "layer3": (256, 16), "layer4": (512, 32)}


def file_sha256(path: str) -> str:
    """Hex digest of a file, recorded in stores so features can be traced to their weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_record(model: str, weights: str | None, allow_random: bool = False, seed: int = 0) -> dict:
    """Where `model`'s weights come from, checked now and recorded in stores so features can be remade.

    `weights`: a state-dict path, a torchvision weight name of `model` (e.g. DEFAULT, IMAGENET1K_V1)
    whose file is in the local torch cache, or None / "random" (only with `allow_random`).
    """
    if weights in (None, "random") or str(weights).startswith("random ("):
        return _random_weights(model, "no weights given", allow_random, seed)
    if os.path.isfile(weights):
        return {"weights": os.path.abspath(weights), "weights_sha256": file_sha256(weights)}
    try:
        enum = torchvision.models.get_model_weights(model).verify(weights)
    except (KeyError, ValueError):
        raise UpdownError(
            f"weights={weights!r}: neither a file nor a torchvision weight name of {model}; "
            "pass a state-dict path or a name such as DEFAULT"
        ) from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    if not os.path.isfile(cached):
        reason = f"weights={weights} ({enum}) is not in the local torch cache ({cached})"
        return _random_weights(model, reason, allow_random, seed, enum.url, cached)
    return {"weights": str(enum), "weights_sha256": file_sha256(cached)}


def _random_weights(model: str, reason: str, allow_random: bool, seed: int, url: str = "",
                    cached: str = "") -> dict:
    """The record of a seeded random initialisation, or an error saying how to provide weights."""
    download = f"download {url} to {cached}, or " if url else ""
    if not allow_random:
        raise UpdownError(
            f"{model}: {reason}; {download}pass weights=PATH (a state dict) or weights=NAME (a "
            f"torchvision weight name such as DEFAULT whose file is in {torch.hub.get_dir()}"
            "/checkpoints), or allow_random_weights=true for random features (smoke tests only)"
        )
    log.warning("%s: %s; using random weights (seed %d): enough for the built-in shapes dataset, "
                "not for real images", model, reason, seed)
    return {"weights": "random", "seed": seed}


def build_trunk(backbone: str = "resnet152", weights: str | None = None, stage: str = "layer4"):
    """A ResNet without its average pool and classifier, optionally cut after an earlier `stage`.

    `weights` is a torchvision weight name (e.g. "IMAGENET1K_V2", taken from the local torch cache),
    a path to a state dict, or None for random initialisation. Returns (trunk, channels, stride).
    """
    if not hasattr(torchvision.models, backbone) or not backbone.startswith("resnet"):
        raise UpdownError(
            f"backbone={backbone!r} is not a torchvision ResNet (resnet18..resnet152)"
        )
    if stage not in _STAGES:
        raise UpdownError(f"trunk={stage!r}: the trunk ends after one of {', '.join(_STAGES)}")
    learned = end_to_end_trunk(weights)
    net = load_resnet(backbone, None if learned else weights)
    layers = list(net.children())[:-2]  # drop avgpool and fc: the classic grid-feature trunk
    cut = [name for name, _ in net.named_children()].index(stage) + 1
    trunk = nn.Sequential(*layers[:cut]).eval()
    if learned:
        try:
            trunk.load_state_dict(learned["state_dict"])
        except RuntimeError as e:
            raise UpdownError(f"weights={weights}: its trunk is {learned['backbone']} to {learned['stage']}, "
                              f"not {backbone} to {stage} ({str(e).splitlines()[0]})") from None
    channels, stride = _STAGES[stage]
    if backbone not in ("resnet18", "resnet34"):
        channels *= 4
    return trunk, channels, stride


def end_to_end_trunk(weights: str | None) -> dict | None:
    """The trunk an end-to-end checkpoint learned (VQA or captioning, `model.visual=grid`): its backbone,
    stage, image size and state dict (keys of the cut nn.Sequential); None for any other weights."""
    if not weights or not str(weights).endswith(".ckpt") or not os.path.isfile(weights):
        return None
    from updown_vqa.core.checkpointing import (
        read_checkpoint,  # here: bench gpu imports this module without omegaconf
    )

    checkpoint = read_checkpoint(weights, mmap=True, key="weights")
    hparams = checkpoint.get("hyper_parameters") or {}
    if hparams.get("visual") != "grid":
        return None
    prefix = "encoder.trunk."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return {"backbone": hparams["trunk"], "stage": hparams["trunk_layer"],
            "image_size": int(hparams["image_size"]), "state_dict": state}


def load_resnet(backbone: str, weights: str | None) -> nn.Module:
    builder = getattr(torchvision.models, backbone)
    if weights is None:
        return builder(weights=None)
    if os.path.isfile(weights):
        net = builder(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        return net
    try:
        return builder(weights=weights)
    except Exception as e:  # torchvision raises on unknown names and on failed downloads alike
        raise UpdownError(
            f"weights={weights!r}: neither a file nor a torchvision weight name available offline "
            f"({type(e).__name__}); put the file in the torch cache (torch.hub.get_dir()) or pass a path"
        ) from e


def grid_boxes(grid: tuple[int, int], stride: int, input_size: tuple[int, int],
               image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes [G_h*G_w, 4] x1 y1 x2 y2 of the cells, row by row, in pixels of the original w x h image."""
    (rows, cols), (height, width), (w, h) = grid, input_size, image_size
    ys = (torch.arange(rows + 1) * stride).clamp(max=height) * (h / height)
    xs = (torch.arange(cols + 1) * stride).clamp(max=width) * (w / width)
    y1, x1 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y2, x2 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    return torch.stack([x1, y1, x2, y2], dim=-1).reshape(-1, 4).float()


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] images [B, 3, H, W] to ImageNet-normalised float."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.no_grad()
def roi_features(
    trunk: nn.Module,
    images: torch.Tensor,
    boxes: list[torch.Tensor],
    stride: int,
    output_size: int = 1,
    image_sizes: list[tuple[int, int]] | None = None,
    spatial: bool = True,
) -> list[torch.Tensor]:
    """Features at given boxes for a batch of same-size images.

    images: [B, 3, H, W] (uint8 or normalised float); boxes[b]: [n_b, 4] in pixels of the original
    image, x1 y1 x2 y2, with image_sizes[b] = (w, h) the original size (default: H, W as given).
    Each box is RoIAligned on the trunk's output to output_size x output_size, flattened
    (output_size=1 is the mean-pooled feature of the paper), and, with `spatial`, followed by the
    box's normalised coordinates x1/w, y1/h, x2/w, y2/h. Returns one [n_b, C*s*s (+4)] tensor per image.
    """
    if images.dtype == torch.uint8 or images.max() > 10:
        images = normalize_images(images)
    fmap = trunk(images)  # [B, C, H/stride, W/stride]
    return pool_boxes(fmap, boxes, stride, images.shape[-2:], output_size, image_sizes, spatial)


def pool_boxes(
    fmap: torch.Tensor,
    boxes: list[torch.Tensor],
    stride: int,
    input_size: tuple[int, int],
    output_size: int = 1,
    image_sizes: list[tuple[int, int]] | None = None,
    spatial: bool = True,
) -> list[torch.Tensor]:
    """`roi_features` on a feature map [B, C, H/stride, W/stride] already computed from input H x W."""
    height, width = input_size
    sizes = image_sizes or [(width, height)] * len(boxes)
    scaled = []
    for b, (w, h) in zip(boxes, sizes):
        scale = b.new_tensor([width / w, height / h, width / w, height / h])
        scaled.append(b.float() * scale)
    pooled = roi_align(fmap, scaled, output_size, spatial_scale=1.0 / stride, aligned=True)
    pooled = pooled.flatten(1)  # [R, C*s*s]
    return split_with_coords(pooled, boxes, sizes, spatial)


def split_with_coords(pooled: torch.Tensor, boxes: list[torch.Tensor], image_sizes: list[tuple[int, int]],
                      spatial: bool = True) -> list[torch.Tensor]:
    """Features [R, D] of the boxes of all images -> one [K_i, D (+4)] per image, each box's
    x1/w y1/h x2/w y2/h appended when `spatial` (boxes in pixels of the (w, h) original images)."""
    out = []
    for b, (w, h), chunk in zip(boxes, image_sizes, pooled.split([len(b) for b in boxes])):
        if spatial:
            coords = b.float() / b.new_tensor([w, h, w, h], dtype=torch.float32)
            chunk = torch.cat([chunk, coords], dim=1)
        out.append(chunk)
    return out
