"""Sample-quality measures against closed forms and brute force (cnnctl.metrics.gan)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnctl.metrics import gan


def test_frechet_distance_equals_the_closed_form_for_diagonal_gaussians():
    # For diagonal covariances (C1 C2)^(1/2) = diag(sqrt(a b)): FID = |m1 - m2|^2 + sum(a + b - 2 sqrt(a b)).
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((m1 - m2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert gan.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_rotated_full_covariances_matches_the_eigenvalue_route():
    # A full covariance and a rotated copy: tr((C1 C2)^(1/2)) from the eigenvalues of C1 C2 directly.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    c1 = a @ a.T + 0.1 * np.eye(5)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    c2 = q @ c1 @ q.T
    tr_sqrt = np.sum(np.sqrt(np.linalg.eigvals(c1 @ c2).real))
    expected = np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert gan.frechet_distance(np.zeros(5), c1, np.zeros(5), c2) == pytest.approx(expected, rel=1e-7)
    assert gan.frechet_distance(np.zeros(5), c1, np.zeros(5), c1) == pytest.approx(0.0, abs=1e-9)


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 3)), rng.normal(1.0, 1.0, size=(12, 3))
    k = lambda u, v: (u @ v / 3 + 1) ** 3
    m = 12
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = gan.kid(x, y, subsets=3, subset_size=12)        # every subset is the whole set
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    same = rng.normal(size=(400, 3))
    assert abs(gan.kid(same[:200], same[200:], subset_size=200)[0]) < gan.kid(x, y, subset_size=12)[0] / 10


def test_inception_score_counts_confident_distinct_classes():
    confident = np.eye(4)[np.arange(400) % 4]                    # sure of each sample, all 4 classes alike
    assert gan.inception_score(confident, splits=4)[0] == pytest.approx(4.0, rel=1e-6)
    one_class = np.eye(4)[np.zeros(400, int)]
    assert gan.inception_score(one_class)[0] == pytest.approx(1.0, rel=1e-6)
    unsure = np.full((400, 4), 0.25)
    assert gan.inception_score(unsure)[0] == pytest.approx(1.0, rel=1e-6)


def test_class_coverage_and_its_kl_from_uniform():
    even = gan.class_coverage(np.arange(1000) % 10, 10)
    assert even["covered"] == 10 and even["class_kl"] == pytest.approx(0.0, abs=1e-12)
    collapsed = gan.class_coverage(np.zeros(1000, int), 10)
    assert collapsed["covered"] == 1 and collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["top_class_share"] == 1.0
    # 4% of one class is below the 5% line
    pred = np.concatenate([np.full(40, 0), np.full(960, 1)])
    assert gan.class_coverage(pred, 10)["covered"] == 1


def test_parzen_log_likelihood_against_the_density_written_out():
    rng = np.random.default_rng(3)
    samples, queries, sigma = rng.uniform(size=(7, 4)), rng.uniform(size=(5, 4)), 0.3
    d = 4
    direct = [math.log(np.mean([np.exp(-np.sum((q - s) ** 2) / (2 * sigma ** 2)) for s in samples]))
              - d / 2 * math.log(2 * math.pi * sigma ** 2) for q in queries]
    assert np.allclose(gan.parzen_log_likelihood(samples, queries, sigma, batch=2), direct, rtol=1e-10)


def test_parzen_sigma_is_chosen_on_validation():
    rng = np.random.default_rng(4)
    samples = rng.normal(0, 0.2, size=(500, 2))
    val = rng.normal(0, 0.2, size=(200, 2))
    grid = [0.01, 0.05, 0.1, 0.5, 2.0]
    best = gan.parzen_sigma(samples, val, grid)
    lls = {g: gan.parzen_log_likelihood(samples, val, g).mean() for g in grid}
    assert best == max(lls, key=lls.get) and best not in (0.01, 2.0)
