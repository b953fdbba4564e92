"""Hydra sweeps as SLURM jobs (`hydra/launcher=submitit_slurm`): Hydra's submitit launcher, with

- a submission that sbatch refuses (no such partition, a GPU request on a cluster without GPUs, no
  sbatch at all) as one `error:` line, exit status 1;
- a wait that ends when the jobs have left the queue (`squeue`), not when a first slice returned: a job
  requeued after SIGUSR1 is waited for until its last slice ends. submitit asks `sacct`, which needs
  SLURM's accounting database (slurmdbd): without it every state is UNKNOWN and a cancelled job is
  waited for forever;
- an exit status that says whether every job finished: 1 and one `error:` line naming the jobs that
  were cancelled, killed, failed or stopped unfinished, and how to continue them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import time
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from updown_vqa.core.errors import fail
from updown_vqa.core.run_files import CHECKPOINTS, FAILED, FINISHED
from updown_vqa.core.slurm import RequeueOnSignal, requeued

log = logging.getLogger(__name__)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
POLL_SECONDS = 2.0


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __call__(self, *args, **kwargs) -> JobReturn:
        """One job, on the cluster. A job that requeued itself leaves no result: its next slice will."""
        with RequeueOnSignal():  # from the first moment the job can hold the signal
            result = super().__call__(*args, **kwargs)
            if requeued():
                raise SystemExit(0)  # not an Exception: submitit writes no result file for this slice
        return result

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        jobs = self._submit(job_overrides, initial_job_idx)
        described = {job.job_id: label for job, label in zip(jobs, sweep_labels(job_overrides))}
        arrays = sorted({job.job_id.split("_")[0] for job in jobs})
        print(f"submitted {len(jobs)} SLURM job(s) ({', '.join(described)}); waiting until they leave the "
              f"queue, requeued ones included (squeue -j {','.join(arrays)})", flush=True)
        states = wait_until_gone([job.job_id for job in jobs])
        returns, unfinished = [], []
        for job in jobs:
            ret, problem = outcome(job, states.get(job.job_id, "gone"))
            if problem:
                unfinished.append(f"{job.job_id} ({described[job.job_id]}): {problem}")
            elif ret is not None:
                returns.append(ret)
        if unfinished:
            sweep_dir = self.config.hydra.sweep.dir
            fail(f"{len(unfinished)} of {len(jobs)} SLURM jobs did not finish: {'; '.join(unfinished)}. Logs: "
                 f"{sweep_dir}/.submitit/JOBID/; to continue them, run the same command again with "
                 f"hydra.sweep.dir={sweep_dir} (finished jobs are reported, not retrained)")
        print(f"all {len(jobs)} SLURM job(s) finished", flush=True)
        return returns

    def _submit(self, job_overrides, initial_job_idx: int) -> list:
        """The jobs, submitted as one array as Hydra's plugin does; a refusal is one error line."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {k if k in base else f"slurm_{k}": v for k, v in self.params.items() if k not in init_keys}
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = [(list(overrides), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                       Singleton.get_state()) for i, overrides in enumerate(job_overrides)]
        printed = io.StringIO()  # submitit prints sbatch's stderr ("sbatch: error: ...") itself
        try:
            with contextlib.redirect_stderr(printed):
                executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                                 slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
                executor.update_parameters(**params)
                return executor.map_array(self, *zip(*job_params))
        except (submitit.core.utils.FailedJobError, RuntimeError, OSError, ValueError) as e:
            fail(refusal(e))


def sweep_labels(job_overrides) -> list[str]:
    """Each job by the overrides in which the jobs differ (`seed=1`), else by its number."""
    lists = [filter_overrides(list(o)) for o in job_overrides]
    common = set.intersection(*(set(o) for o in lists)) if len(lists) > 1 else set()
    return [" ".join(x for x in o if x not in common) or f"job {i}" for i, o in enumerate(lists)]


def refusal(error: BaseException) -> str:
    """The one line for a submission that failed: sbatch's own words (its last `error:` line) and what to do."""
    if isinstance(error, FileNotFoundError) or "srun" in str(error):
        return ("no sbatch/srun on this machine's PATH: submit from a SLURM login node, or run the sweep "
                "here with hydra/launcher=joblib")
    lines = [line.split("error:", 1)[-1].strip() for line in str(error).splitlines() if line.strip()]
    return (f"sbatch refused the sweep's jobs: {lines[-1] if lines else type(error).__name__}. Check "
            "hydra.launcher.partition, .gpus_per_node, .cpus_per_task and .timeout_min against `sinfo` "
            "(conf/hydra/launcher/submitit_slurm.yaml, docs/clusters.md)")


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Each job's state as `squeue` knows it (finished jobs stay listed for SLURM's MinJobAge); None
    when squeue fails (the controller is briefly unreachable)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", "%i|%T"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        # a job id the controller has already forgotten is an error for squeue: all of them are gone
        return {} if "Invalid job id" in result.stderr else None
    states = dict(line.split("|", 1) for line in result.stdout.split() if "|" in line)
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def wait_until_gone(job_ids: list[str], poll_seconds: float = POLL_SECONDS) -> dict[str, str]:
    """Poll squeue until none of the jobs is pending or running; their last known states. A job seen
    running and then pending again was requeued: one line says so."""
    last: dict[str, str] = {}
    while True:
        states = queue_states(job_ids)
        if states is not None:
            for job_id, state in states.items():
                if state == "PENDING" and last.get(job_id) in ("RUNNING", "COMPLETING", "REQUEUED"):
                    print(f"{job_id}: requeued (time limit or preemption); waiting for its next run", flush=True)
            last.update(states)
            if not any(states.get(job_id, "gone") in ACTIVE for job_id in job_ids):
                return last
        time.sleep(poll_seconds)


def outcome(job, state: str) -> tuple[JobReturn | None, str]:
    """The job's JobReturn and, for one that did not finish, why (else "")."""
    from submitit.core.utils import pickle_load

    result_file = job.paths.result_pickle
    if not result_file.exists():
        return None, f"{state.lower()}, no result (killed, cancelled or past its time limit)"
    kind, result = pickle_load(result_file)
    if kind == "error":
        return None, f"failed: {str(result).strip().splitlines()[-1]}"
    if result.status == JobStatus.FAILED:
        return None, f"failed: {type(result._return_value).__name__}: {result._return_value}"
    status = run_status(str(result.hydra_cfg.hydra.runtime.output_dir))
    return (result, "") if status in ("finished", "") else (None, status)


def run_status(folder: str) -> str:
    """A training job's status from its folder: finished, failed (its error) or unfinished (stopped by
    a signal: `scancel`); "" for a job that is no training."""
    if os.path.isfile(os.path.join(folder, FAILED)):
        import json

        with open(os.path.join(folder, FAILED)) as f:
            return f"failed: {json.load(f).get('error', '')}"
    if os.path.isfile(os.path.join(folder, CHECKPOINTS, FINISHED)):
        return "finished"
    if os.path.isdir(os.path.join(folder, CHECKPOINTS)):
        return "unfinished: stopped before the end of training (scancel, SIGTERM); its last.ckpt resumes it"
    return ""
