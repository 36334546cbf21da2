"""Clustering estimators with one interface, and their comparison.

Every clusterer follows the sklearn contract (``__init__`` stores
hyper-parameters, ``fit`` returns ``self``, learned state ends in ``_``) and
adds:

- ``labels_`` and ``strength_`` after ``fit``: each row's cluster (``-1`` is
  HDBSCAN noise) and how firmly it belongs there, in [0, 1];
- ``predict_with_strength(X)`` -> ``(labels, strength)`` for new rows;
- ``runner_up_`` after ``fit``: each row's second most likely cluster (``-1``
  when there is none), from the same soft assignment as the strength.

What strength means per method: HDBSCAN, the library's membership
probability; Gaussian mixture, the largest posterior probability; fuzzy
c-means, the largest membership; k-means, ``1 - d1/d2`` with ``d1``, ``d2``
the distances to the nearest and second-nearest centres (0 on a boundary,
1 at a centre).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)

NOISE = -1


def sample_rows(n_rows: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``min(size, n_rows)`` rows."""
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=size, replace=False))


def sampled_silhouette(X: np.ndarray, labels: np.ndarray, size: int, seed: int) -> float:
    """Silhouette on a seeded sample, noise excluded; NaN with fewer than two clusters."""
    keep = np.flatnonzero(labels != NOISE)
    if len(keep) == 0:
        return float("nan")
    rows = keep[sample_rows(len(keep), size, seed)]
    if len(np.unique(labels[rows])) < 2 or len(rows) <= len(np.unique(labels[rows])):
        return float("nan")
    return float(silhouette_score(X[rows], labels[rows]))


def _candidates(n_range: int | tuple[float, float], n_rows: int) -> list[int]:
    """Candidate cluster counts: a fixed number or an inclusive ``(min, max)``, capped below ``n_rows``."""
    if isinstance(n_range, (int, np.integer)):
        low = high = int(n_range)
    else:
        low, high = int(n_range[0]), int(n_range[1])
    high = min(high, max(n_rows - 1, 1))
    return list(range(min(low, high), high + 1))


