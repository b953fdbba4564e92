"""The Hydra callback of the loader sweep (conf/sweep_loader.yaml): the report when the multirun ends.

Apart from bench/report.py so that the report itself needs no Hydra (`make bench-gpu` runs without it).
"""

from __future__ import annotations

from hydra.experimental.callback import Callback

from updown_vqa.bench.report import write_report


class ReportCallback(Callback):
    """Write the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = config.hydra.sweep.dir
        print(write_report(folder) + f"report: {folder}/throughput.md, .csv, .png")
