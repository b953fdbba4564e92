"""Random data shaped like VQA v2 with bottom-up features, for benchmarks: a store and question files.

The values are noise; only the sizes matter (images x regions x feature size, questions per image,
answers). Files are written once per shape under `root` and reused.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from updown_vqa.core.io import atomic_path, write_json
from updown_vqa.features.store import FORMAT_VERSION

_BLOCK_BYTES = 64 << 20


def write_random_store(path: str, num_images: int, boxes: int = 36, dim: int = 2048, dtype: str = "float32",
                       seed: int = 0) -> None:
    """A finished (contiguous, padded) store of `num_images` images with `boxes` random regions each."""
    rng = np.random.default_rng(seed)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["image_ids"] = np.arange(1, num_images + 1, dtype=np.int64)
        f["image_w"] = np.full(num_images, 640, np.int32)
        f["image_h"] = np.full(num_images, 480, np.int32)
        f["num_boxes"] = np.full(num_images, boxes, np.int32)
        features = f.create_dataset("features", (num_images, boxes, dim), dtype)  # contiguous
        corners = rng.uniform(0, 320, (num_images, boxes, 2)).astype(np.float32)
        f["boxes"] = np.concatenate([corners, corners + 100], axis=2)  # [N, K, 4] x1 y1 x2 y2
        step = max(1, _BLOCK_BYTES // (boxes * dim * 4))
        for lo in range(0, num_images, step):
            hi = min(lo + step, num_images)
            features[lo:hi] = rng.random((hi - lo, boxes, dim), dtype=np.float32)
        f.attrs.update({"format_version": FORMAT_VERSION, "layout": "padded", "source": "random"})


def write_random_questions(root: str, image_ids: np.ndarray, questions_per_image: int = 5,
                           num_answers: int = 3129, seed: int = 0) -> dict[str, str]:
    """VQA v2-format questions and annotations over `image_ids`, every answer used; returns the paths."""
    rng = np.random.default_rng(seed)
    image_of = np.repeat(image_ids, questions_per_image)
    words = [f"w{i}" for i in range(500)]
    answer_of = rng.permutation(np.arange(len(image_of)) % num_answers)  # each answer at least once
    questions, annotations = [], []
    for qid, (image_id, answer) in enumerate(zip(image_of.tolist(), answer_of.tolist())):
        length = int(rng.integers(4, 15))
        text = "what " + " ".join(words[i] for i in rng.integers(0, len(words), length - 1)) + "?"
        questions.append({"question_id": qid, "image_id": image_id, "question": text})
        humans = [{"answer": f"ans{answer}x", "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)]
        annotations.append({"question_id": qid, "image_id": image_id, "question_type": "what",
                            "answer_type": "other", "multiple_choice_answer": f"ans{answer}x",
                            "answers": humans})
    paths = {"questions": os.path.join(root, "questions.json"),
             "annotations": os.path.join(root, "annotations.json")}
    for key, payload in (("questions", questions), ("annotations", annotations)):
        write_json(paths[key], {key: payload})
    return paths


def synthetic_data(root: str, images: int = 2000, boxes: int = 36, dim: int = 2048, answers: int = 3129,
                   questions_per_image: int = 5, dtype: str = "float32", seed: int = 0) -> dict:
    """Keyword arguments for `VQADataModule` (train = val = the same random data), written once."""
    folder = os.path.join(root, f"n{images}_k{boxes}_d{dim}_a{answers}_q{questions_per_image}_{dtype}_s{seed}")
    os.makedirs(folder, exist_ok=True)
    store = os.path.join(folder, "features.h5")
    if not os.path.isfile(store):
        write_random_store(store, images, boxes, dim, dtype, seed)
    files = {"questions": os.path.join(folder, "questions.json"),
             "annotations": os.path.join(folder, "annotations.json")}
    if not all(os.path.isfile(p) for p in files.values()):
        files = write_random_questions(folder, np.arange(1, images + 1), questions_per_image, answers, seed)
    split = files | {"features": store}
    return {"train": split, "val": split, "cache_dir": os.path.join(folder, "cache"), "min_answer_count": 1}
