"""Batches of questions and their images, for models that learn their visual features
(`model.visual=grid`): the question Dataset over images and the DataModule; the image pieces (decoding
in workers, bad images, grouping by image) are `features.pixels`, which captioning shares.
"""

from __future__ import annotations

import numpy as np

from updown_vqa.core.cache import load_cache
from updown_vqa.features.pixels import (
    IMAGE_SETTINGS,
    ImageInputs,
    image_batch,
    image_codes,
    image_paths,
    usable_rows,
)
from updown_vqa.vqa.data import QuestionSet, VQADataModule


class ImageQuestions(QuestionSet):
    """Questions of a split with their images decoded and resized to `image_size` (square).

    `keep` lists the question rows served (all of them by default): skipped images' questions are out.
    """

    def __init__(self, arrays: dict[str, np.ndarray], split: str, paths: dict, num_answers: int,
                 image_size: int, with_accuracy: bool = True, keep: np.ndarray | None = None):
        super().__init__(arrays, split, num_answers, with_accuracy)
        self.paths, self.image_size = paths, image_size
        self.keep = np.arange(len(self.tokens)) if keep is None else np.asarray(keep, np.int64)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, indices) -> dict:
        index = self.keep[np.asarray(indices, dtype=np.int64)]
        return self.question_batch(index) | image_batch(self.paths, self.image_ids[index], self.image_size)

    def image_of(self) -> np.ndarray:
        """Each served question's image as a code 0..N-1 (what the grouped sampler shuffles)."""
        return image_codes(self.image_ids[self.keep])


def usable_questions(dataset: ImageQuestions, split: str, skip_bad: bool) -> np.ndarray:
    """Rows whose image is present (and, with `skip_bad`, decodes); else the error naming the first
    missing file (features.pixels.usable_rows)."""
    return usable_rows(dataset.image_ids, dataset.paths, dataset.image_size, split, skip_bad)


class ImageVQADataModule(ImageInputs, VQADataModule):
    """VQADataModule whose splits give `images` (a folder, COCO-style names ending in the image id)
    instead of `features`: the same question files, preprocessing, answers and metrics.
    Image settings (`image_size`, `skip_bad_images`, `group_by_image`): `ImageInputs`.
    """

    SETTINGS = {**VQADataModule.SETTINGS, **IMAGE_SETTINGS}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess(stage))
        for split, files in self._stage_splits(stage).items():
            dataset = ImageQuestions(arrays, split, image_paths(files.get("images"), split), len(self.answers),
                                     self.image_size, with_accuracy=split != "train")
            dataset.keep = usable_questions(dataset, split, self.skip_bad_images)
            self.datasets[split] = dataset
