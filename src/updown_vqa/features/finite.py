"""Non-finite features (NaN, inf) are bad input: writers refuse them, readers that answer refuse stores
holding them.

A store written by this library records `all_finite` (true, or false when `allow_nonfinite` kept
some). A store without it (an older one, or one written elsewhere) is scanned once, with a progress
bar, and the answer cached beside it in `STORE.finite.json`, keyed by the store's size and
modification time, so that no read path pays for the scan per batch.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
from tqdm import tqdm

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import write_json

ATTR = "all_finite"
SCAN_BYTES = 64 << 20  # features read per step of a scan
SHOWN = 5  # image ids named in a message


def nonfinite_error(path: str, image_ids, flag: str = "--allow-nonfinite / allow_nonfinite=true") -> UpdownError:
    """The message for features that hold NaN or inf, naming the file and the first image ids."""
    ids = [int(i) for i in image_ids]
    shown = ", ".join(map(str, ids[:SHOWN])) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
    return UpdownError(f"{path}: non-finite features (NaN or inf) for image id {shown}; fix the input or "
                       f"its extraction (to keep them anyway: {flag})")


def check_features(path: str, image_id: int, features: np.ndarray, allow: bool) -> bool:
    """Whether `features` are all finite; refuses them (naming the image) unless `allow`."""
    finite = bool(np.isfinite(features).all())
    if not finite and not allow:
        raise nonfinite_error(path, [image_id])
    return finite


def nonfinite_images(path: str) -> list[int]:
    """Image ids of the store whose features hold NaN or inf: from its `all_finite` attribute, its cache,
    or a one-time scan (cached)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get(ATTR) is not None and bool(f.attrs[ATTR]):
            return []
    cache, key = f"{path}.finite.json", _identity(path)
    if os.path.isfile(cache):
        try:
            with open(cache) as f:
                saved = json.load(f)
            if saved.get("store") == key:
                return saved["nonfinite_image_ids"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: scan again
    bad = _scan(path)
    try:
        write_json(cache, {"store": key, "nonfinite_image_ids": bad})
    except UpdownError:  # a read-only folder: the scan is repeated next time, nothing else is lost
        pass
    return bad


def require_finite(path: str) -> None:
    """Refuse a store whose features hold NaN or inf, naming it and the image ids."""
    bad = nonfinite_images(path)
    if bad:
        raise nonfinite_error(path, bad, "re-extract or re-convert those images")


def _identity(path: str) -> list:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _scan(path: str) -> list[int]:
    """Read every feature once; the image ids whose regions (within num_boxes) are not all finite."""
    with h5py.File(path, "r") as f:
        features, image_ids = f["features"], f["image_ids"][:]
        offsets = f["offsets"][:] if "offsets" in f else None
        row_bytes = max(1, features[0].nbytes if len(features) else 1)
        step = max(1, SCAN_BYTES // row_bytes)
        bad_rows = []
        for start in tqdm(range(0, len(features), step), desc=f"checking {os.path.basename(path)} for NaN",
                          unit="block"):
            block = features[start:start + step]
            finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
            bad_rows.extend((start + np.flatnonzero(~finite)).tolist())
    if offsets is not None:  # flat rows -> images
        return sorted({int(image_ids[np.searchsorted(offsets, r, side="right") - 1]) for r in bad_rows})
    return [int(image_ids[r]) for r in bad_rows]
