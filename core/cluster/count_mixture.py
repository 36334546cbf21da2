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

(A diagonal Gaussian term on the model matrix's other columns was tried and dropped: on ``tune-a`` it
lowered the ARI at the persona count from 0.946 to 0.762; docs/decisions.md, "sixth round".)

Fitted by EM; each M-step runs a few of Minka's fixed-point updates of the DM parameters
("Estimating a Dirichlet distribution", 2000/2012, eq. 55) weighted by the responsibilities. The
count matrices are sparse (a customer buys in a few dozen of hundreds of classes), and every DM
term of a zero count is zero, so each step costs O(nonzeros x components).

The maths is in :class:`CountBlock`; :class:`CountMixtureClusterer` is the estimator. It is not wired
into stage 04 yet (docs/decisions.md, "Persona sets nobody tuned for, sixth round"); the benchmark
``benchmarks/bench_count_mixture.py`` fits it on built persona sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import digamma, gammaln, logsumexp
from sklearn.utils.validation import check_is_fitted

from core.cluster.clustering import _candidates, _fit_input, _predict_input, _Segmenter, sample_rows, second_best

ALPHA_FLOOR = 1e-3


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


def department_groups(columns) -> np.ndarray:
    """Department index of each ``class_units__<department>__<class>`` column (stage 02's names), in first-seen order."""
    departments = [str(c).split("__")[1] if str(c).count("__") >= 2 else "" for c in columns]
    if "" in departments:
        bad = [c for c, d in zip(columns, departments) if d == ""][:3]
        raise ValueError(f"count columns must be named class_units__<department>__<class>; got {bad}")
    return pd.Index(pd.unique(np.asarray(departments))).get_indexer(departments)


