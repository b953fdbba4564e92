"""The measuring protocol of every benchmark: the best of alternated runs (docs/throughput.md)."""

from __future__ import annotations


def alternate(measure: dict, repeats: int) -> dict:
    """The best of `repeats` runs of each contender, run in turn and each first in turn, so that a busy
    moment of the machine hurts all alike."""
    names, runs = list(measure), {name: [] for name in measure}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            runs[name].append(measure[name]())
    return {name: best(r) for name, r in runs.items()}


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs, with every run's samples/s."""
    return max(runs, key=lambda r: r["samples_per_s"]) | {"runs": [r["samples_per_s"] for r in runs]}
