"""Captions and region features in, batches out: COCO/Karpathy caption files, a token cache, a DataModule
(`captioning.images` serves the same captions with images, for model.visual=grid).

Training batches hold one (image, caption) pair per row, teacher-forced; evaluation batches hold one row
per image with all its reference captions, so each image is decoded once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from updown_vqa.core.cache import as_list, fingerprint, load_cache, read_json, save_cache
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler, shard
from updown_vqa.core.settings import Number, OneOf
from updown_vqa.core.text import Vocabulary, tokenize
from updown_vqa.features.loading import WORKER_THREADS, FeatureDataModule, StoreSet

log = logging.getLogger(__name__)
BOS, EOS = "<bos>", "<eos>"  # indices 2 and 3, after <pad> and <unk>: the captioner's defaults
CACHE_VERSION = 1
KARPATHY_SPLITS = {"train": ["train", "restval"], "val": ["val"], "test": ["test"]}


def read_captions(path: str, karpathy_splits: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """(image ids, image id of each caption, caption texts) of a COCO captions file or Karpathy's
    `dataset_coco.json` (only its images whose `split` is in `karpathy_splits`)."""
    data = read_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise UpdownError(f"{path}: no 'images' list; expected COCO captions or Karpathy's dataset_coco.json")
    if images and "sentences" in images[0]:  # Karpathy: {"cocoid", "split", "sentences": [{"raw", "tokens"}]}
        kept = [im for im in images if im.get("split") in karpathy_splits]
        ids = [int(im.get("cocoid", im.get("imgid"))) for im in kept]
        pairs = [(i, s.get("raw") or " ".join(s["tokens"])) for i, im in zip(ids, kept) for s in im["sentences"]]
    else:  # COCO: images [{"id"}], annotations [{"image_id", "caption"}] (absent for test image lists)
        ids = [int(im["id"]) for im in images]
        pairs = [(int(a["image_id"]), a["caption"]) for a in data.get("annotations", [])]
    known = set(ids)
    unknown = [i for i, _ in pairs if i not in known]
    if unknown:
        raise UpdownError(f"{path}: captions of image ids {sorted(set(unknown))[:5]} that are not in its "
                          "'images' list; add the images or drop the captions")
    return ids, [i for i, _ in pairs], [c for _, c in pairs]


def encode_captions(vocab: Vocabulary, token_lists: Sequence[list[str]], max_length: int) -> np.ndarray:
    """[N, max_length + 2] ids: BOS, at most `max_length` words, EOS, then padding (0)."""
    words, lengths = vocab.encode(token_lists, max_length)
    lengths[[len(t) == 0 for t in token_lists]] = 0
    out = np.zeros((len(token_lists), max_length + 2), np.int64)
    out[:, 0] = vocab.index[BOS]
    out[:, 1:-1] = words
    out[np.arange(len(out)), lengths + 1] = vocab.index[EOS]
    return out


def preprocess_captions(splits: dict[str, dict], cache_dir: str, max_caption_length: int = 16,
                        min_word_count: int = 5, vocab_splits: Sequence[str] = ("train",)) -> str:
    """Write the caption cache for `splits` ({name: {"captions": paths}}) unless it exists; return its stem.

    Named by a fingerprint of the files and settings, like `preprocess.preprocess`, so a stale cache is
    never reused. References are the full tokenised captions (never truncated), joined by spaces.
    """
    files = {name: as_list(s.get("captions")) for name, s in splits.items()}
    chosen = {name: list(s.get("karpathy_splits") or KARPATHY_SPLITS.get(name, [name])) for name, s in splits.items()}
    settings = {"kind": "captions", "version": CACHE_VERSION, "max_caption_length": max_caption_length,
                "min_word_count": min_word_count, "vocab_splits": sorted(vocab_splits), "files": files,
                "karpathy_splits": chosen}
    if not files.get("train"):
        raise UpdownError("data.train.captions is not set: training needs a captions file")
    paths = [p for ps in files.values() for p in ps]
    for path in paths:
        if not os.path.isfile(path):
            raise UpdownError(f"{path}: file not found (check the data.*.captions paths)")
    stem = os.path.join(cache_dir, "captions-" + fingerprint(paths, settings, CACHE_VERSION))
    if os.path.isfile(stem + ".json") and os.path.isfile(stem + ".npz"):
        return stem
    read = {name: [read_captions(p, chosen[name]) for p in ps] for name, ps in files.items() if ps}
    tokens = {name: tokenize(c for _, _, texts in parts for c in texts) for name, parts in read.items()}
    counted = [t for name in vocab_splits if name in tokens for t in tokens[name]]
    vocab = Vocabulary([BOS, EOS] + Vocabulary.build(counted, min_word_count).words[2:])
    arrays, references = {}, {}
    for name, parts in read.items():
        image_ids = list(dict.fromkeys(i for ids, _, _ in parts for i in ids))
        caption_ids = np.asarray([i for _, ids, _ in parts for i in ids], np.int64)
        arrays |= {f"{name}/tokens": encode_captions(vocab, tokens[name], max_caption_length),
                   f"{name}/caption_image_ids": caption_ids,
                   f"{name}/image_ids": np.asarray(image_ids, np.int64)}
        by_image = {i: [] for i in image_ids}
        for i, words in zip(caption_ids.tolist(), tokens[name]):
            by_image[i].append(" ".join(words))
        references[name] = [by_image[i] for i in image_ids]
        log.info("%s: %d captions of %d images", name, len(caption_ids), len(image_ids))
    log.info("caption vocabulary: %d words (min count %d)", len(vocab), min_word_count)
    return save_cache(stem, arrays, {"settings": settings, "vocab": vocab.words, "references": references})


class LengthGroupedSampler(BatchSampler):
    """A BatchSampler whose batches hold captions of similar length, so less of each batch is padding.

    The shuffled order is cut into chunks of `group` batches, each chunk sorted by length, and the full
    batches shuffled again; all from (seed, epoch), so a resumed run still continues with the same batch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, group: int = 50, **kwargs):
        super().__init__(len(lengths), batch_size, **kwargs)
        self.lengths, self.group = np.asarray(lengths), group

    def _shard(self) -> np.ndarray:
        order = super()._shard()
        if not self.shuffle or self.group <= 1:
            return order
        chunk = self.batch_size * self.group
        order = np.concatenate([piece[np.argsort(self.lengths[piece], kind="stable")]
                                for piece in np.split(order, range(chunk, len(order), chunk))])
        full = len(order) // self.batch_size
        generator = torch.Generator().manual_seed(self.seed + self.epoch + 1_000_003)
        batches = torch.randperm(full, generator=generator).numpy()
        positions = (batches[:, None] * self.batch_size + np.arange(self.batch_size)).ravel()
        return np.concatenate([order[positions], order[full * self.batch_size :]])  # partial batch last


