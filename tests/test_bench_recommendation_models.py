"""The estimators of benchmarks/bench_recommendation_models.py (issue 15, fifth round) recover what they claim.

The benchmark's figures rest on these: a prior strength "fitted by maximum marginal likelihood" must come out
near the concentration that drew the data, and EASE must be the zero-diagonal ridge regression of Steck (2019).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_recommendation_models as bench  # noqa: E402


def _dirichlet_multinomial(concentration: float, customers: int = 2000, classes: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.dirichlet(np.full(classes, 0.5))
    shares = rng.dirichlet(concentration * mean + 1e-12, size=customers)
    lines = rng.integers(5, 60, customers)
    counts = np.array([rng.multinomial(n, p / p.sum()) for n, p in zip(lines, shares)])
    return counts, mean


@pytest.mark.parametrize("concentration", [5.0, 40.0])
def test_dirichlet_strength_and_minka_recover_the_drawn_concentration(concentration):
    counts, mean = _dirichlet_multinomial(concentration)
    strength = bench.dm_strength(sp.csr_matrix(counts), mean)
    assert strength == pytest.approx(concentration, rel=0.15)
    whole = bench.dm_minka(sp.csr_matrix(counts), strength * mean)
    assert whole.sum() == pytest.approx(concentration, rel=0.15)
    # A strength far from the truth fits worse: the optimum is not a bound of the search.
    assert 0.1 < strength < 1e4


def test_beta_binomial_concentration_follows_the_data():
    loose, mean = _dirichlet_multinomial(5.0, seed=1)
    tight, _ = _dirichlet_multinomial(80.0, seed=1)
    common = mean > 0.02
    assert np.median(bench.beta_binomial_kappa(loose.astype(float), mean)[common]) < 10
    assert np.median(bench.beta_binomial_kappa(tight.astype(float), mean)[common]) > 40


def test_ease_is_the_zero_diagonal_ridge_regression():
    rng = np.random.default_rng(2)
    matrix = sp.csr_matrix(rng.poisson(0.3, (400, 12)).astype(float))
    weights = bench.ease_weights(matrix, 5.0)
    assert np.abs(np.diag(weights)).max() == 0.0
    gram = (matrix.T @ matrix).toarray()
    for item in (0, 7):
        others = [i for i in range(12) if i != item]
        solved = np.linalg.solve(gram[np.ix_(others, others)] + 5.0 * np.eye(11), gram[others, item])
        np.testing.assert_allclose(weights[others, item], solved, atol=1e-10)
    ridge = bench.ease_weights(matrix, 5.0, zero_diagonal=False)
    np.testing.assert_allclose(ridge, np.linalg.solve(gram + 5.0 * np.eye(12), gram), atol=1e-10)
