"""A real single-node SLURM cluster for the tests marked `slurm`: `scripts/slurm-cluster.sh up`, once per
session (it installs Debian's packages where missing, so CI runs these tests rather than skip them).

Where the machine cannot host one (not root and no cluster running, no apt-get and no SLURM), the tests
skip with the reason. The cluster is left running at the end: starting it again is idempotent. The root
conftest imports the fixture from here: a second file named conftest.py in tests/slurm/ would shadow the
root one for every `from conftest import ...` collected after it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from updown_vqa.core.paths import project_root

SCRIPT = os.path.join(project_root(), "scripts", "slurm-cluster.sh")
SLURM_DIR = os.environ.get("SLURM_DIR", "/var/lib/updown-slurm")


@dataclass
class SlurmCluster:
    env: dict          # os.environ plus SLURM_CONF, for subprocesses that call sbatch, squeue, ...
    partition: str
    conf: str


def cannot_host() -> str | None:
    """Why this machine cannot start the cluster, or None."""
    if os.name != "posix" or not shutil.which("bash"):
        return "no bash"
    if os.geteuid() != 0:
        running = os.path.isfile(os.path.join(SLURM_DIR, "slurmctld.pid")) and shutil.which("sbatch")
        return None if running else "starting a SLURM cluster needs root (run `sudo make slurm-up` first)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    reason = cannot_host()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["bash", SCRIPT, "up"], capture_output=True, text=True, timeout=900)
    if result.returncode == 3:  # the script says the machine cannot host one (no root, no packages)
        pytest.skip(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        pytest.fail(f"{SCRIPT} up failed:\n{result.stderr[-2000:]}")
    exports = [line for line in result.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
    assert exports, f"{SCRIPT} up printed no SLURM_CONF:\n{result.stdout}"
    conf = exports[-1].partition("=")[2]
    return SlurmCluster(env={**os.environ, "SLURM_CONF": conf}, partition="debug", conf=conf)
