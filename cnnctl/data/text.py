"""Caption text: tokens, the vocabulary, and token-id arrays.

Tokenisation follows Karpathy's neuraltalk preprocessing: lower case, every
character that is not a letter, digit or space removed (so "T-shirt." ->
"tshirt"), split on whitespace. Words seen fewer than ``min_count`` times in
the training captions become ``<unk>`` (Karpathy & Fei-Fei 2015 sec. 4: 5).

Ids: 0 ``<pad>``, 1 ``<start>``, 2 ``<end>``, 3 ``<unk>``, then the words by
falling count (ties alphabetical), so the vocabulary is a pure function of
the training captions.

The vocabulary also keeps the words that (almost) never end a training caption (``rarely_last``:
seen at least ``RARELY_LAST_MIN`` times, ending fewer than ``RARELY_LAST_SHARE`` of those: "in",
"and", "a", "of"); ``caption.fluent`` decoding never ends a caption on one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
RARELY_LAST_MIN, RARELY_LAST_SHARE = 20, 0.01
_NOT_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)


def tokenize(caption: str) -> list[str]:
    """``"A brown hen."`` -> ``["a", "brown", "hen"]``."""
    return _NOT_WORD.sub("", caption.lower()).split()


class Vocab:
    """Word <-> id. ``words[i]`` is the word of id ``i``; the first four are the special tokens."""

    def __init__(self, words: list[str], min_count: int = 1, rarely_last: Iterable[str] = ()):
        if list(words[:4]) != list(SPECIALS):
            raise CnnctlError("a vocabulary must start with " + ", ".join(SPECIALS),
                              hint="the run's vocab.json was not written by cnnctl, or was edited")
        self.words = list(words)
        self.min_count = min_count
        self.index = {w: i for i, w in enumerate(self.words)}
        self.rarely_last = sorted(w for w in rarely_last if w in self.index)

    @classmethod
    def build(cls, captions: Iterable[list[str]], min_count: int = 5) -> Vocab:
        captions = list(captions)
        counts = Counter(w for tokens in captions for w in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        last = Counter(tokens[-1] for tokens in captions if tokens)
        rarely_last = [w for w in kept if counts[w] >= RARELY_LAST_MIN and last[w] < RARELY_LAST_SHARE * counts[w]]
        return cls([*SPECIALS, *kept], min_count, rarely_last)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(w, unk) for w in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at ``<end>`` and leaving out ``<start>`` / ``<pad>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == 2:
                break
            if i > 1:
                out.append(self.words[i])
        return out

    def to_json(self) -> dict:
        return {"min_count": self.min_count, "words": self.words, "rarely_last": self.rarely_last}

    @classmethod
    def from_json(cls, obj: dict) -> Vocab:
        return cls(list(obj["words"]), int(obj.get("min_count", 1)), obj.get("rarely_last", ()))

    def save(self, path: str | Path) -> None:
        from cnnctl.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))


def token_rows(vocab: Vocab, captions: list[list[str]], max_words: int) -> tuple[np.ndarray, int]:
    """Captions -> int32 ``(n, max_words + 2)``: ``<start> w1 .. wk <end>`` padded with 0.

    Captions longer than ``max_words`` are cut (returned: how many were).
    """
    rows = np.zeros((len(captions), max_words + 2), dtype=np.int32)
    cut = 0
    for r, tokens in enumerate(captions):
        ids = vocab.encode(tokens)
        if len(ids) > max_words:
            ids, cut = ids[:max_words], cut + 1
        rows[r, :len(ids) + 2] = [1, *ids, 2]
    return rows, cut
