"""Detection data with object classes and attributes, for training the bottom-up detector.

Two annotation formats, one record each per image, `{"image_id", "objects": [{"x", "y", "w", "h",
"names": [class, ...], "attributes": [attribute, ...]}]}`:

- Visual Genome's `attributes.json` (a list of such records, the objects under "attributes" or
  "objects"); images are found in `images` by the integer ending their file name, as `extract` does.
- the built-in `shapes` scenes (`shapes_{split}_scenes.json`): the shape is the class, the color and
  the size are the attributes.

Class and attribute vocabularies are the most frequent names of the training split (index 0 is the
background class, and "no attribute" for attributes), stored in the checkpoint with the model.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from updown_vqa.core.datamodule import SplitDataModule
from updown_vqa.core.errors import UpdownError
from updown_vqa.features.images import list_images, load_rgb

NO_ATTRIBUTE = "__no_attribute__"


def read_objects(path: str) -> list[dict]:
    """Per-image object records from a Visual Genome-style json or a shapes scenes file."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise UpdownError(f"{path}: cannot read the detection annotations ({e})") from None
    if isinstance(raw, dict) and "scenes" in raw:  # shapes
        return [{"image_id": s["image_id"], "objects": [
            {"x": o["box"][0], "y": o["box"][1], "w": o["box"][2] - o["box"][0],
             "h": o["box"][3] - o["box"][1], "names": [o["shape"]], "attributes": [o["color"], o["size"]]}
            for o in s["objects"]]} for s in raw["scenes"]]
    if not isinstance(raw, list):
        raise UpdownError(f"{path}: expected a list of {{image_id, objects}} records (Visual Genome "
                          "attributes.json) or a shapes scenes file")
    records = []
    for n, record in enumerate(raw):
        objects = record.get("objects", record.get("attributes"))
        if "image_id" not in record or not isinstance(objects, list):
            raise UpdownError(f"{path}: record {n} has no image_id or no objects list")
        records.append({"image_id": int(record["image_id"]), "objects": objects})
    return records


def build_vocab(records: list[dict], key: str, max_size: int | None, min_count: int = 1) -> list[str]:
    """The `max_size` most frequent names (first name per object for classes, all for attributes)."""
    counts = Counter()
    for record in records:
        for obj in record["objects"]:
            names = [str(n).strip().lower() for n in obj.get(key) or []]
            counts.update(names[:1] if key == "names" else names)
    ranked = [name for name, count in counts.most_common() if count >= min_count]
    return ranked[:max_size] if max_size else ranked


class DetectionSet(Dataset):
    """Batched: `dataset[list_of_indices]` -> (images: list of float [3, H, W] in 0-1, targets)."""

    def __init__(self, records: list[dict], image_paths: dict[int, str], classes: list[str],
                 attributes: list[str], max_attributes: int = 4, source: str = ""):
        self.classes = {name: i for i, name in enumerate(classes)}
        self.attributes = {name: i for i, name in enumerate(attributes)}
        self.items = []
        missing = [r["image_id"] for r in records if r["image_id"] not in image_paths]
        if missing:
            raise UpdownError(f"{source}: {len(missing)} annotated images are not in the image folder "
                              f"(ids {missing[:5]}); point images= at the folder that holds them")
        for record in records:
            boxes, labels, attrs = [], [], []
            for obj in record["objects"]:
                name = str((obj.get("names") or [""])[0]).strip().lower()
                if name not in self.classes or obj["w"] < 1 or obj["h"] < 1:
                    continue  # rare class or degenerate box: not a training target
                boxes.append([obj["x"], obj["y"], obj["x"] + obj["w"], obj["y"] + obj["h"]])
                labels.append(self.classes[name])
                ids = [self.attributes[a] for a in (str(a).strip().lower() for a in obj.get("attributes") or [])
                       if a in self.attributes][:max_attributes] or [0]  # 0: no attribute
                attrs.append(ids + [-1] * (max_attributes - len(ids)))
            self.items.append((image_paths[record["image_id"]], record["image_id"],
                               np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                               np.asarray(attrs, np.int64).reshape(-1, max_attributes)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, indices: list[int]) -> tuple[list[torch.Tensor], list[dict]]:
        images, targets = [], []
        for i in indices:
            path, image_id, boxes, labels, attrs = self.items[i]
            try:
                array = np.array(load_rgb(path))  # writable, for torch
            except OSError as e:
                raise UpdownError(f"{path}: cannot read the image ({e}); remove it from the annotations") from e
            images.append(torch.from_numpy(array).permute(2, 0, 1).float().div_(255))
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels) + 1,
                            "attributes": torch.from_numpy(attrs), "image_id": image_id})
        return images, targets


class DetectionDataModule(SplitDataModule):
    """Train/val detection splits: `{"annotations": json, "images": folder}` each.

    Class indices in targets start at 1 (0 is torchvision's background). `builder`, when given,
    creates missing files in `prepare_data` (the shapes dataset).
    """

    def __init__(self, train: dict, val: dict, builder: Callable[[], None] | None = None,
                 max_classes: int | None = 1600, max_attributes: int | None = 400,
                 min_count: int = 1, attributes_per_object: int = 4, batch_size: int = 8,
                 eval_batch_size: int | None = None, num_workers: int = 0, pin_memory: bool = False,
                 seed: int = 0):
        super().__init__({"train": train, "val": val}, builder, batch_size, eval_batch_size, num_workers,
                         pin_memory, seed=seed)
        self.vocab_args = {"max_classes": max_classes, "max_attributes": max_attributes, "min_count": min_count}
        self.attributes_per_object = attributes_per_object

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = {split: read_objects(files["annotations"]) for split, files in self.splits.items()}
        args = self.vocab_args
        self.classes = build_vocab(records["train"], "names", args["max_classes"], args["min_count"])
        self.attributes = [NO_ATTRIBUTE] + build_vocab(records["train"], "attributes",
                                                       args["max_attributes"], args["min_count"])
        if not self.classes:
            raise UpdownError(f"{self.splits['train']['annotations']}: no object has a class name")
        for split, files in self.splits.items():
            self.datasets[split] = DetectionSet(records[split], list_images(files["images"]), self.classes,
                                                self.attributes, self.attributes_per_object,
                                                files["annotations"])

    def model_kwargs(self) -> dict:
        """What the model needs from the data (see train.build_model)."""
        return {"classes": self.classes, "attributes": self.attributes}



def shapes_splits(root: str) -> dict[str, dict]:
    """The shapes dataset's detection splits under `root` (for notebooks and tests)."""
    return {split: {"annotations": os.path.join(root, f"shapes_{split}_scenes.json"),
                    "images": os.path.join(root, "images", split)} for split in ("train", "val")}
