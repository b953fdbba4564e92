"""Which part of an image folder this process extracts: `shard=I/N`, a SLURM array task, a torchrun rank.

Shard I of N takes the I-th of N consecutive blocks of the sorted image ids, in whole batches (the same
images on every run with the same batch_size) and writes them to its own part store, `OUT.part-I-of-N.h5`; features/parts.py merges the parts.
`shard=auto` (the default) takes I and N from a SLURM job array (SLURM_ARRAY_TASK_ID counted from
SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT tasks) and from torchrun (RANK of WORLD_SIZE); both
together make array tasks x ranks parts. Inside a Hydra multirun the array is the sweep's, not ours.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from updown_vqa.core.errors import UpdownError

PART_NAME = re.compile(r"^(?P<out>.+)\.part-(?P<index>\d+)-of-(?P<count>\d+)\.h5$")
OFF = (None, "", "none", "null", "off")


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count`; `local_rank` is torchrun's (which GPU of the machine), else None."""

    index: int
    count: int
    source: str = "shard="
    local_rank: int | None = None

    def select(self, images: Mapping[int, str], batch_size: int = 1) -> dict[int, str]:
        """This part's block of the images by sorted id, whole batches of `batch_size`: every image
        then meets the same batch as in a one-process run, so its features are the same to the bit."""
        ids = sorted(images)
        batches = -(-len(ids) // batch_size)
        first = self.index * batches // self.count * batch_size
        end = min((self.index + 1) * batches // self.count * batch_size, len(ids))
        return {i: images[i] for i in ids[first:end]}

    def part(self, out: str) -> str:
        return part_path(out, self.index, self.count)

    def device(self, device):
        """torchrun's rank r extracts on cuda:LOCAL_RANK when the device names no GPU of its own."""
        if self.local_rank is not None and device.type == "cuda" and device.index is None:
            return type(device)("cuda", self.local_rank)  # torch.device: no torch import here
        return device

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count} ({self.source})"


def part_path(out: str, index: int, count: int) -> str:
    """The part store of shard index/count of the store `out`."""
    return f"{out}.part-{index}-of-{count}.h5"


def choose_shard(setting, environ: Mapping[str, str] | None = None,
                 in_multirun: bool = False) -> Shard | None:
    """The shard of `shard=` (I/N, auto, none); None when this process extracts every image."""
    environ = os.environ if environ is None else environ
    text = str(setting).strip().lower() if setting is not None else None
    if text in OFF:
        return None
    if text == "auto":
        return None if in_multirun else _from_environment(environ)
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise UpdownError(f"shard={setting}: give I/N, part I of N counted from 0 (shard=0/4 .. "
                          "shard=3/4), or auto (from SLURM_ARRAY_TASK_ID or torchrun's RANK) or none")
    index, count = int(match.group(1)), int(match.group(2))
    return Shard(index, count) if count > 1 else None


def _from_environment(environ: Mapping[str, str]) -> Shard | None:
    """SLURM array task x torchrun rank, each alone or both; None when neither splits the work."""
    index, count, sources, local_rank = 0, 1, [], None
    if environ.get("SLURM_ARRAY_TASK_ID"):
        task, tasks = _array_task(environ)
        index, count = task, tasks
        sources.append(f"SLURM array task {task} of {tasks}")
    if environ.get("WORLD_SIZE") and environ.get("RANK"):
        rank, world = _integer(environ, "RANK"), _integer(environ, "WORLD_SIZE")
        if not 0 <= rank < world:
            raise UpdownError(f"RANK={rank} WORLD_SIZE={world}: a rank must be below the world size")
        index, count = index * world + rank, count * world
        local_rank = _integer(environ, "LOCAL_RANK") if environ.get("LOCAL_RANK") else None
        sources.append(f"torchrun rank {rank} of {world}")
    return Shard(index, count, " x ".join(sources), local_rank) if count > 1 else None


def _array_task(environ: Mapping[str, str]) -> tuple[int, int]:
    """(position of this task in the array, number of tasks); the array must be one range."""
    task = _integer(environ, "SLURM_ARRAY_TASK_ID")
    first = _integer(environ, "SLURM_ARRAY_TASK_MIN") if environ.get("SLURM_ARRAY_TASK_MIN") else 0
    last = _integer(environ, "SLURM_ARRAY_TASK_MAX") if environ.get("SLURM_ARRAY_TASK_MAX") else task
    step = _integer(environ, "SLURM_ARRAY_TASK_STEP") if environ.get("SLURM_ARRAY_TASK_STEP") else 1
    count = _integer(environ, "SLURM_ARRAY_TASK_COUNT") if environ.get("SLURM_ARRAY_TASK_COUNT") \
        else (last - first) // max(step, 1) + 1
    if step < 1 or (last - first) // step + 1 != count or (task - first) % step:
        raise UpdownError(f"SLURM array tasks {first}-{last}:{step} ({count} tasks): extract shards "
                          "over an array given as one range, e.g. sbatch --array=0-7; or pass "
                          "shard=I/N yourself")
    return (task - first) // step, count


def _integer(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise UpdownError(f"{name}={environ[name]!r}: not an integer; shard=I/N sets the part "
                          "yourself") from None
