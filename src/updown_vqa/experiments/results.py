"""Today's numbers from run folders: `python -m updown_vqa.report --results DIR [DIR ...]`.

One Markdown table, rows grouped by task (vqa, caption, caption scst, detect), one row per finished
run: the command that made it, its best monitored value and the other headline metrics at that epoch,
epochs, wall time, the machine, its load, and the date, all read from the run's finished.json and
metrics.csv. The README's results table is this output, not retyped.
"""

from __future__ import annotations

import math

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_write
from updown_vqa.experiments.runs import Run, find_runs

TASK_ORDER = ("vqa", "caption", "caption scst", "detect")
# Besides the monitored value: what a reader of each task looks at next (when the run logged it).
ALSO = {"val/acc": ("val/acc_yes_no", "val/acc_number", "val/acc_other"),
        "val/cider": ("val/bleu4",), "val/map50": ("val/map", "val/attr_acc")}


def _number(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def value_cell(run: Run) -> str:
    """`val/acc **95.23** (val/acc_yes_no 96.33, ...)`: the best monitored value and its epoch's others."""
    best = run.summary.get("best")
    if best is None:
        return "–"
    at_best = run.best_validation()
    others = [f"{k.removeprefix('val/')} {_number(at_best[k])}" for k in ALSO.get(run.monitor, ())
              if math.isfinite(at_best.get(k, math.nan))]
    return f"{run.monitor} **{_number(float(best))}**" + (f" ({', '.join(others)})" if others else "")


def wall_cell(seconds) -> str:
    if seconds is None or not math.isfinite(float(seconds)):
        return "–"
    minutes, secs = divmod(round(float(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def epochs_cell(run: Run) -> str:
    epochs = run.summary.get("epochs")
    reached = "–" if epochs is None else str(epochs)
    return reached + (" (max_time)" if run.summary.get("max_time_reached") else "")


def machine_cell(run: Run) -> str:
    machine = run.summary.get("machine", "–")
    load = run.summary.get("load_average")
    return machine + ("" if load is None else f"; load {load:.1f}")


def task_of(run: Run) -> str:
    return run.summary.get("task") or {"val/acc": "vqa", "val/cider": "caption", "val/map50": "detect"}.get(
        run.monitor, "?")


def results_table(runs: list[Run]) -> str:
    """The Markdown table of the finished runs (then the runs left out, by path)."""
    finished = [r for r in runs if r.status == "finished"]
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    finished.sort(key=lambda r: (order.get(task_of(r), len(order)), task_of(r), r.summary.get("date", ""), r.path))
    lines = ["| task | command | result | epochs | wall time | machine | date |", "|---|---|---|---|---|---|---|"]
    for run in finished:
        command = run.summary.get("command")
        lines.append("| " + " | ".join([
            task_of(run), f"`{command}`" if command else f"({run.path})", value_cell(run), epochs_cell(run),
            wall_cell(run.summary.get("wall_seconds")), machine_cell(run), run.summary.get("date", "–")]) + " |")
    left_out = [r for r in runs if r.status != "finished"]
    if left_out:
        lines += ["", "Not in the table (not finished): " + ", ".join(f"{r.path} ({r.status})" for r in left_out)]
    return "\n".join(lines) + "\n"


def write_results(folders: list[str], out: str | None = None) -> str:
    """The results table of the runs at or under `folders`; also written to `out` (a file) if given."""
    runs = find_runs(folders)
    if not any(r.status == "finished" for r in runs):
        raise UpdownError(f"{', '.join(folders)}: no finished run (checkpoints/finished.json) at or under it; "
                          "name run folders whose training has finished")
    text = results_table(runs)
    if out:
        with atomic_write(out) as f:
            f.write(text)
    return text
