"""The published bottom-up attention weights, converted to `C4Detector`'s layout.

Two formats of the same Caffe model (read from each project's model code):
- MILVLG/bottom-up-attention.pytorch, Caffe mode (`bua-caffe-frcn-r101_with_attributes.pth`, and the
  k10-100 / fix36 files): a torch file; the RPN objectness has 2 x 12 channels under a softmax
  (the 12 background logits first), background is class 0 of 1601, "no attribute" is attribute 0 of
  401, class boxes 1601 x 4 with regression weights 1, 1, 1, 1; attribute layers `cls_embed`,
  `attr_linear1`, `attr_linear2`.
- airsplay/py-bottom-up-attention (`faster_rcnn_from_caffe_attr.pkl`, detectron2): a pickle of numpy
  arrays; 12 sigmoid objectness channels with detectron2's anchor order (size-major), background
  and "no attribute" last (`NUM_CLASSES 1600`, 400 attributes), class boxes 1600 x 4 with
  detectron2's regression weights 10, 10, 5, 5; attribute layers `cls_embedding`, `fc_attr`,
  `attr_score`.
Softmax over (b, f) is sigmoid(f - b), so a 24-channel objectness becomes 12 exact logits.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import torch

from updown_vqa.core.errors import UpdownError

MILVLG, AIRSPLAY = "milvlg", "airsplay"
BOX_WEIGHTS = {MILVLG: (1.0, 1.0, 1.0, 1.0), AIRSPLAY: (10.0, 10.0, 5.0, 5.0)}
HEADS = {
    MILVLG: {"cls_embed": "class_embedding", "attr_linear1": "hidden", "attr_linear2": "score"},
    AIRSPLAY: {"cls_embedding": "class_embedding", "fc_attr": "hidden", "attr_score": "score"},
}
_OBJECTNESS = "proposal_generator.rpn_head.objectness_logits"
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array or a plain container")


def read_published(path: str) -> dict[str, torch.Tensor]:
    """The model tensors of a .pkl (detectron2, numpy arrays only) or .pth (torch) file."""
    try:
        if str(path).endswith(".pkl"):
            with open(path, "rb") as f:
                data = _ArraysOnly(f, encoding="latin1").load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as e:
        raise UpdownError(f"weights={path}: cannot read it as a checkpoint of arrays "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                          "pass the published .pth (MILVLG) or .pkl (airsplay) file") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise UpdownError(f"weights={path}: holds a {type(data).__name__}, not a dict of arrays")
    return {k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v
            for k, v in data.items() if isinstance(v, (np.ndarray, torch.Tensor))}


def checkpoint_format(state: dict, path: str) -> str:
    """milvlg or airsplay, from the RPN objectness width; R152 (ResNet v2) and others refused."""
    if "backbone.stem.norm.weight" in state or "roi_heads.res5_bn.weight" in state:
        raise UpdownError(f"weights={path}: a ResNet v2 (MILVLG's R152, configs/caffe/test-caffe-"
                          "r152.yaml: no pixel mean, no dilation) is a different network; use the "
                          "R101 checkpoint")
    objectness = state.get(f"{_OBJECTNESS}.weight")
    if objectness is None:
        raise UpdownError(f"weights={path}: no {_OBJECTNESS}.weight; not a bottom-up attention "
                          "C4 checkpoint (MILVLG Caffe-mode .pth or airsplay .pkl)")
    return MILVLG if objectness.shape[0] == 24 else AIRSPLAY


def _rename(key: str, fmt: str) -> str | None:
    """Our name of a detectron2-style key; None for keys we do not keep."""
    if key.endswith("num_batches_tracked"):
        return None
    key = re.sub(r"^backbone\.stem\.conv1\.norm\.", "trunk.stem.norm.", key)
    key = re.sub(r"^backbone\.stem\.conv1\.", "trunk.stem.conv.", key)
    key = re.sub(r"^backbone\.(res[234])\.", r"trunk.\1.", key)
    key = re.sub(r"^roi_heads\.res5\.", "res5.", key)
    key = re.sub(r"\.conv(\d)\.norm\.", r".norm\1.", key)
    key = re.sub(r"\.shortcut\.norm\.", ".shortcut_norm.", key)
    key = key.replace("proposal_generator.rpn_head.objectness_logits.", "rpn.objectness.")
    key = key.replace("proposal_generator.rpn_head.anchor_deltas.", "rpn.deltas.")
    key = key.replace("proposal_generator.rpn_head.", "rpn.")
    head = re.match(r"^roi_heads\.box_predictor\.(\w+)\.(\w+)$", key)
    if head and head.group(1) in HEADS[fmt]:
        return f"attributes.{HEADS[fmt][head.group(1)]}.{head.group(2)}"
    return key.replace("roi_heads.box_predictor.", "")


def _last_to_first(x: torch.Tensor) -> torch.Tensor:
    """Rows [..., last] -> [last, ...]: background / "no attribute" moved to index 0."""
    return torch.cat([x[-1:], x[:-1]])


def _size_major_to_ratio_major(x: torch.Tensor, sizes: int = 4, ratios: int = 3) -> torch.Tensor:
    """Anchor rows [size * ratios + ratio, ...] (detectron2) -> [ratio * sizes + size, ...] (Caffe)."""
    per_anchor = x.shape[0] // (sizes * ratios)
    grouped = x.reshape(sizes, ratios, per_anchor, *x.shape[1:])
    return grouped.transpose(0, 1).reshape(x.shape)


def convert(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Our state dict from a published one (names, orders and the RPN objectness form)."""
    ours = {}
    for key, value in state.items():
        name = _rename(key, fmt)
        if name is not None:
            ours[name] = value.float()
    for part in ("weight", "bias"):
        objectness = ours.get(f"rpn.objectness.{part}")
        if objectness is not None and fmt == MILVLG:  # softmax(b, f) = sigmoid(f - b)
            half = objectness.shape[0] // 2
            ours[f"rpn.objectness.{part}"] = objectness[half:] - objectness[:half]
        if fmt == AIRSPLAY:
            for name in (f"rpn.objectness.{part}", f"rpn.deltas.{part}"):
                if name in ours:
                    ours[name] = _size_major_to_ratio_major(ours[name])
            for name in (f"cls_score.{part}", f"attributes.score.{part}"):
                if name in ours:
                    ours[name] = _last_to_first(ours[name])
            if f"bbox_pred.{part}" in ours:  # 1600 x 4 rows, no background: zeros for it
                rows = ours[f"bbox_pred.{part}"]
                ours[f"bbox_pred.{part}"] = torch.cat([torch.zeros_like(rows[:4]), rows])
    if fmt == AIRSPLAY and "attributes.class_embedding.weight" in ours:
        embedding = ours["attributes.class_embedding.weight"]
        ours["attributes.class_embedding.weight"] = _last_to_first(embedding)
    return ours


def load_published(detector: torch.nn.Module, path: str) -> str:
    """Load a published checkpoint into `detector` strictly; returns its format, sets box_weights."""
    state = read_published(path)
    fmt = checkpoint_format(state, path)
    load_strict(detector, convert(state, fmt), path)
    detector.box_weights = BOX_WEIGHTS[fmt]
    return fmt


def mismatches(expected: dict, state: dict) -> list[str]:
    """Each key whose shape differs, that the file lacks, or that the model lacks, with shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = [f"{k} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
                for k in wrong]
    problems += [f"{k} missing from the file {tuple(expected[k].shape)}" for k in missing]
    return problems + [f"{k} {tuple(state[k].shape)} not in the model" for k in unexpected]


def load_strict(detector: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Every model tensor matched by name and shape, or an error naming each mismatch."""
    problems = mismatches(detector.state_dict(), state)
    if problems:
        more = f"; ... {len(problems) - 12} more" if len(problems) > 12 else ""
        raise UpdownError(f"weights={path}: does not match this C4 detector ({len(problems)} "
                          f"tensors: {'; '.join(problems[:12])}{more}); check detector.depth and "
                          "the class and attribute counts against the file")
    detector.load_state_dict(state, strict=True)
