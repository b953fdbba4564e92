"""`shapes`: a seeded, CLEVR-like 2D dataset written in the official VQA v2 file formats.

Every question needs the image: templates ask for an attribute of a uniquely described object, a
count, an existence, or a spatial extreme, and answers are balanced within each template so that a
question-only model is at chance. Spatial questions ask for the leftmost/rightmost/topmost/bottommost
object: single-glimpse top-down attention scores each region without seeing the others, so an
extreme ("leftmost") is answerable while "left of the square" would need a second glimpse.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import no_space, write_json

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230),
    "yellow": (230, 210, 40), "purple": (150, 60, 200), "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.06, 0.075), "large": (0.11, 0.13)}  # half-width as a fraction of the image
DIRECTIONS = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}
MAX_COUNT = 3
SPATIAL_MARGIN = 0.12  # the extreme object leads the runner-up by this fraction of the image


@dataclass
class Obj:
    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]  # x1 y1 x2 y2 in pixels

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def sample_scene(rng: random.Random, image_size: int, min_objects=2, max_objects=6) -> list[Obj]:
    """Non-overlapping objects with random shape, color, size and position."""
    objects: list[Obj] = []
    target = rng.randint(min_objects, max_objects)
    for _ in range(200):
        if len(objects) == target:
            break
        size = rng.choice(list(SIZES))
        half = rng.uniform(*SIZES[size]) * image_size
        cx, cy = (rng.uniform(half + 2, image_size - half - 2) for _ in range(2))
        box = (cx - half, cy - half, cx + half, cy + half)
        if all(_apart(box, o.box, margin=3) for o in objects):
            objects.append(Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), size, box))
    return objects


def _apart(a, b, margin: float) -> bool:
    return a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1]


def render(objects: list[Obj], image_size: int, rng: random.Random) -> Image.Image:
    """Draw the scene on a noisy grey background, with slightly jittered colors."""
    gray = rng.randint(100, 150)
    image = Image.new("RGB", (image_size, image_size), (gray, gray, gray))
    draw = ImageDraw.Draw(image)
    for o in objects:
        fill = tuple(int(np.clip(c + rng.randint(-15, 15), 0, 255)) for c in COLORS[o.color])
        x1, y1, x2, y2 = o.box
        if o.shape == "circle":
            draw.ellipse(o.box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(o.box, fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (image_size, image_size, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def candidate_questions(objects: list[Obj], image_size: int) -> dict[str, list[tuple[str, str, str]]]:
    """Every askable question per template, as (question, question_type, answer).

    Counting asks for colors, as in "how many blue objects are there?": color survives the mean over
    regions that soft attention computes, while shape counts would need a per-region decision first.
    """
    shapes = Counter(o.shape for o in objects)
    colors = Counter(o.color for o in objects)
    out: dict[str, list] = {t: [] for t in ("color", "shape", "count", "exist", "spatial")}
    for o in objects:
        if shapes[o.shape] == 1:
            out["color"].append((f"what color is the {o.shape}?", "what color is the", o.color))
        if colors[o.color] == 1:
            out["shape"].append((f"what shape is the {o.color} object?", "what shape is the", o.shape))
    for c in COLORS:
        if colors[c] <= MAX_COUNT:
            out["count"].append((f"how many {c} objects are there?", "how many", str(colors[c])))
    present = {(o.color, o.shape) for o in objects}
    for c in COLORS:
        for s in SHAPES:
            answer = "yes" if (c, s) in present else "no"
            out["exist"].append((f"is there a {c} {s}?", "is there a", answer))
    for word, (axis, sign) in DIRECTIONS.items():
        ranked = sorted(objects, key=lambda o: sign * o.center[axis])
        if len(ranked) > 1 and abs(ranked[0].center[axis] - ranked[1].center[axis]) < SPATIAL_MARGIN * image_size:
            continue  # no clear extreme
        best = ranked[0]
        out["spatial"].append((f"what color is the {word} object?", "what color is the", best.color))
        out["spatial"].append((f"what shape is the {word} object?", "what shape is the", best.shape))
    return out


ANSWER_TYPES = {"color": "other", "shape": "other", "count": "number", "exist": "yes/no", "spatial": "other"}


class AnswerBalancer:
    """Picks, per template, the askable question whose answer has been used least so far."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: dict[str, Counter] = {t: Counter() for t in ANSWER_TYPES}

    def pick(self, template: str, candidates: list[tuple[str, str, str]]):
        if not candidates:
            return None
        used = self.used[template]
        least = min(used[a] for _, _, a in candidates)
        choice = self.rng.choice([c for c in candidates if used[c[2]] == least])
        used[choice[2]] += 1
        return choice


