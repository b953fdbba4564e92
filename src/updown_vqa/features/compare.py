"""Parity of our features with reference bottom-up features: `python -m updown_vqa.features.compare
OURS.h5 REFERENCE [--min-matched 0.9] [--min-cosine 0.95]`.

REFERENCE is a bottom-up TSV file (tools/generate_tsv.py), a feature store, or a folder of MILVLG's
per-image .npz files (`x`, `bbox`, `num_bbox`, `image_h`, `image_w`; read with allow_pickle=False, so
their pickled `info` is never loaded). Per image, boxes are matched one to one by IoU >= 0.5 (best
pairs first); the report is the share of reference boxes matched (a reference image missing from
ours counts all its boxes unmatched) and the cosine similarity of matched features (median, 5th
percentile). One JSON line; exit status 1 below a threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator

import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.images import image_id
from updown_vqa.features.loading import read_rows
from updown_vqa.features.store import FeatureStore
from updown_vqa.features.tsv import parse_line, read_lines

MATCH_IOU = 0.5


def read_reference(path: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(image id, boxes [n, 4], features [n, D]) of each reference image."""
    if os.path.isdir(path):
        yield from _read_npz_folder(path)
    elif str(path).endswith((".h5", ".hdf5")):
        yield from store_images(path)
    elif os.path.isfile(path):
        for fields, _ in read_lines(path):
            if len(fields) > 1:
                number, _, _, boxes, features = parse_line(fields)
                yield number, boxes.copy(), features.copy()
    else:
        raise UpdownError(f"{path}: no such file or folder; pass a TSV file, a feature store or a "
                          "folder of .npz files")


def _read_npz_folder(folder: str):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".npz"))
    if not names:
        raise UpdownError(f"{folder}: no .npz files (MILVLG's per-image features)")
    for name in names:
        number = image_id(name)
        if number is None:
            raise UpdownError(f"{folder}/{name}: the file name does not end in an image id")
        try:
            with np.load(os.path.join(folder, name), allow_pickle=False) as data:
                count = int(data["num_bbox"])
                yield number, np.asarray(data["bbox"])[:count], np.asarray(data["x"])[:count]
        except (OSError, KeyError, ValueError) as e:
            raise UpdownError(f"{folder}/{name}: not a MILVLG feature file with x, bbox, num_bbox "
                              f"({e})") from None


def store_images(path: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(image id, boxes, features) of every image of a store."""
    store = FeatureStore(path)
    for row, number in enumerate(store.image_ids.tolist()):
        batch = read_rows(store, [row])
        count = int(batch["num_boxes"][0])
        yield number, batch["boxes"][0, :count], batch["features"][0, :count]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] IoU of boxes a [n, 4] and b [m, 4] (pixels, x1 y1 x2 y2)."""
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(ours: np.ndarray, reference: np.ndarray, threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one (our index, reference index) pairs with IoU >= threshold, best pairs first."""
    overlaps = iou(ours, reference) if len(ours) and len(reference) else np.zeros((0, 0))
    pairs, used_ours, used_ref = [], set(), set()
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        i, j = divmod(int(flat), overlaps.shape[1])
        if overlaps[i, j] < threshold:
            break
        if i not in used_ours and j not in used_ref:
            pairs.append((i, j))
            used_ours.add(i)
            used_ref.add(j)
    return pairs


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def compare(ours_path: str, reference_path: str) -> dict:
    """The parity report of a store against reference features."""
    ours = {number: (boxes, feats) for number, boxes, feats in store_images(ours_path)}
    total = matched = missing = images = 0
    similarities = []
    for number, boxes, features in read_reference(reference_path):
        images += 1
        total += len(boxes)
        if number not in ours:
            missing += 1
            continue
        our_boxes, our_features = ours[number]
        our_features = _same_width(our_features, features, number)
        pairs = match(our_boxes, boxes)
        matched += len(pairs)
        if pairs:
            mine, theirs = (list(x) for x in zip(*pairs))
            similarities.append(cosine(our_features[mine].astype(np.float64),
                                       features[theirs].astype(np.float64)))
    if not images:
        raise UpdownError(f"{reference_path}: no reference images")
    values = np.concatenate(similarities) if similarities else np.zeros(0)
    return {"images": images, "missing_images": missing, "reference_boxes": total,
            "matched": round(matched / max(total, 1), 6),
            "cosine_median": round(float(np.median(values)), 6) if len(values) else None,
            "cosine_p5": round(float(np.percentile(values, 5)), 6) if len(values) else None}


def _same_width(ours: np.ndarray, reference: np.ndarray, number: int) -> np.ndarray:
    """Our features without the 4 spatial values when only those differ; else an error."""
    if ours.shape[1] == reference.shape[1]:
        return ours
    if ours.shape[1] == reference.shape[1] + 4:  # spatial_features=true appends x1/w y1/h x2/w y2/h
        return ours[:, :-4]
    raise UpdownError(f"image {number}: our features are {ours.shape[1]}-d, the reference's "
                      f"{reference.shape[1]}-d; compare features of the same detector")


def main(argv: list[str] | None = None) -> int:
    """Command line: the report as one JSON line; 1 below a threshold, bad input one error line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", help="our feature store (.h5)")
    parser.add_argument("reference", help="bottom-up TSV, a feature store, or a folder of .npz")
    parser.add_argument("--min-matched", type=float, default=0.9)
    parser.add_argument("--min-cosine", type=float, default=0.95)
    args = parser.parse_args(argv)
    try:
        report = compare(args.ours, args.reference)
    except UpdownError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report["passed"] = bool(report["matched"] >= args.min_matched and report["cosine_median"] is not None
                            and report["cosine_median"] >= args.min_cosine)
    print(json.dumps(report))
    if not report["passed"]:
        print(f"error: {why_failed(report, args.min_matched, args.min_cosine)}", file=sys.stderr)
    return 0 if report["passed"] else 1


def why_failed(report: dict, min_matched: float, min_cosine: float) -> str:
    """The one line that says why a comparison did not pass."""
    reasons = []
    if report["missing_images"]:
        reasons.append(f"{report['missing_images']} of {report['images']} reference images are not in our store")
    if report["matched"] < min_matched:
        reasons.append(f"{report['matched']:.1%} of the reference boxes matched ours (--min-matched {min_matched:g})")
    if report["cosine_median"] is None:
        reasons.append("no box pair to compare features of")
    elif report["cosine_median"] < min_cosine:
        reasons.append(f"median cosine {report['cosine_median']:.3f} (--min-cosine {min_cosine:g})")
    return "the stores differ: " + "; ".join(reasons)


if __name__ == "__main__":
    sys.exit(main())