def second_best(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Column of the second-best score in each row, ``-1`` with fewer than two columns."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        return np.full(len(scores), NOISE, dtype=np.int64)
    order = np.argsort(-scores if higher_is_better else scores, axis=1, kind="stable")
    return order[:, 1].astype(np.int64)


def _fit_input(estimator, X) -> np.ndarray:
    """Validated float array for ``fit``: 2-D, finite, dense, at least two rows; sets ``n_features_in_``."""
    return validate_data(estimator, X, dtype=np.float64, ensure_min_samples=2, copy=True)


def _predict_input(estimator, X) -> np.ndarray:
    """Validated float array for prediction, with the number of features seen in ``fit``."""
    return validate_data(estimator, X, dtype=np.float64, reset=False)


def _best_by_score(scores: dict[int, float]) -> int:
    """Candidate with the highest finite score (the smallest candidate if none is finite)."""
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    return max(finite, key=finite.get) if finite else min(scores)


class HDBSCANClusterer(ClusterMixin, BaseEstimator):
    """HDBSCAN with prediction data kept, its minimum cluster size relative to the data size.

    Parameters
    ----------
    min_cluster_size_fraction : float
        Smallest cluster as a share of the rows fitted.
    min_samples : int
    """

    def __init__(self, min_cluster_size_fraction=0.02, min_samples=10):
        self.min_cluster_size_fraction = min_cluster_size_fraction
        self.min_samples = min_samples

    def fit(self, X, y=None) -> "HDBSCANClusterer":
        """Cluster ``X`` (n_samples, n_features); sets ``labels_`` and ``strength_``."""
        import hdbscan

        X = _fit_input(self, X)
        size = max(2, int(round(self.min_cluster_size_fraction * len(X))))
        self.clusterer_ = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=min(self.min_samples, size),
                                          prediction_data=True).fit(X)
        self.labels_ = self.clusterer_.labels_.astype(np.int64)
        self.strength_ = self.clusterer_.probabilities_.astype(np.float64)
        self.runner_up_ = self._runner_up()
        self.min_cluster_size_ = size
        return self

    def _runner_up(self) -> np.ndarray:
        """Second cluster by soft membership (all_points_membership_vectors); -1 with under two clusters."""
        import hdbscan

        if self.labels_.max() < 1:
            return np.full(len(self.labels_), NOISE, dtype=np.int64)
        memberships = hdbscan.all_points_membership_vectors(self.clusterer_)
        runner_up = second_best(np.atleast_2d(memberships))
        # A clustered row's runner-up must differ from its cluster; if its own cluster is not its
        # top membership, the top one is the runner-up.
        top = np.argmax(memberships, axis=1)
        clustered = self.labels_ != NOISE
        swap = clustered & (runner_up == self.labels_)
        runner_up[swap] = top[swap]
        return runner_up

    def predict_with_strength(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Labels and strengths of new rows (``hdbscan.approximate_predict``)."""
        import hdbscan

        check_is_fitted(self, "clusterer_")
        labels, strength = hdbscan.approximate_predict(self.clusterer_, _predict_input(self, X))
        return labels.astype(np.int64), strength.astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Cluster of each new row."""
        return self.predict_with_strength(X)[0]

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        return {"min_cluster_size": self.min_cluster_size_}


class GaussianMixtureClusterer(ClusterMixin, BaseEstimator):
    """Gaussian mixture whose number of components is chosen by BIC.

    Parameters
    ----------
    n_components : (int, int)
        Candidate range, inclusive.
    covariance_type : str
    n_init : int
    selection_sample_size : int
        Candidates are fitted and scored on a seeded sample of this many
        rows; the chosen number is then refit on all rows.
    random_state : int

    Attributes
    ----------
    model_ : GaussianMixture
    bic_, aic_ : dict of int to float
        Per candidate number of components, on the selection sample.
    """

    def __init__(self, n_components=(2, 8), covariance_type="full", n_init=1, selection_sample_size=5000,
                 random_state=0):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _mixture(self, k: int) -> GaussianMixture:
        return GaussianMixture(n_components=k, covariance_type=self.covariance_type, n_init=self.n_init,
                               reg_covar=1e-5, random_state=self.random_state)

    def fit(self, X, y=None) -> "GaussianMixtureClusterer":
        """Choose the number of components by BIC on a sample, refit it on ``X``; sets ``labels_``, ``strength_``."""
        X = _fit_input(self, X)
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        self.bic_, self.aic_ = {}, {}
        for k in _candidates(self.n_components, len(sample)):
            gm = self._mixture(k).fit(sample)
            self.bic_[k], self.aic_[k] = float(gm.bic(sample)), float(gm.aic(sample))
        best_k = min(self.bic_, key=self.bic_.get)
        self.model_ = self._mixture(best_k).fit(X)
        self.n_iter_ = self.model_.n_iter_
        self.labels_, self.strength_ = self.predict_with_strength(X)
        self.runner_up_ = second_best(self.predict_proba(X))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability of each component, shape (n_samples, n_components)."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(_predict_input(self, X))

    def predict_with_strength(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Most likely component and its posterior probability for new rows."""
        proba = self.predict_proba(X)
        return proba.argmax(axis=1).astype(np.int64), proba.max(axis=1)

    def predict(self, X) -> np.ndarray:
        """Cluster of each new row."""
        return self.predict_with_strength(X)[0]

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        return {"chosen_by": "bic", "bic": self.bic_, "aic": self.aic_}


class FuzzyCMeansClusterer(ClusterMixin, BaseEstimator):
    """Fuzzy c-means (scikit-fuzzy), the number of clusters chosen by silhouette.

    scikit-fuzzy wants features by samples and returns a tuple; this wrapper
    takes the usual samples-by-features array.

    Parameters
    ----------
    n_clusters : (int, int)
        Candidate range, inclusive.
    fuzziness : float
        The fuzzifier m (> 1).
    tolerance : float
    max_iter : int
    silhouette_sample_size : int
        Rows sampled to score each candidate.
    selection_sample_size : int
        Candidates are fitted on a seeded sample of this many rows; the
        chosen number is then refit on all rows.
    random_state : int

    Attributes
    ----------
    centers_ : ndarray (n_clusters, n_features)
    membership_ : ndarray (n_samples, n_clusters)
    partition_coefficient_ : float
        Fuzzy partition coefficient of the chosen model (1 = crisp).
    partition_entropy_ : float
    """

    def __init__(self, n_clusters=(2, 8), fuzziness=2.0, tolerance=0.005, max_iter=300,
                 silhouette_sample_size=3000, selection_sample_size=5000, random_state=0):
        self.n_clusters = n_clusters
        self.fuzziness = fuzziness
        self.tolerance = tolerance
        self.max_iter = max_iter
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _cmeans(self, X: np.ndarray, c: int):
        import skfuzzy

        centers, u, _, _, _, n_iter, fpc = skfuzzy.cluster.cmeans(
            X.T, c, self.fuzziness, error=self.tolerance, maxiter=self.max_iter, seed=self.random_state)
        return centers, u, float(fpc), int(n_iter)

    def fit(self, X, y=None) -> "FuzzyCMeansClusterer":
        """Choose the number of clusters by silhouette on a sample, refit it on ``X``; sets ``membership_`` too."""
        X = _fit_input(self, X)
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        self.scores_, self.fpc_ = {}, {}
        for c in _candidates(self.n_clusters, len(sample)):
            _, u, fpc, _ = self._cmeans(sample, c)
            self.scores_[c] = sampled_silhouette(sample, u.argmax(axis=0), self.silhouette_sample_size,
                                                 self.random_state)
            self.fpc_[c] = fpc
        best_c = _best_by_score(self.scores_)
        self.centers_, u, _, self.n_iter_ = self._cmeans(X, best_c)
        self.membership_ = u.T
        n = self.membership_.shape[1]
        self.partition_coefficient_ = float(np.mean(np.sum(u**2, axis=0)))
        self.partition_entropy_ = float(-np.mean(np.sum(u * np.log(np.clip(u, 1e-12, None)), axis=0)))
        self.labels_ = self.membership_.argmax(axis=1).astype(np.int64)
        self.strength_ = self.membership_.max(axis=1)
        self.runner_up_ = second_best(self.membership_)
        self.n_clusters_ = n
        return self

    def membership(self, X) -> np.ndarray:
        """Membership of new rows in each cluster, shape (n_samples, n_clusters), rows sum to 1."""
        import skfuzzy

        check_is_fitted(self, "centers_")
        u, *_ = skfuzzy.cluster.cmeans_predict(_predict_input(self, X).T, self.centers_,
                                               self.fuzziness, error=self.tolerance, maxiter=self.max_iter,
                                               seed=self.random_state)
        return u.T

    def predict_with_strength(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Cluster of largest membership and that membership for new rows."""
        u = self.membership(X)
        return u.argmax(axis=1).astype(np.int64), u.max(axis=1)

    def predict(self, X) -> np.ndarray:
        """Cluster of each new row."""
        return self.predict_with_strength(X)[0]

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        return {"chosen_by": "silhouette", "silhouette": self.scores_, "partition_coefficient": self.fpc_,
                "partition_entropy": self.partition_entropy_}


class KMeansClusterer(ClusterMixin, BaseEstimator):
    """k-means, k chosen by silhouette on a sample.

    Parameters
    ----------
    n_clusters : (int, int)
        Candidate range, inclusive.
    n_init : int
    silhouette_sample_size : int
    selection_sample_size : int
        Candidates are fitted and scored on a seeded sample of this many
        rows; the chosen k is then refit on all rows.
    random_state : int
    """

    def __init__(self, n_clusters=(2, 8), n_init=4, silhouette_sample_size=3000, selection_sample_size=5000,
                 random_state=0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _kmeans(self, k: int) -> KMeans:
        return KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)

    def fit(self, X, y=None) -> "KMeansClusterer":
        """Choose k by silhouette on a sample, refit it on ``X``; sets ``labels_`` and ``strength_``."""
        X = _fit_input(self, X)
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        self.scores_ = {}
        for k in _candidates(self.n_clusters, len(sample)):
            labels = self._kmeans(k).fit(sample).labels_
            self.scores_[k] = sampled_silhouette(sample, labels, self.silhouette_sample_size, self.random_state)
        self.model_ = self._kmeans(_best_by_score(self.scores_)).fit(X)
        self.n_iter_ = self.model_.n_iter_
        self.labels_, self.strength_ = self.predict_with_strength(X)
        self.runner_up_ = second_best(self.model_.transform(X), higher_is_better=False)
        return self

    def predict_with_strength(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre and ``1 - d1/d2`` for new rows."""
        check_is_fitted(self, "model_")
        distances = self.model_.transform(_predict_input(self, X))
        labels = distances.argmin(axis=1)
        if distances.shape[1] < 2:
            return labels.astype(np.int64), np.ones(len(labels))
        two = np.sort(distances, axis=1)[:, :2]
        strength = 1.0 - np.divide(two[:, 0], two[:, 1], out=np.ones(len(two)), where=two[:, 1] > 0)
        return labels.astype(np.int64), strength

    def predict(self, X) -> np.ndarray:
        """Cluster of each new row."""
        return self.predict_with_strength(X)[0]

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        return {"chosen_by": "silhouette", "silhouette": self.scores_}


def make_clusterer(method: str, cluster_cfg, seed: int) -> ClusterMixin:
    """The estimator for ``method`` with its hyper-parameters from the ``cluster`` config section."""
    sample = cluster_cfg.silhouette_sample_size
    selection = cluster_cfg.selection_sample_size
    if method == "hdbscan":
        c = cluster_cfg.hdbscan
        return HDBSCANClusterer(min_cluster_size_fraction=c.min_cluster_size_fraction, min_samples=c.min_samples)
    if method == "gmm":
        c = cluster_cfg.gmm
        return GaussianMixtureClusterer(n_components=c.n_components, covariance_type=c.covariance_type,
                                        n_init=c.n_init, selection_sample_size=selection, random_state=seed)
    if method == "fcm":
        c = cluster_cfg.fcm
        return FuzzyCMeansClusterer(n_clusters=c.n_clusters, fuzziness=c.fuzziness, tolerance=c.tolerance,
                                    max_iter=c.max_iter, silhouette_sample_size=sample,
                                    selection_sample_size=selection, random_state=seed)
    if method == "kmeans":
        c = cluster_cfg.kmeans
        return KMeansClusterer(n_clusters=c.n_clusters, n_init=c.n_init, silhouette_sample_size=sample,
                               selection_sample_size=selection, random_state=seed)
    raise ValueError(f"unknown clustering method {method!r}")


def summarize_clustering(method: str, space: str, X: np.ndarray, labels: np.ndarray,
                         sample_size: int, seed: int) -> dict[str, Any]:
    """One row of ``comparison.csv``: cluster count, noise, sizes and silhouette."""
    clustered = labels[labels != NOISE]
    sizes = np.bincount(clustered) if len(clustered) else np.array([], dtype=int)
    sizes = sizes[sizes > 0]
    return {
        "method": method,
        "space": space,
        "clusters": int(len(sizes)),
        "noise_ratio": float(np.mean(labels == NOISE)),
        "silhouette": sampled_silhouette(X, labels, sample_size, seed),
        "smallest_cluster": int(sizes.min()) if len(sizes) else 0,
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
    }


def cluster_all(spaces: dict[str, np.ndarray], methods: list[str], cluster_cfg,
                seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], ClusterMixin]]:
    """Fit every method in every space.

    Parameters
    ----------
    spaces : dict of str to ndarray
        Space name (``raw``, ``latent``) -> matrix, rows aligned.
    methods : list of str

    Returns
    -------
    assignments : DataFrame
        ``<method>_<space>_label`` and ``<method>_<space>_strength`` per row.
    comparison : DataFrame
        One row per method and space (see :func:`summarize_clustering`).
    models : dict of (method, space) to fitted clusterer
    """
    columns: dict[str, np.ndarray] = {}
    rows, models = [], {}
    for space, X in spaces.items():
        for method in methods:
            model = make_clusterer(method, cluster_cfg, seed).fit(X)
            columns[f"{method}_{space}_label"] = model.labels_
            columns[f"{method}_{space}_strength"] = model.strength_
            row = summarize_clustering(method, space, X, model.labels_, cluster_cfg.silhouette_sample_size, seed)
            rows.append(row)
            models[(method, space)] = model
            log.info("%s on %s: %d clusters, noise %.1f%%, silhouette %.3f", method, space, row["clusters"],
                     100 * row["noise_ratio"], row["silhouette"])
    return pd.DataFrame(columns), pd.DataFrame(rows), models
