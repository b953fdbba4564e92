"""Caption files (COCO and Karpathy), the caption cache, length-grouped batches and the DataModule."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.captioning.data import (
    BOS,
    EOS,
    LengthGroupedSampler,
    encode_captions,
    preprocess_captions,
    read_captions,
)
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import Vocabulary

COCO = {"images": [{"id": 7}, {"id": 9}],
        "annotations": [{"image_id": 7, "caption": "A red Circle."}, {"image_id": 9, "caption": "Two cats"},
                        {"image_id": 7, "caption": "a red circle, small"}]}
KARPATHY = {"images": [
    {"cocoid": 7, "split": "train", "sentences": [{"raw": "A red circle.", "tokens": ["a", "red", "circle"]}]},
    {"cocoid": 8, "split": "restval", "sentences": [{"raw": "Blue square", "tokens": ["blue", "square"]}]},
    {"cocoid": 9, "split": "val", "sentences": [{"raw": "Two cats", "tokens": ["two", "cats"]}]}]}


def write(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def test_read_coco_and_karpathy_formats(tmp_path):
    images, caption_images, texts = read_captions(write(tmp_path / "coco.json", COCO), ["train"])
    assert images == [7, 9] and caption_images == [7, 9, 7] and texts[1] == "Two cats"
    karpathy = write(tmp_path / "dataset_coco.json", KARPATHY)
    assert read_captions(karpathy, ["train", "restval"]) == ([7, 8], [7, 8], ["A red circle.", "Blue square"])
    assert read_captions(karpathy, ["val"]) == ([9], [9], ["Two cats"])


def test_read_captions_names_the_file_when_the_format_is_wrong(tmp_path):
    with pytest.raises(UpdownError, match="odd.json: no 'images' list"):
        read_captions(write(tmp_path / "odd.json", {"annotations": []}), ["train"])
    orphan = {"images": [{"id": 1}], "annotations": [{"image_id": 2, "caption": "x"}]}
    with pytest.raises(UpdownError, match=r"orphan.json: captions of image ids \[2\]"):
        read_captions(write(tmp_path / "orphan.json", orphan), ["train"])


def test_encode_captions_wraps_in_bos_eos_and_truncates():
    vocab = Vocabulary([BOS, EOS, "a", "red", "circle"])
    ids = encode_captions(vocab, [["a", "red", "circle"], ["a", "zzz"], []], max_length=2)
    bos, eos, unk = vocab.index[BOS], vocab.index[EOS], vocab.index["<unk>"]
    assert (bos, eos) == (2, 3)
    assert ids.tolist() == [[bos, 4, 5, eos], [bos, 4, unk, eos], [bos, eos, 0, 0]]


def test_cache_keeps_full_references_and_applies_the_word_threshold(tmp_path):
    splits = {"train": {"captions": write(tmp_path / "coco.json", COCO)}}
    stem = preprocess_captions(splits, str(tmp_path / "cache"), max_caption_length=3, min_word_count=2)
    meta = json.loads(open(stem + ".json").read())
    assert meta["vocab"] == ["<pad>", "<unk>", BOS, EOS, "a", "circle", "red"]  # seen twice or more
    assert meta["references"]["train"] == [["a red circle", "a red circle small"], ["two cats"]]
    assert preprocess_captions(splits, str(tmp_path / "cache"), max_caption_length=3, min_word_count=2) == stem
    assert preprocess_captions(splits, str(tmp_path / "cache"), max_caption_length=3, min_word_count=1) != stem
    with pytest.raises(UpdownError, match="missing.json: file not found"):
        preprocess_captions({"train": {"captions": str(tmp_path / "missing.json")}}, str(tmp_path))


def test_length_grouped_batches_cover_every_item_once_with_less_padding():
    lengths = np.random.default_rng(0).integers(3, 40, 1005)
    sampler = LengthGroupedSampler(lengths, 20, group=10, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1005))
    assert [len(b) for b in batches[-2:]] == [20, 5]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.25 * np.ptp(lengths)
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_length_grouped_sampler_resumes_mid_epoch():
    lengths = np.arange(100) % 17
    sampler = LengthGroupedSampler(lengths, 8, group=4, seed=3)
    sampler.set_epoch(2)
    expected = list(sampler)
    it = iter(sampler)
    next(it), next(it), next(it)
    resumed = LengthGroupedSampler(lengths, 8, group=4, seed=3)
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == expected[3:]


@pytest.fixture(scope="module")
def caption_datamodule(data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    cfg = compose_config(tiny_overrides(data_dir, out) + ["task=caption"], out)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_training_batches_pair_each_caption_with_its_image(caption_datamodule):
    dm = caption_datamodule
    batch = next(iter(dm.train_dataloader()))
    b, k, d = batch["features"].shape
    assert b == 32 and d == dm.feature_dim and batch["mask"].shape == (b, k)
    tokens = batch["tokens"]
    assert torch.all(tokens[:, 0] == dm.vocab.index(BOS))
    eos = tokens == dm.vocab.index(EOS)
    assert torch.all(eos.sum(1) == 1)  # one EOS per caption, then only padding
    after_eos = eos.long().cumsum(1).bool() & ~eos
    assert torch.all(tokens[after_eos] == 0) and eos[:, -1].any()  # padded to the longest, no further
    pairs = dm.datasets["train"]
    assert len(pairs) == 3 * 120  # every caption of every image, three per image
    assert batch["image_ids"].tolist() == pairs.image_ids[batch["index"].numpy()].tolist()


def test_validation_batches_hold_each_image_once_with_its_references(caption_datamodule):
    dm = caption_datamodule
    batches = list(dm.val_dataloader())
    image_ids = [i for b in batches for i in b["image_ids"].tolist()]
    assert len(image_ids) == len(set(image_ids)) == 40
    first = batches[0]
    assert len(first["references"]) == len(first["image_ids"])
    captions = json.loads(open(dm.splits["val"]["captions"]).read())["annotations"]
    expected = [c["caption"] for c in captions if c["image_id"] == first["image_ids"][0]]
    assert len(first["references"][0]) == 3
    assert first["references"][0][0].split() == [w for w in expected[0].split() if w not in (",", ":")]
    assert dm.model_kwargs()["vocab"][2:4] == [BOS, EOS]
