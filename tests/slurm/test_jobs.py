"""Single SLURM jobs on the real local cluster: the sbatch script of docs/reliability.md, and `extract`,
each stopped by SIGUSR1 (SLURM's warning before the time limit) midway: requeued, back, finished."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import SLOW_EPOCHS, tiny_overrides, write_images

from updown_vqa.core.paths import project_root

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def submit(cluster, script: str, tmp_path, log) -> str:
    """sbatch `script` (its output appended across requeues to `log`); the job id."""
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    return subprocess.run(["sbatch", "--parsable", "-p", cluster.partition, "-o", str(log), "--open-mode=append",
                           str(path)], env=cluster.env, cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()


def job_field(cluster, job: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], env=cluster.env, capture_output=True, text=True).stdout
    found = re.search(rf"\b{field}=(\S+)", shown)
    return found.group(1) if found else ""


def wait_for(condition, what: str, timeout: float = 400, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def env_with_python(cluster) -> dict:
    """The cluster's environment with this interpreter first on PATH: the scripts say `python`."""
    return {**cluster.env, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{cluster.env['PATH']}"}


def docs_sbatch_script() -> str:
    """The single-job script of docs/reliability.md, as written there."""
    with open(os.path.join(project_root(), "docs", "reliability.md")) as f:
        text = f.read()
    found = re.search(r"```bash\n(#!/bin/bash\n#SBATCH --time.*?)```", text, re.S)
    assert found, "docs/reliability.md has no sbatch script"
    return found.group(1)


def test_the_documented_sbatch_script_survives_sigusr1_and_finishes(slurm_cluster, data_dir, tmp_path):
    """Run as written, but for what this cluster lacks (4 GPUs: one CPU task instead) and tiny sizes."""
    script = docs_sbatch_script()
    assert "--signal=USR1@120 --requeue" in script and "srun python -m updown_vqa.train name=big" in script
    script = re.sub(r"#SBATCH --nodes=1 .*\n", "#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=1\n", script)
    script = script.replace("trainer=ddp trainer.devices=4",
                            " ".join(tiny_overrides(data_dir, str(tmp_path / "out")) + SLOW_EPOCHS))
    cluster = type(slurm_cluster)(env_with_python(slurm_cluster), slurm_cluster.partition, slurm_cluster.conf)
    log = tmp_path / "job.out"
    job = submit(cluster, script, tmp_path, log)
    run = tmp_path / "out" / "runs" / "big"
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists(), "the first epoch")
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster.env, check=True)
    wait_for(lambda: job_field(cluster, job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), "the job's end")
    text = log.read_text()
    assert job_field(cluster, job, "JobState") == "COMPLETED" and job_field(cluster, job, "Restarts") == "1", text[-3000:]
    assert "the SLURM job is requeued" in text and "resuming from" in text
    assert (run / "checkpoints" / "finished.json").exists()


def test_extract_as_a_slurm_job_is_requeued_by_sigusr1_and_ends_with_the_one_process_store(slurm_cluster, tmp_path):
    # 400 images, 2 a batch: a few seconds of extraction even on an idle machine (40 took 0.25 s, over
    # before the poll below saw the work file), so the signal lands while it runs
    write_images(tmp_path / "images", sizes=[(64, 64)] * 400)
    args = [f"images={tmp_path / 'images'}", "backbone=resnet18", "allow_random_weights=true",
            "image_size=64", "batch_size=2", "num_workers=0", f"paths.log_dir={tmp_path / 'logs'}"]
    cluster = type(slurm_cluster)(env_with_python(slurm_cluster), slurm_cluster.partition, slurm_cluster.conf)
    log = tmp_path / "job.out"
    job = submit(cluster, "#!/bin/bash\n#SBATCH --time=60 --signal=USR1@30 --requeue --cpus-per-task=1\n"
                 f"srun python -m updown_vqa.extract out={tmp_path / 'slurm.h5'} {' '.join(args)}\n", tmp_path, log)
    wait_for(lambda: (tmp_path / "slurm.h5.work.h5").exists(), "extraction to start", poll=0.02)
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster.env, check=True)
    one = subprocess.run([sys.executable, "-m", "updown_vqa.extract", f"out={tmp_path / 'one.h5'}", *args],
                         env=cluster.env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    wait_for(lambda: job_field(cluster, job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), "the job's end")
    text = log.read_text()
    assert job_field(cluster, job, "JobState") == "COMPLETED" and job_field(cluster, job, "Restarts") == "1", text[-3000:]
    assert f"SLURM job {job} requeued" in text
    with h5py.File(tmp_path / "slurm.h5") as got, h5py.File(tmp_path / "one.h5") as expected:
        names = []
        expected.visit(lambda name: names.append(name) if isinstance(expected[name], h5py.Dataset) else None)
        assert names and all(np.array_equal(got[name][()], expected[name][()]) for name in names)
