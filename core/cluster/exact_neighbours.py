"""HDBSCAN's core distances by brute force, bit for bit what the library's KD-tree gives.

In the 45 dimensions of the raw features a KD-tree prunes almost nothing: the
library's dual-tree query for the core distances (each point's
``min_samples``-th nearest neighbour) took 3.0 of the 6.4 CPU-s of the
Boruvka fit on 9,669 customers, and the single-tree query of
``generate_prediction_data`` another 1.3 s, where a brute-force search by
matrix products takes about 0.4 s. This module gives the library those
neighbours by brute force without changing a bit of what it computes:

- :func:`exact_knn`: candidates by scikit-learn's brute-force search (the
  fast ``|x|^2 + |y|^2 - 2 x.y`` form), their distances recomputed as the
  KD-tree computes them (the squared differences summed feature by feature
  in order, then the square root), sorted. It reports failure when the
  answer could differ from the KD-tree's: a tie among the neighbours returned
  (the tree's order between equal distances depends on its traversal) or a
  candidate margin too thin to be sure no point outside the candidates is
  nearer. The caller then asks the tree itself.
- :class:`ExactNeighbours`: stands in for the KD-tree where the library only
  queries it (the Boruvka algorithm's core-distance tree); any query it
  cannot answer exactly goes to the real tree with the same arguments.
- :class:`BruteForceCoreDistances`: a ``memory`` for ``hdbscan.HDBSCAN``
  whose ``cache`` hands the library's Boruvka KD-tree function over to
  :func:`boruvka_kdtree` (the same steps, the core-distance tree replaced
  by :class:`ExactNeighbours`) and every other function to the wrapped
  ``joblib.Memory``.
- :func:`generate_prediction_data`: ``HDBSCAN.generate_prediction_data``
  with its core distances from :func:`exact_knn`.

Below :data:`BRUTE_FORCE_FROM_DIMS` dimensions (the latent space) the tree
is faster and is used as before. Tests compare the single-linkage trees,
labels and prediction data with the library's.
"""

from __future__ import annotations

import numpy as np

#: Dimensions from which the core distances are searched by brute force; below, the KD-tree is faster (the
#: same threshold as core.cluster.hdbscan_prediction's neighbour search).
BRUTE_FORCE_FROM_DIMS = 12
#: Candidates beyond the neighbours asked for; only their margin over the last neighbour is used.
EXTRA_CANDIDATES = 4
#: Bound on the error of a squared distance in the fast form, relative to ``|x|^2 + max |y|^2``. Rounding
#: gives about 1e-14 in 45 dimensions; the margin this demands is still far below the spacing of neighbours.
RELATIVE_ERROR = 1e-10


