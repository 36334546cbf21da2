"""A mixture of Dirichlet-multinomials on customers' unit counts, with a diagonal Gaussian term.

Why: a customer's lines are draws from their own mix, itself a Dirichlet draw around their
persona's (docs/decisions.md, "Customers who differ within their kind"). k-means or a Gaussian
mixture on share columns weigh a customer with 5 units like one with 500; the Dirichlet-
multinomial (DM) knows that 5 units say little, and that past a few dozen units more of them say
little more either (the customer's own mix differs from their kind's by the Dirichlet's spread).

The model of one customer in component ``k``:

- their units per department: DM with parameters ``alpha_dept[k]``;
- within each department, their units per class: DM with ``alpha_class[k]`` restricted to
  that department's classes (a Dirichlet tree: the generator draws the department, then the class);
- other numeric columns (value, frequency, basket, tiers, styles, ...; standardised): independent
  Gaussians ``mean[k]``, ``var[k]``.

Fitted by EM; each M-step runs a few of Minka's fixed-point updates of the DM parameters
("Estimating a Dirichlet distribution", 2000/2012, eq. 55) weighted by the responsibilities. The
count matrices are sparse (a customer buys in a few dozen of hundreds of classes), and every DM
term of a zero count is zero, so each step costs O(nonzeros x components).

The maths is plain functions; :class:`CountMixture` is the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma, gammaln, logsumexp

ALPHA_FLOOR = 1e-3
VAR_FLOOR = 1e-3


@dataclass
class CountBlock:
    """One sparse count matrix and the group (department) of each of its columns.

    ``X`` is ``(n_rows, n_columns)`` CSR of non-negative counts; ``groups`` gives each column's group
    (0 for every column of a plain DM). Built once per matrix; the sums below are the only structure
    EM needs.
    """

    X: sp.csr_matrix
    groups: np.ndarray

    def __post_init__(self):
        X = sp.csr_matrix(self.X, dtype=float)
        X.eliminate_zeros()
        self.X = X
        self.groups = np.asarray(self.groups, dtype=int)
        self.n_groups = int(self.groups.max()) + 1 if len(self.groups) else 0
        self.rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        self.cols = X.indices
        self.vals = X.data
        n = X.shape[0]
        nnz = len(self.vals)
        # Row and column sums of per-nonzero values as sparse products (faster than np.add.at).
        self.row_sum = sp.csr_matrix((np.ones(nnz), (self.rows, np.arange(nnz))), shape=(n, nnz))
        self.col_sum = sp.csr_matrix((np.ones(nnz), (self.cols, np.arange(nnz))), shape=(X.shape[1], nnz))
        G = sp.csr_matrix((np.ones(X.shape[1]), (np.arange(X.shape[1]), self.groups)),
                          shape=(X.shape[1], self.n_groups))
        totals = (X @ G).tocoo()  # units per row and group; zero groups contribute nothing
        self.g_rows, self.g_groups, self.g_vals = totals.row, totals.col, totals.data
        m = len(self.g_vals)
        self.g_row_sum = sp.csr_matrix((np.ones(m), (self.g_rows, np.arange(m))), shape=(n, m))
        self.g_group_sum = sp.csr_matrix((np.ones(m), (self.g_groups, np.arange(m))), shape=(self.n_groups, m))

    def group_totals(self, alpha: np.ndarray) -> np.ndarray:
        """``(K, n_groups)`` sums of ``alpha`` over each group's columns."""
        out = np.zeros((alpha.shape[0], self.n_groups))
        for k in range(alpha.shape[0]):
            out[k] = np.bincount(self.groups, weights=alpha[k], minlength=self.n_groups)
        return out

    def log_likelihood(self, alpha: np.ndarray) -> np.ndarray:
        """``(n_rows, K)`` DM log-likelihood of each row under each component's ``alpha`` (K, n_columns).

        The multinomial coefficient is left out: it is the same for every component.
        """
        a = alpha[:, self.cols].T  # (nnz, K)
        per_nonzero = gammaln(self.vals[:, None] + a) - gammaln(a)
        A = self.group_totals(alpha)[:, self.g_groups].T  # (m, K)
        per_group = gammaln(A) - gammaln(self.g_vals[:, None] + A)
        return np.asarray(self.row_sum @ per_nonzero) + np.asarray(self.g_row_sum @ per_group)

    def update(self, alpha: np.ndarray, resp: np.ndarray, steps: int) -> np.ndarray:
        """Minka's fixed-point updates of each component's ``alpha``, rows weighted by ``resp`` (n, K)."""
        r_nz = resp[self.rows]
        r_g = resp[self.g_rows]
        for _ in range(steps):
            a = alpha[:, self.cols].T
            num = np.asarray(self.col_sum @ (r_nz * (digamma(self.vals[:, None] + a) - digamma(a)))).T  # (K, C)
            A = self.group_totals(alpha)
            Ag = A[:, self.g_groups].T
            den = np.asarray(self.g_group_sum @ (r_g * (digamma(self.g_vals[:, None] + Ag) - digamma(Ag)))).T
            den = den[:, self.groups]  # (K, C)
            alpha = np.maximum(alpha * np.divide(num, den, out=np.zeros_like(num), where=den > 0), ALPHA_FLOOR)
        return alpha

    def start(self, resp: np.ndarray, concentration: float = 10.0) -> np.ndarray:
        """Starting ``alpha``: each component's pooled shares within each group, times ``concentration``."""
        pooled = np.asarray((resp.T @ self.X)) + 0.1  # (K, C) units weighted by responsibility
        totals = self.group_totals(pooled)[:, self.groups]
        return np.maximum(concentration * pooled / totals, ALPHA_FLOOR)

    def n_parameters(self) -> int:
        return self.X.shape[1]

    def take(self, rows: np.ndarray) -> "CountBlock":
        return CountBlock(self.X[rows], self.groups)


