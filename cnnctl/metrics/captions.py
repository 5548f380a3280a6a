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


def _tfidf(tokens: list[str], df: Counter, log_images: float, max_n: int):
    """-> (per-n {ngram: weight}, per-n norms, length) with the COCO scorer's length (its bigram count)."""
    vec = [{} for _ in range(max_n)]
    norms = [0.0] * max_n
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        counts.update(ngrams(tokens, n))
    for g, tf in counts.items():
        w = tf * (log_images - math.log(max(1.0, df[g])))
        vec[len(g) - 1][g] = w
        norms[len(g) - 1] += w * w
    length = sum(tf for g, tf in counts.items() if len(g) == 2)
    return vec, [math.sqrt(x) for x in norms], length


def cider_d(hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4,
            sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """-> (corpus CIDEr-D, per-image scores). Document frequencies come from ``references``."""
    df: Counter = Counter()
    for refs in references:
        seen = set()
        for r in refs:
            for n in range(1, max_n + 1):
                seen.update(ngrams(r, n))
        df.update(seen)
    log_images = math.log(float(len(references)))
    scores = []
    for hyp, refs in zip(hypotheses, references):
        vh, nh, lh = _tfidf(hyp, df, log_images, max_n)
        total = np.zeros(max_n)
        for r in refs:
            vr, nr, lr = _tfidf(r, df, log_images, max_n)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total[n] += val * penalty
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    scores = np.asarray(scores)
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
