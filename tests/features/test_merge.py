"""Merging extraction parts: the writer's sorted copy over the parts side by side gives the one-writer
store (per-box labels, image keys, skips included); missing or unfinished parts are one error naming
them; two parts finishing together merge once (OUT.merge.lock)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_same_store, run_module

from updown_vqa.core.errors import UpdownError
from updown_vqa.features.parts import find_parts, merge, merge_when_complete
from updown_vqa.features.shards import Shard, part_path
from updown_vqa.features.store import write_store
from updown_vqa.features.writer import StoreWriter

LABELS = ("object_ids", "object_scores")
RECIPE = {"extractor": "regions", "backbone": "caffe_resnet101", "min_boxes": 0}
KEYS = [f"n{i * 7}" for i in range(12)]  # image id i is the string key KEYS[i] (GQA's names)


def add_images(writer, ids):
    """Images of 0 to 5 boxes with labels, each drawn from its id; every fifth id is unreadable."""
    for i in ids:
        if i % 5 == 4:
            writer.skip(i, f"OSError: cannot read {i}.jpg")
            continue
        rng = np.random.default_rng(i)
        n = int(rng.integers(0, 6))
        writer.add(i, 100 + i, 50 + i, rng.uniform(0, 40, (n, 4)), rng.normal(size=(n, 3)),
                   {"object_ids": rng.integers(0, 9, n), "object_scores": rng.uniform(size=n)})


def write_parts(folder, count, unfinished=(), seed=0):
    """One store written by one writer, and the same images by `count` part writers (flat parts)."""
    ids = list(np.random.default_rng(seed).permutation(12))  # the order images arrive in
    one = str(folder / "one.h5")
    with StoreWriter(one, 3, attrs=RECIPE, per_box=LABELS) as writer:
        add_images(writer, ids)
        writer.finalize(image_keys=KEYS)
    out = str(folder / "merged.h5")
    for index in range(count):
        block = Shard(index, count).select({i: "" for i in ids}, batch_size=2)
        with StoreWriter(part_path(out, index, count), 3, attrs=RECIPE, per_box=LABELS) as writer:
            add_images(writer, [i for i in ids if i in block])
            if index not in unfinished:
                writer.finalize("flat", image_keys=KEYS)
    return one, out


def test_the_merged_parts_equal_one_writers_store(tmp_path, capsys):
    one, out = write_parts(tmp_path, 3)
    parts = find_parts(out)
    assert parts == [part_path(out, i, 3) for i in range(3)]
    assert merge(out, parts) == {"images": 10, "parts": 3, "skipped": 2}
    assert_same_store(out, one)  # boxes, features, labels, image_keys, skipped + reasons, attributes
    assert all(os.path.isfile(p) for p in parts) and not os.path.exists(f"{out}.merge.lock")
    merge(out, parts, layout="flat", remove_parts=True)
    assert not any(os.path.exists(p) for p in parts)


def test_a_missing_or_unfinished_part_is_named_in_one_line(tmp_path):
    _, out = write_parts(tmp_path, 4, unfinished=(1,))
    os.remove(part_path(out, 3, 4))
    done = run_module("updown_vqa.features.merge", out)
    assert done.returncode == 1 and not os.path.exists(out)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot merge: ")
    assert f"{part_path(out, 1, 4)} is unfinished ({part_path(out, 1, 4)}.work.h5 holds" in lines[0]
    assert f"{part_path(out, 3, 4)} is missing" in lines[0] and "part-0-of-4" not in lines[0]
    named = run_module("updown_vqa.features.merge", out, part_path(out, 0, 4), part_path(out, 2, 4))
    assert named.returncode == 1 and "part-1-of-4.h5 is unfinished" in named.stderr  # the rest of the split
    assert "part-3-of-4.h5 is missing" in named.stderr and "Traceback" not in named.stderr


def test_the_merge_command_error_contract(tmp_path):
    _, out = write_parts(tmp_path, 2)
    usage = run_module("updown_vqa.features.merge")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    nothing = run_module("updown_vqa.features.merge", str(tmp_path / "other.h5"))
    assert nothing.returncode == 1 and nothing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'other.h5'}: no parts {tmp_path / 'other.h5'}.part-I-of-N.h5 found; run "
        "extract with shard=I/N first, or name the parts to merge"]
    padded = str(tmp_path / "padded.h5")
    write_store(padded, [100], [(10, 10)], [np.zeros((1, 4))], [np.zeros((1, 3))], attrs=RECIPE)
    mixed = run_module("updown_vqa.features.merge", out, part_path(out, 0, 2), part_path(out, 1, 2), padded)
    assert mixed.returncode == 1 and f"error: {padded}: a padded store; merge takes the flat parts" in mixed.stderr
    twice = run_module("updown_vqa.features.merge", out, part_path(out, 0, 2), part_path(out, 1, 2),
                       part_path(out, 1, 2))
    assert twice.returncode == 1 and "error: image id " in twice.stderr and "part-1-of-2.h5 and" in twice.stderr
    onto_part = run_module("updown_vqa.features.merge", part_path(out, 0, 2), part_path(out, 0, 2),
                           part_path(out, 1, 2))
    assert onto_part.returncode == 1 and onto_part.stderr.strip().splitlines()[-1].startswith(
        f"error: out={part_path(out, 0, 2)}: it is the part")
    done = run_module("updown_vqa.features.merge", out, "--remove-parts")
    assert done.returncode == 0 and "merged 2 parts, 10 images, 2 skipped" in done.stdout
    assert not os.path.exists(part_path(out, 0, 2))


def test_parts_of_other_settings_are_refused_naming_the_part(tmp_path):
    _, out = write_parts(tmp_path, 2)
    with StoreWriter(part_path(out, 1, 2), 3, attrs=RECIPE | {"min_boxes": 10}, per_box=LABELS) as writer:
        add_images(writer, [1])
        writer.finalize("flat")
    with pytest.raises(UpdownError, match=r"part-1-of-2.h5: made with other settings than .*part-0-of-2.h5 "
                                          r"\(min_boxes: 0 vs 10\); re-extract that part"):
        merge(out, find_parts(out))


@pytest.fixture
def other_process():
    """A live process on this host that is not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def test_two_parts_finishing_together_merge_once(tmp_path, other_process, capsys):
    one, out = write_parts(tmp_path, 2)
    parts = find_parts(out)
    with open(f"{out}.merge.lock", "w") as f:  # the other part is merging right now
        json.dump({"pid": other_process.pid, "host": socket.gethostname(), "heartbeat": time.time()}, f)
    assert not merge_when_complete(out, parts, lambda i: os.path.isfile(parts[i]))
    assert f"pid {other_process.pid} on {socket.gethostname()} is merging" in capsys.readouterr().out
    assert not os.path.exists(out) and all(os.path.isfile(p) for p in parts)
    other_process.kill()
    other_process.wait()  # it died mid-merge: its lock is stale, the next finisher takes it over
    assert merge_when_complete(out, parts, lambda i: os.path.isfile(parts[i]))
    assert_same_store(out, one)
    assert not any(os.path.exists(p) for p in parts) and not os.path.exists(f"{out}.merge.lock")
    assert not merge_when_complete(out, parts, lambda i: os.path.isfile(parts[i]))  # nothing left to merge
    assert "0 of 2 parts done" in capsys.readouterr().out


def test_random_parts_for_measuring_merge_into_every_image_sorted(tmp_path):
    from updown_vqa.datasets.random_parts import write_random_parts
    from updown_vqa.features.store import FeatureStore

    out = str(tmp_path / "f.h5")
    parts = write_random_parts(out, num_images=50, parts=3, min_boxes=2, max_boxes=5, dim=8)
    assert parts == find_parts(out) and merge(out, parts)["images"] == 50
    store = FeatureStore(out)
    assert store.image_ids.tolist() == list(range(1, 51)) and 2 <= store.num_boxes.min() <= store.max_boxes <= 5