class CaptionPairs(Dataset):
    """Indexed by a batch of caption indices: each row one (image, caption) pair, for teacher forcing.

    Its regions come from `stores`; a subclass without stores reads its own visual input (`visual`).
    """

    def __init__(self, tokens: np.ndarray, image_ids: np.ndarray, stores: StoreSet | None = None,
                 source: str = ""):
        self.tokens = torch.from_numpy(tokens)
        self.lengths = (self.tokens != 0).sum(1)  # BOS ... EOS
        self.image_ids = image_ids
        self.stores = stores
        if stores is not None:
            self.region_starts, self.region_counts = stores.regions(*stores.locate(image_ids, source))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, indices) -> dict:
        index = np.asarray(indices, dtype=np.int64)
        longest = int(self.lengths[index].max())
        return {"index": torch.from_numpy(index), "image_ids": torch.from_numpy(self.image_ids[index]),
                "tokens": self.tokens[index, :longest],  # [B, T]: BOS ... EOS, padding beyond the longest cut
                **self.visual(index)}

    def visual(self, index: np.ndarray) -> dict:
        """The rows' regions: mask, features, boxes."""
        return self.stores.batch(self.region_starts[index], self.region_counts[index])


class CaptionImages(Dataset):
    """Indexed by a batch of image indices: each row one image with its reference captions, for decoding.

    Its regions come from `stores`; a subclass without stores reads its own visual input (`visual`).
    """

    def __init__(self, image_ids: np.ndarray, references: list[list[str]] | None, stores: StoreSet | None = None,
                 source: str = ""):
        self.image_ids, self.references, self.stores = image_ids, references, stores
        if stores is not None:
            self.region_starts, self.region_counts = stores.regions(*stores.locate(image_ids, source))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, indices) -> dict:
        index = np.asarray(indices, dtype=np.int64)
        batch = {"index": torch.from_numpy(index), "image_ids": torch.from_numpy(self.image_ids[index]),
                 **self.visual(index)}
        if self.references is not None:
            batch["references"] = [self.references[i] for i in index]  # B lists of strings
        return batch

    def visual(self, index: np.ndarray) -> dict:
        """The rows' regions: mask, features, boxes."""
        return self.stores.batch(self.region_starts[index], self.region_counts[index])


