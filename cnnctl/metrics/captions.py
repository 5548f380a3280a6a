"""Caption scores as the COCO caption evaluation computes them: corpus BLEU-1..4, CIDEr-D, retrieval ranks.

Inputs are token lists (``cnnctl.data.text.tokenize``): one hypothesis and a
list of references per image.

- BLEU (Papineni et al. 2002) at corpus level, as ``pycocoevalcap``'s
  ``Bleu(4)``: clipped n-gram counts summed over the corpus, the reference
  length of each sentence is the closest reference's (ties: the shorter), one
  brevity penalty for the corpus. ``sacrebleu`` with ``tokenize="none"`` and
  no smoothing gives the same numbers (tests check both).
- CIDEr-D (Vedantam et al. 2015) as ``pycocoevalcap``'s ``Cider``: tf-idf
  n-gram vectors (n = 1..4, document frequencies over the evaluated images'
  references), hypothesis counts clipped by the reference's, a Gaussian
  penalty on the length difference (sigma 6), averaged over n and
  references, times 10.
- Retrieval: rank of the true partner in a score matrix, R@K and median rank.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

_TINY, _SMALL = 1e-15, 1e-9   # the COCO scorer's guards against 0/0 (kept so the numbers match it)


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4) -> list[float]:
    """-> [BLEU-1, ..., BLEU-max_n] in [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    correct, guess = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(hyp, n)
            best: Counter = Counter()
            for r in refs:
                best |= ngrams(r, n)                       # max count of each n-gram over references
            correct[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            guess[n - 1] += max(0, len(hyp) - n + 1)
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (correct[n] + _TINY) / (guess[n] + _SMALL)
        scores.append(product ** (1 / (n + 1)) * penalty)
    return scores


class CiderD:
    """CIDEr-D of one hypothesis against one reference, with document frequencies fixed by ``documents``
    (one list of reference sentences per image) -- the corpus score's per-pair term, reused by
    consensus re-ranking against a training set's captions.

    ``score(hyp, ref)``: the mean over n = 1..max_n of the cosine of clipped tf-idf n-gram vectors,
    times the Gaussian length penalty, times 10 (as ``pycocoevalcap``'s ``Cider``, one reference).
    """

    def __init__(self, documents: list[list[list[str]]], max_n: int = 4, sigma: float = 6.0):
        self.max_n, self.sigma = max_n, sigma
        self.df: Counter = Counter()
        for refs in documents:
            seen = set()
            for r in refs:
                for n in range(1, max_n + 1):
                    seen.update(ngrams(r, n))
            self.df.update(seen)
        self.log_images = math.log(float(max(len(documents), 1)))
        self._vectors: dict[tuple[str, ...], tuple] = {}

    def vector(self, tokens: list[str]):
        """-> (per-n {ngram: weight}, per-n norms, length), cached; length is the COCO scorer's (its bigram count)."""
        key = tuple(tokens)
        if key not in self._vectors:
            vec = [{} for _ in range(self.max_n)]
            norms = [0.0] * self.max_n
            counts: Counter = Counter()
            for n in range(1, self.max_n + 1):
                counts.update(ngrams(tokens, n))
            for g, tf in counts.items():
                w = tf * (self.log_images - math.log(max(1.0, self.df[g])))
                vec[len(g) - 1][g] = w
                norms[len(g) - 1] += w * w
            length = sum(tf for g, tf in counts.items() if len(g) == 2)
            self._vectors[key] = (vec, [math.sqrt(x) for x in norms], length)
        return self._vectors[key]

    def per_n(self, hyp: list[str], ref: list[str]) -> np.ndarray:
        """(max_n,) the length-penalised cosines (before the mean and the factor 10)."""
        (vh, nh, lh), (vr, nr, lr) = self.vector(hyp), self.vector(ref)
        penalty = math.exp(-((lh - lr) ** 2) / (2 * self.sigma ** 2))
        out = np.zeros(self.max_n)
        for n in range(self.max_n):
            val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
            if nh[n] != 0 and nr[n] != 0:
                val /= nh[n] * nr[n]
            out[n] = val * penalty
        return out

    def score(self, hyp: list[str], ref: list[str]) -> float:
        return float(np.mean(self.per_n(hyp, ref))) * 10.0


def cider_d(hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4,
            sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """-> (corpus CIDEr-D, per-image scores). Document frequencies come from ``references``."""
    scorer = CiderD(references, max_n, sigma)
    scores = np.asarray([float(np.mean(sum(scorer.per_n(hyp, r) for r in refs))) / len(refs) * 10.0
                         for hyp, refs in zip(hypotheses, references)])
    return float(scores.mean()) if len(scores) else 0.0, scores


def retrieval_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of each query's best correct item: ``scores`` (queries, items).

    ``truth`` is either (queries,) the one correct item's index, or a (queries, items) boolean
    matrix of every correct item -- an image whose sentence is word for word the query's is as
    right as the query's own (COCO's five references per image are ranked the same way: the
    first correct one counts). Ties count against the query: a wrong item scoring as high as the
    best correct one ranks above it, so an all-equal score matrix ranks every query last.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth)
    if truth.ndim == 1:
        correct = np.zeros(scores.shape, bool)
        correct[np.arange(len(truth)), truth] = True
    else:
        correct = truth.astype(bool)
    best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((scores >= best) & ~correct).sum(axis=1)


def same_rows(rows: np.ndarray) -> np.ndarray:
    """(n, n) boolean: row i equals row j (identical token sequences)."""
    _, ids = np.unique(np.asarray(rows), axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    return ids[:, None] == ids[None, :]


def recall_at(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    return out
