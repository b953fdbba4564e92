"""Question tokenisation (spaCy's rule-based tokenizer, no model download) and vocabularies."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from updown_vqa.core.errors import UpdownError

log = logging.getLogger(__name__)
PAD, UNK = "<pad>", "<unk>"


@lru_cache(maxsize=1)
def _tokenizer():
    """spaCy's blank English tokenizer; None where spaCy is not installed (a benchmark-only machine)."""
    try:
        import spacy  # imported lazily: spaCy takes a second to import, and benchmarks need none of it
    except ImportError:
        log.warning("spaCy is not installed: questions are split at spaces and punctuation, which gives "
                    "spaCy's tokens only for plain words (the benchmarks' random questions); pip install spacy")
        return None
    return spacy.blank("en").tokenizer


def _plain_tokens(run: str) -> list[str]:
    return re.findall(r"[^\W_]+", run)


def tokenize(texts: Iterable[str]) -> list[list[str]]:
    """Lower-cased tokens of each text, punctuation and white space dropped.

    spaCy tokenises each run of non-space characters on its own, so each distinct run goes through
    it once: the same tokens as `tokenizer.pipe`, about 20x faster on VQA v2's 658k questions.
    """
    tokenizer, runs = _tokenizer(), {}

    def run_tokens(run: str) -> list[str]:
        if run not in runs and tokenizer is None:
            runs[run] = _plain_tokens(run)
        elif run not in runs:
            runs[run] = [t.lower_ for t in tokenizer(run) if not (t.is_punct or t.is_space)]
        return runs[run]

    return [[token for run in text.lower().split() for token in run_tokens(run)] for text in texts]


class Vocabulary:
    """Word <-> index map; index 0 is padding and 1 the unknown word."""

    def __init__(self, words: Sequence[str]):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_count: int = 1) -> Vocabulary:
        """Words seen at least `min_count` times, most frequent first (ties alphabetically)."""
        counts = Counter(w for tokens in token_lists for w in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, token_lists: Sequence[list[str]], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids [N, max_length] and true lengths [N] (at least 1, so empty questions work)."""
        ids = np.zeros((len(token_lists), max_length), dtype=np.int64)
        lengths = np.ones(len(token_lists), dtype=np.int64)
        unk = self.index[UNK]
        for row, tokens in enumerate(token_lists):
            tokens = tokens[:max_length]
            ids[row, : len(tokens)] = [self.index.get(w, unk) for w in tokens]
            lengths[row] = max(1, len(tokens))
        return ids, lengths


def _check_glove_dim(path: str, first_line: str, dim: int) -> bool:
    """Refuse a GloVe file whose vectors are not `dim`-d; True when the line is a word2vec header."""
    fields = first_line.split()
    is_header = len(fields) == 2 and all(f.isdigit() for f in fields)
    file_dim = int(fields[1]) if is_header else len(fields) - 1
    if file_dim != dim:
        raise UpdownError(f"{path}: GloVe vectors are {file_dim}-d but model.embed_dim={dim}; "
                          f"set model.embed_dim={file_dim}")
    return is_header


def load_glove(path: str, words: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `words` found in a GloVe text file and their vectors [N_found, dim].

    Reads the file once, parsing only the lines of wanted words (glove.840B.300d has 2.2M lines).
    """
    wanted = {w: i for i, w in enumerate(words) if w not in (PAD, UNK)}
    rows, vectors = [], []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f):
                if number == 0 and _check_glove_dim(path, line, dim):
                    continue
                word, _, rest = line.partition(" ")
                if word in wanted:
                    values = rest.split()
                    if len(values) == dim:  # else the word holds spaces ('. . .'): not one of ours
                        rows.append(wanted.pop(word)), vectors.append(np.asarray(values, np.float32))
    except (OSError, ValueError) as e:
        raise UpdownError(f"{path}: cannot read it as a GloVe text file ({e}); fix model.glove") from None
    log.info("GloVe %s: %d of %d words found; the %d missing are initialised randomly", path,
             len(rows), len(rows) + len(wanted), len(wanted))
    return np.asarray(rows, np.int64), np.asarray(vectors, np.float32).reshape(-1, dim)
