"""Preprocessing cache, batch sampler and DataModule on the tiny shapes dataset."""

import os

import pytest
import torch
from conftest import compose_config, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.sampling import BatchSampler
from updown_vqa.core.text import Vocabulary, tokenize


def test_tokenizer_lowercases_and_drops_punctuation():
    assert tokenize(["What color is the Triangle?", "is there a red, blue circle"]) == [
        ["what", "color", "is", "the", "triangle"], ["is", "there", "a", "red", "blue", "circle"]]
    vocab = Vocabulary.build([["a", "b", "a"]])
    ids, lengths = vocab.encode([["a", "b", "zzz"], [], ["b"] * 20], max_length=14)
    assert ids.shape == (3, 14) and lengths.tolist() == [3, 1, 14]
    assert ids[0, :3].tolist() == [2, 3, 1]  # zzz is unknown


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_sampler_shards_cover_every_item_once_per_epoch(replicas):
    shards = [BatchSampler(10, 3, seed=1, num_replicas=replicas, rank=r) for r in range(replicas)]
    seen = [i for s in shards for batch in s for i in batch]
    assert set(seen) == set(range(10)) and len(seen) == replicas * -(-10 // replicas)
    assert all(len(list(s)) == len(s) for s in shards)


def test_sampler_reshuffles_per_epoch_and_resumes_mid_epoch():
    sampler = BatchSampler(20, 4, seed=0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == sorted(sum(epoch1, []))
    it = iter(sampler)
    next(it), next(it)
    state = sampler.state_dict()
    resumed = BatchSampler(20, 4, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == epoch1[2:]


def datamodule(data_dir, tmp_path, *extra):
    cfg = compose_config(tiny_overrides(data_dir, str(tmp_path)) + list(extra), str(tmp_path))
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_carry_everything_the_model_needs(data_dir, tmp_path):
    dm = datamodule(data_dir, tmp_path)
    batch = next(iter(dm.train_dataloader()))
    b, k, d = batch["features"].shape
    assert b == 32 and d == dm.feature_dim and batch["mask"].shape == (b, k)
    assert batch["targets"].shape == (b, len(dm.answers)) and "accuracy" not in batch  # the metric's, unused in training
    val = next(iter(dm.val_dataloader()))
    assert val["targets"].shape == val["accuracy"].shape == (len(val["index"]), len(dm.answers))
    assert batch["tokens"].shape[1] == batch["lengths"].max()
    assert torch.all(batch["targets"].max(1).values > 0)  # shapes answers are all in the vocabulary


def test_cache_is_reused_and_rebuilt_when_settings_change(data_dir, tmp_path):
    dm = datamodule(data_dir, tmp_path)
    caches = sorted(os.listdir(dm.cache_dir))
    datamodule(data_dir, tmp_path)
    assert sorted(os.listdir(dm.cache_dir)) == caches
    datamodule(data_dir, tmp_path, "+data.max_question_length=4")
    assert len(os.listdir(dm.cache_dir)) == len(caches) + 2


def test_question_whose_image_is_missing_names_it(data_dir, tmp_path):
    other = os.path.join(data_dir, "shapes", "shapes_val_features.h5")
    with pytest.raises(UpdownError, match=r"image id \d+ is not in the features file .*shapes_val_features.h5"):
        datamodule(data_dir, tmp_path, f"data.train.features={other}")


def test_missing_features_file_is_named(data_dir, tmp_path):
    with pytest.raises(UpdownError, match="missing.h5: features file not found"):
        datamodule(data_dir, tmp_path, f"data.val.features={tmp_path}/missing.h5")
