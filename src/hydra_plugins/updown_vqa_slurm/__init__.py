"""The project's SLURM sweep launcher where Hydra looks for launchers (only classes defined under
`hydra_plugins` may be one); the code is `updown_vqa.experiments.slurm`."""

from updown_vqa.experiments.slurm import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    """`hydra/launcher=submitit_slurm` (conf/hydra/launcher/submitit_slurm.yaml)."""
