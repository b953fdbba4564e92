"""The project root, for configs that must resolve the same from any working directory."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def project_root() -> str:
    """The checkout that holds `conf/` (an editable install), else the working directory."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # src/updown_vqa
    root = os.path.dirname(os.path.dirname(package))
    return root if os.path.isdir(os.path.join(root, "conf")) else os.getcwd()


def config_dir() -> str:
    return os.path.join(project_root(), "conf")


def _run_dir(runs: str, name: str, resume) -> str:
    from updown_vqa.core.resume import run_dir  # imported when a config resolves it, not before

    return run_dir(runs, name, resume)


def _job_dir(overrides: str) -> str:
    from updown_vqa.core.resume import job_dir

    return job_dir(overrides)


def _slurm_gpus(accelerator, devices, partition=None):
    from updown_vqa.core.slurm import gpus_per_node

    return gpus_per_node(accelerator, devices, partition)


def _slurm_cpus(wanted, tasks_per_node=1, partition=None):
    from updown_vqa.core.slurm import cpus_per_task

    return cpus_per_task(wanted, tasks_per_node, partition)


# The resolvers the configs use, registered by every command's `config_dir()` import.
for _name, _resolver in (("project_root", project_root), ("run_dir", _run_dir), ("job_dir", _job_dir),
                         ("slurm_gpus", _slurm_gpus), ("slurm_cpus", _slurm_cpus)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
