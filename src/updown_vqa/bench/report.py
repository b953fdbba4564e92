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

COLUMNS = ["batch_size", "num_workers", "pin_memory", "loader_samples_per_s", "loader_mb_per_s",
           "train_samples_per_s", "max_worker_mb", "error"]
IMAGE_COLUMNS = ["loader_images_per_s", "train_images_per_s", "train_step_s"]


def load_rows(folder: str) -> list[dict]:
    """One row per job, sorted by pinned memory, batch size and workers."""
    results = []
    for path in glob.glob(os.path.join(folder, "**", "result.json"), recursive=True):
        with open(path) as f:
            results.append(json.load(f))
    return rows_of(results)


def rows_of(results: list[dict]) -> list[dict]:
    """Report rows of job results ({batch_size, num_workers, pin_memory, device, loader, train})."""
    rows = [{"batch_size": r["batch_size"], "num_workers": r["num_workers"], "pin_memory": r["pin_memory"],
             "device": r.get("device", ""),
             "loader_samples_per_s": r.get("loader", {}).get("samples_per_s"),
             "loader_mb_per_s": r.get("loader", {}).get("mb_per_s"),
             "train_samples_per_s": r.get("train", {}).get("samples_per_s"),
             "max_worker_mb": r.get("loader", {}).get("memory", {}).get("max_worker_mb"),
             "loader_images_per_s": r.get("loader", {}).get("images_per_s"),
             "train_images_per_s": r.get("train", {}).get("images_per_s"),
             "train_step_s": r.get("train", {}).get("step_s"),
             "error": r.get("error", "")} for r in results]
    return sorted(rows, key=lambda r: (not r["pin_memory"], r["batch_size"], r["num_workers"]))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}"
    return "" if value is None else str(value)


def markdown(rows: list[dict]) -> str:
    header = ["batch", "workers", "pinned", "loader samples/s", "loader MB/s", "train samples/s",
              "largest worker PSS MB"]
    columns = COLUMNS[:7]
    if any(r.get("loader_images_per_s") for r in rows):  # an image sweep (model.visual=grid)
        header += ["loader images/s", "train images/s", "train step s"]
        columns += IMAGE_COLUMNS
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        cells = [_cell(r.get(c)) if c != "train_step_s" or r.get(c) is None else f"{r[c]:.2f}" for c in columns]
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


def model_bound(rows: list[dict]) -> list[str]:
    """Where training is far slower than the loader alone (a CPU), the workers cannot show in it."""
    pairs = [(r["train_samples_per_s"], r["loader_samples_per_s"]) for r in rows
             if r["train_samples_per_s"] and r["loader_samples_per_s"]]
    if not pairs or max(t / lo for t, lo in pairs) > 0.25:
        return []
    return [f"Training is model-bound here: training steps give at most {max(t for t, _ in pairs):.0f} samples/s "
            f"while the loader alone gives at least {min(lo for _, lo in pairs):.0f}, so num_workers cannot "
            "change the training figure and its differences between rows are noise. This sweep cannot show "
            "the note's \"one worker is about 20% faster than none, more add nothing\": only a machine where "
            "the model is fast (a GPU: `make bench-gpu`) can answer it."]


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


def report_text(rows: list[dict]) -> str:
    """The table, the one-worker speed-ups and what the sweep can and cannot say."""
    return markdown(rows) + "\n\n" + "\n".join(speedups(rows) + model_bound(rows)) + "\n"


def write_report(folder: str, out: str | None = None) -> str:
    """Write throughput.md/.csv/.png for the sweep in `folder`; returns the text it prints."""
    rows = load_rows(folder)
    if not rows:
        raise FileNotFoundError(f"{folder}: no result.json in any job folder; run `make sweep-loader` first")
    out = out or folder
    os.makedirs(out, exist_ok=True)
    text = report_text(rows)
    with open(os.path.join(out, "throughput.md"), "w") as f:
        f.write(f"Loader sweep on {rows[0]['device']}\n\n{text}")
    with open(os.path.join(out, "throughput.csv"), "w", newline="") as f:
        images = IMAGE_COLUMNS if any(r.get("loader_images_per_s") for r in rows) else []
        writer = csv.DictWriter(f, fieldnames=["device", *COLUMNS, *images], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, os.path.join(out, "throughput.png"))
    return text
