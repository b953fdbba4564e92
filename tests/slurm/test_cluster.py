"""The local cluster itself: a batch job runs on it and its output comes back."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = [pytest.mark.slurm]


def test_a_batch_job_runs_on_the_local_cluster(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = subprocess.run(["sbatch", "--parsable", "-p", slurm_cluster.partition, "-o", str(out),
                          "--wrap", "echo ran on $SLURM_JOB_PARTITION"],
                         env=slurm_cluster.env, capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job], env=slurm_cluster.env, capture_output=True, text=True)
        if not queued.stdout.strip():
            break
        time.sleep(0.5)
    assert out.read_text().strip() == f"ran on {slurm_cluster.partition}"
