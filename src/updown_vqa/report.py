"""Tabulate and plot runs: `python -m updown_vqa.report DIR [DIR ...] [--out OUT] [--baseline GROUP]`,
or `--results` for today's numbers: one table of finished runs by task (command, result, wall time,
machine, date; `updown_vqa.experiments.results`), printed, and written to --out FILE if given.

Training runs (a run folder, a multirun folder, or several) give report.md, report.csv and curves.png,
grouped by the overrides that differ, seeds as repetitions (`updown_vqa.experiments.report`). A loader
sweep (folders of result.json, `make sweep-loader`) gives throughput.md, .csv and .png
(`updown_vqa.bench.report`). Both are written to the first DIR unless --out.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

from updown_vqa.bench import report as loader_report
from updown_vqa.core.errors import UpdownError
from updown_vqa.experiments import report as runs_report
from updown_vqa.experiments import results


def is_loader_sweep(folder: str) -> bool:
    return bool(glob.glob(os.path.join(folder, "**", "result.json"), recursive=True))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run or multirun folders, or one loader sweep folder")
    parser.add_argument("--out", help="where to write the report (default: the first DIR)")
    parser.add_argument("--baseline", help="the group to compare with, e.g. ablation=base")
    parser.add_argument("--results", action="store_true",
                        help="one table of finished runs by task: command, result, wall time, machine, date")
    args = parser.parse_args(argv)
    try:
        if args.results:
            print(results.write_results(args.dirs, args.out), end="")
        elif args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UpdownError(f"--out {args.out}: an existing file; --out names the folder to write the report "
                              "files into (report.md, report.csv, curves.png)")
        elif is_loader_sweep(args.dirs[0]):
            print(loader_report.write_report(args.dirs[0], args.out), end="")
        else:
            print(runs_report.write_report(args.dirs, args.out, args.baseline), end="")
    except (FileNotFoundError, UpdownError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
