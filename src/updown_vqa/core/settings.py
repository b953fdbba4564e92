"""Every setting of a command checked once, before any work starts, from one declaration per config
group: a bad one is one error naming the key, its value and what is allowed.

A declaration maps a key of its group to a rule: `Number` (an int or a float in a range; NaN and
infinities are out of range unless the rule allows them), `OneOf` (choices, types compared too:
`true` is not `1`), or a function `(key, value)` that raises UpdownError. Unset (null) keys are not
checked. Each package declares its own groups: the class a group instantiates carries `SETTINGS`
(the data and model groups), a command's module its own keys, and this module the groups of core
(the trainer, the checkpoints, the run itself); `check_settings` runs them for `train`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from updown_vqa.core.errors import UpdownError


@dataclass(frozen=True)
class Number:
    """An int (no bools, no fractions) or a float (ints too) within [low, high]."""

    kind: str = "int"
    low: float | None = None
    high: float | None = None
    nonfinite: bool = False  # NaN and +-inf allowed

    def __call__(self, key: str, value) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and self.kind == "int":
            ok = isinstance(value, int)
        if ok and not math.isfinite(value):
            ok = self.nonfinite
        elif ok:
            ok = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if not ok:
            raise UpdownError(f"{key}={value!r}: must be {self.describe()}")

    def describe(self) -> str:
        """'an integer >= 1', 'a number in [0, 0.999]'."""
        what = "an integer" if self.kind == "int" else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            return f"{what} in [{low}, {high}]"
        if low is not None:
            return f"{what} >= {low}"
        return f"{what} <= {high}" if high is not None else what


@dataclass(frozen=True)
class OneOf:
    """One of `choices`, compared with their types (the YAML `true` is not the string 'true' nor 1)."""

    choices: tuple

    def __call__(self, key: str, value) -> None:
        if not any(value == c and type(value) is type(c) for c in self.choices):
            allowed = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
            raise UpdownError(f"{key}={value!r}: must be one of {allowed}")


FLAG = OneOf((True, False))
SIZE = Number("int", 1, 2**16)  # a layer width: 1 to 65536, not an allocation that fails later
Rules = Mapping[str, Callable]


def check_group(cfg, group: str, rules: Rules) -> None:
    """Check the keys of `cfg.<group>` (the top level for '') that `rules` declares."""
    from omegaconf import (
        OmegaConf,  # here, not at import: bench's check_int_args runs without omegaconf
    )

    for key, rule in rules.items():
        full = f"{group}.{key}" if group else key
        value = OmegaConf.select(cfg, full, default=None, throw_on_missing=False)
        if value is not None:
            rule(full, value)


def declared(node) -> Rules:
    """The SETTINGS of the class a group's `_target_` names ({} when it declares none)."""
    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        return {}
    from hydra.utils import get_class

    try:
        return getattr(get_class(str(target)), "SETTINGS", {})
    except Exception as e:  # noqa: BLE001 (Hydra wraps the import error in its own)
        raise UpdownError(f"_target_={target}: cannot import it ({e})") from None


def check_settings(cfg) -> None:
    """Every setting of a training run: the run, trainer and checkpoint groups, the data and model
    groups by their classes' declarations, each callback's, and the monitored metric."""
    check_group(cfg, "", RUN)
    check_group(cfg, "trainer", TRAINER)
    check_group(cfg, "checkpoint", CHECKPOINT)
    for group in ("data", "model"):
        if cfg.get(group) is not None:
            check_group(cfg, group, declared(cfg[group]))
    for name, node in (cfg.get("callbacks") or {}).items():
        if node:
            check_group(cfg, f"callbacks.{name}", declared(node))
    check_monitor(cfg)


