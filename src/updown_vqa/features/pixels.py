"""Images as model input, for models that learn their visual features (`model.visual=grid`): the VQA and
captioning image DataModules share these pieces (each task's rows, questions or captions, on top).

Images are decoded, converted to RGB and resized in DataLoader workers and travel as uint8
[N, 3, S, S]; the model normalises them on its device. Each distinct image of a batch is decoded and
encoded once for all of its rows (`image_index` says which image each row is about). A file that fails
in a worker is reported in the batch (`bad_images`), so the error reaches the main process as one line
rather than a worker's traceback.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from updown_vqa.core.datamodule import SplitDataModule
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler, shard
from updown_vqa.core.settings import FLAG, Number
from updown_vqa.features.images import list_keyed_images, load_pixels

log = logging.getLogger(__name__)
IMAGE_SETTINGS = {"image_size": Number("int", 8, 8192), "skip_bad_images": FLAG, "group_by_image": FLAG}


def image_paths(folder: str, split: str) -> dict:
    """{image id: path} of a split's image folder: integer ids ending the names, else the names."""
    if not folder:
        raise UpdownError(f"data.{split}.images is not set; give the folder of the split's images")
    paths, keys = list_keyed_images(folder)
    return paths if keys is None else {keys[i]: p for i, p in paths.items()}


def decode(path: str, image_size: int, rows: str = "questions") -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 [3, S, S] and the original (w, h); a missing or corrupt file is an error naming it."""
    try:
        return load_pixels(path, image_size)
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError and more on bad files
        raise UpdownError(f"{path}: cannot decode this image ({type(e).__name__}: {e}); replace or "
                          f"remove it, or set data.skip_bad_images=true to skip its {rows}") from None


def image_batch(paths: dict, image_ids: np.ndarray, image_size: int, rows: str = "questions") -> dict:
    """The distinct images of a batch's rows, decoded once each: `images` [N, 3, S, S] uint8,
    `image_index` [B] (each row's image), `image_sizes` [N, 2] (original w, h) and, when a file did not
    decode, `bad_images` (its error, for `check_images` in the main process)."""
    ids, image_index = np.unique(image_ids, return_inverse=True)
    pixels, sizes, bad = [], [], []
    for image_id in ids.tolist():
        try:
            image, size = decode(paths[image_id], image_size, rows)
        except UpdownError as e:
            bad.append(str(e))
            image, size = torch.zeros(3, image_size, image_size, dtype=torch.uint8), (1, 1)
        pixels.append(image)
        sizes.append(size)
    batch = {"images": torch.stack(pixels),  # [N, 3, S, S] uint8
             "image_index": torch.from_numpy(image_index.reshape(-1)),  # [B]: each row's image
             "image_sizes": torch.tensor(sizes)}  # [N, 2]: original (w, h)
    return batch | ({"bad_images": bad} if bad else {})


def check_images(batch: dict) -> dict:
    """Raise the first decoding error a worker reported in the batch; the batch otherwise."""
    if batch.get("bad_images"):
        raise UpdownError(batch["bad_images"][0])
    return batch


def usable_rows(image_ids: np.ndarray, paths: dict, image_size: int, split: str, skip_bad: bool,
                rows: str = "questions") -> np.ndarray:
    """Indices of the rows whose image is present (and, with `skip_bad`, decodes); else the error naming
    the first missing file. Skipped images are logged, and their rows left out."""
    ids = np.unique(image_ids)
    missing = [i for i in ids.tolist() if i not in paths]
    bad = {i: f"data.{split}.images has no image of id {i}" for i in missing}
    if missing and not skip_bad:
        raise UpdownError(f"{bad[missing[0]]} ({len(missing)} images missing); add the files, or set "
                          f"data.skip_bad_images=true to skip their {rows}")
    if skip_bad:
        for image_id in sorted(set(ids.tolist()) - set(missing)):
            try:
                decode(paths[image_id], image_size, rows)
            except UpdownError as e:
                bad[image_id] = str(e)
    for image_id, reason in bad.items():
        log.warning("skipped image %s and its %s: %s", image_id, rows, reason)
    if bad:
        log.warning("data.%s: %d images skipped (data.skip_bad_images=true)", split, len(bad))
    return np.flatnonzero(~np.isin(image_ids, np.array(list(bad), dtype=np.asarray(image_ids).dtype)))


def image_codes(image_ids: np.ndarray) -> np.ndarray:
    """Each row's image as a code 0..N-1 (what the grouped sampler shuffles)."""
    return np.unique(image_ids, return_inverse=True)[1].reshape(-1)


class ImageGroupedSampler(BatchSampler):
    """Training batches whose rows come image by image: images in a new random order each epoch,
    all the rows of an image together, so most images are decoded and encoded once per epoch."""

    def __init__(self, image_of: np.ndarray, batch_size: int, **kwargs):
        super().__init__(len(image_of), batch_size, **kwargs)
        self.image_of = image_of

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return super()._order()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        rank = torch.randperm(int(self.image_of.max()) + 1, generator=generator).numpy()
        return np.argsort(rank[self.image_of], kind="stable")


class ImageInputs:
    """What a task's data module changes to serve images instead of a feature store (put it first among
    the bases): plain loaders, decoding errors raised in the main process, grouped training batches
    (`group_by_image`; the dataset's `image_of()`), the image size for the model and no feature size.

    `image_size`: side images are resized to; `skip_bad_images`: list and skip images that are missing
    or do not decode (checked once in `setup`) instead of stopping; `group_by_image`: training batches
    hold an image's rows together (each image encoded once per batch). The task's own arguments pass on.
    """

    VISUAL = "images"

    def __init__(self, *args, image_size: int = 128, skip_bad_images: bool = False, group_by_image: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.image_size, self.skip_bad_images, self.group_by_image = image_size, skip_bad_images, group_by_image

    def grouped_sampler(self, split: str, shuffle: bool, batch_size: int) -> BatchSampler | None:
        """Training batches grouped by image (`group_by_image`); None where the task's own applies."""
        if not (self.group_by_image and shuffle) or not hasattr(self.datasets[split], "image_of"):
            return None
        return ImageGroupedSampler(self.datasets[split].image_of(), batch_size, shuffle=True, seed=self.seed,
                                   **shard(self.trainer, split))

    def make_sampler(self, split: str, shuffle: bool, batch_size: int) -> BatchSampler:
        grouped = self.grouped_sampler(split, shuffle, batch_size)
        return grouped if grouped is not None else super().make_sampler(split, shuffle, batch_size)

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