def _sequential_squared(Q: np.ndarray, R: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Squared distances from each row of ``Q`` to its candidate rows of ``R``, summed feature by feature in order
    (as scikit-learn's KD-tree sums them, so the floats are the same)."""
    total = np.zeros(candidates.shape)
    for j in range(Q.shape[1]):
        diff = Q[:, j, None] - R[candidates, j]
        total += diff * diff
    return total


def exact_knn(Q: np.ndarray, R: np.ndarray, k: int, ordered: bool = True, chunk: int = 2048
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``k`` nearest rows of ``R`` to each row of ``Q`` (Euclidean), as scikit-learn's KD-tree returns them.

    Parameters
    ----------
    ordered : bool
        The indices are wanted too, in the tree's order: a tie among the ``k``
        neighbours, or between the ``k``-th and the next, makes the answer
        unsure. Without it only the distances count, and ties do not matter.

    Returns
    -------
    (distances, indices), each of shape (n, k), nearest first; None when the
    answer could differ from the tree's (ask the tree then).
    """
    from sklearn.neighbors import NearestNeighbors

    Q, R = np.ascontiguousarray(Q, dtype=np.float64), np.ascontiguousarray(R, dtype=np.float64)
    n_ref = len(R)
    if k > n_ref or k < 1:
        return None
    wanted = min(k + 1, n_ref) if ordered else k  # the next one too, to see a tie at the boundary
    m = min(wanted + EXTRA_CANDIDATES, n_ref)
    search = NearestNeighbors(n_neighbors=m, algorithm="brute").fit(R)
    reference_scale = float(np.max(np.einsum("ij,ij->i", R, R)))
    distances, indices = np.empty((len(Q), k)), np.empty((len(Q), k), dtype=np.intp)
    for start in range(0, len(Q), chunk):
        part = Q[start:start + chunk]
        approx, candidates = search.kneighbors(part)
        squared = _sequential_squared(part, R, candidates)
        order = np.argsort(squared, axis=1, kind="stable")
        squared, candidates = np.take_along_axis(squared, order, 1), np.take_along_axis(candidates, order, 1)
        if m < n_ref:
            # A point left out has an approximate squared distance of at least the last candidate's.
            error = RELATIVE_ERROR * (np.einsum("ij,ij->i", part, part) + reference_scale)
            if not (squared[:, wanted - 1] < approx[:, -1] ** 2 - error).all():
                return None
        if ordered and (np.diff(squared[:, :wanted], axis=1) <= 0).any():
            return None
        distances[start:start + chunk] = np.sqrt(squared[:, :k])
        indices[start:start + chunk] = candidates[:, :k]
    return distances, indices


class ExactNeighbours:
    """A KD-tree's ``data`` and ``query`` for code that only queries it, answered by :func:`exact_knn`.

    Queries it cannot answer exactly (ties, a thin margin, another metric)
    go to the wrapped tree with the same arguments. ``ordered=False`` where
    the caller keeps only the distances (ties then do not matter).
    """

    def __init__(self, tree, euclidean: bool = True, ordered: bool = True):
        self.tree = tree
        self.euclidean = euclidean
        self.ordered = ordered

    @property
    def data(self):
        return self.tree.data

    def query(self, X, k=1, return_distance=True, dualtree=False, breadth_first=False, sort_results=True):
        """``KDTree.query``: distances and indices of the ``k`` nearest points, nearest first."""
        found = (exact_knn(np.asarray(X), np.asarray(self.tree.data), int(k), ordered=self.ordered)
                 if self.euclidean and return_distance and sort_results else None)
        if found is None:
            return self.tree.query(X, k=k, return_distance=return_distance, dualtree=dualtree,
                                   breadth_first=breadth_first, sort_results=sort_results)
        return found


def _euclidean(metric: str, kwargs: dict) -> bool:
    # Only the metric whose floats were checked against the tree's (the pipeline's); Minkowski with p = 2 computes
    # its distances through pow() in scikit-learn and is left to the tree.
    return metric == "euclidean" and not kwargs


def boruvka_kdtree(X, min_samples=5, alpha=1.0, metric="minkowski", p=2, leaf_size=40, approx_min_span_tree=True,
                   gen_min_span_tree=False, core_dist_n_jobs=4, **kwargs):
    """``hdbscan.hdbscan_._hdbscan_boruvka_kdtree`` step for step, its core distances by :class:`ExactNeighbours`.

    The same KD-trees, the same Boruvka algorithm and arguments, the same
    sorting and labelling: only the core-distance query is answered by
    brute force, with the same floats.
    """
    from joblib import cpu_count
    from hdbscan._hdbscan_boruvka import KDTreeBoruvkaAlgorithm
    from hdbscan._hdbscan_linkage import label
    from sklearn.neighbors import KDTree

    leaf_size = max(leaf_size, 3)
    if core_dist_n_jobs < 1:
        core_dist_n_jobs = max(cpu_count() + 1 + core_dist_n_jobs, 1)
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    tree = KDTree(X, metric=metric, leaf_size=leaf_size, **kwargs)
    algorithm = KDTreeBoruvkaAlgorithm(ExactNeighbours(tree, euclidean=_euclidean(metric, kwargs)), min_samples,
                                       metric=metric, leaf_size=leaf_size // 3,
                                       approx_min_span_tree=approx_min_span_tree, n_jobs=core_dist_n_jobs, **kwargs)
    spanning_tree = algorithm.spanning_tree()
    spanning_tree = spanning_tree[np.argsort(spanning_tree.T[2]), :]
    return label(spanning_tree), (spanning_tree if gen_min_span_tree else None)


class BruteForceCoreDistances:
    """``memory`` for ``hdbscan.HDBSCAN``: the Boruvka KD-tree fit by :func:`boruvka_kdtree` in many dimensions.

    ``hdbscan.hdbscan`` calls ``memory.cache(function)(...)`` for its
    spanning tree; this returns :func:`boruvka_kdtree` (through the wrapped
    memory, so a joblib cache still caches it) in place of the library's
    Boruvka KD-tree function when the data has at least
    :data:`BRUTE_FORCE_FROM_DIMS` columns, and every other function as the
    wrapped memory does.
    """

    def __init__(self, n_features: int, memory=None):
        from joblib import Memory

        self.n_features = int(n_features)
        self.memory = Memory(None, verbose=0) if memory is None else memory

    def cache(self, function):
        from hdbscan.hdbscan_ import _hdbscan_boruvka_kdtree

        if function is _hdbscan_boruvka_kdtree and self.n_features >= BRUTE_FORCE_FROM_DIMS:
            return self.memory.cache(boruvka_kdtree)
        return self.memory.cache(function)


def generate_prediction_data(clusterer) -> None:
    """``clusterer.generate_prediction_data()``, its core distances by :func:`exact_knn` in many dimensions.

    The library builds a KD-tree on the fitted rows and queries every row's
    ``min_samples`` nearest (self included) for its core distance; only the
    distance is kept, so ties do not matter. The tree is still built and
    kept (prediction in few dimensions queries it).
    """
    from hdbscan.prediction import PredictionData
    from sklearn.neighbors import KDTree

    data = clusterer._raw_data
    kwargs = dict(clusterer._metric_kwargs or {})
    if (data is None or np.ndim(data) != 2 or np.shape(data)[1] < BRUTE_FORCE_FROM_DIMS
            or not _euclidean(clusterer.metric, kwargs)):
        clusterer.generate_prediction_data()
        return

    def tree_answering_by_brute_force(raw, metric, **more):
        return ExactNeighbours(KDTree(raw, metric=metric, **more), euclidean=True, ordered=False)

    prediction = PredictionData.__new__(PredictionData)
    # The instance's map shadows the class's only for this construction; the real tree is kept afterwards.
    prediction._tree_type_map = {"kdtree": tree_answering_by_brute_force}
    prediction.__init__(data, clusterer.condensed_tree_, clusterer.min_samples or clusterer.min_cluster_size,
                        tree_type="kdtree", metric=clusterer.metric, **kwargs)
    del prediction._tree_type_map
    prediction.tree = prediction.tree.tree
    clusterer._prediction_data = prediction


def fit_hdbscan(X: np.ndarray, *, prediction_data: bool = False, memory=None, **params):
    """``hdbscan.HDBSCAN(prediction_data=..., memory=..., **params).fit(X)``, the same fitted object, with the
    core distances by brute force in many dimensions (:class:`BruteForceCoreDistances`,
    :func:`generate_prediction_data`).

    The returned clusterer's parameters are those asked for (``memory`` as
    given, the library's default without one), so it pickles and refits as
    one fitted by the library directly.
    """
    import hdbscan
    from joblib import Memory

    clusterer = hdbscan.HDBSCAN(memory=BruteForceCoreDistances(np.shape(X)[1], memory), **params).fit(X)
    clusterer.memory = Memory(None, verbose=0) if memory is None else memory
    if prediction_data:
        clusterer.prediction_data = True
        generate_prediction_data(clusterer)
    return clusterer
