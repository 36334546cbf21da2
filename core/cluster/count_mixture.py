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

The maths is in :class:`CountBlock`; :class:`CountMixtureClusterer` is the estimator, stage 04's ``countmix``
in the ``counts`` space (:class:`CountMatrix`, built by :func:`counts_matrix` from stage 02's class units, the
snapshot windows' or scored order lines' ``class_long``). docs/decisions.md, "Persona sets nobody tuned for,
seventh round", has its cost and figures; ``benchmarks/bench_count_mixture.py`` fits it on built persona sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import digamma, gammaln, logsumexp
from sklearn.utils.validation import check_is_fitted

from core.cluster.clustering import Assignment, _candidates, _Segmenter, sample_rows, second_best

log = logging.getLogger(__name__)

ALPHA_FLOOR = 1e-3


@dataclass
class CountBlock:
    """One sparse count matrix and the group (department) of each of its columns.

    ``X`` is ``(n_rows, n_columns)`` CSR of non-negative counts; ``groups`` gives each column's group
    (0 for every column of a plain DM). Built once per matrix.

    Why it is fast: a DM term depends on a nonzero only through its column and its count (``lgamma(v + a) -
    lgamma(a)`` with ``a`` the column's parameter), and the counts are small integers, so the distinct
    (column, count) pairs are some tens of times fewer than the nonzeros (8,600 pairs for 253,000 nonzeros on
    the default data). The special functions run on the pairs; a sparse matrix ``P`` (rows x pairs, one 1
    per nonzero) carries them to the rows (``P @ T``), and its transpose gathers the responsibilities of each
    pair's rows for the M-step (``P.T @ resp``, once per M-step, not once per fixed-point step).
    """

    X: sp.csr_matrix
    groups: np.ndarray

    def __post_init__(self):
        X = sp.csr_matrix(self.X, dtype=float)
        X.eliminate_zeros()
        X.sort_indices()
        self.X = X
        self.groups = np.asarray(self.groups, dtype=int)
        self.n_groups = int(self.groups.max()) + 1 if len(self.groups) else 0
        self.pair_col, self.pair_val, self.P = _pairs(X.indptr, X.indices, X.data, X.shape)
        G = sp.csr_matrix((np.ones(X.shape[1]), (np.arange(X.shape[1]), self.groups)),
                          shape=(X.shape[1], self.n_groups))
        totals = sp.csr_matrix(X @ G)  # units per row and group; zero groups contribute nothing
        totals.eliminate_zeros()
        totals.sort_indices()
        self.gpair_group, self.gpair_val, self.Pg = _pairs(totals.indptr, totals.indices, totals.data,
                                                           totals.shape)
        # Sums over each column's pairs and each group's pairs (the M-step's numerator and denominator).
        self.C = sp.csr_matrix((np.ones(len(self.pair_col)), (self.pair_col, np.arange(len(self.pair_col)))),
                               shape=(X.shape[1], len(self.pair_col)))
        self.Cg = sp.csr_matrix((np.ones(len(self.gpair_group)),
                                 (self.gpair_group, np.arange(len(self.gpair_group)))),
                                shape=(self.n_groups, len(self.gpair_group)))

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
        a = alpha[:, self.pair_col].T  # (pairs, K)
        per_pair = gammaln(self.pair_val[:, None] + a) - gammaln(a)
        A = self.group_totals(alpha)[:, self.gpair_group].T  # (group pairs, K)
        per_group = gammaln(A) - gammaln(self.gpair_val[:, None] + A)
        return np.asarray(self.P @ per_pair) + np.asarray(self.Pg @ per_group)

    def update(self, alpha: np.ndarray, resp: np.ndarray, steps: int) -> np.ndarray:
        """Minka's fixed-point updates of each component's ``alpha``, rows weighted by ``resp`` (n, K)."""
        r_pair = np.asarray(self.P.T @ resp)  # responsibility summed over each pair's rows
        r_gpair = np.asarray(self.Pg.T @ resp)
        for _ in range(steps):
            a = alpha[:, self.pair_col].T
            num = np.asarray(self.C @ (r_pair * (digamma(self.pair_val[:, None] + a) - digamma(a)))).T  # (K, C)
            Ag = self.group_totals(alpha)[:, self.gpair_group].T
            den = np.asarray(self.Cg @ (r_gpair * (digamma(self.gpair_val[:, None] + Ag) - digamma(Ag)))).T
            den = den[:, self.groups]  # (K, C)
            alpha = np.maximum(alpha * np.divide(num, den, out=np.zeros_like(num), where=den > 0), ALPHA_FLOOR)
        return alpha

    def start(self, resp: np.ndarray, concentration: float = 10.0) -> np.ndarray:
        """Starting ``alpha``: each component's pooled shares within each group, times ``concentration``."""
        pooled = np.asarray(self.X.T @ resp).T + 0.1  # (K, C) units weighted by responsibility
        totals = self.group_totals(pooled)[:, self.groups]
        return np.maximum(concentration * pooled / totals, ALPHA_FLOOR)

    def n_parameters(self) -> int:
        return self.X.shape[1]

    def take(self, rows: np.ndarray) -> "CountBlock":
        return CountBlock(self.X[rows], self.groups)


