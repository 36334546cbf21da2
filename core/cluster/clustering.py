"""Clustering estimators with one interface.

Every clusterer follows the sklearn contract (``__init__`` stores
hyper-parameters, ``fit`` returns ``self``, learned state ends in ``_``) and
adds one method, :meth:`assign`, which scores any rows (the training rows or
new customers) and returns an :class:`Assignment`: each row's segment id,
how firmly it belongs there (``strength``, 0 to 1), its second most likely
segment (``runner_up``) and, for the soft methods, the full membership
matrix. ``labels_``, ``strength_`` and ``runner_up_`` after ``fit`` are
``assign`` of the fitted rows, so scoring a training customer again gives
exactly its training segment.

What strength means per method: HDBSCAN, the library's membership
probability (for a noise point given its most likely cluster, that
cluster's membership-vector value, which is low); Gaussian mixture, the
largest posterior probability; fuzzy c-means, the largest membership;
k-means, ``1 - d1/d2`` with ``d1``, ``d2`` the distances to the nearest and
second-nearest centres (0 on a boundary, 1 at a centre).

Segment ids: each fitted clusterer maps its internal clusters to public
segment ids through ``cluster_ids_`` (``0 .. k-1`` after ``fit``).
:meth:`set_cluster_ids` changes that mapping, which is how a retrained
model keeps the ids of the previous run's segments (``core.cluster.matching``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from typing import Any

import numpy as np
from joblib import Memory
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data

from core.cluster import exact_neighbours, fuzzy_cmeans, hdbscan_prediction
from core.domain.columns import NOISE

log = logging.getLogger(__name__)



def sample_rows(n_rows: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``min(size, n_rows)`` rows."""
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=size, replace=False))