def caption_rows(split: str, arrays: dict, meta: dict, train_items: str = "captions") -> dict:
    """What a split serves, from the caption cache: training (image, caption) pairs (`tokens`, `image_ids`),
    or images with their references (`image_ids`, `references`; SCST training and evaluation); a split
    without a captions file has `image_ids` None (every image of its visual input) and no references."""
    if split == "train" and train_items == "images":
        return {"image_ids": arrays["train/image_ids"], "references": meta["references"]["train"]}
    if split == "train":
        return {"tokens": arrays["train/tokens"], "image_ids": arrays["train/caption_image_ids"]}
    if f"{split}/image_ids" in arrays:
        references = meta["references"][split] if len(arrays[f"{split}/tokens"]) else None
        return {"image_ids": arrays[f"{split}/image_ids"], "references": references}
    return {"image_ids": None, "references": None}


class CaptionDataModule(FeatureDataModule):
    """Caption files and feature stores per split (`train`, `val`, `test`).

    Each split is {captions, features} (paths or lists of paths); `captions` is a COCO captions file
    (`captions_train2014.json`, or `image_info_test2014.json` for unannotated images) or Karpathy's
    `dataset_coco.json`, whose images are chosen by the split's `karpathy_splits`
    (default: train+restval, val, test). `builder`, when given, creates missing files in `prepare_data`.
    `feature_cache`, `worker_buffer_mb` and `worker_read_threads` work as for VQA (updown_vqa.features.loading).
    Training rows are (image, caption) pairs, or with `train_items="images"` (SCST) one image with all
    its references, as in validation.
    """

    SETTINGS = {**FeatureDataModule.SETTINGS, "max_caption_length": Number("int", 1, 1024),
                "min_word_count": Number("int", 1), "length_group": Number("int", 1),
                "train_items": OneOf(("captions", "images"))}

    def __init__(self, train: dict, val: dict, cache_dir: str, test: dict | None = None,
                 builder: Callable[[], None] | None = None, max_caption_length: int = 16,
                 min_word_count: int = 5, vocab_splits=("train",), batch_size: int = 100,
                 eval_batch_size: int | None = None, length_group: int = 50, num_workers: int = 0,
                 pin_memory: bool = False, persistent_workers: bool = True, prefetch_factor: int = 2,
                 seed: int = 0, feature_cache: str = "none", worker_buffer_mb: int = 1024,
                 train_items: str = "captions", worker_read_threads: int = WORKER_THREADS):
        super().__init__({"train": train, "val": val, "test": test}, builder, batch_size, eval_batch_size,
                         num_workers, pin_memory, persistent_workers, prefetch_factor, seed, feature_cache,
                         worker_buffer_mb, worker_read_threads)
        if train_items not in ("captions", "images"):
            raise UpdownError(f"data.train_items={train_items}: use captions (cross-entropy) or images (SCST)")
        self.train_items = train_items  # images: one row per image with its references (stage=scst)
        self.cache_dir = cache_dir
        self.preprocess_args = {"max_caption_length": max_caption_length, "min_word_count": min_word_count,
                                "vocab_splits": list(vocab_splits)}
        self.length_group = length_group  # batches per chunk sorted by length (1: plain shuffling)

    def _preprocess(self) -> str:
        return preprocess_captions(self.splits, self.cache_dir, **self.preprocess_args)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess())
        self.open_table()
        for split in self.splits:
            self.datasets[split] = self.split_dataset(split, caption_rows(split, arrays, self.meta, self.train_items))
        self.check_feature_sizes()

    def split_dataset(self, split: str, rows: dict) -> Dataset:
        """A split's rows (`caption_rows`) over its feature stores."""
        stores = self.stores(split)
        source = ", ".join(as_list(self.splits[split].get("captions"))) or split
        if "tokens" in rows:
            return CaptionPairs(rows["tokens"], rows["image_ids"], stores, source)
        if rows["image_ids"] is None:  # no caption file: every image of the feature store, without references
            return CaptionImages(np.concatenate([s.image_ids for s in stores.stores]), None, stores, source)
        return CaptionImages(rows["image_ids"], rows["references"], stores, source)

    @property
    def vocab(self) -> list[str]:
        return self.meta["vocab"]

    def model_kwargs(self) -> dict:
        """What the model needs from the data besides the feature size (see train.build_model)."""
        return {"vocab": self.vocab, "max_caption_length": self.preprocess_args["max_caption_length"]}

    def make_sampler(self, split: str, shuffle: bool, batch_size: int) -> BatchSampler:
        """Training captions in batches of similar length; images in plain batches."""
        dataset = self.datasets[split]
        if not isinstance(dataset, CaptionPairs):
            return super().make_sampler(split, shuffle, batch_size)
        return LengthGroupedSampler(dataset.lengths.numpy(), batch_size, self.length_group, shuffle=shuffle,
                                    seed=self.seed, **shard(self.trainer, split))