def gaussian_log_likelihood(Z: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``(n, K)`` log-density of each row of ``Z`` under each component's diagonal Gaussian."""
    if Z.shape[1] == 0:
        return np.zeros((len(Z), len(mean)))
    out = -0.5 * (np.log(2 * np.pi * var).sum(axis=1)[None, :]
                  + ((Z[:, None, :] - mean[None]) ** 2 / var[None]).sum(axis=2))
    return out


def gaussian_update(Z: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means and variances (floored) of ``Z`` per component."""
    w = resp.sum(axis=0)[:, None] + 1e-10
    mean = resp.T @ Z / w
    var = resp.T @ (Z ** 2) / w - mean ** 2
    return mean, np.maximum(var, VAR_FLOOR)


class CountMixture:
    """Prototype estimator (fixed K): EM on count blocks plus a Gaussian block, ``n_init`` seeded starts.

    Parameters
    ----------
    n_components : int
    n_init : int
        Starts (k-means++ seeds on ``init_matrix`` rows); the highest log-likelihood is kept.
    max_iter, tol : EM stops when the mean log-likelihood per row gains less than ``tol``.
    minka_steps : fixed-point steps per M-step.
    random_state : int
    """

    def __init__(self, n_components=8, n_init=3, max_iter=200, tol=1e-3, minka_steps=2, random_state=0, init="kmeans++"):
        self.init = init
        self.n_components = n_components
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.minka_steps = minka_steps
        self.random_state = random_state

    # ---- one EM run -------------------------------------------------------------------------
    def _joint(self, blocks, Z, params):
        alphas, weights, mean, var = params
        ll = np.log(weights)[None, :] + gaussian_log_likelihood(Z, mean, var)
        for block, alpha in zip(blocks, alphas):
            ll = ll + block.log_likelihood(alpha)
        return ll

    def _m_step(self, blocks, Z, resp, alphas):
        weights = resp.mean(axis=0) + 1e-12
        weights = weights / weights.sum()
        if alphas is None:
            alphas = [b.start(resp) for b in blocks]
        alphas = [b.update(a, resp, self.minka_steps) for b, a in zip(blocks, alphas)]
        mean, var = gaussian_update(Z, resp)
        return alphas, weights, mean, var

    def _run(self, blocks, Z, init, seed):
        from sklearn.cluster import kmeans_plusplus

        rng = np.random.default_rng(seed)
        k = self.n_components
        resp = np.zeros((len(init), k))
        if self.init == "ward":
            from sklearn.cluster import AgglomerativeClustering
            start = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(init)
            resp[np.arange(len(init)), start] = 1.0
        else:
            centers, _ = kmeans_plusplus(init, k, random_state=int(rng.integers(2**31 - 1)))
            d = ((init[:, None, :] - centers[None]) ** 2).sum(axis=2)
            resp[np.arange(len(init)), d.argmin(axis=1)] = 1.0
        resp = 0.9 * resp + 0.1 / k
        params = self._m_step(blocks, Z, resp, None)
        previous = -np.inf
        for it in range(self.max_iter):
            joint = self._joint(blocks, Z, params)
            norm = logsumexp(joint, axis=1)
            mean_ll = float(norm.mean())
            resp = np.exp(joint - norm[:, None])
            if mean_ll - previous < self.tol:
                break
            previous = mean_ll
            params = self._m_step(blocks, Z, resp, params[0])
        return params, mean_ll, it + 1

    def fit(self, blocks, Z, init):
        """Fit on count ``blocks`` (list of :class:`CountBlock`), Gaussian columns ``Z``, starts from ``init``."""
        best = None
        for s in range(1 if self.init == "ward" else self.n_init):
            params, ll, iters = self._run(blocks, Z, init, self.random_state * 1000 + s)
            if best is None or ll > best[1]:
                best = (params, ll, iters)
        self.params_, self.mean_log_likelihood_, self.n_iter_ = best
        self.n_rows_ = Z.shape[0]
        return self

    def predict_proba(self, blocks, Z):
        joint = self._joint(blocks, Z, self.params_)
        return np.exp(joint - logsumexp(joint, axis=1)[:, None])

    def predict(self, blocks, Z):
        return self.predict_proba(blocks, Z).argmax(axis=1)

    def score(self, blocks, Z) -> float:
        """Mean log-likelihood per row (multinomial coefficients left out)."""
        return float(logsumexp(self._joint(blocks, Z, self.params_), axis=1).mean())

    def n_parameters(self, blocks, n_gaussian: int) -> int:
        per = sum(b.n_parameters() for b in blocks) + 2 * n_gaussian
        return self.n_components * per + self.n_components - 1

    def bic(self, blocks, Z) -> float:
        return -2 * self.score(blocks, Z) * Z.shape[0] + self.n_parameters(blocks, Z.shape[1]) * np.log(Z.shape[0])
