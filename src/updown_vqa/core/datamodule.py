"""The skeleton the VQA, captioning and detection data modules share: splits of files, a builder that
creates missing files, preprocessing caches, batch samplers sharded per process that resume mid-epoch,
and the loaders built from them."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler, shard, use_sampler
from updown_vqa.core.settings import FLAG, Number


class SplitDataModule(pl.LightningDataModule):
    """Splits (`train`, `val`, `test`: dicts of files) served as whole batches by a BatchSampler.

    Subclasses fill `self.datasets` in `setup` (each item is a list of indices: a whole batch) and say
    what the model needs from the data in `model_kwargs`; `_preprocess` writes caches (in
    `prepare_data`, once, before `setup` reads them); `make_sampler` may group batches differently.
    """

    SETTINGS = {"batch_size": Number("int", 1, 2**20), "eval_batch_size": Number("int", 1, 2**20),
                "num_workers": Number("int", 0, 1024), "prefetch_factor": Number("int", 1, 1024),
                "pin_memory": FLAG, "persistent_workers": FLAG, "seed": Number("int", 0, 2**32 - 1)}

    def __init__(self, splits: dict, builder: Callable[[], None] | None = None, batch_size: int = 512,
                 eval_batch_size: int | None = None, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = True, prefetch_factor: int = 2, seed: int = 0):
        super().__init__()
        self.splits = {name: dict(files) for name, files in splits.items() if files}
        self.builder = builder
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.datasets: dict = {}
        self.samplers: dict[str, BatchSampler] = {}
        self.train_position: dict | None = None  # {"epoch", "start_batch"} a resumed run starts from

    def _preprocess(self) -> str | None:
        """Write (or find) the caches `setup` reads; returns their path stem."""
        return None

    def prepare_data(self) -> None:
        if self.builder is not None:
            self.builder()
        self._preprocess()

    def model_kwargs(self) -> dict:
        """What the model needs from the data (see train.build_model)."""
        raise NotImplementedError

    def make_sampler(self, split: str, shuffle: bool, batch_size: int) -> BatchSampler:
        return BatchSampler(len(self.datasets[split]), batch_size, shuffle=shuffle, seed=self.seed,
                            **shard(self.trainer, split))

    def loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        """Batches of `split`; a resumed run's training sampler starts at the batch that comes next."""
        if split not in self.datasets:
            raise UpdownError(f"no '{split}' split configured: set data.{split}.* to its files")
        sampler = use_sampler(self, split, self.make_sampler(split, shuffle, batch_size))
        return self.make_loader(self.datasets[split], sampler, batch_size)

    def make_loader(self, dataset, sampler: BatchSampler, batch_size: int) -> DataLoader:
        workers = self.num_workers > 0
        # Its own generator: a new iterator then draws nothing from the global RNG, which resuming restores.
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.persistent_workers and workers,
                          prefetch_factor=self.prefetch_factor if workers else None, generator=torch.Generator())

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", False, self.eval_batch_size)

    def predict_dataloader(self, split: str | None = None) -> DataLoader:
        split = split or ("test" if "test" in self.datasets else "val")
        return self.loader(split, False, self.eval_batch_size)
