"""The loader sweep's report (`python -m updown_vqa.report OUTPUT_DIR [--out DIR]` is its command).

Reads every job's `result.json` under OUTPUT_DIR (a `make sweep-loader` multirun), writes
throughput.md, throughput.csv and throughput.png (to OUTPUT_DIR unless --out), and prints the table
and the speed-up of one DataLoader worker over none for each batch size.
"""

from __future__ import annotations

import csv
import glob
import json
import os

from hydra.experimental.callback import Callback

COLUMNS = ["batch_size", "num_workers", "pin_memory", "loader_samples_per_s", "loader_mb_per_s",
           "train_samples_per_s", "error"]


def load_rows(folder: str) -> list[dict]:
    """One row per job, sorted by pinned memory, batch size and workers."""
    rows = []
    for path in glob.glob(os.path.join(folder, "**", "result.json"), recursive=True):
        with open(path) as f:
            result = json.load(f)
        rows.append({"batch_size": result["batch_size"], "num_workers": result["num_workers"],
                     "pin_memory": result["pin_memory"], "device": result.get("device", ""),
                     "loader_samples_per_s": result.get("loader", {}).get("samples_per_s"),
                     "loader_mb_per_s": result.get("loader", {}).get("mb_per_s"),
                     "train_samples_per_s": result.get("train", {}).get("samples_per_s"),
                     "error": result.get("error", "")})
    return sorted(rows, key=lambda r: (not r["pin_memory"], r["batch_size"], r["num_workers"]))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}"
    return "" if value is None else str(value)


def markdown(rows: list[dict]) -> str:
    header = ["batch", "workers", "pinned", "loader samples/s", "loader MB/s", "train samples/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        cells = [_cell(r[c]) for c in COLUMNS[:6]]
        lines.append("| " + " | ".join(cells) + " |" + (f" error: {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def speedups(rows: list[dict]) -> list[str]:
    """For each batch size and pinning: samples/s with 1 worker over 0, loader alone and training."""
    by_key = {(r["pin_memory"], r["batch_size"], r["num_workers"]): r for r in rows}  # rows are sorted
    lines = []
    for (pinned, batch, workers), zero in by_key.items():
        one = by_key.get((pinned, batch, 1))
        if workers != 0 or one is None:
            continue
        ratios = [f"{name} {one[key] / zero[key]:.2f}x" for name, key in
                  (("loader", "loader_samples_per_s"), ("train", "train_samples_per_s")) if one[key] and zero[key]]
        lines.append(f"batch {batch}, pin_memory={pinned}: 1 worker vs 0: " + ", ".join(ratios))
    return lines


def plot(rows: list[dict], path: str) -> None:
    """Samples/s against num_workers, one line per batch size; solid pinned, dashed not pinned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    batches = sorted({r["batch_size"] for r in rows})
    colors = {b: plt.cm.viridis(i / max(1, len(batches) - 1)) for i, b in enumerate(batches)}
    for ax, key, title in zip(axes, ("loader_samples_per_s", "train_samples_per_s"), ("loader alone", "training steps")):
        for (batch, pinned), points in _lines(rows, key).items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, "o-" if pinned else "s--", color=colors[batch],
                    label=f"batch {batch}{', pinned' if pinned else ''}")
        ax.set(title=title, xlabel="num_workers", ylabel="samples/s")
        ax.set_xticks(sorted({r["num_workers"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"loader sweep on {rows[0]['device']}" if rows else "loader sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lines(rows: list[dict], key: str) -> dict:
    lines: dict = {}
    for r in sorted(rows, key=lambda r: r["num_workers"]):
        if r[key]:
            lines.setdefault((r["batch_size"], r["pin_memory"]), []).append((r["num_workers"], r[key]))
    return lines


def write_report(folder: str, out: str | None = None) -> str:
    """Write throughput.md/.csv/.png for the sweep in `folder`; returns the text it prints."""
    rows = load_rows(folder)
    if not rows:
        raise FileNotFoundError(f"{folder}: no result.json in any job folder; run `make sweep-loader` first")
    out = out or folder
    os.makedirs(out, exist_ok=True)
    text = markdown(rows) + "\n\n" + "\n".join(speedups(rows)) + "\n"
    with open(os.path.join(out, "throughput.md"), "w") as f:
        f.write(f"Loader sweep on {rows[0]['device']}\n\n{text}")
    with open(os.path.join(out, "throughput.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["device", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, os.path.join(out, "throughput.png"))
    return text


class ReportCallback(Callback):
    """Hydra callback: write the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = config.hydra.sweep.dir
        print(write_report(folder) + f"report: {folder}/throughput.md, .csv, .png")
