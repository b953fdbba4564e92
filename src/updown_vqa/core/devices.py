"""The one device chooser: the named device, else the GPU when there is one, else the CPU."""

from __future__ import annotations

import torch


def choose_device(name: str | torch.device | None = None) -> torch.device:
    """`name` ("cpu", "cuda:1", ...); None or "auto": cuda when available, else cpu."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
