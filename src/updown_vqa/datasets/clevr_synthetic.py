"""Small CLEVR v1.0 question files in the official layout, for tests:
`CLEVR_{split}_questions.json` = {"info": {...}, "questions": [{"question_index", "image_index",
"image_filename", "split", "question", "answer", "question_family_index", "program"}]}, programs ending
in each of the paper's question types. The test split has no answers (as released).

    python -m updown_vqa.datasets.clevr_synthetic --out DIR [--images 10]
"""

from __future__ import annotations

import argparse
import os
import random

from updown_vqa.core.io import write_json

SIZES, COLORS, SHAPES = ["large", "small"], ["red", "blue", "gray"], ["cube", "sphere", "cylinder"]
# (last function, question template, answers): one per type of the CLEVR paper.
KINDS = [
    ("exist", "Are there any {s} {c} things?", ["yes", "no"]),
    ("count", "How many {c} {s}s are there?", ["0", "1", "2", "3"]),
    ("greater_than", "Are there more {c} things than {s}s?", ["yes", "no"]),
    ("equal_integer", "Are there the same number of {c} things and {s}s?", ["yes", "no"]),
    ("query_color", "What color is the {s}?", COLORS),
    ("query_shape", "What shape is the {c} thing?", SHAPES),
    ("equal_size", "Is the {c} thing the same size as the {s}?", ["yes", "no"]),
]


def program(last: str) -> list[dict]:
    """scene -> filter_color -> `last`, in v1.0's {"function", "inputs", "value_inputs"} form."""
    return [{"function": "scene", "inputs": [], "value_inputs": []},
            {"function": "filter_color", "inputs": [0], "value_inputs": ["red"]},
            {"function": last, "inputs": [1], "value_inputs": []}]


def split_questions(split: str, num_images: int, per_image: int = 3, seed: int = 0) -> list[dict]:
    rng, out = random.Random(f"{seed}-{split}"), []
    for image in range(num_images):
        for k in range(per_image):
            last, template, answers = KINDS[(image * per_image + k) % len(KINDS)]
            item = {"question_index": len(out), "image_index": image, "split": split,
                    "image_filename": f"CLEVR_{split}_{image:06d}.png", "question_family_index": k,
                    "question": template.format(s=rng.choice(SHAPES), c=rng.choice(COLORS)),
                    "answer": rng.choice(answers), "program": program(last)}
            if split == "test":
                del item["answer"], item["program"]
            out.append(item)
    return out


def write_clevr(root: str, num_images: int = 10, splits=("train", "val", "test"), seed: int = 0) -> dict:
    """CLEVR_{split}_questions.json for each split; returns {split: path}."""
    paths = {}
    for split in splits:
        paths[split] = os.path.join(root, f"CLEVR_{split}_questions.json")
        info = {"split": split, "version": "1.0", "license": "Creative Commons Attribution (CC BY 4.0)"}
        write_json(paths[split], {"info": info, "questions": split_questions(split, num_images, seed=seed)})
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.datasets.clevr_synthetic", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args(argv)
    for split, path in write_clevr(args.out, args.images).items():
        print(split, path)


if __name__ == "__main__":
    main()
