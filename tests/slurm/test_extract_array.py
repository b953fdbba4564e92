"""`extract` as a SLURM job array on the local cluster: each task extracts its shard from
SLURM_ARRAY_TASK_ID, the last to finish merges, and the store equals a one-process extraction's."""

import glob
import os
import subprocess
import sys

import pytest
from conftest import extract_config, write_images

from updown_vqa.extraction.extractors import extract

SMALL = ["backbone=resnet18", "trunk=layer2", "allow_random_weights=true", "image_size=32",
         "num_workers=0", "batch_size=2"]


@pytest.mark.slurm
@pytest.mark.slow
def test_an_array_job_extracts_its_shards_and_the_last_task_merges(tmp_path, slurm_cluster, same_store):
    write_images(tmp_path / "images", sizes=[(40, 30), (50, 70), (64, 64), (33, 20), (80, 60), (31, 45)])
    (tmp_path / "images" / "COCO_val2014_000000000009.jpg").write_bytes(b"\xff\xd8 truncated")
    common = [f"images={tmp_path / 'images'}", *SMALL, f"paths.log_dir={tmp_path / 'logs'}"]
    extract(extract_config(*common, f"out={tmp_path / 'one.h5'}"))
    out = str(tmp_path / "array.h5")
    script = tmp_path / "extract.sh"
    script.write_text("#!/bin/bash\n" + " ".join([sys.executable, "-m", "updown_vqa.extract", *common,
                                                  f"out={out}"]) + "\n")
    submitted = subprocess.run(
        ["sbatch", "--array=0-2", "--wait", f"--partition={slurm_cluster.partition}", "--cpus-per-task=1",
         "--time=10", f"--output={tmp_path}/task-%a.out", str(script)],
        env=slurm_cluster.env, capture_output=True, text=True, timeout=900)
    logs = {path: open(path).read() for path in sorted(glob.glob(f"{tmp_path}/task-*.out"))}
    assert submitted.returncode == 0, f"{submitted.stderr}\n" + "\n".join(f"{p}:\n{t[-2000:]}" for p, t in logs.items())
    assert len(logs) == 3
    for index in range(3):  # each task wrote its own part, chosen from SLURM_ARRAY_TASK_ID
        assert f"array.h5.part-{index}-of-3.h5: " in logs[f"{tmp_path}/task-{index}.out"]
    assert sum("array.h5: merged 3 parts, 6 images, 1 skipped" in text for text in logs.values()) == 1
    same_store(out, tmp_path / "one.h5")
    assert not glob.glob(f"{out}.part-*") and not os.path.exists(f"{out}.merge.lock")
