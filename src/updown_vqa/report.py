"""Tabulate and plot a loader sweep: `python -m updown_vqa.report OUTPUT_DIR [--out DIR]`.

Writes throughput.md, .csv and .png (to OUTPUT_DIR unless --out); see `updown_vqa.bench.report`.
"""

from __future__ import annotations

import argparse
import sys

from updown_vqa.bench.report import write_report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.report", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", help="a sweep folder, e.g. outputs/multirun/sweep_loader/<time>")
    parser.add_argument("--out", help="where to write the report (default: OUTPUT_DIR)")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.output_dir, args.out), end="")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
