"""Sample-quality measures for generators, numpy only.

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to real and generated
  features, ``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets (mean and std).
- The Inception-score analogue (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` with any
  classifier's probabilities, in splits (mean and std).
- Class coverage: how many classes take at least 5% of the samples, and the KL divergence of the
  class histogram from uniform.
- The Parzen-window log-likelihood of Goodfellow et al. 2014 (sec. 5, after Breuleux et al.): a
  Gaussian kernel density on the samples, its width chosen on validation images.
"""

from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------- FID
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (mean (d,), covariance (d, d)) in float64; rows are samples."""
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """``tr((C1 C2)^(1/2))`` as ``tr((S1 C2 S1)^(1/2))`` with ``S1 = C1^(1/2)``: the same eigenvalues,
    but of a symmetric matrix, so no complex square roots (scipy's ``sqrtm`` route) are needed."""
    s1 = _sqrt_psd(np.asarray(cov1, np.float64))
    m = s1 @ np.asarray(cov2, np.float64) @ s1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


# ----------------------------------------------------------------------------- KID
def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 10, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """-> (mean, std) over ``subsets`` of the unbiased MMD^2 between ``subset_size`` rows of each."""
    x = np.asarray(real, np.float64).reshape(len(real), -1)
    y = np.asarray(fake, np.float64).reshape(len(fake), -1)
    d = x.shape[1]
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 real and 2 generated samples")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


# ----------------------------------------------------------------------------- classifier-based
def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """-> (mean, std) of ``exp(mean_x KL(p(y|x) || p(y)))`` over ``splits`` parts of the samples."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    scores = []
    for part in np.array_split(p, max(1, min(splits, len(p)))):
        marginal = part.mean(axis=0, keepdims=True)
        scores.append(math.exp(float(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1)))))
    return float(np.mean(scores)), float(np.std(scores))


def class_histogram(predicted: np.ndarray, classes: int) -> np.ndarray:
    """The share of samples predicted as each class ``(classes,)``."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=classes)[:classes]
    return counts / max(1, counts.sum())


def class_coverage(predicted: np.ndarray, classes: int, share: float = 0.05) -> dict[str, float]:
    """-> ``covered`` (classes with at least ``share`` of the samples), ``class_kl`` (KL of the
    histogram from uniform, nats; 0 = perfectly even, log(classes) = one class only) and
    ``top_class_share`` (the largest share: above 0.5 is mode collapse)."""
    h = class_histogram(predicted, classes)
    nz = h[h > 0]
    return {"covered": int(np.sum(h >= share)), "class_kl": float(np.sum(nz * np.log(nz * classes))),
            "top_class_share": float(h.max())}


# ----------------------------------------------------------------------------- Parzen windows
def parzen_log_likelihood(samples: np.ndarray, queries: np.ndarray, sigma: float, batch: int = 500) -> np.ndarray:
    """``log p(x)`` of each query under the Gaussian kernel density of ``samples`` (std ``sigma``):
    ``logsumexp_i(-|x - s_i|^2 / 2 sigma^2) - log n - d/2 log(2 pi sigma^2)``. Rows are flattened."""
    s = np.asarray(samples, np.float64).reshape(len(samples), -1)
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    n, d = s.shape
    s_sq = (s * s).sum(axis=1)
    out = []
    for i in range(0, len(q), batch):
        x = q[i:i + batch]
        dist = (x * x).sum(axis=1)[:, None] + s_sq[None, :] - 2 * x @ s.T            # (b, n)
        a = -np.maximum(dist, 0) / (2 * sigma * sigma)
        top = a.max(axis=1, keepdims=True)
        out.append(top[:, 0] + np.log(np.exp(a - top).sum(axis=1)))
    return np.concatenate(out) - math.log(n) - d / 2 * math.log(2 * math.pi * sigma * sigma)


def parzen_sigma(samples: np.ndarray, validation: np.ndarray, grid=None) -> float:
    """The kernel width with the highest mean validation log-likelihood (the 2014 paper's protocol:
    "the sigma parameter of the Gaussians was obtained by cross validation on the validation set")."""
    grid = np.logspace(-1.5, 0, 16) if grid is None else grid
    return float(max(grid, key=lambda sg: parzen_log_likelihood(samples, validation, sg).mean()))