def _pairs(indptr, indices, data, shape):
    """Distinct (column, value) pairs of a CSR matrix's nonzeros and the rows x pairs 0/1 matrix placing them."""
    values, value_code = np.unique(data, return_inverse=True)
    keys = indices.astype(np.int64) * len(values) + value_code.ravel()
    unique_keys, pair_of = np.unique(keys, return_inverse=True)
    P = sp.csr_matrix((np.ones(len(keys)), pair_of.ravel().astype(np.int64), indptr),
                      shape=(shape[0], len(unique_keys)))
    return (unique_keys // len(values)).astype(int), values[unique_keys % len(values)], P


def department_groups(columns) -> np.ndarray:
    """Department index of each ``class_units__<department>__<class>`` column (stage 02's names), in first-seen order."""
    departments = [str(c).split("__")[1] if str(c).count("__") >= 2 else "" for c in columns]
    if "" in departments:
        bad = [c for c, d in zip(columns, departments) if d == ""][:3]
        raise ValueError(f"count columns must be named class_units__<department>__<class>; got {bad}")
    return pd.Index(pd.unique(np.asarray(departments))).get_indexer(departments)


def hellinger_rows(X: sp.csr_matrix, groups: np.ndarray) -> sp.csr_matrix:
    """Square roots of each row's department and class shares (the start's Euclidean space), sparse."""
    X = sp.csr_matrix(X)
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    G = sp.csr_matrix((np.ones(len(groups)), (np.arange(len(groups)), groups)))
    scale = sp.diags(1.0 / totals)
    return sp.csr_matrix(sp.hstack([scale @ (X @ G), scale @ X]).sqrt())


def _squared_norms(H: sp.csr_matrix) -> np.ndarray:
    return np.asarray(H.multiply(H).sum(axis=1)).ravel()


def ward_linkage(H: sp.csr_matrix) -> np.ndarray:
    """Ward's tree of the rows of ``H`` (scipy's ``linkage(..., "ward")``), distances from one matrix product.

    ``scipy.cluster.hierarchy.ward`` computes every distance over all of ``H``'s columns, one pair at a time;
    ``|a|^2 + |b|^2 - 2 a.b`` with one BLAS product costs a fraction of that on a few thousand rows.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    D = H.toarray()
    norms = (D ** 2).sum(axis=1)
    d = D @ D.T  # becomes the distances in place: one n x n array (128 MB at 4,000 rows), not four
    d *= -2.0
    d += norms[:, None]
    d += norms[None, :]
    np.maximum(d, 0.0, out=d)
    np.sqrt(d, out=d)
    np.fill_diagonal(d, 0.0)
    return linkage(squareform(d, checks=False), method="ward")


def nearest_centre(H: sp.csr_matrix, centres: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """Index of the nearest of ``centres`` (Euclidean) for each row of ``H``, a chunk of rows at a time."""
    out = np.empty(H.shape[0], dtype=np.int64)
    c2 = (centres ** 2).sum(axis=1)
    for start in range(0, H.shape[0], chunk):
        part = H[start:start + chunk]
        out[start:start + chunk] = (c2[None, :] - 2.0 * np.asarray(part @ centres.T)).argmin(axis=1)
    return out


def counts_input(X, n_columns: int, name: str = "X") -> sp.csr_matrix:
    """``X`` (dense or sparse) as a CSR float matrix of counts, checked: 2-D, ``n_columns`` columns, finite,
    non-negative."""
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows customers, columns their units per class); got {X.ndim}-D")
    if X.shape[1] != n_columns:
        raise ValueError(f"{name} has {X.shape[1]} features (count columns), but {n_columns} are expected")
    values = X.data if sp.issparse(X) else X
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds missing or infinite counts")
    if values.size and values.min() < 0:
        raise ValueError("counts must be non-negative (units per class, as stage 02 counts them)")
    return sp.csr_matrix(X)


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
        ``ward_sample_size`` rows; the others join the nearest Ward centre): deterministic, so
        refits with other seeds agree. ``kmeans++``: ``n_init`` seeded k-means++ starts, the best
        log-likelihood kept.
    n_init, max_iter, tol, minka_steps, selection_sample_size, random_state
        EM stops when the mean log-likelihood per row gains less than ``tol``.
    scan_tol : float or None
        ``tol`` of the candidate fits that BIC compares (None: ``tol``); the chosen count is refit with ``tol``.
        0.01 chose the same counts as 0.001 on the five tuning sets in 20-50% less time (docs/decisions.md).
    ward_sample_size : int or None
        Rows of Ward's tree (None: ``selection_sample_size``).
    scan_step : int
        BIC is measured at every ``scan_step``-th candidate count, then at the neighbours of the best until it
        is a local minimum (:meth:`_scan`); 1 = every candidate.
    ward_restarts : int
        With ``start="ward"``, the fit of the chosen count (not the BIC scan) also starts from the Ward cuts of
        this many subsets of the tree's rows (:func:`restart_rows`, ``restart_fraction`` of them each); every
        start runs EM with ``scan_tol``, the most likely is run on to ``tol`` (short runs from several starts,
        Biernacki, Celeux and Govaert 2003). One Ward cut is a brittle start: refits on 80% subsamples,
        each from its own Ward tree, agreed 0.82 (ARI) on ``tune-d``, the same refits started from one set of
        centres 0.955 (docs/decisions.md, "Primary stability, eighth round"). 0 = the one Ward cut.
    restart_fraction : float
        Share of the tree's rows in each restart's subset.

    Attributes
    ----------
    start_log_likelihoods_ : list of float
        With restarts: the mean log-likelihood per row of each start after its short run (the tree's own cut
        first); ``start_chosen_`` is the index of the one run on.

    ``X`` may be dense or ``scipy.sparse`` (a million customers' counts are never made dense).
    """

    def __init__(self, n_components=(2, 8), columns=(), start="ward", n_init=3, max_iter=200, tol=1e-3,
                 minka_steps=2, selection_sample_size=5000, random_state=0, scan_tol=1e-2, ward_sample_size=None,
                 scan_step=1, ward_restarts=0, restart_fraction=0.5):
        self.ward_restarts = ward_restarts
        self.restart_fraction = restart_fraction
        self.scan_step = scan_step
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
        self.ward_sample_size = ward_sample_size

    @property
    def deterministic(self) -> bool:
        """A Ward start uses no random number, nor do its restarts (:func:`restart_rows`): refits with other seeds
        are the same fit."""
        return self.start == "ward"

    # --- data --------------------------------------------------------------------------------
    def _blocks(self, X: sp.csr_matrix) -> list[CountBlock]:
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

    def _ward_tree(self, H: sp.csr_matrix):
        """Ward's tree of at most ``ward_sample_size`` rows of ``H`` (built once, cut at every count)."""
        size = self.selection_sample_size if self.ward_sample_size is None else self.ward_sample_size
        rows = sample_rows(H.shape[0], size, self.random_state)
        return rows, ward_linkage(H[rows])

    def _starts(self, H: sp.csr_matrix, k: int, tree, restarts: int = 0) -> list[np.ndarray]:
        from sklearn.cluster import kmeans_plusplus

        if self.start == "ward":
            rows, linkage = tree
            starts = [_cut_centres(H[rows], linkage, k)]
            for index in range(restarts):
                subset = rows[restart_rows(len(rows), index, restarts, self.restart_fraction)]
                if len(subset) > k:
                    starts.append(_cut_centres(H[subset], ward_linkage(H[subset]), k))
            return starts
        rng = np.random.default_rng(self.random_state)
        return [kmeans_plusplus(H, k, random_state=int(rng.integers(2**31 - 1)))[0] for _ in range(self.n_init)]

    def _em(self, blocks, H: sp.csr_matrix, k: int, tree=None, tol=None, restarts: int = 0):
        """EM from each start, the most likely kept: ``(params, mean log-likelihood, iterations)``.

        With ``restarts`` (Ward starts only) every start first runs with ``scan_tol`` and only the most
        likely is run on to ``tol``; ``start_log_likelihoods_`` and ``start_chosen_`` record the race.
        """
        tol = self.tol if tol is None else tol
        if self.start == "ward" and tree is None:
            tree = self._ward_tree(H)
        restarts = restarts if self.start == "ward" else 0
        short = max(tol, self.tol if self.scan_tol is None else self.scan_tol) if restarts else tol
        best, likelihoods = None, []
        for centres in self._starts(H, k, tree, restarts):
            params, mean_ll, iteration = self._iterate(blocks, self._start_params(blocks, H, centres), short)
            likelihoods.append(mean_ll)
            if best is None or mean_ll > best[1]:
                best = (params, mean_ll, iteration)
        if not restarts:
            return best
        self.start_log_likelihoods_ = likelihoods
        self.start_chosen_ = int(np.argmax(likelihoods))
        params, mean_ll, iteration = self._iterate(blocks, best[0], tol)
        return params, mean_ll, best[2] + iteration

    def _start_params(self, blocks, H: sp.csr_matrix, centres: np.ndarray):
        """Parameters of the M-step with every row given (0.9 of) its nearest start centre."""
        n, k = H.shape[0], len(centres)  # a cut with ties may give fewer groups than asked
        resp = np.full((n, k), 0.1 / k)
        resp[np.arange(n), nearest_centre(H, np.asarray(centres))] += 0.9
        return self._m_step(blocks, resp, None)

    def _iterate(self, blocks, params, tol: float):
        """EM steps from ``params`` until the mean log-likelihood per row gains less than ``tol``."""
        previous = -np.inf
        for iteration in range(1, self.max_iter + 1):
            joint = self._joint(blocks, params)
            norm = logsumexp(joint, axis=1)
            mean_ll = float(norm.mean())
            if mean_ll - previous < tol:
                break
            previous = mean_ll
            params = self._m_step(blocks, np.exp(joint - norm[:, None]), params[0])
        return params, mean_ll, iteration

    def _scan(self, candidates: list[int], bic_of) -> None:
        """BIC of every ``scan_step``-th candidate, then of the neighbours of the best until both of its
        neighbours are measured (a local minimum at step 1); fills ``bic_``. ``scan_step`` 1 = every candidate."""
        step = max(1, int(self.scan_step))
        low, high = candidates[0], candidates[-1]
        grid = sorted(set(candidates[::step]) | {high})
        for k in grid:
            self.bic_[k] = bic_of(k)
        while True:
            best = min(self.bic_, key=self.bic_.get)
            missing = [k for k in (best - 1, best + 1) if low <= k <= high and k not in self.bic_]
            if not missing:
                return
            for k in missing:
                self.bic_[k] = bic_of(k)

    def _bic(self, blocks, params) -> float:
        n, k = blocks[0].X.shape[0], len(params[1])
        ll = float(logsumexp(self._joint(blocks, params), axis=1).sum())
        n_parameters = k * sum(b.X.shape[1] for b in blocks) + k - 1
        return -2.0 * ll + n_parameters * np.log(n)

    # --- estimator API -----------------------------------------------------------------------
    def fit(self, X, y=None) -> "CountMixtureClusterer":
        """Choose the number of components by BIC on a sample, refit it on ``X``.

        ``X``: rows customers, columns their units per class (``columns``), dense or sparse. Sets
        ``labels_``, ``strength_`` (the posterior of the segment), ``bic_`` (by candidate count) and ``params_``.
        """
        if len(self.columns) != (X.shape[1] if X.ndim == 2 else -1):
            raise ValueError(f"X has {X.shape[1] if X.ndim == 2 else '?'} columns but {len(self.columns)} are "
                             f"named in columns")
        X = counts_input(X, len(self.columns))
        if X.shape[0] < 2:
            raise ValueError(f"the count mixture needs at least 2 rows to fit; got {X.shape[0]}")
        self.n_features_in_ = X.shape[1]
        self.n_rows_fitted_ = X.shape[0]
        blocks = self._blocks(X)
        H = hellinger_rows(blocks[1].X, blocks[1].groups)
        candidates = self._candidate_counts(self.n_components, X.shape[0])
        self.bic_ = {}
        tree = None
        if len(candidates) > 1:
            rows = sample_rows(X.shape[0], self.selection_sample_size, self.random_state)
            sample = [b.take(rows) for b in blocks]
            tree = self._ward_tree(H[rows]) if self.start == "ward" else None
            Hs = H[rows]
            self._scan(_candidates(self.candidate_range_, len(rows)),
                       lambda k: self._bic(sample, self._em(sample, Hs, k, tree, self.scan_tol)[0]))
            if tree is not None:
                tree = (rows[tree[0]], tree[1])  # the same tree, its rows numbered among all of X's
        k = min(self.bic_, key=self.bic_.get) if self.bic_ else candidates[0]
        self.start_log_likelihoods_, self.start_chosen_ = None, None
        self.params_, self.mean_log_likelihood_, self.n_iter_ = self._em(blocks, H, k, tree,
                                                                          restarts=int(self.ward_restarts))
        self._finish_fit(X, len(self.params_[1]))
        return self

    def _posterior(self, X: sp.csr_matrix, chunk: int = 200_000) -> np.ndarray:
        parts = []
        for start in range(0, max(X.shape[0], 1), chunk):
            joint = self._joint(self._blocks(X[start:start + chunk]), self.params_)
            parts.append(np.exp(joint - logsumexp(joint, axis=1)[:, None]))
        return np.vstack(parts)

    def _assign_internal(self, X, membership: bool):
        proba = self._posterior(X)
        return proba.argmax(axis=1), proba.max(axis=1), second_best(proba), proba, None

    def assign(self, X, membership: bool = True) -> Assignment:
        """As :meth:`_Segmenter.assign`, on dense or sparse counts (``columns``' order)."""
        check_is_fitted(self, "cluster_ids_")
        X = counts_input(X, self.n_features_in_)
        labels, strength, runner_up, soft, noise = self._assign_internal(X, membership)
        return Assignment(labels=self._public(labels), strength=np.clip(strength, 0.0, 1.0).astype(np.float64),
                          runner_up=self._public(runner_up), membership=soft, cluster_ids=self.cluster_ids_.copy(),
                          noise=noise)

    def predict_proba(self, X) -> np.ndarray:
        """``(n, n_clusters_)`` posterior probability of each component for each row of counts."""
        check_is_fitted(self, "params_")
        return self._posterior(counts_input(X, self.n_features_in_))

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (multinomial coefficients left out: the same for every model)."""
        check_is_fitted(self, "params_")
        X = counts_input(X, self.n_features_in_)
        return float(logsumexp(self._joint(self._blocks(X), self.params_), axis=1).mean())

    def fixed_params(self) -> dict:
        """The chosen number of components, so a refit does not choose again."""
        return {"n_components": (self.n_clusters_, self.n_clusters_)}

    def selection_report(self) -> dict:
        """How the number of components was chosen: BIC of each candidate on the selection sample."""
        restarts = ({"start_log_likelihoods": self.start_log_likelihoods_, "start_chosen": self.start_chosen_}
                    if getattr(self, "start_log_likelihoods_", None) is not None else {})
        return {"chosen_by": "bic", "bic": self.bic_, **restarts, **self._range_report(self.n_components)}


def _cut_centres(H: sp.csr_matrix, linkage: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``H``'s rows in each group of Ward's tree ``linkage`` (of those rows) cut into ``k``."""
    from scipy.cluster.hierarchy import fcluster

    cut = fcluster(linkage, k, criterion="maxclust") - 1
    return np.vstack([np.asarray(H[cut == j].mean(axis=0)).ravel() for j in np.unique(cut)])


#: Fractional part of the golden ratio: the Weyl sequence ``i * PHI mod 1`` spreads any run of rows evenly.
PHI = 0.6180339887498949


def restart_rows(n_rows: int, index: int, restarts: int, fraction: float) -> np.ndarray:
    """Sorted positions (of ``n_rows``) in restart ``index`` of ``restarts``: those whose Weyl number
    ``(i * PHI + index / restarts) mod 1`` is below ``fraction``.

    No random number: the restarts, like Ward's tree, are a function of the rows fitted alone, so the fit stays
    deterministic (refits with other seeds agree); the offsets make the subsets differ (with ``fraction`` 0.5 the
    subsets ``index`` and ``index + restarts / 2`` are complements), and the golden ratio leaves no pattern of
    the rows' order (customer ids) in them.
    """
    offset = index / max(int(restarts), 1)
    return np.flatnonzero(np.mod(np.arange(n_rows) * PHI + offset, 1.0) < fraction)


def count_columns(sellable_classes) -> list[str]:
    """The counts space's columns: ``class_units__<department>__<class>`` for each sellable (department, class)
    of stage 02's feature model (``FeatureModel.sellable_classes``), in its order."""
    from core.prepare_features.columns import CLASS_UNITS, class_column

    return [class_column(CLASS_UNITS, d, c) for d, c in sellable_classes]


def sellable_index(departments, classes, keys) -> np.ndarray:
    """Each row's position among the sellable (department, class) ``keys``, -1 for a pair not among them.

    ``departments`` and ``classes`` are columns of a long table (``class_spend_long.parquet``'s categoricals):
    the pairs are looked up once per distinct pair of categories, not once per row (a million customers have
    26 million rows).
    """
    departments = pd.Categorical(departments)
    classes = pd.Categorical(classes)
    known = pd.MultiIndex.from_tuples(list(keys)) if len(keys) else None
    table = np.full((len(departments.categories) + 1, len(classes.categories) + 1), -1, dtype=np.int64)
    if known is not None and len(departments.categories) and len(classes.categories):
        d, c = np.meshgrid(np.arange(len(departments.categories)), np.arange(len(classes.categories)), indexing="ij")
        pairs = pd.MultiIndex.from_arrays([departments.categories[d.ravel()].astype(str),
                                           classes.categories[c.ravel()].astype(str)])
        table[:-1, :-1] = known.get_indexer(pairs).reshape(d.shape)
    return table[departments.codes, classes.codes]  # a missing value's code -1 reads the last row or column: -1


def counts_matrix(ids: np.ndarray, long_ids: np.ndarray, class_idx: np.ndarray, units: np.ndarray,
                  n_classes: int) -> sp.csr_matrix:
    """Units per customer and class as a sparse ``(len(ids), n_classes)`` matrix, rows in ``ids``' order.

    ``long_ids``, ``class_idx``, ``units``: one entry per customer and class (stage 02's ``class_long``, or
    ``class_spend_long.parquet`` with each class's index among the sellable classes). Entries of customers
    not in ``ids`` (excluded by stage 02's eligibility rules, so never segmented) are left out; a customer
    with no entry gets an empty row. Units are net of returns: a class where a customer returned more than they
    bought (in a window, the return of an earlier purchase) counts 0 units bought (logged with how many).
    """
    ids = np.asarray(ids)
    rows = pd.Index(ids).get_indexer(np.asarray(long_ids))
    keep = rows >= 0
    class_idx = np.asarray(class_idx, dtype=np.int64)[keep]
    if len(class_idx) and (class_idx.min() < 0 or class_idx.max() >= n_classes):
        raise ValueError(f"class index outside the {n_classes} sellable classes")
    values = np.asarray(units, dtype=np.float64)[keep]
    negative = int((values < 0).sum())
    if negative:
        log.info("counts: %d customer-class total(s) below zero (more returned than bought) count 0 units", negative)
        values = np.maximum(values, 0.0)
    X = sp.csr_matrix((values, (rows[keep], class_idx)), shape=(len(ids), n_classes))
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


class CountMatrix(sp.csr_matrix):
    """Customers' units per class, sparse, as stage 04 passes a space to its evaluation.

    A CSR matrix that also answers ``len()`` (its rows), as the dense spaces do: stage 04's shared functions
    (``evaluation.stability``, ``sample_rows(len(X), ...)``) take any space. ``columns`` (the
    ``class_units__<department>__<class>`` names) rides along for the estimator; row selections keep the class,
    not the names.
    """

    columns: tuple = ()

    def __len__(self) -> int:
        return self.shape[0]


def count_space(X, columns) -> CountMatrix:
    """``X`` (sparse counts) as the counts space: a :class:`CountMatrix` with its column names."""
    matrix = CountMatrix(sp.csr_matrix(X, dtype=np.float64))
    matrix.columns = tuple(columns)
    return matrix


class HellingerView:
    """The rows of a counts space as square roots of their department and class shares, made dense only for
    the rows asked for: the geometry stage 04's separation measures (silhouette, Davies-Bouldin) read for
    the counts space, without a dense matrix of every customer."""

    def __init__(self, X: sp.csr_matrix, columns):
        self.X = sp.csr_matrix(X)
        self.groups = department_groups(columns)

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return hellinger_rows(self.X[rows], self.groups).toarray()
