"""Batches of questions and their images, for models that learn their visual features
(`model.visual=grid`): the image Dataset, a sampler that groups questions by image, the DataModule.

Images are decoded, converted to RGB and resized in DataLoader workers and travel as uint8
[N, 3, S, S]; the model normalises them on its device. Each distinct image of a batch is decoded and
encoded once for all of its questions (`image_index` says which image each question asks about).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from updown_vqa.core.cache import load_cache
from updown_vqa.core.datamodule import SplitDataModule
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler, shard
from updown_vqa.core.settings import FLAG, Number
from updown_vqa.features.images import list_keyed_images, load_pixels
from updown_vqa.vqa.data import QuestionSet, VQADataModule

log = logging.getLogger(__name__)


def image_paths(folder: str, split: str) -> dict:
    """{image id: path} of a split's image folder: integer ids ending the names, else the names."""
    if not folder:
        raise UpdownError(f"data.{split}.images is not set; give the folder of the split's images")
    paths, keys = list_keyed_images(folder)
    return paths if keys is None else {keys[i]: p for i, p in paths.items()}


def decode(path: str, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 [3, S, S] and the original (w, h); a missing or corrupt file is an error naming it."""
    try:
        return load_pixels(path, image_size)
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError and more on bad files
        raise UpdownError(f"{path}: cannot decode this image ({type(e).__name__}: {e}); replace or "
                          "remove it, or set data.skip_bad_images=true to skip its questions") from None


class ImageQuestions(QuestionSet):
    """Questions of a split with their images decoded and resized to `image_size` (square).

    `keep` lists the question rows served (all of them by default): skipped images' questions are out.
    A file that fails in a worker is reported in the batch (`bad_images`), so the error reaches the
    main process as one line rather than a worker's traceback.
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
        ids, image_index = np.unique(self.image_ids[index], return_inverse=True)
        pixels, sizes, bad = [], [], []
        for image_id in ids.tolist():
            try:
                image, size = decode(self.paths[image_id], self.image_size)
            except UpdownError as e:
                bad.append(str(e))
                image, size = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), (1, 1)
            pixels.append(image)
            sizes.append(size)
        batch = self.question_batch(index) | {
            "images": torch.stack(pixels),  # [N, 3, S, S] uint8
            "image_index": torch.from_numpy(image_index.reshape(-1)),  # [B]: each question's image
            "image_sizes": torch.tensor(sizes),  # [N, 2]: original (w, h)
        }
        if bad:
            batch["bad_images"] = bad
        return batch

    def image_of(self) -> np.ndarray:
        """Each served question's image as a code 0..N-1 (what the grouped sampler shuffles)."""
        return np.unique(self.image_ids[self.keep], return_inverse=True)[1].reshape(-1)


def check_images(batch: dict) -> dict:
    """Raise the first decoding error a worker reported in the batch; the batch otherwise."""
    if batch.get("bad_images"):
        raise UpdownError(batch["bad_images"][0])
    return batch


class ImageGroupedSampler(BatchSampler):
    """Training batches whose questions come image by image: images in a new random order each epoch,
    all the questions of an image together, so most images are decoded and encoded once per epoch."""

    def __init__(self, image_of: np.ndarray, batch_size: int, **kwargs):
        super().__init__(len(image_of), batch_size, **kwargs)
        self.image_of = image_of

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return super()._order()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        rank = torch.randperm(int(self.image_of.max()) + 1, generator=generator).numpy()
        return np.argsort(rank[self.image_of], kind="stable")


def usable_questions(dataset: ImageQuestions, split: str, skip_bad: bool) -> np.ndarray:
    """Rows whose image is present (and, with `skip_bad`, decodes); else the error naming the first
    missing file. Skipped images are logged, and their questions left out."""
    ids = np.unique(dataset.image_ids)
    missing = [i for i in ids.tolist() if i not in dataset.paths]
    bad = {i: f"data.{split}.images has no image of id {i}" for i in missing}
    if missing and not skip_bad:
        raise UpdownError(f"{bad[missing[0]]} ({len(missing)} images missing); add the files, or set "
                          "data.skip_bad_images=true to skip their questions")
    if skip_bad:
        for image_id in sorted(set(ids.tolist()) - set(missing)):
            try:
                decode(dataset.paths[image_id], dataset.image_size)
            except UpdownError as e:
                bad[image_id] = str(e)
    for image_id, reason in bad.items():
        log.warning("skipped image %s and its questions: %s", image_id, reason)
    if bad:
        log.warning("data.%s: %d images skipped (data.skip_bad_images=true)", split, len(bad))
    return np.flatnonzero(~np.isin(dataset.image_ids, np.array(list(bad), dtype=dataset.image_ids.dtype)))


class ImageVQADataModule(VQADataModule):
    """VQADataModule whose splits give `images` (a folder, COCO-style names ending in the image id)
    instead of `features`: the same question files, preprocessing, answers and metrics.

    `image_size`: side images are resized to; `skip_bad_images`: list and skip images that are missing
    or do not decode (checked once in `setup`) instead of stopping; `group_by_image`: training batches
    hold the questions of an image together (each image encoded once per batch).
    """

    VISUAL = "images"
    SETTINGS = {**VQADataModule.SETTINGS, "image_size": Number("int", 8, 8192), "skip_bad_images": FLAG,
                "group_by_image": FLAG}

    def __init__(self, train: dict, val: dict, cache_dir: str, test: dict | None = None,
                 image_size: int = 128, skip_bad_images: bool = False, group_by_image: bool = True,
                 **kwargs):
        super().__init__(train, val, cache_dir, test, **kwargs)
        self.image_size, self.skip_bad_images, self.group_by_image = image_size, skip_bad_images, group_by_image

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess(stage))
        for split, files in self._stage_splits(stage).items():
            dataset = ImageQuestions(arrays, split, image_paths(files.get("images"), split), len(self.answers),
                                     self.image_size, with_accuracy=split != "train")
            dataset.keep = usable_questions(dataset, split, self.skip_bad_images)
            self.datasets[split] = dataset

    def make_sampler(self, split: str, shuffle: bool, batch_size: int) -> BatchSampler:
        if not (self.group_by_image and shuffle):
            return super().make_sampler(split, shuffle, batch_size)
        return ImageGroupedSampler(self.datasets[split].image_of(), batch_size, shuffle=True, seed=self.seed,
                                   **shard(self.trainer, split))

    def make_loader(self, dataset, sampler, batch_size: int):
        """A plain DataLoader of the skeleton: the feature stores' batch buffers have nothing to carry."""
        return SplitDataModule.make_loader(self, dataset, sampler, batch_size)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return check_images(batch)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch

    @property
    def feature_dim(self) -> None:
        return None  # the model's trunk decides it

    def model_kwargs(self) -> dict:
        return super().model_kwargs() | {"image_size": self.image_size}
