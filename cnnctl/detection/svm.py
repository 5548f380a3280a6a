"""R-CNN's second stage (Girshick, Donahue, Darrell & Malik, CVPR 2014): per-class linear SVMs on the
fine-tuned network's fc7 features, trained with hard-negative mining (sec. 2.3, appendix B), and
per-class ridge box regressors on pool5 features (appendix C). Plain numpy: the features of a
training set fit in memory, and both problems are small dense solves.

The SVM is liblinear's L2-regularised squared-hinge primal (the solver R-CNN's code calls), solved by
Newton's method on the active set (Keerthi & DeCoste, JMLR 2005):

    min_w  1/2 |w|^2 + sum_i c_i max(0, 1 - y_i w.x_i)^2,      c_i = C (negatives), C * w_pos (positives)

with the bias as one more feature of constant value (R-CNN's ``bias_mult`` of 10), so it is
regularised as liblinear regularises it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def svm_objective(w: np.ndarray, x: np.ndarray, y: np.ndarray, c: np.ndarray) -> float:
    hinge = np.maximum(0.0, 1.0 - y * (x @ w))
    return float(0.5 * w @ w + np.sum(c * hinge * hinge))


def svm_gradient(w: np.ndarray, x: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    margin = y * (x @ w)
    active = margin < 1.0
    # d/dw c (1 - y w.x)^2 = 2 c (w.x - y) x   (y^2 = 1)
    return w + 2.0 * x[active].T @ (c[active] * (x[active] @ w - y[active]))


def train_l2svm(x: np.ndarray, y: np.ndarray, c: np.ndarray, w: np.ndarray | None = None,
                max_iter: int = 100, tol: float = 1e-8) -> np.ndarray:
    """x (n, d) float64 (bias column included), y (n,) in {-1, +1}, c (n,) per-example costs -> w (d,).
    Newton steps on the active set with a backtracking line search; stops when the gradient's norm is
    below ``tol`` x its first value (or the active set repeats and the step is exact)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    c = np.asarray(c, np.float64)
    d = x.shape[1]
    w = np.zeros(d) if w is None else np.asarray(w, np.float64).copy()
    g0 = None
    for _ in range(max_iter):
        grad = svm_gradient(w, x, y, c)
        norm = float(np.linalg.norm(grad))
        g0 = norm if g0 is None else g0
        if norm <= tol * max(g0, 1.0):
            break
        active = y * (x @ w) < 1.0
        xa = x[active]
        hessian = np.eye(d) + 2.0 * (xa.T * c[active]) @ xa
        step = np.linalg.solve(hessian, grad)
        f0, t = svm_objective(w, x, y, c), 1.0
        while t > 1e-10 and svm_objective(w - t * step, x, y, c) > f0 - 0.5 * t * grad @ step:
            t *= 0.5
        w = w - t * step
    return w


@dataclass
class SVMReport:
    positives: int
    negatives_seen: int
    hard_negatives: int     # in the cache at the end
    rounds: int


def mine_hard_negatives(x: np.ndarray, positive: np.ndarray, negative: np.ndarray, image: np.ndarray,
                        cost: float, positive_weight: float, chunks: int = 8, hard: float = -1.0,
                        easy: float = -1.2) -> tuple[np.ndarray, SVMReport]:
    """One class's SVM with hard-negative mining, in R-CNN's way (``rcnn_train``: one pass over the
    training images, the cache of negatives grown by those scoring above ``hard`` under the current
    SVM, retrained, and purged of those below ``easy``).

    x (n, d): every candidate's features (bias column included); positive / negative (n,) bool masks;
    image (n,) the image each row came from; the images are visited in ``chunks`` groups in order.
    -> (w (d,), report)."""
    x = np.asarray(x, np.float64)
    pos = np.flatnonzero(positive)
    w = np.zeros(x.shape[1])
    cache = np.zeros((0,), np.int64)
    images = np.unique(image)
    groups = np.array_split(images, max(1, min(chunks, len(images))))
    rounds = 0
    for group in groups:
        candidates = np.flatnonzero(negative & np.isin(image, group))
        candidates = candidates[x[candidates] @ w > hard]                 # w = 0 at first: every one is hard
        new = np.setdiff1d(candidates, cache)
        if len(new) == 0:
            continue
        cache = np.concatenate([cache, new])
        rows = np.concatenate([pos, cache])
        y = np.concatenate([np.ones(len(pos)), -np.ones(len(cache))])
        c = np.concatenate([np.full(len(pos), cost * positive_weight), np.full(len(cache), cost)])
        w = train_l2svm(x[rows], y, c, w)
        rounds += 1
        cache = cache[x[cache] @ w >= easy]
    return w, SVMReport(len(pos), int(np.sum(negative)), len(cache), rounds)


