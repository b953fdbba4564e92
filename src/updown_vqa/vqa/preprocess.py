"""VQA v2 files in, cached arrays out: tokens, vocabulary, answer vocabulary, soft scores, accuracies.

The cache is a pair of files named by a fingerprint of the inputs (path, size, mtime) and the
settings, so it is rebuilt whenever either changes and never silently reused when stale.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np

from updown_vqa.core.cache import as_list, fingerprint, load_cache, read_json, save_cache  # noqa: F401 (load_cache reads its output)
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.text import Vocabulary, tokenize
from updown_vqa.vqa.answers import candidate_accuracies, normalize_answer, soft_score
from updown_vqa.vqa.readers import get_reader
from updown_vqa.vqa.schema import check_annotations, check_questions

log = logging.getLogger(__name__)
CACHE_VERSION = 1
ANSWER_TYPES = ("yes/no", "number", "other")
_normalize = functools.lru_cache(maxsize=1 << 20)(normalize_answer)  # answers repeat


def load_json(path: str, key: str):
    """`json[key]` of a VQA file, with errors that name the file."""
    data = read_json(path)
    if isinstance(data, list) and data and isinstance(data[0], dict) and "coco_split" in data[0]:
        raise UpdownError(f"{path}: a VQA-CP v2 file (a top-level list with 'coco_split'), not VQA v2; "
                          "use data=vqacp2 for it")
    if not isinstance(data, dict) or key not in data:
        raise UpdownError(f"{path}: no '{key}' list; expected the official VQA v2 format")
    return data[key]


def read_split(questions: Sequence[str], annotations: Sequence[str]) -> dict:
    """Questions (and annotations when given) of one split, files concatenated in order."""
    items = check_questions(", ".join(questions),  # each file checked, then ids unique across files
                            [q for path in questions for q in check_questions(path, load_json(path, "questions"))])
    out = {"question_ids": [q["question_id"] for q in items], "image_ids": [q["image_id"] for q in items],
           "questions": [q["question"] for q in items], "annotations": None}
    if annotations:
        checked = [a for path in annotations for a in check_annotations(path, load_json(path, "annotations"))]
        by_id = {a["question_id"]: a for a in check_annotations(", ".join(annotations), checked)}
        missing = [qid for qid in out["question_ids"] if qid not in by_id]
        if missing:
            raise UpdownError(f"{annotations}: no annotation for question ids {missing[:5]} "
                              f"({len(missing)} in all); pair each questions file with its annotations")
        out["annotations"] = [by_id[qid] for qid in out["question_ids"]]
    return out


def build_answer_vocab(annotations: Sequence[dict], min_count: int) -> list[str]:
    """Normalised `multiple_choice_answer`s seen at least `min_count` times, most frequent first."""
    return rank_answers([_normalize(a["multiple_choice_answer"]) for a in annotations], min_count)


def rank_answers(labels: Sequence[str], min_count: int) -> list[str]:
    """Answers given at least `min_count` times, most frequent first (ties alphabetical)."""
    counts = Counter(labels)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))


def _encode_humans(humans: Sequence[str], answer_index: dict[str, int]) -> tuple[list, list]:
    """(answer, soft score) targets and (answer, official accuracy > 0) pairs of one question."""
    counts = Counter(map(_normalize, humans))  # = answers.soft_scores, with cached normalisation
    targets = [(answer_index[a], soft_score(c)) for a, c in counts.items() if a in answer_index]
    candidates = (counts.keys() | {h.strip() for h in humans}) & answer_index.keys()
    accuracies = candidate_accuracies(humans, candidates)
    return targets, [(answer_index[a], acc) for a, acc in accuracies.items() if acc > 0]


def _coo(pairs_per_row: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row lists of (col, value) pairs as COO rows, cols and values."""
    rows = np.repeat(np.arange(len(pairs_per_row)), [len(p) for p in pairs_per_row])
    flat = [pair for pairs in pairs_per_row for pair in pairs]
    cols = np.fromiter((c for c, _ in flat), np.int64, len(flat))
    return rows.astype(np.int64), cols, np.fromiter((v for _, v in flat), np.float32, len(flat))


def encode_answers(annotations: Sequence[dict], answer_index: dict[str, int]) -> dict[str, np.ndarray]:
    """Sparse soft targets and official per-candidate accuracies, as COO (row, answer, value) arrays.

    Both depend only on the multiset of human answers, and many questions share one (ten "yes"),
    so each distinct multiset is encoded once.
    """
    encoded: dict[tuple, tuple[list, list]] = {}
    targets, accuracies = [], []
    for ann in annotations:
        humans = tuple(sorted(h["answer"] for h in ann["answers"]))
        if humans not in encoded:
            encoded[humans] = _encode_humans(humans, answer_index)
        targets.append(encoded[humans][0]), accuracies.append(encoded[humans][1])
    out = dict(zip(("target_rows", "target_cols", "target_vals"), _coo(targets)))
    out |= dict(zip(("acc_rows", "acc_cols", "acc_vals"), _coo(accuracies)))
    out["answer_type"] = np.array([_answer_type_index(a["answer_type"]) for a in annotations], np.int64)
    return out


def _answer_type_index(answer_type: str) -> int:
    return ANSWER_TYPES.index(answer_type) if answer_type in ANSWER_TYPES else len(ANSWER_TYPES) - 1


