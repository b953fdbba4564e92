"""The report of `bench scale`: a table (printed and as Markdown) and the JSON, scale_<F>_<dtype>.*"""

from __future__ import annotations

import os

from updown_vqa.core.io import atomic_write, write_json

COLUMNS = ("stage", "wall s", "CPU s", "peak RSS MB", "worker PSS MB", "output MB", "rate", "load")


def _rate(stage: dict) -> str:
    """The stage's throughput or memory slope, in words."""
    if "samples_per_s" in stage:
        return (f"epoch {stage['epoch_s']:.1f} s: {stage['samples_per_s']:.0f} q/s, {stage['mb_per_s']:.0f} MB/s "
                f"({stage['cache']})")
    if "rss_slope_mb_per_100_steps" in stage:
        error = stage.get("rss_slope_se_mb_per_100_steps")
        error = "" if error is None else f" ± {error:.1f}"
        return (f"{stage['step_s']:.2f} s/step; RSS slope {stage['rss_slope_mb_per_100_steps']:+.1f}{error} MB/100 "
                f"steps, workers {stage['worker_pss_slope_mb_per_100_steps']:+.1f}")
    if "tsv_cpu_s" in stage:
        return (f"{stage['tsv_gb']:.2f} GB TSV in through a pipe (its generator: {stage['tsv_cpu_s']:.0f} CPU s, "
                f"{stage['tsv_peak_rss_mb']:.0f} MB)")
    if "tsv_gb" in stage:
        return f"{stage['tsv_gb']:.2f} GB TSV in"
    return ""


def _cell(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def rows(report: dict) -> list[list[str]]:
    """One row of strings per stage, in COLUMNS order."""
    out = []
    for s in report["stages"]:
        pss = s.get("max_worker_pss_mb") or (max(s["worker_pss_mb"]) if s.get("worker_pss_mb") else None)
        load = "" if "load_before" not in s else f"{s['load_before']:.1f}-{s['load_after']:.1f}"
        out.append([s["stage"], _cell(s.get("wall_s")), _cell(s.get("cpu_s")), _cell(s.get("peak_rss_mb"), 0),
                    _cell(pss, 0), _cell(s.get("output_mb"), 0), _rate(s), load])
    return out


def table(report: dict, markdown: bool = False) -> str:
    """The stages as an aligned text table, or a Markdown one."""
    body = rows(report)
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in [list(COLUMNS), *body])


def heading(report: dict) -> str:
    sizes, settings = report["sizes"], report["settings"]
    return (f"VQA v2 at fraction {report['fraction']:g} ({report['dtype']} store): "
            f"{sizes['train2014']['questions']:,} + {sizes['val2014']['questions']:,} questions, "
            f"{sizes['train2014']['images']:,} + {sizes['val2014']['images']:,} images of 36 x 2048; "
            f"train: {settings['steps']} steps at hidden {settings['hidden_dim']}, batch "
            f"{settings['train_batch_size']}; TSV as {settings.get('tsv', 'files')}; "
            f"{report['cpus']} CPUs, {report['date']}; disk used at most {report['disk_peak_gb']:.2f} GB; "
            "load = 1-min load average before-after each stage (the machine may be shared)")


