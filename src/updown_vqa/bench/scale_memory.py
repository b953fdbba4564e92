"""Memory over training steps, for `bench scale`: RSS of the training process (and PSS of its loader
workers) every few steps, and the slope of a line fitted through them (MB per 100 steps)."""

from __future__ import annotations

import os
import time

import numpy as np

from updown_vqa.bench.loader import children, pss_mb


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process now, in MB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def slope_per_100(steps: list[int], values: list[float]) -> float:
    """The slope of the least-squares line through (step, value), per 100 steps; 0 for under 2 points."""
    if len(steps) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(steps, float), np.asarray(values, float), 1)[0] * 100)


def slope_error_per_100(steps: list[int], values: list[float]) -> float:
    """The standard error of that slope, per 100 steps (0 for under 3 points): RSS moves by tens of MB
    from step to step (the allocator), so a slope is read against it."""
    if len(steps) < 3:
        return 0.0
    x, y = np.asarray(steps, float), np.asarray(values, float)
    residuals = y - np.polyval(np.polyfit(x, y, 1), x)
    return float(np.sqrt((residuals ** 2).sum() / (len(x) - 2) / ((x - x.mean()) ** 2).sum()) * 100)


class RssSampler:
    """Lightning callback (mixed in with pl.Callback by its user): every `every` steps, the RSS of this
    process and the largest PSS of its workers; the wall time of each step after the first."""

    def __init__(self, every: int = 10):
        self.every, self.steps, self.rss, self.worker_pss = every, [], [], []
        self.first_end, self.last_end, self.timed = None, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now, step = time.perf_counter(), trainer.global_step
        if self.first_end is None:
            self.first_end = now
        else:
            self.timed += 1
        self.last_end = now
        if step % self.every == 0:
            workers = [pss_mb(c) for c in children(os.getpid())]
            self.steps.append(step)
            self.rss.append(rss_mb())
            self.worker_pss.append(max(workers, default=0.0))

    def step_seconds(self) -> float:
        """Mean wall time of a step after the first (which builds the loader's workers)."""
        return (self.last_end - self.first_end) / max(1, self.timed)

    def summary(self) -> dict:
        """The samples, and slopes fitted from the second sample on (the first follows the warm-up)."""
        skip = 1 if len(self.steps) > 2 else 0
        return {"rss_steps": self.steps, "rss_mb": self.rss, "worker_pss_mb": self.worker_pss,
                "rss_slope_mb_per_100_steps": slope_per_100(self.steps[skip:], self.rss[skip:]),
                "rss_slope_se_mb_per_100_steps": slope_error_per_100(self.steps[skip:], self.rss[skip:]),
                "worker_pss_slope_mb_per_100_steps": slope_per_100(self.steps[skip:], self.worker_pss[skip:])}
