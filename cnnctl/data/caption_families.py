"""A family-disjoint train / val / test split for human-written captions.

A caption-disjoint split (a hash of each sentence) keeps every test sentence out of training, but
not its siblings: openclipart titles and Tux Paint sentences come in families ("the sign for the
letter a in american sign language" ... "letter z ..."; "a blue eye", "a brown eye"), and 43% of the
test captions of the caption-disjoint split had a training caption sharing at least half of its
content words. Copying the nearest training image's caption then scores as if it had read the
picture. Here the split is decided per *family* instead:

* two captions are linked when the Jaccard similarity of their content-word sets (the tokens
  without the stop words below) is at least ``LINK_JACCARD``;
* a family is a connected component of that graph;
* the whole family goes to one split, chosen by a hash of its alphabetically first caption
  (80 / 10 / 10), so the split is a function of the captions alone.

No TensorFlow here.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from cnnctl.data.text import tokenize

LINK_JACCARD = 0.5
STOP_WORDS = frozenset(["a", "an", "the", "of", "and", "in", "on", "with", "for", "to", "at", "its", "his", "her", "is", "are", "b", "w"])
# Candidate pairs are looked up through the captions' shared words; a word held by more than this
# many captions ("blue", "man") is not used for the lookup, to keep it from being quadratic.
_COMMON = 400


def content_words(caption: str) -> frozenset[str]:
    """The caption's tokens without stop words (all of them when nothing else is left)."""
    tokens = set(tokenize(caption))
    return frozenset(tokens - STOP_WORDS or tokens)


def families(captions: list[str]) -> dict[str, str]:
    """caption -> its family's key (the family's alphabetically first caption, as tokenized)."""
    keys = sorted({" ".join(tokenize(c)) for c in captions})
    words = [content_words(k) for k in keys]
    index = defaultdict(list)                    # word -> indices of the captions holding it
    for i, ws in enumerate(words):
        for w in ws:
            index[w].append(i)
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, ws in enumerate(words):
        # A linked pair shares a word; pairs that share only common words are not linked.
        candidates = {j for w in ws if len(index[w]) <= _COMMON for j in index[w] if j > i}
        for j in candidates:
            if len(ws & words[j]) >= LINK_JACCARD * len(ws | words[j]):
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)    # the root is the family's smallest index
    position = {k: i for i, k in enumerate(keys)}
    return {c: keys[root(position[" ".join(tokenize(c))])] for c in captions}


def split_of_family(key: str) -> str:
    """train / val / test (80 / 10 / 10) from a hash of the family key."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def family_split(captions: list[str]) -> list[str]:
    """The split of each caption, family-disjoint."""
    family = families(captions)
    return [split_of_family(family[c]) for c in captions]