def check_monitor(cfg) -> None:
    """`checkpoint.monitor` names a metric the model logs (its class's LOGGED patterns)."""
    monitor = cfg.get("checkpoint", {}).get("monitor")
    model = cfg.get("model")
    if not monitor or model is None or not model.get("_target_"):
        return
    from hydra.utils import get_class

    logged = getattr(get_class(str(model._target_)), "LOGGED", None)
    if logged and not any(fnmatch.fnmatchcase(str(monitor), pattern) for pattern in logged):
        raise UpdownError(f"checkpoint.monitor={monitor!r}: this model logs no such metric; choose one of "
                          f"{', '.join(logged)}")


def run_name(key: str, value) -> None:
    """A run name is one folder under paths.log_dir/runs: no '/', no '..'."""
    text = str(value)
    if not text or "/" in text or "\\" in text or text in (".", "..") or "\0" in text:
        raise UpdownError(f"{key}={value!r}: a run name is one folder name under paths.log_dir/runs "
                          "(no '/', no '..'); choose another")


def duration(key: str, value) -> None:
    """Lightning's max_time: 'DD:HH:MM:SS' or a mapping of days, hours, minutes, seconds."""
    if hasattr(value, "keys"):
        if set(value.keys()) <= {"days", "hours", "minutes", "seconds"}:
            return
    elif re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", str(value)):
        return
    raise UpdownError(f"{key}={value!r}: must be DD:HH:MM:SS (e.g. 00:12:00:00) or null")


def accelerator(key: str, value) -> None:
    OneOf(("auto", "cpu", "gpu", "cuda", "mps", "tpu"))(key, value)
    if value in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UpdownError(f"{key}={value}: no CUDA GPU is visible here; use {key}=auto or cpu")


def devices(key: str, value) -> None:
    """A count (-1: all), 'auto', or a list of device indices."""
    if isinstance(value, (int, float)):
        Number("int", -1, 4096)(key, value)


def batches(key: str, value) -> None:
    """Lightning's limit_*_batches and val_check_interval: a fraction in [0, 1] or a count."""
    (Number("int", 0) if isinstance(value, int) and not isinstance(value, bool) else Number("float", 0, 1))(key, value)


RUN: Rules = {"seed": Number("int", 0, 2**32 - 1), "nonfinite": OneOf(("error", "skip")), "name": run_name,
              "stage": OneOf(("xe", "scst"))}  # the training stage; extract's trunk cut is its own key, trunk=
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", 64, 32, 16, "64", "32",
              "16", "bf16", "transformer-engine", "transformer-engine-float16")
TRAINER: Rules = {
    "max_epochs": Number("int", -1), "max_steps": Number("int", -1), "min_epochs": Number("int", 0),
    "devices": devices, "num_nodes": Number("int", 1), "accumulate_grad_batches": Number("int", 1),
    "gradient_clip_val": Number("float", 0), "gradient_clip_algorithm": OneOf(("norm", "value")),
    "deterministic": OneOf((True, False, "warn")), "precision": OneOf(PRECISIONS),
    "max_time": duration, "accelerator": accelerator, "log_every_n_steps": Number("int", 1),
    "num_sanity_val_steps": Number("int", -1), "check_val_every_n_epoch": Number("int", 1),
    "limit_train_batches": batches, "limit_val_batches": batches, "val_check_interval": batches,
    "fast_dev_run": lambda key, value: (FLAG if isinstance(value, bool) else Number("int", 0))(key, value),
    "benchmark": FLAG, "use_distributed_sampler": FLAG, "enable_progress_bar": FLAG,
}
CHECKPOINT: Rules = {
    "save_top_k": Number("int", -1), "every_n_minutes": Number("float", 1e-9),
    "every_n_train_steps": Number("int", 1), "mode": OneOf(("min", "max")), "requeue": FLAG,
}


def check_int_args(parser, args, non_negative=("num_workers", "seed")):
    """argparse's integer options all positive (those named in `non_negative` may be 0): else the
    parser's one error line and exit status 2."""
    for name, value in vars(args).items():
        if isinstance(value, int) and not isinstance(value, bool):
            low = 0 if name in non_negative else 1
            if value < low:
                parser.error(f"--{name.replace('_', '-')} {value}: must be an integer >= {low}")
    return args
