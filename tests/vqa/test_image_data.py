"""The image DataModule of end-to-end training (data=shapes_e2e): workers, grouping, bad images."""

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import shapes_file

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.pixels import check_images
from updown_vqa.vqa.images import ImageVQADataModule


def split_files(data_dir: str, split: str, images: str | None = None) -> dict:
    return {"questions": shapes_file(data_dir, f"v2_OpenEnded_shapes_{split}_questions.json"),
            "annotations": shapes_file(data_dir, f"v2_shapes_{split}_annotations.json"),
            "images": images or shapes_file(data_dir, f"images/{split}")}


def image_module(data_dir: str, cache: str, workers: int = 0, images: str | None = None, **kwargs):
    dm = ImageVQADataModule(split_files(data_dir, "train", images), split_files(data_dir, "val"), cache,
                            image_size=32, batch_size=16, num_workers=workers, min_answer_count=1, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def first_batches(dm, count: int = 4) -> list[dict]:
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


@pytest.mark.slow  # three loaders, two with worker processes
def test_same_batches_whatever_the_number_of_workers(data_dir, tmp_path):
    runs = [first_batches(image_module(data_dir, str(tmp_path / "cache"), workers)) for workers in (0, 1, 2)]
    for batches in runs[1:]:
        for ours, reference in zip(batches, runs[0]):
            assert ours.keys() == reference.keys()
            for key in reference:
                assert torch.equal(ours[key], reference[key]), key


def test_batches_carry_each_image_once_as_uint8_with_its_questions(data_dir, tmp_path):
    dm = image_module(data_dir, str(tmp_path / "cache"))
    dataset = dm.datasets["train"]
    batch = first_batches(dm, 1)[0]
    images, image_index = batch["images"], batch["image_index"]
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    asked = dataset.image_ids[batch["index"].numpy()]  # each question's image id
    distinct = np.unique(asked)
    assert len(images) == len(distinct) < len(asked)  # grouped by image: fewer images than questions
    assert (distinct[image_index.numpy()] == asked).all()
    assert batch["tokens"].shape[0] == batch["targets"].shape[0] == len(image_index)


def test_each_epoch_visits_every_question_once(data_dir, tmp_path):
    dm = image_module(data_dir, str(tmp_path / "cache"))
    seen = torch.cat([b["index"] for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(len(dm.datasets["train"])))


@pytest.fixture
def damaged_images(data_dir, tmp_path) -> tuple[str, str]:
    """A copy of the train images with one file made corrupt; returns (folder, that file)."""
    folder = str(tmp_path / "images")
    shutil.copytree(shapes_file(data_dir, "images/train"), folder)
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    with open(victim, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    return folder, victim


def test_a_corrupt_image_is_one_error_naming_the_file(data_dir, tmp_path, damaged_images):
    folder, victim = damaged_images
    dm = image_module(data_dir, str(tmp_path / "cache"), 1, folder, group_by_image=False)
    with pytest.raises(UpdownError, match=f"{victim}: cannot decode.*skip_bad_images=true"):
        for batch in dm.train_dataloader():
            check_images(dm.on_before_batch_transfer(batch, 0))


def test_bad_images_are_listed_and_skipped_when_asked(data_dir, tmp_path, damaged_images, caplog):
    folder, victim = damaged_images
    os.remove(os.path.join(folder, sorted(os.listdir(folder))[1]))  # and one missing
    full = image_module(data_dir, str(tmp_path / "cache"))
    with pytest.raises(UpdownError, match="has no image of id .*skip_bad_images=true"):
        image_module(data_dir, str(tmp_path / "cache"), images=folder)
    dm = image_module(data_dir, str(tmp_path / "cache"), images=folder, skip_bad_images=True)
    assert victim in caplog.text and "2 images skipped" in caplog.text
    dataset = dm.datasets["train"]
    bad_ids = set(np.unique(full.datasets["train"].image_ids)[:2].tolist())
    served = set(dataset.image_ids[dataset.keep].tolist())
    assert not served & bad_ids and len(served) == len(np.unique(dataset.image_ids)) - 2
    for batch in dm.train_dataloader():
        assert "bad_images" not in batch
