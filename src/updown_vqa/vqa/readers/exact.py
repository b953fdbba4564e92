"""Targets of datasets with one exact answer per question (GQA, CLEVR): no normalisation, one-hot.

Annotations here are [{"answer": str, "answer_type": str}] per question, made by the reader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def answer_labels(annotations: Sequence[dict]) -> list[str]:
    """Each question's answer, exactly as written (GQA's eval.py compares plain strings)."""
    return [a["answer"] for a in annotations]


def encode_exact(annotations: Sequence[dict], answer_index: dict[str, int],
                 answer_types: Sequence[str]) -> dict[str, np.ndarray]:
    """One-hot targets; the candidate accuracy is 1 for the answer, so `val/acc` is exact match."""
    rows = np.array([i for i, a in enumerate(annotations) if a["answer"] in answer_index], np.int64)
    cols = np.array([answer_index[annotations[i]["answer"]] for i in rows], np.int64)
    ones = np.ones(len(rows), np.float32)
    types = np.array([answer_types.index(a["answer_type"]) for a in annotations], np.int64)
    return {"target_rows": rows, "target_cols": cols, "target_vals": ones,
            "acc_rows": rows.copy(), "acc_cols": cols.copy(), "acc_vals": ones.copy(), "answer_type": types}