def preprocess(splits: dict[str, dict], cache_dir: str, max_question_length: int = 14,
               min_answer_count: int = 9, answer_splits: Sequence[str] = ("train",),
               vocab_splits: Sequence[str] = ("train",), dataset: str = "vqa2") -> str:
    """Write the cache for `splits` ({name: {"questions": paths, "annotations": paths}}) unless it exists.

    `dataset` names the reader of the files' layout (updown_vqa.vqa.readers). Returns the cache's path
    stem; `load_cache(stem)` reads it.
    """
    reader = get_reader(dataset)
    files = {name: (as_list(s.get("questions")), as_list(s.get("annotations"))) for name, s in splits.items()}
    settings = {"max_question_length": max_question_length, "min_answer_count": min_answer_count,
                "answer_splits": sorted(answer_splits), "vocab_splits": sorted(vocab_splits),
                "splits": {k: [q, a] for k, (q, a) in files.items()}}
    if dataset != "vqa2":  # the VQA v2 caches keep their fingerprints
        settings["dataset"] = dataset
    _check_split_names(files, answer_splits, vocab_splits, reader.ANSWERS_IN_QUESTIONS)
    for path in (p for q, a in files.values() for p in q + a):
        if not os.path.isfile(path):
            raise UpdownError(f"{path}: file not found (check the data.* paths)")
    stem = os.path.join(cache_dir, "vqa-" + fingerprint([p for q, a in files.values() for p in q + a],
                                                         settings, CACHE_VERSION))
    if os.path.isfile(stem + ".json") and os.path.isfile(stem + ".npz"):
        return stem
    data = {name: reader.read_split(q, a) for name, (q, a) in files.items()}
    tokens = {name: tokenize(d["questions"]) for name, d in data.items()}
    vocab = Vocabulary.build(t for name in vocab_splits if name in tokens for t in tokens[name])
    answers = rank_answers([label for name in answer_splits if data[name]["annotations"]
                            for label in reader.answer_labels(data[name]["annotations"])], min_answer_count)
    if not answers:
        raise UpdownError(f"no answer occurs {min_answer_count} times in splits {list(answer_splits)}; "
                          "lower data.min_answer_count or add annotated splits")
    answer_index = {a: i for i, a in enumerate(answers)}
    arrays = {}
    for name, d in data.items():
        ids, lengths = vocab.encode(tokens[name], max_question_length)
        arrays |= {f"{name}/tokens": ids, f"{name}/lengths": lengths,
                   f"{name}/question_ids": id_array(d["question_ids"]),
                   f"{name}/image_ids": id_array(d["image_ids"])}
        if d["annotations"]:
            arrays |= {f"{name}/{k}": v for k, v in reader.encode_answers(d["annotations"], answer_index).items()}
    meta = {"version": CACHE_VERSION, "settings": settings, "vocab": vocab.words, "answers": answers,
            "dataset": dataset, "answer_types": list(reader.ANSWER_TYPES),
            "splits": {name: _split_info(d, answer_index, reader) for name, d in data.items()}}
    _log_summary(meta, arrays)
    return save_cache(stem, arrays, meta)


def id_array(ids: Sequence) -> np.ndarray:
    """Question or image ids as int64 when they are all integers, else as strings (GQA's)."""
    if all(isinstance(i, (int, np.integer)) for i in ids):
        return np.asarray(ids, np.int64).reshape(len(ids))
    return np.asarray([str(i) for i in ids], dtype=str).reshape(len(ids))


def _check_split_names(files: dict, answer_splits: Sequence[str], vocab_splits: Sequence[str],
                       answers_in_questions: bool = False) -> None:
    """Refuse answer/vocab split names that are not configured splits, or are not annotated."""
    for key, names in (("answer_splits", answer_splits), ("vocab_splits", vocab_splits)):
        unknown = [n for n in names if n not in files]
        if unknown:
            raise UpdownError(f"data.{key}: unknown splits {unknown}; use names of the configured "
                              f"splits {list(files)} (list files under data.train.* to combine them)")
    unannotated = [] if answers_in_questions else [n for n in answer_splits if not files[n][1]]
    if unannotated:
        raise UpdownError(f"data.answer_splits: splits {unannotated} have no annotations; "
                          "answers are counted in annotated splits only")


def _split_info(split: dict, answer_index: dict[str, int], reader) -> dict:
    """Sizes of a split and, when annotated, how many best answers the answer vocabulary lacks."""
    info = {"questions": len(split["question_ids"]), "images": len(set(split["image_ids"])),
            "annotated": bool(split["annotations"])}
    if split["annotations"]:
        info["best_answer_outside_vocab"] = sum(
            label not in answer_index for label in reader.answer_labels(split["annotations"]))
    return info


def _log_summary(meta: dict, arrays: dict[str, np.ndarray]) -> None:
    for name, info in meta["splits"].items():
        log.info("%s: %d questions, %d images", name, info["questions"], info["images"])
    log.info("vocabulary %d words, answer vocabulary %d answers", len(meta["vocab"]), len(meta["answers"]))
    if "val/acc_rows" in arrays:
        num_questions = meta["splits"]["val"]["questions"]
        best = np.zeros(num_questions)
        np.maximum.at(best, arrays["val/acc_rows"], arrays["val/acc_vals"])
        outside = meta["splits"]["val"]["best_answer_outside_vocab"] / max(1, num_questions)
        log.info("val questions whose best answer (multiple_choice_answer) is outside the answer "
                 "vocabulary: %.2f%%; the highest val/acc any model can reach is %.2f", 100 * outside,
                 100 * best.mean() if num_questions else 0.0)
