"""The Caffe ("v1", MSRA) ResNet of the bottom-up attention detector (Anderson et al. 2018).

Differs from torchvision's ResNet as the Caffe model (peteanderson80/bottom-up-attention,
models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt) does: a bottleneck's stride is in its
first 1x1 convolution, batch norm is a frozen affine transform, and the stem's 3x3 max-pool has no
padding and rounds up (`ceil_mode=True`). `res5` runs on pooled regions, with stride 1 and 3x3
convolutions dilated by 2, so a 14x14 region map stays 14x14.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BOTTLENECK_DEPTHS = (50, 101)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Frozen batch norm (an affine transform, for published weights) or trainable batch norm."""
    return nn.BatchNorm2d(channels) if norm == "batch" else FrozenBatchNorm2d(channels)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """A bias-free convolution padded to keep the size (at stride 1)."""
    return nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
                     bias=False)


class Bottleneck(nn.Module):
    """1x1 (carries the stride) -> 3x3 (dilated in res5) -> 1x1, each followed by a frozen BN."""

    def __init__(self, cin: int, width: int, cout: int, stride: int = 1, dilation: int = 1,
                 norm: str = "frozen"):
        super().__init__()
        self.conv1, self.norm1 = conv(cin, width, 1, stride), make_norm(norm, width)
        self.conv2, self.norm2 = conv(width, width, 3, 1, dilation), make_norm(norm, width)
        self.conv3, self.norm3 = conv(width, cout, 1), make_norm(norm, cout)
        if cin != cout or stride != 1:
            self.shortcut, self.shortcut_norm = conv(cin, cout, 1, stride), make_norm(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        identity = self.shortcut_norm(self.shortcut(x)) if hasattr(self, "shortcut") else x
        return F.relu(out + identity)


class BasicBlock(nn.Module):
    """3x3 (carries the stride) -> 3x3, for depths 18 and 34 (small CPU configurations)."""

    def __init__(self, cin: int, width: int, cout: int, stride: int = 1, dilation: int = 1,
                 norm: str = "frozen"):
        super().__init__()
        self.conv1, self.norm1 = conv(cin, cout, 3, stride, dilation), make_norm(norm, cout)
        self.conv2, self.norm2 = conv(cout, cout, 3, 1, dilation), make_norm(norm, cout)
        if cin != cout or stride != 1:
            self.shortcut, self.shortcut_norm = conv(cin, cout, 1, stride), make_norm(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        identity = self.shortcut_norm(self.shortcut(x)) if hasattr(self, "shortcut") else x
        return F.relu(out + identity)


class Stem(nn.Module):
    """7x7/2 convolution, frozen BN, ReLU, then Caffe's 3x3/2 max-pool: pad 0, rounding up."""

    def __init__(self, width: int = 64, norm: str = "frozen"):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.norm = make_norm(norm, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


def stage_channels(depth: int, width: int = 64) -> list[tuple[int, int]]:
    """(bottleneck width, output channels) of res2..res5."""
    expansion = 4 if depth in BOTTLENECK_DEPTHS else 1
    return [(width * 2**k, width * 2**k * expansion) for k in range(4)]


def make_stage(depth: int, stage: int, width: int, norm: str, dilation: int = 1) -> nn.Sequential:
    """res{stage} (2..5) of a ResNet of `depth`; res5 for regions: stride 1, dilation 2."""
    if depth not in BLOCKS:
        raise ValueError(f"depth={depth}: choose one of {sorted(BLOCKS)}")
    block = Bottleneck if depth in BOTTLENECK_DEPTHS else BasicBlock
    channels = stage_channels(depth, width)
    cin = width if stage == 2 else channels[stage - 3][1]
    mid, cout = channels[stage - 2]
    stride = 1 if stage == 2 or dilation > 1 else 2
    blocks = []
    for index in range(BLOCKS[depth][stage - 2]):
        blocks.append(block(cin if index == 0 else cout, mid, cout, stride if index == 0 else 1,
                            dilation, norm))
    return nn.Sequential(*blocks)


class CaffeTrunk(nn.Module):
    """stem -> res2 -> res3 -> res4: the stride-16 map the RPN and RoI pooling read."""

    def __init__(self, depth: int = 101, width: int = 64, norm: str = "frozen"):
        super().__init__()
        self.stem = Stem(width, norm)
        self.res2 = make_stage(depth, 2, width, norm)
        self.res3 = make_stage(depth, 3, width, norm)
        self.res4 = make_stage(depth, 4, width, norm)
        self.out_channels = stage_channels(depth, width)[2][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))  # [B, C4, ~H/16, ~W/16]
