"""The project's SLURM sweep launcher where Hydra looks for launchers (only classes defined under
`hydra_plugins` may be one); the code is `updown_vqa.experiments.slurm`. Hydra imports this module at
every start: without hydra-submitit-launcher installed it defines nothing, and says nothing."""

try:
    from updown_vqa.experiments.slurm import SlurmLauncher as _SlurmLauncher
except ImportError:  # no hydra-submitit-launcher: hydra/launcher=submitit_slurm cannot compose anyway
    _SlurmLauncher = None

if _SlurmLauncher is not None:

    class SlurmLauncher(_SlurmLauncher):
        """`hydra/launcher=submitit_slurm` (conf/hydra/launcher/submitit_slurm.yaml)."""
