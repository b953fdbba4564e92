"""Captions and their images, for captioners that learn their visual features (`model.visual=grid`):
the caption datasets over images and the DataModule (data=shapes_caption_e2e, docs/end_to_end.md).

The same caption files, cache, vocabulary and batches as `captioning.data`, with `images` [N, 3, S, S]
uint8 and `image_index` [B] in place of region features; decoding in workers, bad images and grouping
by image are `features.pixels`, shared with VQA.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from updown_vqa.captioning.data import CaptionDataModule, CaptionImages, CaptionPairs, caption_rows
from updown_vqa.core.cache import load_cache
from updown_vqa.features.pixels import (
    IMAGE_SETTINGS,
    ImageInputs,
    image_batch,
    image_codes,
    image_paths,
    usable_rows,
)


class ImageCaptionPairs(CaptionPairs):
    """(image, caption) pairs whose images are decoded and resized to `image_size` (square)."""

    def __init__(self, tokens: np.ndarray, image_ids: np.ndarray, paths: dict, image_size: int):
        super().__init__(tokens, image_ids)
        self.paths, self.image_size = paths, image_size

    def visual(self, index: np.ndarray) -> dict:
        return image_batch(self.paths, self.image_ids[index], self.image_size, "captions")

    def image_of(self) -> np.ndarray:
        """Each caption's image as a code 0..N-1 (what the grouped sampler shuffles)."""
        return image_codes(self.image_ids)


class ImageCaptionImages(CaptionImages):
    """Images with their reference captions, decoded and resized to `image_size` (square)."""

    def __init__(self, image_ids: np.ndarray, references: list[list[str]] | None, paths: dict, image_size: int):
        super().__init__(image_ids, references)
        self.paths, self.image_size = paths, image_size

    def visual(self, index: np.ndarray) -> dict:
        return image_batch(self.paths, self.image_ids[index], self.image_size, "captions")


class ImageCaptionDataModule(ImageInputs, CaptionDataModule):
    """CaptionDataModule whose splits give `images` (a folder, COCO-style names ending in the image id)
    instead of `features`: the same caption files, cache, vocabulary and metrics.
    Image settings (`image_size`, `skip_bad_images`, `group_by_image`): `ImageInputs`. With
    `group_by_image=false` training batches hold captions of similar length.
    """

    SETTINGS = {**CaptionDataModule.SETTINGS, **IMAGE_SETTINGS}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess())
        for split in self.splits:
            self.datasets[split] = self.split_dataset(split, caption_rows(split, arrays, self.meta, self.train_items))

    def split_dataset(self, split: str, rows: dict) -> Dataset:
        """A split's rows (`caption_rows`) over its image folder; rows of skipped images left out."""
        paths = image_paths(self.splits[split].get("images"), split)
        image_ids = rows["image_ids"]
        if image_ids is None:  # no caption file: every image of the folder, without references
            image_ids = np.asarray(sorted(paths))
        keep = usable_rows(image_ids, paths, self.image_size, split, self.skip_bad_images, "captions")
        if "tokens" in rows:
            return ImageCaptionPairs(rows["tokens"][keep], image_ids[keep], paths, self.image_size)
        references = rows.get("references")
        references = [references[i] for i in keep] if references is not None else None
        return ImageCaptionImages(image_ids[keep], references, paths, self.image_size)
