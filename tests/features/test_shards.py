"""`extract ... shard=I/N` (or a SLURM array task, or a torchrun rank): each part its block of images,
and the part that finishes last merges them into a store equal to a one-process extraction's."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_same_store, extract_config, run_module, write_images

from updown_vqa.core.errors import UpdownError
from updown_vqa.extraction.extractors import extract
from updown_vqa.features.shards import Shard, choose_shard
from updown_vqa.features.store import FeatureStore

SMALL = ["backbone=resnet18", "stage=layer2", "allow_random_weights=true", "image_size=32",
         "num_workers=0", "batch_size=2"]
SIZES = [(40, 30), (50, 70), (64, 64), (33, 20), (80, 60), (20, 20), (31, 45)]


def array_task(task, first, last, step=None):
    """The variables SLURM sets in task `task` of `sbatch --array=first-last[:step]`."""
    tasks = (last - first) // (step or 1) + 1
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
           "SLURM_ARRAY_TASK_MAX": str(last), "SLURM_ARRAY_TASK_COUNT": str(tasks)}
    return env | ({"SLURM_ARRAY_TASK_STEP": str(step)} if step else {})


def test_the_shard_comes_from_the_setting_a_slurm_array_or_torchrun():
    assert choose_shard("2/3", {}) == Shard(2, 3)
    assert choose_shard("auto", array_task(11, 10, 12)) == Shard(1, 3, "SLURM array task 1 of 3")
    assert choose_shard("auto", array_task(8, 0, 8, step=4)).index == 2  # --array=0-8:4
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert choose_shard("auto", torchrun) == Shard(3, 4, "torchrun rank 3 of 4", local_rank=1)
    both = choose_shard("auto", array_task(1, 0, 1) | torchrun)  # 2 array tasks x 4 ranks
    assert (both.index, both.count) == (7, 8)
    assert choose_shard("auto", torchrun).device(torch.device("cuda")) == torch.device("cuda", 1)
    assert choose_shard("auto", torchrun).device(torch.device("cpu")) == torch.device("cpu")
    assert choose_shard("1/3", torchrun) == Shard(1, 3)  # what the user sets wins
    for one_process in (choose_shard("none", torchrun), choose_shard("auto", {}),
                        choose_shard("auto", array_task(5, 5, 5)), choose_shard("0/1", {}),
                        choose_shard("auto", array_task(1, 0, 2), in_multirun=True)):  # a sweep's array
        assert one_process is None


@pytest.mark.parametrize("setting, environ, message", [
    ("3/3", {}, r"shard=3/3: give I/N, part I of N counted from 0"),
    ("half", {}, r"shard=half: give I/N"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
              "SLURM_ARRAY_TASK_COUNT": "3"}, r"SLURM array tasks 1-7:1 \(3 tasks\).*--array=0-7"),
    ("auto", {"RANK": "x", "WORLD_SIZE": "2"}, r"RANK='x': not an integer"),
])
def test_a_bad_shard_is_one_error_saying_what_to_give(setting, environ, message):
    with pytest.raises(UpdownError, match=message):
        choose_shard(setting, environ)


def test_blocks_are_whole_batches_that_cover_every_image_once():
    images = {i: f"{i}.png" for i in (9, 3, 14, 1, 7, 20, 11)}
    blocks = [Shard(i, 3).select(images, batch_size=2) for i in range(3)]
    assert [sorted(b) for b in blocks] == [[1, 3], [7, 9], [11, 14, 20]]
    assert [sorted(Shard(i, 2).select(images)) for i in range(2)] == [[1, 3, 7], [9, 11, 14, 20]]
    many = [Shard(i, 5).select(images, batch_size=4) for i in range(5)]  # 2 batches, 5 parts
    assert sorted(i for b in many for i in b) == sorted(images) and sum(not b for b in many) == 3


@pytest.mark.slow
def test_shards_in_any_order_then_the_merge_equal_one_process(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "images", sizes=SIZES)
    (tmp_path / "images" / "COCO_val2014_000000000009.jpg").write_bytes(b"\xff\xd8 truncated")
    common = [f"images={tmp_path / 'images'}", *SMALL]
    one, out = str(tmp_path / "one.h5"), str(tmp_path / "sharded.h5")
    extract(extract_config(*common, f"out={one}"))
    extract(extract_config(*common, f"out={out}", "shard=2/3"))
    assert "1 of 3 parts done; waiting for" in capsys.readouterr().out and not os.path.exists(out)
    extract(extract_config(*common, f"out={out}", "shard=0/3"))
    assert os.path.isfile(f"{out}.part-0-of-3.h5") and not os.path.exists(out)
    for name, value in array_task(11, 10, 12).items():  # the last part: SLURM array task 11 of 10-12
        monkeypatch.setenv(name, value)
    extract(extract_config(*common, f"out={out}"))
    assert "merged 3 parts, 7 images, 1 skipped" in capsys.readouterr().out
    assert_same_store(out, one)  # every dataset (skipped and its reasons too) and attribute
    assert sorted(os.listdir(tmp_path)) == ["images", "one.h5", "sharded.h5"]  # parts and lock gone
    extract(extract_config(*common, f"out={out}", "shard=1/3"))  # a late or requeued task
    assert "up to date" in capsys.readouterr().out and not os.path.exists(f"{out}.part-1-of-3.h5")


@pytest.mark.slow
def test_a_part_of_other_settings_is_awaited_not_merged(tmp_path, capsys):
    write_images(tmp_path / "images", sizes=SIZES[:4])
    common = [f"images={tmp_path / 'images'}", *SMALL, f"out={tmp_path / 'f.h5'}"]
    extract(extract_config(*common, "shard=0/2", "stage=layer3"))  # an earlier run, other settings
    extract(extract_config(*common, "shard=1/2"))
    assert "1 of 2 parts done; waiting for" in capsys.readouterr().out
    extract(extract_config(*common, "shard=0/2"))  # the part is made again with these settings
    assert "merged 2 parts, 4 images" in capsys.readouterr().out
    assert FeatureStore(tmp_path / "f.h5").attrs["stage"] == "layer2"


class StopAfterOneBatch:
    """An extractor that stops the run (as a SLURM time limit would) on its second batch."""

    def __init__(self, extractor):
        self.extractor, self.calls, self.feature_dim = extractor, 0, extractor.feature_dim

    def __call__(self, *batch):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.extractor(*batch)


@pytest.mark.slow
def test_an_interrupted_part_resumes_on_its_own_with_its_batch_size(tmp_path, monkeypatch):
    from updown_vqa.extraction import extractors

    write_images(tmp_path / "images", sizes=SIZES[:6])
    common = [f"images={tmp_path / 'images'}", *SMALL]
    out = str(tmp_path / "f.h5")
    build = extractors.build_extractor
    monkeypatch.setattr(extractors, "build_extractor", lambda *a, **k: StopAfterOneBatch(build(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        extract(extract_config(*common, f"out={out}", "shard=1/2"))  # 4 images: 2 written
    monkeypatch.setattr(extractors, "build_extractor", build)
    assert os.path.isfile(f"{out}.part-1-of-2.h5.work.h5")
    with pytest.raises(UpdownError, match=r"part-1-of-2.h5: the unfinished work .* other inputs "
                                          r"\(.*shard: '1/2, batch_size=2' -> '1/2, batch_size=3'\)"):
        extract(extract_config(*common, f"out={out}", "shard=1/2", "batch_size=3"))
    extract(extract_config(*common, f"out={out}", "shard=1/2"))  # resumes its last 2 images
    extract(extract_config(*common, f"out={out}", "shard=0/2"))
    extract(extract_config(*common, f"out={tmp_path / 'one.h5'}"))
    assert FeatureStore(out).image_ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert_same_store(out, tmp_path / "one.h5")


@pytest.mark.slow
def test_torchrun_ranks_extract_their_shards_and_one_of_them_merges(tmp_path, same_store):
    write_images(tmp_path / "images", sizes=SIZES)
    common = [f"images={tmp_path / 'images'}", *SMALL, f"paths.log_dir={tmp_path / 'logs'}"]
    extract(extract_config(*common, f"out={tmp_path / 'one.h5'}"))
    out = str(tmp_path / "ranks.h5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=0", "-m", "updown_vqa.extract", *common, f"out={out}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ranks.h5: merged 2 parts, 7 images") == 1  # both finish; one merges
    same_store(out, tmp_path / "one.h5")
    assert sorted(os.listdir(tmp_path)) == ["images", "logs", "one.h5", "ranks.h5"]


@pytest.mark.slow
def test_a_bad_shard_on_the_command_line_is_one_error_line(tmp_path):
    write_images(tmp_path / "images", sizes=SIZES[:1])
    done = run_module("updown_vqa.extract", f"images={tmp_path / 'images'}", f"out={tmp_path / 'f.h5'}",
                      *SMALL, "shard=3/3", f"paths.log_dir={tmp_path / 'logs'}")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: shard=3/3: give I/N, part I of N counted from 0 (shard=0/4 .. shard=3/4), or auto (from "
        "SLURM_ARRAY_TASK_ID or torchrun's RANK) or none"]
    assert not os.path.exists(tmp_path / "f.h5")