def hellinger_rows(X: sp.csr_matrix, groups: np.ndarray) -> np.ndarray:
    """Square roots of each row's department and class shares (the start's Euclidean space)."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    G = sp.csr_matrix((np.ones(len(groups)), (np.arange(len(groups)), groups)))
    dept = np.asarray((X @ G).todense()) / totals[:, None]
    cls = np.asarray(X.multiply(1.0 / totals[:, None]).todense())
    return np.sqrt(np.hstack([dept, cls]))


class CountMixtureClusterer(_Segmenter):
    """Mixture of Dirichlet-multinomials on units per department and per class; K chosen by BIC.

    Parameters
    ----------
    n_components : (int, int)
        Candidate range, inclusive; the count with the lowest BIC on a seeded sample of
        ``selection_sample_size`` rows is refit on all rows.
    columns : tuple of str
        Names of ``X``'s columns, ``class_units__<department>__<class>`` (stage 02's class units):
        the department of each class is read from them.
    start : {"ward", "kmeans++"}
        ``ward``: Ward's clustering of the rows' square-root shares (on at most
        ``selection_sample_size`` rows; the others join the nearest Ward centre): deterministic, so
        refits with other seeds agree. ``kmeans++``: ``n_init`` seeded k-means++ starts, the best
        log-likelihood kept.
    n_init, max_iter, tol, minka_steps, selection_sample_size, random_state
        EM stops when the mean log-likelihood per row gains less than ``tol``.
    scan_tol : float or None
        ``tol`` of the candidate fits that BIC compares (None: ``tol``); the chosen count is refit with ``tol``.
        0.01 chose the same counts as 0.001 on the five tuning sets in 20-50% less time (docs/decisions.md).
    """

    def __init__(self, n_components=(2, 8), columns=(), start="ward", n_init=3, max_iter=200, tol=1e-3,
                 minka_steps=2, selection_sample_size=5000, random_state=0, scan_tol=1e-2):
        self.scan_tol = scan_tol
        self.n_components = n_components
        self.columns = columns
        self.start = start
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.minka_steps = minka_steps
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    @property
    def deterministic(self) -> bool:
        """A Ward start uses no random number: refits with other seeds are the same fit."""
        return self.start == "ward"

    # --- data --------------------------------------------------------------------------------
    def _blocks(self, X: np.ndarray) -> list[CountBlock]:
        if X.shape[1] != len(self.columns):
            raise ValueError(f"X has {X.shape[1]} columns but {len(self.columns)} are named in columns")
        if X.size and X.min() < 0:
            raise ValueError("counts must be non-negative (units per class, as stage 02 counts them)")
        X = sp.csr_matrix(X)
        groups = department_groups(self.columns)
        G = sp.csr_matrix((np.ones(len(groups)), (np.arange(len(groups)), groups)))
        return [CountBlock(X @ G, np.zeros(G.shape[1], int)), CountBlock(X, groups)]

    # --- one EM run --------------------------------------------------------------------------
    @staticmethod
    def _joint(blocks, params):
        alphas, weights = params
        ll = np.log(weights)[None, :]
        for block, alpha in zip(blocks, alphas):
            ll = ll + block.log_likelihood(alpha)
        return ll

    def _m_step(self, blocks, resp, alphas):
        weights = resp.mean(axis=0) + 1e-12
        if alphas is None:
            alphas = [b.start(resp) for b in blocks]
        return [b.update(a, resp, self.minka_steps) for b, a in zip(blocks, alphas)], weights / weights.sum()

    def _ward_tree(self, H: np.ndarray):
        """Ward's tree of at most ``selection_sample_size`` rows of ``H`` (built once, cut at every count)."""
        from scipy.cluster.hierarchy import ward

        rows = sample_rows(len(H), self.selection_sample_size, self.random_state)
        return rows, ward(H[rows])

    def _starts(self, H: np.ndarray, k: int, tree) -> list[np.ndarray]:
        from scipy.cluster.hierarchy import fcluster
        from sklearn.cluster import kmeans_plusplus

        if self.start == "ward":
            rows, linkage = tree
            cut = fcluster(linkage, k, criterion="maxclust") - 1
            return [np.vstack([H[rows][cut == j].mean(axis=0) for j in np.unique(cut)])]
        rng = np.random.default_rng(self.random_state)
        return [kmeans_plusplus(H, k, random_state=int(rng.integers(2**31 - 1)))[0] for _ in range(self.n_init)]

    def _em(self, blocks, H: np.ndarray, k: int, tree=None, tol=None):
        tol = self.tol if tol is None else tol
        best = None
        if self.start == "ward" and tree is None:
            tree = self._ward_tree(H)
        for centres in self._starts(H, k, tree):
            k = len(centres)  # a cut with ties may give fewer groups than asked
            resp = np.full((len(H), k), 0.1 / k)
            resp[np.arange(len(H)), ((H[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)] += 0.9
            params, previous = self._m_step(blocks, resp, None), -np.inf
            for iteration in range(1, self.max_iter + 1):
                joint = self._joint(blocks, params)
                norm = logsumexp(joint, axis=1)
                mean_ll = float(norm.mean())
                if mean_ll - previous < tol:
                    break
                previous = mean_ll
                params = self._m_step(blocks, np.exp(joint - norm[:, None]), params[0])
            if best is None or mean_ll > best[1]:
                best = (params, mean_ll, iteration)
        return best

    def _bic(self, blocks, params) -> float:
        n, k = blocks[0].X.shape[0], len(params[1])
        ll = float(logsumexp(self._joint(blocks, params), axis=1).sum())
        n_parameters = k * sum(b.X.shape[1] for b in blocks) + k - 1
        return -2.0 * ll + n_parameters * np.log(n)

    # --- estimator API -----------------------------------------------------------------------
    def fit(self, X, y=None) -> "CountMixtureClusterer":
        """Choose the number of components by BIC on a sample, refit it on ``X``.

        ``X``: rows customers, columns their units per class (``columns``). Sets ``labels_``,
        ``strength_`` (the posterior of the segment), ``bic_`` (by candidate count) and ``params_``.
        """
        X = _fit_input(self, X)
        self.n_rows_fitted_ = len(X)
        blocks = self._blocks(X)
        H = hellinger_rows(blocks[1].X, blocks[1].groups)
        candidates = self._candidate_counts(self.n_components, len(X))
        self.bic_ = {}
        if len(candidates) > 1:
            rows = sample_rows(len(X), self.selection_sample_size, self.random_state)
            sample = [b.take(rows) for b in blocks]
            tree = self._ward_tree(H[rows]) if self.start == "ward" else None
            for k in _candidates(self.candidate_range_, len(rows)):
                self.bic_[k] = self._bic(sample, self._em(sample, H[rows], k, tree, self.scan_tol)[0])
        k = min(self.bic_, key=self.bic_.get) if self.bic_ else candidates[0]
        self.params_, self.mean_log_likelihood_, self.n_iter_ = self._em(blocks, H, k)
        self._finish_fit(X, len(self.params_[1]))
        return self

    def _posterior(self, X: np.ndarray) -> np.ndarray:
        joint = self._joint(self._blocks(X), self.params_)
        return np.exp(joint - logsumexp(joint, axis=1)[:, None])

    def _assign_internal(self, X: np.ndarray, membership: bool):
        proba = self._posterior(X)
        return proba.argmax(axis=1), proba.max(axis=1), second_best(proba), proba, None

    def predict_proba(self, X) -> np.ndarray:
        """``(n, n_clusters_)`` posterior probability of each component for each row of counts."""
        check_is_fitted(self, "params_")
        return self._posterior(_predict_input(self, X))

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (multinomial coefficients left out: the same for every model)."""
        check_is_fitted(self, "params_")
        return float(logsumexp(self._joint(self._blocks(_predict_input(self, X)), self.params_), axis=1).mean())

    def fixed_params(self) -> dict:
        """The chosen number of components, so a refit does not choose again."""
        return {"n_components": (self.n_clusters_, self.n_clusters_)}

    def selection_report(self) -> dict:
        """How the number of components was chosen: BIC of each candidate on the selection sample."""
        return {"chosen_by": "bic", "bic": self.bic_, **self._range_report(self.n_components)}
