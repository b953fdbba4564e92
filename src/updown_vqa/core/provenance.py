"""What a finished run records about itself besides its metrics: the command that made it, the machine,
the date, and what stopped it (the schedule, or the user's `trainer.max_time` clock). `report --results`
builds the README's results table from these fields of finished.json."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import torch
from pytorch_lightning.callbacks import EarlyStopping, Timer


def command_line() -> str:
    """The command as a user would type it again: `python -m MODULE` and the run's own overrides
    (a multirun job's overrides, not the sweep's)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    try:
        from hydra.core.hydra_config import HydraConfig

        args = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    except (ImportError, ValueError):
        args = sys.argv[1:]
    return " ".join([program, *(shlex.quote(a) for a in args)])


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU, its cores, torch's intra-op threads and the GPU if one is used, e.g.
    `AMD EPYC 7B13, 2 cores, 1 torch thread, no GPU`. The threads are part of it because a CPU run's
    numbers depend on them: another thread count sums in another order (docs/experiments.md)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{_cpu_name()}, {os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)}, {gpu}"


def load_average() -> float | None:
    """The 1-minute load average at the end of the run: how shared the machine was (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def stopped_by(trainer) -> str:
    """Why fitting ended: `max_time` (the user's clock), `max_steps`, `early_stopping` or `max_epochs`."""
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]  # Lightning adds one for max_time
    if any(t.time_remaining() is not None and t.time_remaining() <= 0 for t in timers):
        return "max_time"
    if any(c.stopped_epoch for c in trainer.callbacks if isinstance(c, EarlyStopping)):
        return "early_stopping"
    if 0 <= trainer.max_steps <= trainer.global_step:
        return "max_steps"
    return "max_epochs"


def provenance(trainer, wall_seconds: float) -> dict:
    """finished.json's fields beside the metrics."""
    reason = stopped_by(trainer)
    return {"stopped_by": reason, "max_time_reached": reason == "max_time",
            "epochs": trainer.fit_loop.epoch_progress.current.completed,
            "global_step": trainer.global_step, "wall_seconds": round(wall_seconds, 1),
            "command": command_line(), "machine": machine(), "load_average": load_average(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def final_line_suffix(summary: dict, max_epochs: int) -> str:
    """What the final printed line adds when the clock, not the schedule, ended training."""
    if summary.get("stopped_by") != "max_time":
        return ""
    return (f"; stopped by trainer.max_time after {summary['epochs']} of {max_epochs} epochs, "
            "not by the schedule: a rerun on another machine trains a different number of epochs")
