"""Training runs on disk: find them, read their overrides, status and validation curves.

A run folder is one that Hydra wrote `.hydra/overrides.yaml` into: a single run (outputs/runs/NAME)
or a multirun job (outputs/multirun/NAME/<job>). Its status comes from `checkpoints/finished.json`
(finished), `failed.json` (a multirun job that ended with an error) or neither (unfinished).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.run_files import CHECKPOINTS, FAILED, FINISHED, read_record

IGNORED = ("paths.", "resume", "hydra.", "hydra/")  # where a run writes, not what it trains
SKIPPED_FOLDERS = {CHECKPOINTS, ".hydra", ".submitit", "tensorboard"}


@dataclass
class Run:
    path: str
    overrides: dict[str, str]          # key -> value as written on the command line, without seed
    seed: str
    status: str                        # finished | failed | unfinished
    monitor: str = "val/acc"
    mode: str = "max"
    error: str = ""
    summary: dict = field(default_factory=dict)  # finished.json
    curves: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> {val/*: value} (its last)
    validations: list[dict[str, float]] = field(default_factory=list)  # every validation: {epoch, val/*}

    def best_validation(self) -> dict[str, float]:
        """The validation with the best monitored value (the best checkpoint's), {} if none. Runs that
        validate several times an epoch (SCST) have their best anywhere in an epoch, not at its end."""
        scored = [i for i, v in enumerate(self.validations) if math.isfinite(v.get(self.monitor, math.nan))]
        if not scored:
            return {}
        sign = 1 if self.mode == "max" else -1  # ties: the first, as ModelCheckpoint keeps it
        return self.validations[max(scored, key=lambda i: (sign * self.validations[i][self.monitor], -i))]


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """`key=value` strings (Hydra's overrides.yaml) as a dict; `+`/`++`/`~` prefixes dropped."""
    out = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_validations(path: str) -> list[dict[str, float]]:
    """Every validation row of a CSVLogger metrics.csv, in order: {"epoch": e, val/* metric: value}."""
    rows: list[dict[str, float]] = []
    if not os.path.isfile(path):
        return rows
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
                if values and row.get("epoch") not in ("", None):
                    rows.append({"epoch": int(float(row["epoch"])), **values})
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise UpdownError(f"{path}: not a metrics.csv of CSVLogger ({type(e).__name__}: {e}); move it away or "
                          "restore it, then rerun") from None
    return rows


def curves_of(validations: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    """epoch -> {val/* metric: value} at the epoch's last validation (what the plots draw)."""
    curves: dict[int, dict[str, float]] = {}
    for row in validations:
        curves.setdefault(int(row["epoch"]), {}).update({k: v for k, v in row.items() if k != "epoch"})
    return curves


def read_run(path: str) -> Run:
    """The run in `path` (a folder holding `.hydra/overrides.yaml`)."""
    overrides = parse_overrides(list(OmegaConf.load(os.path.join(path, ".hydra", "overrides.yaml"))))
    seed = overrides.pop("seed", "")
    overrides = {k: v for k, v in overrides.items() if not k.startswith(IGNORED)}
    validations = read_validations(os.path.join(path, "metrics.csv"))
    run = Run(path, overrides, seed, "unfinished", curves=curves_of(validations), validations=validations)
    config_path = os.path.join(path, ".hydra", "config.yaml")
    if os.path.isfile(config_path):
        checkpoint = OmegaConf.load(config_path).get("checkpoint") or {}
        run.monitor, run.mode = checkpoint.get("monitor", run.monitor), checkpoint.get("mode", run.mode)
    finished = os.path.join(path, CHECKPOINTS, FINISHED)
    failed = os.path.join(path, FAILED)
    if os.path.isfile(finished):  # a job that failed once and finished when run again is finished
        run.summary = read_record(finished)
        run.status, run.monitor = "finished", run.summary.get("monitor", run.monitor)
    elif os.path.isfile(failed):
        run.status, run.error = "failed", read_record(failed).get("error", "")
    return run


def find_runs(folders: list[str]) -> list[Run]:
    """Every run folder at or under each of `folders`, in path order."""
    paths = []
    for folder in folders:
        for root, dirs, _ in os.walk(folder):
            if os.path.isfile(os.path.join(root, ".hydra", "overrides.yaml")):
                paths.append(root)
                dirs[:] = []  # a run's own subfolders hold no runs
            else:
                dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
    return [read_run(p) for p in sorted(set(paths))]


def group_keys(runs: list[Run], named: str | None = None) -> list[str]:
    """The override keys whose values differ between runs (a key set in only some runs differs),
    and those that `named` (`key=value,...`, a baseline) names."""
    keys = sorted({k for run in runs for k in run.overrides})
    wanted = {item.partition("=")[0] for item in (named or "").split(",")}
    return [k for k in keys if k in wanted or len({run.overrides.get(k) for run in runs}) > 1]


def group_name(run: Run, keys: list[str]) -> str:
    """`key=value,...` over the differing keys (`key=-` where the run leaves it unset); `all` if none."""
    return ",".join(f"{k}={run.overrides.get(k, '-')}" for k in keys) or "all"
