"""The numeric and choice settings of a training run, checked once when the config is composed, before
anything runs: a bad one is one error naming the key, its value and what is allowed."""

from __future__ import annotations

import math

from updown_vqa.core.errors import UpdownError

# key: (kind, lowest, highest); kind int or float; None bounds are open; missing keys are not checked
RANGES = {
    "seed": ("int", 0, None),
    "data.batch_size": ("int", 1, None),
    "data.num_workers": ("int", 0, None),
    "data.prefetch_factor": ("int", 1, None),
    "data.max_question_length": ("int", 1, None),
    "data.min_answer_count": ("int", 1, None),
    "data.worker_buffer_mb": ("int", 1, None),
    "data.worker_read_threads": ("int", 1, None),
    "model.hidden_dim": ("int", 1, None),
    "model.embed_dim": ("int", 1, None),
    "model.dropout": ("float", 0.0, 0.999),
    "model.lr": ("float", 1e-12, None),
    "model.warmup_epochs": ("float", 0.0, None),
    "model.trunk_lr_mult": ("float", 0.0, None),
    "model.trunk_frozen_stages": ("int", 0, 5),
    "data.image_size": ("int", 8, None),
    "trainer.max_epochs": ("int", -1, None),
    "trainer.devices": ("int", 1, None),
    "trainer.num_nodes": ("int", 1, None),
    "trainer.accumulate_grad_batches": ("int", 1, None),
    "checkpoint.save_top_k": ("int", -1, None),
    "checkpoint.every_n_minutes": ("float", 1e-9, None),
    "checkpoint.every_n_train_steps": ("int", 1, None),
}
CHOICES = {
    "nonfinite": ("error", "skip"),
    "model.attention": ("concat", "product"),
    "model.nonlinearity": ("gated_tanh", "relu"),
    "model.visual": ("features", "grid"),
    "model.trunk": ("resnet18", "resnet34", "resnet50", "resnet101"),
    "model.trunk_layer": ("layer2", "layer3", "layer4"),
    "model.trunk_bn": ("frozen", "train"),
    "data.feature_cache": ("none", "ram", "device"),
    "checkpoint.mode": ("min", "max"),
}


def check_number(key: str, value, kind: str, low=None, high=None) -> None:
    """Refuse `value` unless it is an `kind` (int: no bools, no fractions) within [low, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind == "int":
        ok = isinstance(value, int)
    if ok:
        ok = math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise UpdownError(f"{key}={value!r}: must be {describe(kind, low, high)}")


def describe(kind: str, low, high) -> str:
    """'an integer >= 1', 'a number in [0, 0.999]'."""
    what = "an integer" if kind == "int" else "a number"
    if low is not None and high is not None:
        return f"{what} in [{low}, {high}]"
    if low is not None:
        return f"{what} >= {low}"
    return f"{what} <= {high}" if high is not None else what


def check_settings(cfg) -> None:
    """Check every known numeric and choice setting of a run config (unset or null ones are skipped)."""
    from omegaconf import (
        OmegaConf,  # here, not at import: bench's check_int_args runs without omegaconf
    )

    for key, (kind, low, high) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None and not (key == "trainer.devices" and not isinstance(value, (int, float))):
            check_number(key, value, kind, low, high)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None and value not in allowed:
            raise UpdownError(f"{key}={value!r}: must be one of {', '.join(allowed)}")
    check_splits(cfg)


def check_splits(cfg) -> None:
    """Training validates on data.val: for VQA it needs questions, annotations and features."""
    from omegaconf import OmegaConf

    if OmegaConf.select(cfg, "data._target_", default="") != "updown_vqa.vqa.data.VQADataModule":
        return
    val = OmegaConf.select(cfg, "data.val", default=None)
    if not val:
        raise UpdownError("data.val is not set; training validates on it (give questions, annotations and "
                          "features)")
    from updown_vqa.vqa.readers import get_reader

    in_questions = getattr(get_reader(str(cfg.data.get("dataset", "vqa2"))), "ANSWERS_IN_QUESTIONS", False)
    for part in ("questions", "features") if in_questions else ("questions", "annotations", "features"):
        if not val.get(part):
            raise UpdownError(f"data.val.{part} is not set; training validates on data.val, which needs "
                              "questions, annotations and features")


def check_int_args(parser, args, non_negative=("num_workers", "seed")):
    """argparse's integer options all positive (those named in `non_negative` may be 0): else the
    parser's one error line and exit status 2."""
    for name, value in vars(args).items():
        if isinstance(value, int) and not isinstance(value, bool):
            low = 0 if name in non_negative else 1
            if value < low:
                parser.error(f"--{name.replace('_', '-')} {value}: must be an integer >= {low}")
    return args
