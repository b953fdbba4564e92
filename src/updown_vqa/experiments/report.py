"""The runs report: one row per group of runs (seeds as repetitions), against a baseline group.

`python -m updown_vqa.report DIR [DIR ...] [--out OUT] [--baseline GROUP]` is its command. Writes
report.md, report.csv and curves.png: per group the best monitored value as mean ± std over seeds,
the other val/* metrics at each run's best epoch, epochs reached and wall time; against the baseline,
the mean paired difference over seeds and the two-sided paired t-test's p-value (n >= 3). Failed and
unfinished runs are listed, never averaged.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict

from updown_vqa.core.errors import UpdownError
from updown_vqa.experiments.runs import Run, find_runs, group_keys, group_name
from updown_vqa.experiments.stats import mean_std, paired_t_test

MIN_PAIRS = 3  # fewer paired seeds: the difference is shown, no p-value


def run_values(run: Run) -> dict[str, float]:
    """`best` (the monitored value at the best validation), every val/* there, epochs and wall seconds."""
    values = {k: v for k, v in run.best_validation().items() if k != "epoch"}
    best = values.get(run.monitor, run.summary.get("best", math.nan))
    values |= {"best": float(best), "epochs": float(max(run.curves) + 1 if run.curves else math.nan),
               "wall_seconds": float(run.summary.get("wall_seconds", math.nan))}
    return values


def find_baseline(names: list[str], baseline: str) -> str:
    """The group named `baseline`, or the one group holding all of its `key=value` items."""
    if baseline in names:
        return baseline
    wanted = set(baseline.split(","))
    matches = [n for n in names if wanted <= set(n.split(","))]
    if len(matches) > 1:  # `ablation=base` also names base with every other key unset
        matches = [n for n in matches if all(i.endswith("=-") for i in set(n.split(",")) - wanted)] or matches
    if len(matches) != 1:
        raise UpdownError(f"--baseline {baseline}: {'no' if not matches else len(matches)} groups match; "
                          f"name one of: {', '.join(names)}")
    return matches[0]


def compare(runs: list[Run], base_runs: list[Run]) -> dict:
    """Mean ± std of the paired differences of `best` over the seeds both groups ran, and the p-value."""
    ours = {r.seed: run_values(r)["best"] for r in runs}
    theirs = {r.seed: run_values(r)["best"] for r in base_runs}
    seeds = sorted(set(ours) & set(theirs))
    diff, diff_std = mean_std([ours[s] - theirs[s] for s in seeds])
    p = paired_t_test([ours[s] for s in seeds], [theirs[s] for s in seeds])[1] \
        if len(seeds) >= MIN_PAIRS else math.nan
    return {"diff_mean": diff, "diff_std": diff_std, "pairs": len(seeds), "p": p}


def group_runs(runs: list[Run], baseline: str | None = None) -> dict[str, list[Run]]:
    """The finished runs by group name; names from all runs, so a group keeps its name as seeds finish."""
    keys = group_keys(runs, named=baseline)
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.status == "finished":
            groups[group_name(run, keys)].append(run)
    return dict(sorted(groups.items()))


def summarise(groups: dict[str, list[Run]], baseline: str | None = None) -> tuple[list[dict], list[str]]:
    """One row per group of finished runs, and the metrics in them (best first)."""
    finished = [r for members in groups.values() for r in members]
    base = find_baseline(list(groups), baseline) if baseline and groups else None
    others = {k for r in finished for k in run_values(r) if k.startswith("val/") and k != r.monitor}
    metrics = ["best", *sorted(others), "epochs", "wall_seconds"]
    rows = []
    for name, members in groups.items():
        row = {"group": name, "n": len(members), "monitor": members[0].monitor,
               "seeds": " ".join(sorted(r.seed for r in members))}
        for metric in metrics:
            values = [v for v in (run_values(r).get(metric, math.nan) for r in members) if math.isfinite(v)]
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(values)
        if base is not None:
            row |= {"baseline": base, **compare(members, groups[base])}
        rows.append(row)
    return rows, metrics


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def markdown(rows: list[dict], metrics: list[str], runs: list[Run]) -> str:
    """The table, then the runs that are not in it."""
    monitor = rows[0]["monitor"] if rows else "val/acc"
    names = [f"best {monitor}" if m == "best" else m.replace("wall_seconds", "wall (s)") for m in metrics]
    compared = bool(rows) and "baseline" in rows[0]
    header = ["group", "n", *names] + ([f"Δ vs {rows[0]['baseline']}", "p"] if compared else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["group"], str(row["n"])]
        cells += [_pm(row[f"{m}_mean"], row[f"{m}_std"], 0 if m == "wall_seconds" else
                      1 if m == "epochs" else 2) for m in metrics]
        if compared:
            same = row["group"] == row["baseline"]
            p = "–" if same or not math.isfinite(row["p"]) else f"{row['p']:.3f}"
            cells += ["–" if same else _pm(row["diff_mean"], row["diff_std"]) + f" (n={row['pairs']})", p]
        lines.append("| " + " | ".join(cells) + " |")
    left_out = [r for r in runs if r.status != "finished"]
    if left_out:
        lines += ["", "Not averaged:", ""]
        lines += [f"- {r.path}: {r.status}" + (f" ({r.error})" if r.error else
                  f" (epochs logged: {len(r.curves)})") for r in left_out]
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[Run]], rows: list[dict], path: str) -> None:
    """Validation curves of the monitored metric: per group the mean over seeds and a ± std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        members = groups[row["group"]]
        epochs = sorted({e for r in members for e in r.curves})
        stats = [mean_std([r.curves[e][r.monitor] for r in members if r.monitor in r.curves.get(e, {})])
                 for e in epochs]
        mean = [m for m, _ in stats]
        std = [s if math.isfinite(s) else 0.0 for _, s in stats]
        ax.plot(epochs, mean, marker="o", markersize=3, label=f"{row['group']} (n={row['n']})")
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(rows[0]["monitor"] if rows else "")
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folders: list[str], out: str | None = None, baseline: str | None = None) -> str:
    """report.md, report.csv and curves.png of the runs under `folders`, in `out` (default: the first)."""
    runs = find_runs(folders)
    if not runs:
        raise UpdownError(f"{', '.join(folders)}: no run folder (.hydra/overrides.yaml) and no result.json "
                          "of a loader sweep in it; name a run or multirun folder")
    groups = group_runs(runs, baseline)
    rows, metrics = summarise(groups, baseline)
    out = out or folders[0]
    os.makedirs(out, exist_ok=True)
    text = markdown(rows, metrics, runs)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(f"Runs in {', '.join(folders)}; seeds are repetitions.\n\n{text}")
    with open(os.path.join(out, "report.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["group"])
        writer.writeheader()
        writer.writerows(rows)
    plot(groups, rows, os.path.join(out, "curves.png"))
    return text