def silhouette_from_distances(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a labeling from its square distance matrix: sklearn's ``silhouette_score`` with
    ``metric="precomputed"``, the same definition (mean distance to the own cluster without the point itself,
    to the nearest other cluster by mean distance; 0 for a point alone in its cluster).

    Each point's distance sums per cluster come from one matrix product with the labels' indicator matrix,
    where scikit-learn counts them row by row (``np.bincount``): 2 to 3 times faster on 3,000 rows, equal to
    about 1e-15 (only the order of the additions differs). Needs 2 to ``n - 1`` distinct labels.
    """
    _, cluster, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    n, rows = len(cluster), np.arange(len(cluster))
    if not 2 <= len(sizes) <= n - 1:
        raise ValueError(f"a silhouette needs 2 to {n - 1} labels for {n} rows, got {len(sizes)}")
    indicator = np.zeros((n, len(sizes)))
    indicator[rows, cluster] = 1.0
    sums = distances @ indicator
    own = sums[rows, cluster] / np.maximum(sizes[cluster] - 1, 1)
    sums[rows, cluster] = np.inf
    nearest_other = (sums / sizes).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (nearest_other - own) / np.maximum(own, nearest_other)
    scores[sizes[cluster] == 1] = 0.0
    return float(np.mean(np.nan_to_num(scores)))


def sampled_silhouette(X: np.ndarray, labels: np.ndarray, size: int, seed: int) -> float:
    """Silhouette on a seeded sample, noise excluded; NaN with fewer than two clusters."""
    from sklearn.metrics import pairwise_distances

    keep = np.flatnonzero(labels != NOISE)
    if len(keep) == 0:
        return float("nan")
    rows = keep[sample_rows(len(keep), size, seed)]
    if len(np.unique(labels[rows])) < 2 or len(rows) <= len(np.unique(labels[rows])):
        return float("nan")
    return silhouette_from_distances(pairwise_distances(X[rows]), labels[rows])


class _SilhouetteOfSample:
    """Silhouettes of several labelings of the same rows (no noise) from one distance matrix.

    Gives what :func:`sampled_silhouette` gives for each labeling, at a
    fraction of the cost when many candidates are scored.
    """

    def __init__(self, X: np.ndarray, size: int, seed: int):
        from sklearn.metrics import pairwise_distances

        self.rows = sample_rows(len(X), size, seed)
        self.distances = pairwise_distances(X[self.rows])

    def __call__(self, labels: np.ndarray) -> float:
        sampled = labels[self.rows]
        n_labels = len(np.unique(sampled))
        if n_labels < 2 or len(sampled) <= n_labels:
            return float("nan")
        return silhouette_from_distances(self.distances, sampled)


def cluster_range(n_range: int | tuple[float, float]) -> tuple[int, int]:
    """A fixed number of clusters or an inclusive ``(min, max)``, as ``(min, max)`` integers."""
    if isinstance(n_range, (int, np.integer)):
        return int(n_range), int(n_range)
    return int(n_range[0]), int(n_range[1])


def usable_range(n_range: int | tuple[float, float], n_rows: int) -> tuple[int, int]:
    """The part of a cluster-count range that ``n_rows`` rows can hold.

    At most ``n_rows - 1`` clusters: a silhouette, and so a choice between
    candidates, needs more rows than clusters. The top of the range is
    lowered to that; the bottom only when nothing of the range fits
    (:func:`core.cluster.segmentation.segment_customers` refuses that case
    before fitting, with the number of customers it needs).
    """
    low, high = cluster_range(n_range)
    high = min(high, max(n_rows - 1, 1))
    return min(low, high), high


def size_limited_top(n_rows: int) -> int:
    """The most clusters worth trying on ``n_rows`` rows: ``sqrt(n_rows / 2)``, the usual rule of thumb.

    A configured range is a ceiling; this lowers its top on small data (22
    clusters for 1,000 customers, 50 for 5,000), so a range set wide for
    persona sets of any size does not ask 300 customers for 30 segments.
    """
    return max(1, int(np.sqrt(n_rows / 2.0)))


def _candidates(n_range: int | tuple[float, float], n_rows: int) -> list[int]:
    """Candidate cluster counts: the :func:`usable_range` of ``n_range`` for ``n_rows`` rows."""
    low, high = usable_range(n_range, n_rows)
    return list(range(low, high + 1))


def second_best(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Column of the second-best score in each row, ``-1`` with fewer than two columns."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        return np.full(len(scores), NOISE, dtype=np.int64)
    order = np.argsort(-scores if higher_is_better else scores, axis=1, kind="stable")
    return order[:, 1].astype(np.int64)


def normalized_entropy(membership: np.ndarray) -> np.ndarray:
    """Entropy of each row's membership (rescaled to sum to 1) over ``ln(k)``: 0 certain, 1 evenly split."""
    k = membership.shape[1]
    if k < 2:
        return np.zeros(len(membership))
    totals = membership.sum(axis=1, keepdims=True)
    p = np.divide(membership, totals, out=np.full_like(membership, 1.0 / k, dtype=np.float64), where=totals > 0)
    terms = np.where(p > 0, p * np.log(np.clip(p, 1e-300, None)), 0.0)
    return np.clip(-terms.sum(axis=1) / np.log(k), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Assignment:
    """How a fitted clusterer places a set of rows.

    Attributes
    ----------
    labels : ndarray of int64, shape (n,)
        Segment id; ``-1`` only for HDBSCAN noise left unassigned.
    strength : ndarray of float64, shape (n,)
        How firmly the row belongs to its segment, 0 to 1.
    runner_up : ndarray of int64, shape (n,)
        Second most likely segment, ``-1`` when there is none (or it was
        not computed: HDBSCAN without membership vectors).
    membership : ndarray of float64, shape (n, k), or None
        Soft assignment, columns in the order of ``cluster_ids``
        (posteriors, fuzzy memberships or HDBSCAN membership vectors).
    cluster_ids : ndarray of int64, shape (k,)
        Segment id of each membership column.
    noise : ndarray of bool, shape (n,), or None
        HDBSCAN only: rows it called noise before they were given their
        most likely cluster.
    """

    labels: np.ndarray
    strength: np.ndarray
    runner_up: np.ndarray
    membership: np.ndarray | None
    cluster_ids: np.ndarray
    noise: np.ndarray | None = None

    @property
    def uncertainty(self) -> np.ndarray | None:
        """Normalised entropy of each row's membership (0 certain, 1 evenly split); None without one."""
        return None if self.membership is None else normalized_entropy(self.membership)


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


def split_halves(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded halves of ``range(n_rows)``, each sorted."""
    order = np.random.default_rng(seed + 2147483).permutation(n_rows)
    return np.sort(order[: n_rows // 2]), np.sort(order[n_rows // 2:])


def score_counts_by_halves(sample: np.ndarray, counts: list[int], labels_of, silhouette, seed: int
                           ) -> tuple[dict[int, float], dict[int, float], dict[int, float], dict[int, Any]]:
    """Each cluster count's silhouette, split stability and their product, from two fits on disjoint halves.

    ``labels_of(k, rows)`` fits ``k`` clusters on ``sample[rows]`` and
    returns ``(labels of every row of sample, fitted model)``. Cluster count
    by reproducibility across subsamples (Lange et al. 2004; Ben-Hur et al.
    2002): a count the data support is found again from another half of the
    customers, one that cuts through a dense region is not. The silhouette
    is the mean of the two fits'; the stability is the ARI between their
    labels of the whole sample; the score is silhouette x stability. Two
    half-size fits cost about what one fit on the whole sample did.

    Returns
    -------
    (silhouette, stability, score, model fitted on the first half), each by count
    """
    from sklearn.metrics import adjusted_rand_score

    first, second = split_halves(len(sample), seed)
    silhouettes, stabilities, scores, models = {}, {}, {}, {}
    for k in counts:
        labels_a, models[k] = labels_of(k, first)
        labels_b, _ = labels_of(k, second)
        pair = [silhouette(labels_a), silhouette(labels_b)]
        silhouettes[k] = float(np.mean(pair)) if np.isfinite(pair).all() else float("nan")
        stabilities[k] = float(adjusted_rand_score(labels_a, labels_b))
        scores[k] = max(silhouettes[k], 0.0) * max(stabilities[k], 0.0) if np.isfinite(silhouettes[k]) else float("nan")
    return silhouettes, stabilities, scores, models


class _Segmenter(ClusterMixin, BaseEstimator):
    """What every clusterer here shares: public segment ids and ``assign``.

    Subclasses implement ``_assign_internal(X, membership)`` returning
    internal cluster indices (``-1`` noise), strength, internal runner-up
    indices, the membership matrix (or None) and the noise mask (or None).
    """

    #: True when refitting with another seed cannot change the result.
    deterministic = False

    def _finish_fit(self, X: np.ndarray, n_clusters: int) -> None:
        self.n_clusters_ = int(n_clusters)
        self.cluster_ids_ = np.arange(self.n_clusters_, dtype=np.int64)
        found = self.assign(X)
        self.labels_, self.strength_, self.runner_up_ = found.labels, found.strength, found.runner_up
        self._fit_assignment = found

    def fit_assignment(self) -> Assignment | None:
        """:meth:`assign` of the fitted rows, computed by ``fit`` (None once the model was pickled or relabelled).

        Saves scoring the same rows twice when a model is fitted on every customer.
        """
        return getattr(self, "_fit_assignment", None)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_fit_assignment", None)  # per-row data of the fit: not part of the model
        return state

    def _public(self, internal: np.ndarray) -> np.ndarray:
        internal = np.asarray(internal, dtype=np.int64)
        out = np.full(len(internal), NOISE, dtype=np.int64)
        known = internal >= 0
        out[known] = self.cluster_ids_[internal[known]]
        return out

    def assign(self, X, membership: bool = True) -> Assignment:
        """Segment, strength, runner-up and soft membership of any rows (training rows or new customers).

        Parameters
        ----------
        X : array-like of shape (n, n_features)
        membership : bool
            Compute the full soft assignment. Only HDBSCAN is slower with it
            (membership vectors for every row, not only for its noise).
        """
        check_is_fitted(self, "cluster_ids_")
        X = _predict_input(self, X)
        labels, strength, runner_up, soft, noise = self._assign_internal(X, membership)
        return Assignment(labels=self._public(labels), strength=np.clip(strength, 0.0, 1.0).astype(np.float64),
                          runner_up=self._public(runner_up), membership=soft, cluster_ids=self.cluster_ids_.copy(),
                          noise=noise)

    def set_cluster_ids(self, ids) -> None:
        """Give the internal clusters these public segment ids (one per cluster, distinct)."""
        check_is_fitted(self, "cluster_ids_")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (self.n_clusters_,) or len(set(ids.tolist())) != len(ids) or (ids < 0).any():
            raise ValueError(f"need {self.n_clusters_} distinct non-negative segment ids, got {ids.tolist()}")
        lookup = np.full(int(self.cluster_ids_.max(initial=0)) + 1, NOISE, dtype=np.int64)
        lookup[self.cluster_ids_] = ids
        for name in ("labels_", "runner_up_"):
            values = getattr(self, name)
            setattr(self, name, np.where(values >= 0, lookup[np.clip(values, 0, len(lookup) - 1)], NOISE))
        self.cluster_ids_ = ids
        self._fit_assignment = None

    def predict_with_strength(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Segment and strength of each row."""
        found = self.assign(X, membership=False)
        return found.labels, found.strength

    def predict(self, X) -> np.ndarray:
        """Segment of each row."""
        return self.predict_with_strength(X)[0]

    def fixed_params(self) -> dict[str, Any]:
        """Parameters that refit the chosen model without choosing again (for stability checks)."""
        return {}

    def _candidate_counts(self, configured, n_rows: int) -> list[int]:
        """The cluster counts ``fit`` may choose from for ``n_rows`` rows; records the range used
        (``candidate_range_``) so the selection report shows when the configured one was clamped or
        lowered to what the data's size supports (:func:`size_limited_top`)."""
        low, high = usable_range(configured, n_rows)
        self.size_top_ = size_limited_top(n_rows)
        self.candidate_range_ = (low, max(low, min(high, self.size_top_)))
        return list(range(self.candidate_range_[0], self.candidate_range_[1] + 1))

    def _by_halves(self, n_sample: int) -> bool:
        """Whether the count is chosen by :func:`score_counts_by_halves`: asked for, and each half holds more
        rows than the smallest candidate has clusters."""
        return bool(getattr(self, "split_stability", False)) and n_sample // 2 > self.candidate_range_[0] + 1

    def _score_counts_by_halves(self, sample: np.ndarray, labels_of) -> dict:
        """Set ``silhouette_``, ``split_stability_`` and ``scores_`` for every candidate count that fits a half
        of ``sample`` (:func:`score_counts_by_halves`); return what ``labels_of`` fitted, by count."""
        silhouette = _SilhouetteOfSample(sample, self.silhouette_sample_size, self.random_state)
        self.silhouette_, self.split_stability_, self.scores_, fits = score_counts_by_halves(
            sample, _candidates(self.candidate_range_, len(sample) // 2), labels_of, silhouette, self.random_state)
        return fits

    def _range_report(self, configured) -> dict[str, Any]:
        """The configured range and the one the fit could use (they differ with too few rows)."""
        asked, used = list(cluster_range(configured)), list(self.candidate_range_)
        report: dict[str, Any] = {"configured_range": asked, "candidate_range": used}
        if asked[1] >= self.n_rows_fitted_:
            report["clamped"] = (f"{self.n_rows_fitted_:,} customers fitted hold at most "
                                 f"{max(self.n_rows_fitted_ - 1, 1):,} clusters")
        elif asked != used:
            report["limited_by_size"] = (f"at most sqrt({self.n_rows_fitted_:,} / 2) = {self.size_top_} clusters "
                                         f"for {self.n_rows_fitted_:,} customers fitted")
        return report


#: Neighbour indices looked up at once when sharpening (rows x neighbours). Their points are gathered into a
#: rows x neighbours x features array before averaging: 2,000 rows of 80 neighbours in 45 columns make 58 MB,
#: where 2,000,000 values (25,000 rows, 720 MB) cost 20% more CPU in page faults for the same result.
SHARPEN_CHUNK_VALUES = 160_000


def neighbour_mean(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``points[rows].mean(axis=1)``: the mean of each row's neighbours, bit for bit, without the rows x neighbours
    x features array.

    numpy sums a middle axis one slice after another, in order, and divides by the count; so does this, one
    neighbour column at a time over arrays that stay in cache (2.7 times faster on 2,000 rows of 80 neighbours
    in 45 columns). With one feature numpy would sum pairwise along the contiguous axis instead: numpy does it.
    """
    if points.ndim != 2 or points.shape[1] < 2 or rows.ndim != 2 or rows.shape[1] < 1:
        return points[rows].mean(axis=1)
    total = points[rows[:, 0]]
    for j in range(1, rows.shape[1]):
        total += points[rows[:, j]]
    total /= rows.shape[1]
    return total


def sharpening_neighbours(fraction: float, n_rows: int) -> int:
    """Neighbours averaged by one sharpening step: ``fraction`` of the rows fitted, at least 2."""
    return max(2, min(n_rows, int(round(fraction * n_rows))))


class Sharpener:
    """Data sharpening: each point moved to the mean of its k nearest reference points, ``steps`` times.

    One step of the mean-shift iteration with a flat kernel (Fukunaga and Hostetler 1975), used as a
    prelude to density clustering (data sharpening, Choi and Hall 1999): customers in the thin tails
    and between groups move towards the nearest dense region, so HDBSCAN's density tree sheds fewer of
    them as noise before the groups split. The reference points are a seeded sample of the fitted rows
    (the search's sample, so the search sees the very map the fit uses) and move with every step: step
    ``t`` maps a point by its neighbours among the reference points as they were after step ``t - 1``.
    New customers are mapped the same way. No label is used.

    Parameters
    ----------
    X : ndarray (n, d)
        The rows fitted; ``fitted_`` is their map.
    neighbours_fraction : float
        Neighbours averaged, as a share of the reference points (at least 2).
    steps : int
    reference_rows : ndarray of int
        Rows of ``X`` serving as reference points.
    """

    def __init__(self, X: np.ndarray, neighbours_fraction: float, steps: int, reference_rows: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        reference = X[reference_rows]
        self.neighbours = sharpening_neighbours(neighbours_fraction, len(reference))
        self.steps, self.layers = int(steps), []
        for _ in range(self.steps):
            layer = (NearestNeighbors(n_neighbors=self.neighbours).fit(reference), reference)
            self.layers.append(layer)
            reference = self._step(layer, reference)
        self.fitted_ = self._fitted_map(X, np.asarray(reference_rows), reference)

    def _fitted_map(self, X: np.ndarray, reference_rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The map of every fitted row; the reference rows' is already known from building the layers.

        A reference row goes through the very steps the layers were built with, so mapping it again gave
        the same point at the cost of a third of a fit's sharpening (all of it when every row is a reference
        point, as in the stability refits on 2,000 customers).
        """
        out = np.empty_like(X)
        others = np.ones(len(X), dtype=bool)
        others[reference_rows] = False
        out[reference_rows] = reference
        if others.any():
            out[others] = self.transform(X[others])
        return out

    @staticmethod
    def _step(layer, Q: np.ndarray) -> np.ndarray:
        index, points = layer
        out = np.empty_like(Q)
        chunk = max(1, SHARPEN_CHUNK_VALUES // index.n_neighbors)
        for start in range(0, len(Q), chunk):
            rows = index.kneighbors(Q[start:start + chunk], return_distance=False)
            out[start:start + chunk] = neighbour_mean(points, rows)
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``X`` (any rows, the fitted features) mapped as the fitted rows were."""
        for layer in self.layers:
            X = self._step(layer, X)
        return X


class HDBSCANClusterer(_Segmenter):
    """HDBSCAN with prediction data kept, its minimum cluster size relative to the data size.

    Parameters
    ----------
    min_cluster_size_fraction : float
        Smallest cluster as a share of the rows fitted.
    min_samples : int
    cluster_selection_method : {"eom", "leaf"}
        ``eom`` keeps the most persistent clusters, ``leaf`` the finest ones.
    reassign_noise : bool
        Give noise rows their most likely cluster (``hdbscan.membership_vector``);
        their strength is that cluster's membership, which is low.
    search_min_samples : tuple of int
        Empty: fit with ``min_samples`` and ``cluster_selection_method``.
        Otherwise these ``min_samples`` (and the configured one), with
        ``cluster_selection_method``, are fitted on a seeded sample of
        ``selection_sample_size`` rows and the one kept is chosen without any
        label: the highest relative validity (the library's fast DBCV
        approximation) among the candidates with at least two clusters and at
        most ``max_noise`` of the sample as noise; when none leaves so little
        noise, the least noisy of those with at least half the most clusters
        any candidate found.
    max_noise : float
    selection_sample_size : int
    random_state : int
        Seeds the search sample only (HDBSCAN itself is deterministic).
    search_selection_methods : tuple of str
        With a search: the cluster selection methods tried with every
        ``min_samples`` (besides ``cluster_selection_method``). ``eom``
        leaves less noise than ``leaf`` where leaf splits a persona into
        fragments and calls their borders noise (``tune-a`` latent: 13.9%
        against 29.2% at ``min_samples`` 1).
    search_min_cluster_size_fractions : tuple of float
        With a search: smaller minimum cluster sizes tried in turn, each
        with every method and ``min_samples``, only while no candidate so far
        leaves at most ``max_noise``. Points that leave a cluster in groups
        smaller than the minimum size are noise, so a smaller size turns some
        of them into clusters of their own.
    sharpen_steps : int
        Sharpening steps applied before HDBSCAN (:class:`Sharpener`); 0 = none.
    search_sharpen_steps : tuple of int
        With a search: more sharpening steps tried in turn (each with every
        method, ``min_samples`` and minimum size) while no candidate so far
        leaves at most ``max_noise`` with enough clusters.
    sharpen_neighbours_fraction : float
        Neighbours averaged by a sharpening step, as a share of the
        reference points: the search's sample of ``selection_sample_size``
        rows, in the search and in the fit alike.

    In the search a candidate meets the bound only with at least half the
    most clusters any candidate found without sharpening at the configured
    size: a merge into fewer clusters that leaves little noise (eom merging
    everyone into 2) is no answer to the bound.

    Attributes
    ----------
    clusterer_ : hdbscan.HDBSCAN
    tables_ : core.cluster.hdbscan_prediction.PredictionTables
        Lookups for vectorised prediction of new rows.
    min_cluster_size_ : int
    min_samples_, cluster_selection_method_, min_cluster_size_fraction_, sharpen_steps_ : the settings fitted
        (searched or given)
    sharpener_ : Sharpener or None
        The map applied to rows before HDBSCAN (None without sharpening).
    search_ : list of dict
        Each candidate of the search: settings, clusters, noise, relative validity.
    fit_noise_ratio_ : float
        Share of the fitted rows HDBSCAN called noise.
    """

    deterministic = True

    def __init__(self, min_cluster_size_fraction=0.02, min_samples=10, cluster_selection_method="eom",
                 reassign_noise=True, search_min_samples=(), max_noise=0.15, selection_sample_size=5000,
                 random_state=0, search_selection_methods=(), search_min_cluster_size_fractions=(),
                 sharpen_steps=0, search_sharpen_steps=(), sharpen_neighbours_fraction=0.01):
        self.min_cluster_size_fraction = min_cluster_size_fraction
        self.sharpen_steps = sharpen_steps
        self.search_sharpen_steps = search_sharpen_steps
        self.sharpen_neighbours_fraction = sharpen_neighbours_fraction
        self.search_min_cluster_size_fractions = search_min_cluster_size_fractions
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.search_selection_methods = search_selection_methods
        self.reassign_noise = reassign_noise
        self.search_min_samples = search_min_samples
        self.max_noise = max_noise
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _size(self, n_rows: int, fraction: float | None = None) -> int:
        share = self.min_cluster_size_fraction if fraction is None else fraction
        return max(2, int(round(share * n_rows)))

    def _search(self, X: np.ndarray, sharpenings: list[int]) -> tuple[int, str, bool]:
        """The ``(min_samples, cluster_selection_method)`` chosen on a sample without labels, and whether
        a candidate met the bound.

        Also sets ``min_cluster_size_fraction_`` and ``sharpen_steps_``: the configured ones, or the first
        sharpening (in ``sharpenings`` order) and size (in ``search_min_cluster_size_fractions`` order) at
        which some candidate with enough clusters leaves at most ``max_noise``. Candidates accumulate in
        ``search_`` over calls (:meth:`fit` calls again with the later sharpenings when the fit on every
        row leaves more noise than its sample did).
        """
        self.min_cluster_size_fraction_, self.sharpen_steps_ = self.min_cluster_size_fraction, int(self.sharpen_steps)
        if not len(self.search_min_samples):
            return int(self.min_samples), self.cluster_selection_method, True
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        # The library's joblib.Memory cache, in a folder removed after the search.
        with tempfile.TemporaryDirectory(prefix="hdbscan-search-", ignore_cleanup_errors=True) as folder:
            memory = Memory(folder, verbose=0)
            for steps in sharpenings:
                # The sample is the sharpening's reference set, so it is sharpened exactly as in the fit.
                sharpened = (Sharpener(sample, self.sharpen_neighbours_fraction, steps, np.arange(len(sample))).fitted_
                             if steps else sample)
                for fraction in [self.min_cluster_size_fraction, *self.search_min_cluster_size_fractions]:
                    within = self._search_at(sharpened, fraction, memory, steps)
                    if within:  # the bound is met with the least change tried so far: nothing further is fitted
                        best = max(within, key=lambda c: c["relative_validity"])
                        self.min_cluster_size_fraction_, self.sharpen_steps_ = fraction, steps
                        return best["min_samples"], best["cluster_selection_method"], True
        usable = [c for c in self.search_ if c["clusters"] >= 2 and np.isfinite(c["relative_validity"])
                  and c["min_cluster_size_fraction"] == self.min_cluster_size_fraction]
        # The least noisy among the candidates with at least half the most clusters any found: the least
        # noisy outright was eom merging everything into 2 clusters (tune-a raw: ARI 0.05 of the persona,
        # against 0.87 for leaf's 8 clusters with 32% noise given their most likely cluster).
        fine = [c for c in usable if c["clusters"] >= self._enough]
        best = min(fine or self.search_, key=lambda c: (c["noise"], -np.nan_to_num(c["relative_validity"])))
        self.min_cluster_size_fraction_, self.sharpen_steps_ = best["min_cluster_size_fraction"], best["sharpen_steps"]
        return best["min_samples"], best["cluster_selection_method"], False

    def _search_at(self, sample: np.ndarray, fraction: float, memory: Memory, steps: int = 0) -> list[dict]:
        """Fit every candidate at one minimum cluster size; those with enough clusters leaving at most ``max_noise``.

        The first call (no sharpening beyond the configured one, the configured size) sets what enough
        clusters means: half the most any of its candidates found, at least 2.

        ``memory`` caches each ``min_samples``' spanning tree (nearly all of a fit's time): the selection
        methods and the minimum cluster sizes only cut that tree, so each tree is built once.
        """
        size = self._size(len(sample), fraction)
        methods = [self.cluster_selection_method] + sorted(set(self.search_selection_methods)
                                                           - {self.cluster_selection_method})
        found = []
        for method in methods:
            for min_samples in sorted({int(m) for m in self.search_min_samples} | {int(self.min_samples)}):
                fitted = exact_neighbours.fit_hdbscan(sample, min_cluster_size=size,
                                                      min_samples=min(min_samples, size),
                                                      cluster_selection_method=method, gen_min_span_tree=True,
                                                      memory=memory)
                clusters = int(fitted.labels_.max()) + 1
                validity = float(fitted.relative_validity_) if clusters >= 2 else float("nan")
                found.append({"sharpen_steps": steps, "min_cluster_size_fraction": fraction, "min_samples": min_samples,
                              "cluster_selection_method": method, "clusters": clusters,
                              "noise": float(np.mean(fitted.labels_ == NOISE)), "relative_validity": validity})
        if not self.search_:
            self._enough = max(2, -(-max(c["clusters"] for c in found) // 2))
        self.search_ += found
        return [c for c in found if c["clusters"] >= self._enough and np.isfinite(c["relative_validity"])
                and c["noise"] <= self.max_noise]

    def fit(self, X, y=None) -> "HDBSCANClusterer":
        """Cluster ``X`` (n_samples, n_features); sets ``labels_``, ``strength_`` and ``runner_up_``.

        HDBSCAN is the library's (``hdbscan.HDBSCAN``), its core distances found by brute force in many
        dimensions (``core.cluster.exact_neighbours``: the same floats, a fraction of the KD-tree's time).
        """
        X = _fit_input(self, X)
        self.search_, self._enough = [], 2
        sharpenings = list(dict.fromkeys([int(self.sharpen_steps), *(int(t) for t in self.search_sharpen_steps)]))
        while True:
            self.min_samples_, self.cluster_selection_method_, met = self._search(X, sharpenings)
            size = self._size(len(X), self.min_cluster_size_fraction_)
            self.sharpener_ = (Sharpener(X, self.sharpen_neighbours_fraction, self.sharpen_steps_,
                                         sample_rows(len(X), self.selection_sample_size, self.random_state))
                               if self.sharpen_steps_ else None)
            self.clusterer_ = exact_neighbours.fit_hdbscan(
                X if self.sharpener_ is None else self.sharpener_.fitted_, min_cluster_size=size,
                min_samples=min(self.min_samples_, size), cluster_selection_method=self.cluster_selection_method_,
                prediction_data=True)
            self.fit_noise_ratio_ = float(np.mean(self.clusterer_.labels_ == NOISE))
            # The sample's noise understates the fit's at times (shipped latent: 11.5% on 4,000 customers, 16.8%
            # on 9,669): the later sharpenings are searched while the fit itself leaves too much.
            later = sharpenings[sharpenings.index(self.sharpen_steps_) + 1:]
            if self.fit_noise_ratio_ <= self.max_noise or not met or not later:
                break
            sharpenings = later
        self.min_cluster_size_ = size
        self.tables_ = hdbscan_prediction.prediction_tables(self.clusterer_)
        self._fitted_rows = X  # their map is known: _assign_internal does not compute it again
        try:
            self._finish_fit(X, int(self.clusterer_.labels_.max()) + 1)
        finally:
            del self._fitted_rows
        return self

    def fixed_params(self) -> dict[str, Any]:
        """The settings the search chose, so a refit does not search again."""
        return {"search_min_samples": (), "search_selection_methods": (), "search_min_cluster_size_fractions": (),
                "search_sharpen_steps": (), "sharpen_steps": self.sharpen_steps_,
                "min_cluster_size_fraction": self.min_cluster_size_fraction_, "min_samples": self.min_samples_,
                "cluster_selection_method": self.cluster_selection_method_}

    def _assign_internal(self, X: np.ndarray, membership: bool):
        n = len(X)
        if self.n_clusters_ == 0:
            none = np.full(n, NOISE, dtype=np.int64)
            return none, np.zeros(n), none, None, np.ones(n, dtype=bool)
        if getattr(self, "sharpener_", None) is not None:  # a model pickled before sharpening has none
            X = self.sharpener_.fitted_ if X is getattr(self, "_fitted_rows", None) else self.sharpener_.transform(X)
        # The library's approximate_predict and membership_vector, vectorised (core.cluster.hdbscan_prediction),
        # sharing one neighbour search.
        wanted = "all" if membership else ("noise" if self.reassign_noise else "none")
        labels, strength, vectors = hdbscan_prediction.predict(self.clusterer_, self.tables_, X, wanted)
        noise = labels == NOISE
        soft = vectors if membership else None
        runner_up = np.full(n, NOISE, dtype=np.int64)
        if self.reassign_noise and noise.any():
            labels[noise] = vectors[noise].argmax(axis=1)
            strength[noise] = vectors[noise].max(axis=1)
        if soft is not None and self.n_clusters_ >= 2:
            order = np.argsort(-soft, axis=1, kind="stable")
            # The runner-up is the best cluster other than the row's own.
            runner_up = np.where(order[:, 0] == labels, order[:, 1], order[:, 0])
            runner_up[labels == NOISE] = order[labels == NOISE, 0]
        return labels, strength, runner_up, soft, noise

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was found, and the noise left by the fit."""
        return {"chosen_by": ("density (hdbscan); settings by relative validity with noise at most "
                              f"{self.max_noise}" if self.search_ else "density (hdbscan)"),
                "min_cluster_size": self.min_cluster_size_, "min_cluster_size_fraction": self.min_cluster_size_fraction_,
                "min_samples": self.min_samples_,
                "cluster_selection_method": self.cluster_selection_method_,
                "sharpen_steps": self.sharpen_steps_,
                "sharpen_neighbours": self.sharpener_.neighbours if self.sharpener_ is not None else 0,
                "fit_noise_ratio": self.fit_noise_ratio_, "search": self.search_}


class GaussianMixtureClusterer(_Segmenter):
    """Gaussian mixture whose number of components is chosen by silhouette or BIC.

    Parameters
    ----------
    n_components : (int, int)
        Candidate range, inclusive.
    covariance_type : str
    n_init : int
    selection : {"silhouette", "bic"}
        Criterion choosing the number of components. BIC kept falling to the
        top of any range on persona sets (diagonal covariances do not fit
        customers' mixes, so every extra component buys likelihood); the
        silhouette of the hard assignment, as for k-means, does not.
    silhouette_sample_size : int
    selection_sample_size : int
        Candidates are fitted and scored on a seeded sample of this many
        rows; the chosen number is then refit on all rows.
    random_state : int

    Attributes
    ----------
    model_ : GaussianMixture
    bic_, aic_ : dict of int to float
        Per candidate number of components, on the selection sample.
    scores_ : dict of int to float
        Silhouette per candidate (empty when chosen by BIC).
    """

    def __init__(self, n_components=(2, 8), covariance_type="full", n_init=1, selection_sample_size=5000,
                 random_state=0, selection="bic", silhouette_sample_size=3000, split_stability=False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.selection = selection
        self.split_stability = split_stability
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _mixture(self, k: int) -> GaussianMixture:
        return GaussianMixture(n_components=k, covariance_type=self.covariance_type, n_init=self.n_init,
                               reg_covar=1e-5, random_state=self.random_state)

    def fit(self, X, y=None) -> "GaussianMixtureClusterer":
        """Choose the number of components on a sample, refit it on ``X``; sets ``labels_``, ``strength_``."""
        if self.selection not in ("silhouette", "bic"):
            raise ValueError(f"selection must be 'silhouette' or 'bic', got {self.selection!r}")
        X = _fit_input(self, X)
        self.n_rows_fitted_ = len(X)
        candidates = self._candidate_counts(self.n_components, len(X))
        self.bic_, self.aic_, self.scores_, self.silhouette_, self.split_stability_ = {}, {}, {}, {}, {}
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        if len(candidates) > 1 and self.selection == "silhouette" and self._by_halves(len(sample)):
            def labels_of(k, rows):
                gm = self._mixture(k).fit(sample[rows])
                return gm.predict(sample), gm

            fits = self._score_counts_by_halves(sample, labels_of)
            for k, gm in fits.items():  # on the half fitted: what BIC says is reported, not used
                self.bic_[k], self.aic_[k] = float(gm.bic(sample)), float(gm.aic(sample))
        elif len(candidates) > 1:
            silhouette = (_SilhouetteOfSample(sample, self.silhouette_sample_size, self.random_state)
                          if self.selection == "silhouette" else None)
            for k in _candidates(self.candidate_range_, len(sample)):
                gm = self._mixture(k).fit(sample)
                self.bic_[k], self.aic_[k] = float(gm.bic(sample)), float(gm.aic(sample))
                if silhouette is not None:
                    self.scores_[k] = silhouette(gm.predict(sample))
        if self.scores_:
            best_k = _best_by_score(self.scores_)
        else:
            best_k = min(self.bic_, key=self.bic_.get) if self.bic_ else candidates[0]
        self.model_ = self._mixture(best_k).fit(X)
        self.n_iter_ = self.model_.n_iter_
        self._finish_fit(X, best_k)
        return self

    def _assign_internal(self, X: np.ndarray, membership: bool):
        proba = self.model_.predict_proba(X)
        return proba.argmax(axis=1), proba.max(axis=1), second_best(proba), proba, None

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability of each component, shape (n_samples, n_components)."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(_predict_input(self, X))

    def fixed_params(self) -> dict[str, Any]:
        """The chosen number of components, so a refit does not choose again."""
        return {"n_components": (self.n_clusters_, self.n_clusters_)}

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        if self.split_stability_:
            return {"chosen_by": "silhouette x split stability", "score": self.scores_,
                    "silhouette": self.silhouette_, "split_stability": self.split_stability_, "bic": self.bic_,
                    "aic": self.aic_, **self._range_report(self.n_components)}
        return {"chosen_by": self.selection, "silhouette": self.scores_, "bic": self.bic_, "aic": self.aic_,
                **self._range_report(self.n_components)}


class FuzzyCMeansClusterer(_Segmenter):
    """Fuzzy c-means (scikit-fuzzy's algorithm), the number of clusters chosen by silhouette or partition coefficient.

    The iteration is scikit-fuzzy's ``cmeans`` and ``cmeans_predict``, computed by
    :mod:`core.cluster.fuzzy_cmeans` (the same steps, a third of the cost; equal to rounding).

    Parameters
    ----------
    n_clusters : (int, int)
        Candidate range, inclusive.
    selection : {"silhouette", "partition_coefficient"}
        Criterion choosing the number of clusters (higher is better for both).
    fuzziness : float
        The fuzzifier m (> 1); with ``adaptive_fuzziness`` the largest allowed.
    adaptive_fuzziness : bool
        Use :func:`adaptive_fuzzifier` of the rows and features fitted
        (capped at ``fuzziness``): with m = 2 on 45 features every centre
        collapses towards the mean and the silhouette then prefers 2
        clusters (ARI 0.26 against the persona on ``tune-a``; m = 1.1: 0.72).
    tolerance : float
        Stop when memberships change by less than this between iterations
        (root mean square over every membership value).
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
        Memberships of the fitted rows.
    partition_coefficient_ : float
        Fuzzy partition coefficient of the chosen model (1 = crisp, 1/c = evenly split).
    partition_entropy_ : float
        Partition entropy of the chosen model (0 = crisp, ln c = evenly split).
    fuzziness_ : float
        The fuzzifier used.
    """

    def __init__(self, n_clusters=(2, 8), selection="silhouette", fuzziness=2.0, tolerance=1e-4, max_iter=300,
                 silhouette_sample_size=3000, selection_sample_size=5000, random_state=0, adaptive_fuzziness=False,
                 split_stability=False):
        self.n_clusters = n_clusters
        self.selection = selection
        self.split_stability = split_stability
        self.fuzziness = fuzziness
        self.adaptive_fuzziness = adaptive_fuzziness
        self.tolerance = tolerance
        self.max_iter = max_iter
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _error(self, n_rows: int, c: int) -> float:
        # scikit-fuzzy stops on the norm of the whole membership change, which grows with the number of
        # rows (a million rows would never stop early); tolerance is per membership value (RMS) instead.
        return float(self.tolerance * np.sqrt(n_rows * c))

    def _cmeans(self, X: np.ndarray, c: int, centers: np.ndarray | None = None):
        # Refitting on all rows starts from the memberships to the centres found on the sample.
        init = None if centers is None else _fuzzy_memberships(X, centers, self.fuzziness_).T
        centers, u, n_iter, fpc = fuzzy_cmeans.cmeans(X, c, self.fuzziness_, error=self._error(len(X), c),
                                                      maxiter=self.max_iter, init=init, seed=self.random_state)
        return centers, u, fpc, n_iter

    def fit(self, X, y=None) -> "FuzzyCMeansClusterer":
        """Choose the number of clusters on a sample, refit it on ``X``; sets ``membership_`` too."""
        if self.selection not in ("silhouette", "partition_coefficient"):
            raise ValueError(f"selection must be 'silhouette' or 'partition_coefficient', got {self.selection!r}")
        X = _fit_input(self, X)
        self.n_rows_fitted_ = len(X)
        self.fuzziness_ = (min(float(self.fuzziness), adaptive_fuzzifier(len(X), X.shape[1]))
                           if self.adaptive_fuzziness else float(self.fuzziness))
        candidates = self._candidate_counts(self.n_clusters, len(X))
        self.scores_, self.fpc_, sample_centers, self.silhouette_, self.split_stability_ = {}, {}, {}, {}, {}
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        if len(candidates) > 1 and self.selection == "silhouette" and self._by_halves(len(sample)):
            def labels_of(c, rows):
                centers, _, fpc, _ = self._cmeans(sample[rows], c)
                return _fuzzy_memberships(sample, centers, self.fuzziness_).argmax(axis=1), (centers, fpc)

            fits = self._score_counts_by_halves(sample, labels_of)
            sample_centers = {c: centers for c, (centers, _) in fits.items()}
            self.fpc_ = {c: fpc for c, (_, fpc) in fits.items()}
        elif len(candidates) > 1:
            silhouette = (_SilhouetteOfSample(sample, self.silhouette_sample_size, self.random_state)
                          if self.selection == "silhouette" else None)
            for c in _candidates(self.candidate_range_, len(sample)):
                sample_centers[c], u, fpc, _ = self._cmeans(sample, c)
                self.fpc_[c] = fpc
                self.scores_[c] = fpc if silhouette is None else silhouette(u.argmax(axis=0))
        best_c = _best_by_score(self.scores_) if self.scores_ else candidates[0]
        self.centers_, u, _, self.n_iter_ = self._cmeans(X, best_c, sample_centers.get(best_c))
        self.membership_ = u.T
        self.partition_coefficient_ = partition_coefficient(self.membership_)
        self.partition_entropy_ = partition_entropy(self.membership_)
        self._finish_fit(X, best_c)
        return self

    def _memberships(self, X: np.ndarray) -> np.ndarray:
        # A model saved before the fuzzifier could adapt has no fuzziness_: it was fitted with fuzziness.
        return fuzzy_cmeans.predict(X, self.centers_, getattr(self, "fuzziness_", self.fuzziness)).T

    def _assign_internal(self, X: np.ndarray, membership: bool):
        u = self._memberships(X)
        return u.argmax(axis=1), u.max(axis=1), second_best(u), u, None

    def membership(self, X) -> np.ndarray:
        """Membership of rows in each cluster, shape (n_samples, n_clusters), rows sum to 1."""
        check_is_fitted(self, "centers_")
        return self._memberships(_predict_input(self, X))

    def fixed_params(self) -> dict[str, Any]:
        """The chosen number of clusters and fuzzifier, so a refit does not choose again."""
        return {"n_clusters": (self.n_clusters_, self.n_clusters_), "fuzziness": self.fuzziness_,
                "adaptive_fuzziness": False}

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        by_halves = {"score": self.scores_, "split_stability": self.split_stability_} if self.split_stability_ else {}
        return {"chosen_by": "silhouette x split stability" if by_halves else self.selection,
                "fuzziness": self.fuzziness_, **by_halves,
                "silhouette": (self.silhouette_ if by_halves else self.scores_ if self.selection == "silhouette"
                               else {}),
                "partition_coefficient": self.fpc_,
                "chosen_partition_coefficient": self.partition_coefficient_,
                "chosen_partition_entropy": self.partition_entropy_, **self._range_report(self.n_clusters)}


def _fuzzy_memberships(X: np.ndarray, centers: np.ndarray, fuzziness: float) -> np.ndarray:
    """Fuzzy c-means memberships of rows to fixed centres, shape (n, c): the algorithm's update step."""
    from scipy.spatial.distance import cdist

    distances = np.fmax(cdist(X, centers), np.finfo(np.float64).eps)
    u = distances ** (-2.0 / (fuzziness - 1.0))
    return u / u.sum(axis=1, keepdims=True)


def adaptive_fuzzifier(n_rows: int, n_features: int) -> float:
    """Fuzzifier m for ``n_rows`` rows of ``n_features`` dimensions (Schwaemmle and Jensen, 2010).

    Their fit of the largest m at which fuzzy c-means still finds structure
    in data of that size and dimension:
    ``1 + (1418 / N + 22.05) D^-2 + (12.33 / N + 0.243) D^(-0.0406 ln N - 0.1134)``.
    It falls towards 1 as the dimension grows (1.06 for 4,000 rows of 45
    features, 3.6 for 3 features), where the common m = 2 makes every
    membership nearly even.
    """
    n, d = float(max(n_rows, 2)), float(max(n_features, 1))
    return float(1.0 + (1418.0 / n + 22.05) * d ** -2
                 + (12.33 / n + 0.243) * d ** (-0.0406 * np.log(n) - 0.1134))


def partition_coefficient(membership: np.ndarray) -> float:
    """Bezdek's fuzzy partition coefficient: mean over rows of the sum of squared memberships."""
    return float(np.mean(np.sum(membership ** 2, axis=1)))


def partition_entropy(membership: np.ndarray) -> float:
    """Bezdek's partition entropy: mean over rows of ``-sum(u ln u)``."""
    return float(-np.mean(np.sum(membership * np.log(np.clip(membership, 1e-12, None)), axis=1)))


class KMeansClusterer(_Segmenter):
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
                 random_state=0, split_stability=False):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.split_stability = split_stability
        self.silhouette_sample_size = silhouette_sample_size
        self.selection_sample_size = selection_sample_size
        self.random_state = random_state

    def _kmeans(self, k: int) -> KMeans:
        return KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)

    def fit(self, X, y=None) -> "KMeansClusterer":
        """Choose k by silhouette on a sample, refit it on ``X``; sets ``labels_`` and ``strength_``."""
        X = _fit_input(self, X)
        self.n_rows_fitted_ = len(X)
        candidates = self._candidate_counts(self.n_clusters, len(X))
        self.scores_, self.silhouette_, self.split_stability_ = {}, {}, {}
        sample = X[sample_rows(len(X), self.selection_sample_size, self.random_state)]
        if len(candidates) > 1 and self._by_halves(len(sample)):
            def labels_of(k, rows):
                km = self._kmeans(k).fit(sample[rows])
                return km.predict(sample), None

            self._score_counts_by_halves(sample, labels_of)
        elif len(candidates) > 1:
            silhouette = _SilhouetteOfSample(sample, self.silhouette_sample_size, self.random_state)
            for k in _candidates(self.candidate_range_, len(sample)):
                self.scores_[k] = silhouette(self._kmeans(k).fit(sample).labels_)
        self.model_ = self._kmeans(_best_by_score(self.scores_) if self.scores_ else candidates[0]).fit(X)
        self.n_iter_ = self.model_.n_iter_
        self._finish_fit(X, self.model_.n_clusters)
        return self

    def _assign_internal(self, X: np.ndarray, membership: bool):
        distances = self.model_.transform(X)
        labels = distances.argmin(axis=1)
        if distances.shape[1] < 2:
            return labels, np.ones(len(labels)), np.full(len(labels), NOISE), None, None
        two = np.sort(distances, axis=1)[:, :2]
        strength = 1.0 - np.divide(two[:, 0], two[:, 1], out=np.ones(len(two)), where=two[:, 1] > 0)
        return labels, strength, second_best(distances, higher_is_better=False), None, None

    def fixed_params(self) -> dict[str, Any]:
        """The chosen k, so a refit does not choose again."""
        return {"n_clusters": (self.n_clusters_, self.n_clusters_)}

    def selection_report(self) -> dict[str, Any]:
        """How the number of clusters was chosen: the criterion and each candidate's score."""
        if self.split_stability_:
            return {"chosen_by": "silhouette x split stability", "score": self.scores_,
                    "silhouette": self.silhouette_, "split_stability": self.split_stability_,
                    **self._range_report(self.n_clusters)}
        return {"chosen_by": "silhouette", "silhouette": self.scores_, **self._range_report(self.n_clusters)}


def make_clusterer(method: str, cluster_cfg, seed: int, space: str | None = None) -> _Segmenter:
    """The estimator for ``method`` with its hyper-parameters from the ``cluster`` config section.

    ``space`` (``raw``, ``latent``) selects settings given per space: HDBSCAN sharpens only in
    ``cluster.hdbscan.sharpen_spaces``.
    """
    sample = cluster_cfg.silhouette_sample_size
    selection = cluster_cfg.selection_sample_size
    if method == "hdbscan":
        c = cluster_cfg.hdbscan
        return HDBSCANClusterer(min_cluster_size_fraction=c.min_cluster_size_fraction, min_samples=c.min_samples,
                                cluster_selection_method=c.cluster_selection_method,
                                reassign_noise=c.reassign_noise, search_min_samples=c.search_min_samples,
                                max_noise=c.max_noise, selection_sample_size=selection, random_state=seed,
                                search_selection_methods=c.search_selection_methods,
                                search_min_cluster_size_fractions=c.search_min_cluster_size_fractions,
                                search_sharpen_steps=(c.search_sharpen_steps if space in c.sharpen_spaces else ()),
                                sharpen_neighbours_fraction=c.sharpen_neighbours_fraction)
    if method == "gmm":
        c = cluster_cfg.gmm
        return GaussianMixtureClusterer(n_components=c.n_components, covariance_type=c.covariance_type,
                                        n_init=c.n_init, selection_sample_size=selection, random_state=seed,
                                        selection=c.selection, silhouette_sample_size=sample,
                                        split_stability=cluster_cfg.count_stability)
    if method == "fcm":
        c = cluster_cfg.fcm
        return FuzzyCMeansClusterer(n_clusters=c.n_clusters, selection=c.selection, fuzziness=c.fuzziness,
                                    tolerance=c.tolerance, max_iter=c.max_iter, silhouette_sample_size=sample,
                                    selection_sample_size=selection, random_state=seed,
                                    adaptive_fuzziness=c.adaptive_fuzziness,
                                    split_stability=cluster_cfg.count_stability)
    if method == "kmeans":
        c = cluster_cfg.kmeans
        return KMeansClusterer(n_clusters=c.n_clusters, n_init=c.n_init, silhouette_sample_size=sample,
                               selection_sample_size=selection, random_state=seed,
                               split_stability=cluster_cfg.count_stability)
    raise ValueError(f"unknown clustering method {method!r}")