def write_reports(report: dict, out: str) -> list[str]:
    """scale_<F>_<dtype>.json and .md in `out`; returns their paths."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"scale_{report['fraction']:g}_{report['dtype']}")
    write_json(f"{stem}.json", report, indent=1)
    with atomic_write(f"{stem}.md") as f:
        f.write(f"{heading(report)}\n\n{table(report, markdown=True)}\n")
    return [f"{stem}.json", f"{stem}.md"]


H100_BF16_TFLOPS = 989.0  # dense bf16 tensor-core peak of an H100 SXM (NVIDIA's data sheet)
EFFICIENCY = 0.3  # of that peak, assumed: small GEMMs (H = 1024) and a 14-step GRU keep it well below 1
FULL_TRAIN_QUESTIONS = 443_757


def gpu_projection(report: dict, tflops: float = H100_BF16_TFLOPS, efficiency: float = EFFICIENCY) -> dict:
    """An ESTIMATE of one training epoch of full VQA v2 on one H100-class GPU: the model's FLOPs at
    `efficiency` of `tflops`, against this machine's fastest measured loader (feature_cache=none);
    the larger of the two bounds the epoch. `make bench-gpu` measures instead."""
    stages = {s["stage"]: s for s in report["stages"]}
    loader = max((s for s in report["stages"] if s["stage"].startswith("load")), key=lambda s: s["samples_per_s"])
    model_s = FULL_TRAIN_QUESTIONS * stages["train"]["train_flops_per_sample"] / (tflops * 1e12 * efficiency)
    loader_s = FULL_TRAIN_QUESTIONS / loader["samples_per_s"]
    return {"model_epoch_s": model_s, "loader_epoch_s": loader_s, "loader": loader["stage"],
            "loader_samples_per_s": loader["samples_per_s"], "tflops": tflops, "efficiency": efficiency,
            "flops_per_sample": stages["train"]["train_flops_per_sample"],
            "bound": "loader" if loader_s > model_s else "model", "epoch_s": max(model_s, loader_s)}


def plot(reports: list[dict], path: str) -> None:
    """Time (an epoch's, for the loading stages), peak RSS and output size of each stage against the
    fraction, log-log (a line of slope 1 is linear growth), as a PNG. Training runs a fixed number of
    steps at every fraction, so it is left out of the time panel; so is `generate` of a `--tsv pipe`
    run, which writes only the json (its TSV is generated while convert runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = sorted(reports, key=lambda r: r["fraction"])
    fractions = [r["fraction"] for r in reports]
    names = list(dict.fromkeys(s["stage"] for r in reports for s in r["stages"]))
    colors = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    panels = (("time", "time (s): wall, or an epoch's for load"), ("peak_rss_mb", "peak RSS (MB)"),
              ("output_mb", "output (MB)"))
    for ax, (key, label) in zip(axes, panels):
        for i, name in enumerate(names):
            if key == "time" and name in ("train", "checkpoint"):
                continue
            stages = [{} if name == "generate" and r["settings"].get("tsv") == "pipe"
                      else next((s for s in r["stages"] if s["stage"] == name), {}) for r in reports]
            values = [s.get("epoch_s", s.get("wall_s")) if key == "time" else s.get(key) for s in stages]
            points = [(f, v) for f, v in zip(fractions, values) if v]
            if points:
                ax.plot(*zip(*points), marker="o", color=colors(i), label=name)
        low, high = fractions[0], fractions[-1]
        ax.plot([low, high], [1, high / low], "k--", linewidth=0.8, label="slope 1 (linear)")
        ax.set(xscale="log", yscale="log", xlabel="fraction of VQA v2", title=label)
    handles = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    fig.legend(list(handles.values()), list(handles), fontsize=8, loc="center right")
    fig.suptitle(f"bench scale: the cost of each stage against the data's size (log-log; {reports[0]['cpus']} CPUs)")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=80)


def main(argv=None) -> None:
    """`python -m updown_vqa.bench.scale_report OUT.png REPORT.json...`: the plot, and each table."""
    import json
    import sys

    out, *paths = argv if argv is not None else sys.argv[1:]
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    plot(reports, out)
    for report in sorted(reports, key=lambda r: r["fraction"]):
        print(f"{heading(report)}\n\n{table(report, markdown=True)}\n")
    p = gpu_projection(max(reports, key=lambda r: r["fraction"]))
    print(f"PROJECTION (not a measurement): one epoch of {FULL_TRAIN_QUESTIONS:,} questions on one H100-class GPU: "
          f"model {p['flops_per_sample'] / 1e9:.2f} GFLOP/sample at {p['efficiency']:.0%} of {p['tflops']:.0f} "
          f"TFLOP/s = {p['model_epoch_s']:.1f} s; loader ({p['loader']}, {p['loader_samples_per_s']:.0f} q/s "
          f"on this machine) = {p['loader_epoch_s']:.0f} s; {p['bound']}-bound, about {p['epoch_s']:.0f} s")


if __name__ == "__main__":
    main()
