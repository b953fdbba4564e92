"""Batches of questions and region features: the VQA Dataset and LightningDataModule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from updown_vqa.core.cache import as_list, load_cache
from updown_vqa.core.settings import Number
from updown_vqa.features.loading import WORKER_THREADS, FeatureDataModule, StoreSet
from updown_vqa.vqa.preprocess import ANSWER_TYPES, preprocess
from updown_vqa.vqa.readers import check_val_split


class QuestionSet(Dataset):
    """A split's encoded questions and answers, indexed by a list of question indices (a whole batch);
    subclasses add what the model sees of each question's image."""

    def __init__(self, arrays: dict[str, np.ndarray], split: str, num_answers: int, with_accuracy: bool = True):
        self.tokens = torch.from_numpy(arrays[f"{split}/tokens"])
        self.lengths = torch.from_numpy(arrays[f"{split}/lengths"])
        self.question_ids = arrays[f"{split}/question_ids"]
        self.image_ids = arrays[f"{split}/image_ids"]
        self.num_answers = num_answers
        self.annotated = f"{split}/target_rows" in arrays
        self.with_accuracy = with_accuracy  # the metric's inputs; training batches need only `targets`
        if self.annotated:
            self.targets = _csr(arrays, split, "target", len(self.tokens))
            self.accuracy = _csr(arrays, split, "acc", len(self.tokens))
            self.answer_type = torch.from_numpy(arrays[f"{split}/answer_type"])

    def __len__(self) -> int:
        return len(self.tokens)

    def question_batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Index, tokens and lengths of questions `index`, and their answers when annotated."""
        lengths = self.lengths[index]
        batch = {
            "index": torch.from_numpy(index),
            "tokens": self.tokens[index, : int(lengths.max())],  # [B, T]: padding beyond the longest cut
            "lengths": lengths,  # [B]
        }
        if self.annotated:
            batch["targets"] = _dense(self.targets, index, self.num_answers)  # [B, A]
        if self.annotated and self.with_accuracy:
            batch["accuracy"] = _dense(self.accuracy, index, self.num_answers)  # [B, A]
            batch["answer_type"] = self.answer_type[index]
        return batch


class VQADataset(QuestionSet):
    """Questions with their images' region features, read from the stores.

    Reading a batch at once lets the feature store gather all of its images in one sorted read.
    """

    def __init__(self, arrays: dict[str, np.ndarray], split: str, stores: StoreSet, num_answers: int,
                 source: str = "", with_accuracy: bool = True):
        super().__init__(arrays, split, num_answers, with_accuracy)
        self.stores = stores
        self.which, self.rows = stores.locate(self.image_ids, source or split)
        self.region_starts, self.region_counts = stores.regions(self.which, self.rows)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        starts, counts = self.region_starts[index], self.region_counts[index]
        # mask [B, K], features [B, K, D], boxes [B, K, 4]
        return self.question_batch(index) | self.stores.batch(starts, counts)


def _csr(arrays, split: str, name: str, num_rows: int):
    """COO (row, col, value) arrays as CSR pieces for fast per-row lookup."""
    rows, cols, vals = (arrays[f"{split}/{name}_{k}"] for k in ("rows", "cols", "vals"))
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(num_rows + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols[order], vals[order]


def _dense(csr, index: np.ndarray, num_answers: int) -> torch.Tensor:
    """Rows `index` of a CSR matrix as a dense [B, A] tensor."""
    indptr, cols, vals = csr
    counts = indptr[index + 1] - indptr[index]
    ends = np.cumsum(counts)
    entries = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts - indptr[index], counts)
    out = torch.zeros(len(index), num_answers)
    out[torch.from_numpy(np.repeat(np.arange(len(index)), counts)), torch.from_numpy(cols[entries])] = \
        torch.from_numpy(vals[entries].astype(np.float32))
    return out


class VQADataModule(FeatureDataModule):
    """VQA v2-format questions/annotations and feature stores per split (`train`, `val`, `test`).

    Each split is {questions, annotations, features}, each a path or a list of paths. `builder`, when
    given, is called by `prepare_data` to create missing files (the built-in `shapes` dataset).
    `feature_cache` (none | ram | device) says where region features are read from during training;
    `worker_buffer_mb` bounds each worker's recycled batch buffers (more: faster workers, more memory);
    `worker_read_threads` is how many threads each worker reads with.
    `dataset` names the files' layout: vqa2, vqacp2, gqa or clevr (updown_vqa.vqa.readers).
    """

    SETTINGS = {**FeatureDataModule.SETTINGS, "max_question_length": Number("int", 1, 1024),
                "min_answer_count": Number("int", 1)}

    def __init__(self, train: dict, val: dict, cache_dir: str, test: dict | None = None,
                 builder: Callable[[], None] | None = None, max_question_length: int = 14,
                 min_answer_count: int = 9, answer_splits=("train",), vocab_splits=("train",),
                 batch_size: int = 512, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = True, prefetch_factor: int = 2, seed: int = 0,
                 feature_cache: str = "none", worker_buffer_mb: int = 1024, dataset: str = "vqa2",
                 worker_read_threads: int = WORKER_THREADS):
        super().__init__({"train": train, "val": val, "test": test}, builder, batch_size, None, num_workers,
                         pin_memory, persistent_workers, prefetch_factor, seed, feature_cache, worker_buffer_mb,
                         worker_read_threads)
        self.cache_dir = cache_dir
        self.preprocess_args = {"max_question_length": max_question_length,
                                "min_answer_count": min_answer_count,
                                "answer_splits": list(answer_splits), "vocab_splits": list(vocab_splits),
                                "dataset": dataset}

    VISUAL = "features"  # what each split gives the model besides its questions

    def prepare_data(self) -> None:
        """Refuse a run that cannot validate before any file is built or any epoch runs."""
        check_val_split(self.splits.get("val"), self.preprocess_args["dataset"], self.VISUAL)
        super().prepare_data()

    def _stage_splits(self, stage: str | None) -> dict:
        """The splits a stage reads: training needs only train and val (and any split the answer or
        word vocabulary is counted on), not the test files; other stages read every configured split."""
        if stage not in (None, "fit", "validate"):
            return self.splits
        needed = {"train", "val", *self.preprocess_args["answer_splits"], *self.preprocess_args["vocab_splits"]}
        return {k: v for k, v in self.splits.items() if k in needed}

    def _preprocess(self, stage: str | None = None) -> str:
        return preprocess(self._stage_splits(stage), self.cache_dir, **self.preprocess_args)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.meta, arrays = load_cache(self._preprocess(stage))
        splits = self._stage_splits(stage)
        self.open_table(splits)
        for split, files in splits.items():
            self.datasets[split] = VQADataset(arrays, split, self.stores(split), len(self.answers),
                                              with_accuracy=split != "train",
                                              source=", ".join(as_list(files.get("questions"))))
        self.check_feature_sizes()

    @property
    def vocab(self) -> list[str]:
        return self.meta["vocab"]

    @property
    def answers(self) -> list[str]:
        return self.meta["answers"]

    @property
    def answer_types(self) -> list[str]:
        """The groups `val/acc_<type>` reports (VQA's answer types, GQA's binary/open, CLEVR's types)."""
        return self.meta.get("answer_types", list(ANSWER_TYPES))

    def model_kwargs(self) -> dict:
        """What the data decides of the model: vocabulary, answers, question length, answer types."""
        return {"vocab": self.vocab, "answers": self.answers, "answer_types": self.answer_types,
                "max_question_length": self.preprocess_args["max_question_length"]}
