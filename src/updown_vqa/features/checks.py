"""A feature store's schema and index checked when it is opened, the one place of the store's rules:
integer image ids (or string keys in image_keys), each once; float features; boxes [.., 4]; regions in
some image (a few empty images are counted in a warning); counts within the layout, offsets consistent,
boxes inside their images. A store that would mislead, a hostile or a corrupt one is one error naming it
and the image id, before any read allocates by its numbers."""

from __future__ import annotations

import logging

import h5py
import numpy as np

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)
BOX_TOLERANCE = 1.0  # pixels beyond the image allowed silently: the public files' +1-pixel convention
BLOCK_ROWS = 1 << 20  # boxes read per step


def check_store(path: str, f: h5py.File, image_ids: np.ndarray, num_boxes: np.ndarray,
                offsets: np.ndarray | None) -> None:
    """Refuse what `check_schema` refuses, per-image arrays of different lengths, num_boxes outside
    [0, K] or offsets that disagree."""
    check_schema(path, f, image_ids, num_boxes)
    n = len(image_ids)
    for name in ("image_w", "image_h", "num_boxes"):
        if len(f[name]) != n:
            raise UpdownError(f"{path}: '{name}' has {len(f[name])} entries for {n} image ids; re-create the store")
    features, boxes = f["features"], f["boxes"]
    if offsets is None:
        if features.ndim != 3 or features.shape[0] != n or boxes.shape[:2] != features.shape[:2]:
            raise UpdownError(f"{path}: padded features {features.shape} and boxes {boxes.shape} do not fit "
                              f"{n} images; re-create the store")
        _check_counts(path, image_ids, num_boxes, features.shape[1])
    else:
        _check_offsets(path, image_ids, num_boxes, offsets, len(features), len(boxes))
    _check_boxes(path, f, image_ids, num_boxes, offsets)


def check_schema(path: str, f: h5py.File, image_ids: np.ndarray, num_boxes: np.ndarray) -> None:
    """Stores that would train silently on the wrong thing: ids of another type or twice, integer
    features, boxes that are not x1 y1 x2 y2, or no regions at all."""
    keyed = "image_keys" in f
    if f["image_ids"].dtype.kind not in "iu":
        raise UpdownError(f"{path}: image_ids hold {_type_name(f['image_ids'].dtype)}, not integers; write "
                          "integer ids (string ids go in the optional image_keys dataset, as convert_gqa does)")
    names = f["image_keys"].asstr()[:] if keyed else image_ids
    unique, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1]
        raise UpdownError(f"{path}: image {'key' if keyed else 'id'} {twice[0]} appears {counts.max()} times "
                          f"({len(twice)} ids appear more than once); each image is stored once, re-create it")
    if f["features"].dtype.kind != "f":
        raise UpdownError(f"{path}: features of {_type_name(f['features'].dtype)}; a store holds float32 or "
                          "float16 features (integer values would be trained on as they are): re-create it")
    if f["boxes"].shape[-1:] != (4,):
        raise UpdownError(f"{path}: boxes of shape {f['boxes'].shape}, not [..., 4] (x1 y1 x2 y2); re-create it")
    empty = int((num_boxes == 0).sum())
    if len(num_boxes) and empty == len(num_boxes):
        raise UpdownError(f"{path}: none of its {len(num_boxes)} images has a region (num_boxes all 0); "
                          "re-extract the features")
    if empty:
        log.warning("%s: %d of %d images have no regions (e.g. image %s); they are answered from the question "
                    "alone", path, empty, len(num_boxes), names[num_boxes == 0][0])


def _type_name(dtype: np.dtype) -> str:
    """'int16 values', 'strings (dtype object)'."""
    if dtype.kind in "OSUT":
        return f"strings (dtype {dtype})"
    return f"{dtype} values"


def _bad(path: str, image_ids: np.ndarray, bad: np.ndarray, what: str) -> UpdownError:
    first = int(np.flatnonzero(bad)[0])
    return UpdownError(f"{path}: image id {int(image_ids[first])} {what}; the store is corrupt, re-create it")


def _check_counts(path, image_ids, num_boxes, k: int) -> None:
    bad = (num_boxes < 0) | (num_boxes > k)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _bad(path, image_ids, bad, f"has num_boxes {int(num_boxes[first])}, outside [0, {k}]")


def _check_offsets(path, image_ids, num_boxes, offsets, num_features: int, num_boxes_rows: int) -> None:
    if len(offsets) != len(image_ids) + 1 or offsets[0] != 0 or offsets[-1] != num_features \
            or num_boxes_rows != num_features:
        raise UpdownError(f"{path}: offsets ({len(offsets)} entries, {offsets[:1]}..{offsets[-1:]}) do not fit "
                          f"{len(image_ids)} images and {num_features} regions; re-create the store")
    bad = np.diff(offsets) != num_boxes
    if bad.any():
        raise _bad(path, image_ids, bad, "has num_boxes that disagree with its offsets")


def _check_boxes(path: str, f: h5py.File, image_ids, num_boxes, offsets) -> None:
    """Warn about boxes more than BOX_TOLERANCE pixels outside their image, or not finite."""
    w, h = f["image_w"][:].astype(np.float64), f["image_h"][:].astype(np.float64)
    boxes = f["boxes"]
    outside = np.zeros(len(image_ids), bool)
    if offsets is None:
        step = max(1, BLOCK_ROWS // max(1, boxes.shape[1]))
        for start in range(0, len(image_ids), step):
            block = boxes[start:start + step]  # [b, K, 4]
            valid = np.arange(block.shape[1])[None, :] < num_boxes[start:start + step, None]
            sl = slice(start, start + len(block))
            outside[sl] = (_outside(block, w[sl, None], h[sl, None]) & valid).any(axis=1)
    else:
        owner = np.repeat(np.arange(len(image_ids)), num_boxes)
        for start in range(0, len(owner), BLOCK_ROWS):
            rows = owner[start:start + BLOCK_ROWS]
            np.logical_or.at(outside, rows, _outside(boxes[start:start + len(rows)], w[rows], h[rows]))
    if outside.any():
        ids = image_ids[outside][:5].tolist()
        log.warning("%s: %d images have boxes more than %g pixel outside the image (or not finite), e.g. "
                    "image ids %s; check that boxes are x1 y1 x2 y2 in pixels of the original image",
                    path, int(outside.sum()), BOX_TOLERANCE, ids)


def _outside(boxes: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Whether each box [..., 4] (x1 y1 x2 y2) leaves the w x h image by more than the tolerance."""
    t = BOX_TOLERANCE
    with np.errstate(invalid="ignore"):
        inside = (boxes[..., 0] >= -t) & (boxes[..., 1] >= -t) & (boxes[..., 2] <= w + t) & (boxes[..., 3] <= h + t)
    return ~inside
