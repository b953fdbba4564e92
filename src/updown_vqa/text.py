"""Question tokenisation (spaCy's rule-based tokenizer, no model download) and vocabularies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

PAD, UNK = "<pad>", "<unk>"


@lru_cache(maxsize=1)
def _tokenizer():
    import spacy  # imported lazily: spaCy takes a second to import

    return spacy.blank("en").tokenizer


def tokenize(texts: Iterable[str]) -> list[list[str]]:
    """Lower-cased tokens of each text, punctuation and white space dropped."""
    tokenizer = _tokenizer()
    return [
        [t.lower_ for t in doc if not (t.is_punct or t.is_space)]
        for doc in tokenizer.pipe(t.lower() for t in texts)
    ]


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