def split_image_id(split_index: int, i: int) -> int:
    """Image ids unique across splits: split k holds ids k * 10**6 + i + 1."""
    return split_index * 1_000_000 + i + 1


def image_file_name(split: str, image_id: int) -> str:
    return f"shapes_{split}_{image_id:012d}.png"


def generate_split(root: str, split: str, split_index: int, num_images: int, image_size: int,
                   seed: int, num_proposals: int) -> None:
    """Images, VQA v2-format questions and annotations, scenes, proposals and captions of a split."""
    rng = random.Random(f"{seed}-{split}")
    balancer = AnswerBalancer(rng)
    image_dir = os.path.join(root, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    questions, annotations, scenes, proposals, captions = [], [], [], {}, []
    for i in range(num_images):
        image_id = split_image_id(split_index, i)
        objects = sample_scene(rng, image_size)
        render(objects, image_size, rng).save(os.path.join(image_dir, image_file_name(split, image_id)))
        scenes.append({"image_id": image_id, "width": image_size, "height": image_size,
                       "objects": [vars(o) | {"box": list(o.box)} for o in objects]})
        proposals[str(image_id)] = [list(o.box) for o in objects] + background_boxes(
            objects, image_size, num_proposals - len(objects), rng)
        captions += [{"image_id": image_id, "caption": c} for c in describe(objects)]
        picks = [(t, balancer.pick(t, c)) for t, c in candidate_questions(objects, image_size).items()]
        for k, (template, (text, question_type, answer)) in enumerate(p for p in picks if p[1]):
            question_id = image_id * 10 + k
            questions.append({"image_id": image_id, "question": text, "question_id": question_id,
                              "template": template})
            annotations.append(_annotation(question_id, image_id, question_type,
                                           ANSWER_TYPES[template], answer, template, balancer, rng))
    _write_split_files(root, split, questions, annotations, scenes, proposals, captions)


def _annotation(question_id, image_id, question_type, answer_type, answer, template, balancer, rng):
    """Ten human answers: mostly the true answer, each replaced by a plausible slip with p=0.05."""
    pool = sorted(balancer.used[template]) or [answer]
    humans = [answer if rng.random() > 0.05 else rng.choice(pool) for _ in range(10)]
    return {"question_id": question_id, "image_id": image_id, "question_type": question_type,
            "answer_type": answer_type, "multiple_choice_answer": answer,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                        for k, a in enumerate(humans)]}


def background_boxes(objects: list[Obj], image_size: int, count: int, rng: random.Random):
    """Up to `count` square proposals on empty background, so every image has the same number of regions."""
    boxes: list[list[float]] = []
    for _ in range(50 * max(count, 0)):
        if len(boxes) >= count:
            break
        half = rng.uniform(0.05, 0.12) * image_size
        cx, cy = (rng.uniform(half, image_size - half) for _ in range(2))
        box = (cx - half, cy - half, cx + half, cy + half)
        if all(_apart(box, o.box, margin=1) for o in objects):
            boxes.append(list(box))
    return boxes


def describe(objects: list[Obj]) -> list[str]:
    """Several captions that mention every object, e.g. 'a small red circle to the left of a large blue square'."""
    left_to_right = [f"a {o.size} {o.color} {o.shape}" for o in sorted(objects, key=lambda o: o.center[0])]
    top_to_bottom = [f"a {o.size} {o.color} {o.shape}" for o in sorted(objects, key=lambda o: o.center[1])]
    listing = ", ".join(left_to_right[:-1]) + " and " + left_to_right[-1]
    return [
        " to the left of ".join(left_to_right),
        " above ".join(top_to_bottom),
        f"{len(objects)} shapes : {listing}",
    ]


def _write_split_files(root, split, questions, annotations, scenes, proposals, captions):
    files = split_files(root, split)
    contents = {
        "questions": {"info": {"description": "shapes"}, "task_type": "Open-Ended",
                      "data_type": "shapes", "data_subtype": split, "questions": questions},
        "annotations": {"info": {"description": "shapes"}, "data_type": "shapes",
                        "data_subtype": split, "annotations": annotations},
        "scenes": {"scenes": scenes},
        "proposals": proposals,
        "captions": {"images": [{"id": s["image_id"], "file_name": image_file_name(split, s["image_id"]),
                                 "width": s["width"], "height": s["height"]} for s in scenes],
                     "annotations": [c | {"id": k} for k, c in enumerate(captions)]},
    }
    for key, obj in contents.items():
        write_json(files[key], obj)