def ridge_regression(x: np.ndarray, targets: np.ndarray, lam: float) -> np.ndarray:
    """x (n, d) whose last column is all ones (the bias), targets (n, t) -> W (d, t) minimising
    |xW - T|^2 + lam |W[:-1]|^2 (the bias is not shrunk). Solved on centred data, in the primal
    ((d - 1) squared system) or, with fewer rows than features, the dual (n squared); the Gram products in
    float32 (lam keeps the system well conditioned), the solve in float64. No rows: zeros."""
    d = x.shape[1]
    if len(x) == 0:
        return np.zeros((d, targets.shape[1]))
    features = np.asarray(x[:, :-1], np.float32)
    mean_x = features.mean(axis=0, dtype=np.float64)
    mean_t = np.asarray(targets, np.float64).mean(axis=0)
    xc = (features - mean_x.astype(np.float32))
    tc = np.asarray(targets, np.float64) - mean_t
    if len(x) < d - 1:       # W = xc^T (xc xc^T + lam I)^-1 tc
        gram = (xc @ xc.T).astype(np.float64) + lam * np.eye(len(x))
        w = xc.T.astype(np.float64) @ np.linalg.solve(gram, tc)
    else:                    # W = (xc^T xc + lam I)^-1 xc^T tc
        gram = (xc.T @ xc).astype(np.float64) + lam * np.eye(d - 1)
        w = np.linalg.solve(gram, xc.T.astype(np.float64) @ tc)
    return np.vstack([w, mean_t - mean_x @ w])


def platt_scale(margins: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> tuple[float, float]:
    """Platt's sigmoid (1999) for SVM margins: P(correct | m) = sigmoid(a m + b), fitted by maximum
    likelihood with Platt's smoothed targets ((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for
    negatives, so that a separable set gives a finite slope). Newton's method with step halving.
    margins (n,), labels (n,) bool -> (a, b); (1, 0), the identity, when a class has no positive or no
    negative example to calibrate on."""
    m = np.asarray(margins, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 1.0, 0.0
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def nll(a, b):
        z = a * m + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))    # -sum t log p + (1 - t) log(1 - p)

    a, b = 1.0, float(np.log((n_pos + 1.0) / (n_neg + 1.0)))
    value = nll(a, b)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(a * m + b)))
        g = np.array([np.sum((p - t) * m), np.sum(p - t)])
        w = p * (1.0 - p) + 1e-12
        h = np.array([[np.sum(w * m * m), np.sum(w * m)], [np.sum(w * m), np.sum(w)]])
        step = np.linalg.solve(h + 1e-12 * np.eye(2), g)
        scale = 1.0
        while scale > 1e-10:
            a_new, b_new = a - scale * step[0], b - scale * step[1]
            new = nll(a_new, b_new)
            if new <= value + 1e-12:
                break
            scale /= 2.0
        else:
            break
        done = value - new < 1e-12 * max(1.0, abs(value))
        a, b, value = a_new, b_new, new
        if done:
            break
    return float(a), float(b)
