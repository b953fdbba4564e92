"""Small GQA files in the official layouts, for tests and for timing the converter:

- `{split}_all_questions.json` and `{split}_balanced_questions.json` (questions 1.2: objects keyed by
  question id, with imageId, question, answer, types, semantic, entailed, groups, isBalanced, ...),
- `{split}_choices.json` ({question id: {"valid": [...], "plausible": [...]}}),
- `objects/gqa_objects_{i}.h5` (features [N, 100, 2048], bboxes [N, 100, 4]) + `gqa_objects_info.json`,
- `spatial/gqa_spatial_{i}.h5` (features [N, 2048, 7, 7]) + `gqa_spatial_info.json`.

Image ids are strings, some not numbers ("n1234"), as GQA's are. Sizes are parameters: tests use tiny
features, the converter's timing uses the real per-image shapes with fewer images.

    python -m updown_vqa.datasets.gqa_synthetic --out DIR [--images 20] [--features-only --per-file 500]
"""

from __future__ import annotations

import argparse
import os
import random

import h5py
import numpy as np

from updown_vqa.core.io import atomic_path, write_json

COLORS = ["red", "blue", "green", "white"]
OBJECTS = ["cup", "dog", "table", "shirt"]
# (structural, semantic, detailed, question template, answers, steps of its semantic program)
KINDS = [
    ("query", "attr", "objColor", "What color is the {o}?", COLORS, 2),
    ("verify", "attr", "verifyAttr", "Is the {o} {c}?", ["yes", "no"], 2),
    ("logical", "obj", "existAnd", "Is there a {o} and a {c} {o}?", ["yes", "no"], 3),
    ("choose", "attr", "chooseAttr", "Is the {o} {c} or white?", COLORS, 2),
    ("compare", "attr", "sameMaterial", "Are the {o} and the {c} {o} made of the same material?",
     ["yes", "no"], 3),
    ("query", "cat", "categoryThatCommon", "What do the {o} and the cup have in common?",
     ["color", "material", "shape"], 2),
]


def image_ids(num_images: int) -> list[str]:
    """GQA-like image ids: numbers as strings, every fifth a non-numeric 'n' id."""
    return [f"n{1000 + i}" if i % 5 == 4 else str(2_300_000 + i) for i in range(num_images)]


def _semantic(steps: int) -> list[dict]:
    """A program of `steps` counted operations and a final, uncounted 'query: name'."""
    return [{"operation": "select", "argument": f"obj ({k})", "dependencies": []} for k in range(steps)] + [
        {"operation": "query", "argument": "name", "dependencies": [steps - 1]}]


def question(rng: random.Random, image: str, kind: int, balanced: bool) -> dict:
    structural, semantic, detailed, template, answers, steps = KINDS[kind]
    text = template.format(o=rng.choice(OBJECTS), c=rng.choice(COLORS))
    return {"imageId": image, "question": text, "answer": rng.choice(answers), "fullAnswer": text,
            "isBalanced": balanced, "semantic": _semantic(steps), "semanticStr": "",
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "groups": {"global": None if structural != "query" else detailed, "local": f"{kind}-{image}"},
            "entailed": [], "equivalent": [], "annotations": {"question": {}, "answer": {}, "fullAnswer": {}}}


def questions(num_images: int, per_image: int = 3, seed: int = 0) -> dict[str, dict]:
    """All questions of a split: `per_image` balanced ones per image and as many unbalanced, each
    balanced question entailing the unbalanced questions of its image."""
    rng, out = random.Random(seed), {}
    for i, image in enumerate(image_ids(num_images)):
        extra = [f"{i:05d}{k}9" for k in range(per_image)]  # ids with leading zeros, as GQA's
        for k in range(per_image):
            out[f"{i:05d}{k}0"] = question(rng, image, (i + k) % len(KINDS), True)
            out[f"{i:05d}{k}0"]["entailed"] = extra[: k + 1]
        for k, qid in enumerate(extra):
            out[qid] = question(rng, image, (i + k + 1) % len(KINDS), False)
    return out


def choices(all_questions: dict[str, dict]) -> dict[str, dict]:
    """Valid answers: those of the question's kind; plausible: the first two of them."""
    by_detail = {k[2]: k[4] for k in KINDS}
    return {qid: {"valid": by_detail[q["types"]["detailed"]], "plausible": by_detail[q["types"]["detailed"]][:2]}
            for qid, q in all_questions.items()}


def write_questions(root: str, split: str = "val", num_images: int = 20, seed: int = 0) -> dict[str, str]:
    """The all, balanced and choices files of `split`; returns their paths."""
    every = questions(num_images, seed=seed)
    paths = {name: os.path.join(root, f"{split}_{name}.json")
             for name in ("all_questions", "balanced_questions", "choices")}
    write_json(paths["all_questions"], every)
    write_json(paths["balanced_questions"], {q: v for q, v in every.items() if v["isBalanced"]})
    write_json(paths["choices"], choices(every))
    return paths


def write_features(root: str, ids: list[str], per_file: int, boxes: int = 100, dim: int = 2048,
                   grid: int = 7, seed: int = 0, kinds=("objects", "spatial")) -> None:
    """GQA's objects and spatial h5 files and info json over `ids`, `per_file` images per h5 file."""
    rng = np.random.default_rng(seed)
    info = {"objects": {}, "spatial": {}}
    for start in range(0, len(ids), per_file):
        chunk, index = ids[start : start + per_file], start // per_file
        for kind in kinds:
            path = os.path.join(root, kind, f"gqa_{kind}_{index}.h5")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                _fill(f, kind, len(chunk), boxes, dim, grid, rng)
            for row, image in enumerate(chunk):
                info[kind][image] = {"file": index, "idx": row}
                if kind == "objects":
                    info[kind][image] |= {"objectsNum": int(rng.integers(min(10, boxes), boxes + 1)),
                                          "width": 640, "height": 480}
    for kind in kinds:
        write_json(os.path.join(root, f"gqa_{kind}_info.json"), info[kind])


def _fill(f: h5py.File, kind: str, n: int, boxes: int, dim: int, grid: int, rng) -> None:
    """Write one h5 file's datasets in blocks of 64 images (bounded memory at the real shapes)."""
    shape = (n, boxes, dim) if kind == "objects" else (n, dim, grid, grid)
    features = f.create_dataset("features", shape, np.float32)
    if kind == "objects":
        corners = rng.uniform(0, 400, (n, boxes, 2)).astype(np.float32)
        f["bboxes"] = np.concatenate([corners, corners + 60], axis=2)  # [N, boxes, 4] x1 y1 x2 y2
    for lo in range(0, n, 64):
        hi = min(n, lo + 64)
        features[lo:hi] = rng.random((hi - lo, *shape[1:]), dtype=np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.datasets.gqa_synthetic", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--per-file", type=int, default=500, help="images per objects/spatial h5 file")
    parser.add_argument("--features-only", action="store_true", help="real shapes: 100 x 2048, 2048 x 7 x 7")
    args = parser.parse_args(argv)
    if not args.features_only:
        write_questions(args.out, "val", args.images)
    write_features(args.out, image_ids(args.images), args.per_file)


if __name__ == "__main__":
    main()