def split_files(root: str, split: str) -> dict[str, str]:
    """Where each file of a split lives under `root`."""
    return {
        "questions": os.path.join(root, f"v2_OpenEnded_shapes_{split}_questions.json"),
        "annotations": os.path.join(root, f"v2_shapes_{split}_annotations.json"),
        "scenes": os.path.join(root, f"shapes_{split}_scenes.json"),
        "proposals": os.path.join(root, f"shapes_{split}_proposals.json"),
        "captions": os.path.join(root, f"captions_shapes_{split}.json"),
        "images": os.path.join(root, "images", split),
        "features": os.path.join(root, f"shapes_{split}_features.h5"),
    }


class ShapesBuilder:
    """Creates the `shapes` files and their region features under `root` when missing or stale.

    Region features are RoIAligned at the scene's object boxes (plus background proposals, so every
    image has `num_proposals` regions) from a ResNet trunk: the same function as `extract mode=boxes`.
    """

    def __init__(self, root: str, num_train_images: int = 8000, num_val_images: int = 1000,
                 image_size: int = 128, num_proposals: int = 8, seed: int = 0,
                 backbone: str = "resnet18", weights: str | None = None, trunk: str = "layer2",
                 roi_output_size: int = 2, batch_size: int = 64, num_workers: int = 0,
                 with_features: bool = True):
        self.root, self.with_features = root, with_features  # False: images and questions only
        self.splits = {"train": (0, num_train_images), "val": (1, num_val_images)}
        self.scene_settings = {"image_size": image_size, "num_proposals": num_proposals, "seed": seed,
                               "num_images": {k: n for k, (_, n) in self.splits.items()}, "version": 2}
        self.feature_settings = {"backbone": backbone, "weights": weights, "stage": trunk,  # the name data built before recorded
                                 "output_size": roi_output_size, "image_size": image_size,
                                 "batch_size": batch_size, "num_workers": num_workers, "seed": seed}

    def __call__(self) -> None:
        """Build what is missing; concurrent callers (a joblib sweep, two shells) wait for one another.
        A complete folder is used as it is, without its lock: it may be a shared read-only copy."""
        if self.complete():
            return
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, ".build.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with torch.random.fork_rng():  # the features' loader draws from torch: keep the run's seed intact
                try:
                    self._build()
                except (OSError, RuntimeError) as e:  # torch and h5py wrap a full disk in their own errors
                    if no_space(e) is None:
                        raise
                    raise UpdownError(f"{self.root}: the shapes dataset could not be written there (No space "
                                      "left on device); free space in that folder (or set paths.data_dir to "
                                      "another), then rerun the same command") from e

    def complete(self) -> bool:
        """Every file there, made with these settings: nothing to build (nothing is written)."""
        previous = _read_json(os.path.join(self.root, "shapes_settings.json")) or {}
        if previous != {"scenes": self.scene_settings, "features": self.feature_settings}:
            return False
        return all(os.path.exists(files[k]) for split in self.splits for files in [split_files(self.root, split)]
                   for k in ("questions", "annotations", "proposals", "features"))

    def _build(self) -> None:
        from updown_vqa.features.boxes import extract_box_features

        settings_path = os.path.join(self.root, "shapes_settings.json")
        current = {"scenes": self.scene_settings, "features": self.feature_settings}
        previous = _read_json(settings_path) or {}
        regenerated = False
        for split, (index, num_images) in self.splits.items():
            files = split_files(self.root, split)
            stale = previous.get("scenes") != self.scene_settings
            if stale or not all(os.path.exists(files[k]) for k in ("questions", "annotations", "proposals")):
                generate_split(self.root, split, index, num_images, self.scene_settings["image_size"],
                               self.scene_settings["seed"], self.scene_settings["num_proposals"])
                stale = regenerated = True
            stale = stale or previous.get("features") != self.feature_settings
            if self.with_features and (stale or not os.path.exists(files["features"])):
                proposals = {int(k): np.asarray(v, np.float32)
                             for k, v in _read_json(files["proposals"]).items()}
                images = {i: os.path.join(files["images"], image_file_name(split, i)) for i in proposals}
                extract_box_features(images, proposals, files["features"], **self.feature_settings)
        if not self.with_features:  # features not made now: a later run with features makes them if stale
            current["features"] = None if regenerated else previous.get("features")
        with open(settings_path, "w") as f:
            json.dump(current, f)


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
