"""`train -m hydra/launcher=submitit_slurm` on the real local cluster: submission errors, a job that
SIGUSR1 stops before and during training comes back and ends with an uninterrupted run's weights,
and a cancelled job is reported and completed by the same command again."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import SLOW_EPOCHS, tiny_overrides

from updown_vqa.experiments.report import write_report
from updown_vqa.experiments.runs import find_runs

pytestmark = [pytest.mark.slurm]
SWEEP = [sys.executable, "-m", "updown_vqa.train", "-m", "hydra/launcher=submitit_slurm"]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error: " in line]


def wait_for(condition, what: str, timeout: float = 300, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def job_id(sweep_dir, num: int) -> str:
    """The SLURM id of job `num` of the sweep (its .submitit folder is named after it)."""
    found = wait_for(lambda: glob.glob(os.path.join(sweep_dir, ".submitit", f"*_{num}")), f"job {num} submitted")
    return os.path.basename(found[0])


def weights(checkpoint: str) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("override,says", [
    ("hydra.launcher.partition=nosuchpartition", "invalid partition"),
    ("hydra.launcher.gpus_per_node=1", "generic resource"),  # a GPU asked of a cluster without GPUs
    ("PATH=", "no sbatch"),
])
def test_a_refused_submission_is_one_error_line(slurm_cluster, data_dir, tmp_path, override, says):
    env = dict(slurm_cluster.env)
    args = [*tiny_overrides(data_dir, str(tmp_path)), "seed=0,1"]
    if override == "PATH=":
        env["PATH"] = os.path.dirname(sys.executable)  # python, but no sbatch
    else:
        args.append(override)
    result = subprocess.run(SWEEP + args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stdout + result.stderr)
    assert len(lines) == 1 and says in lines[0].lower(), lines


@pytest.mark.slow
def test_sigusr1_before_and_during_training_requeues_and_ends_with_the_uninterrupted_weights(
        slurm_cluster, data_dir, tmp_path):
    """Two jobs of one sweep (the same training): job 0 gets SIGUSR1 before fit, job 1 during its
    second epoch; both are requeued, come back and finish; the sweep waits for them and exits 0."""
    sweep_dir = tmp_path / "sweep"
    training = [*tiny_overrides(data_dir, str(tmp_path / "out")), *SLOW_EPOCHS]
    sweep = subprocess.Popen(SWEEP + training + [f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.cpus_per_task=1",
                                                 "checkpoint.every_n_minutes=30,31"],  # the same training twice
                             env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before_fit, during_fit = job_id(sweep_dir, 0), job_id(sweep_dir, 1)
    wait_for(lambda: (sweep_dir / "0" / ".hydra" / "config.yaml").exists(), "job 0 to start")
    subprocess.run(["scancel", "--signal=USR1", before_fit], env=slurm_cluster.env, check=True)
    wait_for(lambda: (sweep_dir / "1" / "checkpoints" / "last.ckpt").exists(), "job 1's first epoch")
    subprocess.run(["scancel", "--signal=USR1", during_fit], env=slurm_cluster.env, check=True)
    reference = subprocess.run([sys.executable, "-m", "updown_vqa.train", *training, "name=uninterrupted"],
                               env=slurm_cluster.env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    assert f"{before_fit}: requeued" in out and f"{during_fit}: requeued" in out
    logs = {num: "".join(open(p).read() for p in glob.glob(str(sweep_dir / ".submitit" / job / "*_log.*")))
            for num, job in ((0, before_fit), (1, during_fit))}
    assert f"SLURM job {before_fit} requeued" in logs[0] and "Traceback" not in logs[0]
    assert "stopped by SIGUSR1 at epoch" in logs[1] and "the SLURM job is requeued" in logs[1]
    expected = weights(str(tmp_path / "out" / "runs" / "uninterrupted" / "checkpoints" / "last.ckpt"))
    for num in (0, 1):
        assert (sweep_dir / str(num) / "checkpoints" / "finished.json").exists()
        got = weights(str(sweep_dir / str(num) / "checkpoints" / "last.ckpt"))
        assert max((got[k] - expected[k]).abs().max().item() for k in expected) == 0


@pytest.mark.slow
def test_a_cancelled_job_is_reported_unfinished_and_the_same_command_completes_it(slurm_cluster, data_dir, tmp_path):
    """Shipped launcher settings, two jobs; scancel of job 0 mid-training: job 1 finishes, the sweep
    exits 1 naming job 0, the report lists it and averages only job 1; the same command again finishes
    job 0 from its last.ckpt and reports job 1 without retraining it."""
    sweep_dir = tmp_path / "sweep"
    command = SWEEP + [*tiny_overrides(data_dir, str(tmp_path / "out")), *SLOW_EPOCHS,
                       f"hydra.sweep.dir={sweep_dir}", "seed=0,1"]
    sweep = subprocess.Popen(command, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cancelled = job_id(sweep_dir, 0)
    wait_for(lambda: (sweep_dir / "0" / "checkpoints" / "last.ckpt").exists(), "job 0's first epoch")
    subprocess.run(["scancel", cancelled], env=slurm_cluster.env, check=True)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, (out + err)[-3000:]
    lines = error_lines(out + err)
    assert len(lines) == 1 and f"1 of 2 SLURM jobs did not finish: {cancelled} (seed=0)" in lines[0], lines
    assert "Traceback" not in err
    runs = {os.path.basename(r.path): r.status for r in find_runs([str(sweep_dir)])}
    assert runs == {"0": "unfinished", "1": "finished"}
    report = write_report([str(sweep_dir)], str(tmp_path / "report"))
    assert f"{sweep_dir / '0'}: unfinished" in report

    again = subprocess.run(command, env=slurm_cluster.env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {os.path.basename(r.path): r.status for r in find_runs([str(sweep_dir)])} == {"0": "finished", "1": "finished"}
    job_logs = "".join(open(p).read() for p in glob.glob(str(sweep_dir / ".submitit" / "*" / "*.out")))
    assert "this run already finished" in job_logs  # job 1, the second time
