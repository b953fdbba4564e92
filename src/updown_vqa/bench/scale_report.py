"""The report of `bench scale`: a table (printed and as Markdown) and the JSON, scale_<F>_<dtype>.*"""

from __future__ import annotations

import os

from updown_vqa.core.io import atomic_write, write_json

COLUMNS = ("stage", "wall s", "CPU s", "peak RSS MB", "worker PSS MB", "output MB", "rate", "load")


def _rate(stage: dict) -> str:
    """The stage's throughput or memory slope, in words."""
    if "samples_per_s" in stage:
        return f"{stage['samples_per_s']:.0f} q/s, {stage['mb_per_s']:.0f} MB/s ({stage['cache']})"
    if "rss_slope_mb_per_100_steps" in stage:
        return (f"{stage['step_s']:.2f} s/step; RSS slope {stage['rss_slope_mb_per_100_steps']:+.1f} MB/100 "
                f"steps, workers {stage['worker_pss_slope_mb_per_100_steps']:+.1f}")
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
    sizes = report["sizes"]
    return (f"VQA v2 at fraction {report['fraction']:g} ({report['dtype']} store): "
            f"{sizes['train2014']['questions']:,} + {sizes['val2014']['questions']:,} questions, "
            f"{sizes['train2014']['images']:,} + {sizes['val2014']['images']:,} images of 36 x 2048; "
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
