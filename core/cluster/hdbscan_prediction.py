"""HDBSCAN's prediction for new points, vectorised: ``approximate_predict`` and ``membership_vector``.

The hdbscan library scores new points one at a time in a Python loop, and
each point scans the whole condensed tree for its nearest neighbour's row:
about 0.25 ms a point at 10,000 fitted customers, so scoring a million
customers in two spaces would take over eight minutes on its own. These
functions compute the same numbers (the same formulas, ties broken the same
way; tests compare them with the library's) for all points at once, from
the prediction data the library keeps (``prediction_data=True``):

- :func:`approximate_predict`: the cluster a new point would have joined
  and its membership probability (``hdbscan.approximate_predict``);
- :func:`membership_vector`: its soft membership in every cluster
  (``hdbscan.membership_vector``): distance to each cluster's exemplars
  combined with where it would sit in the condensed tree, scaled by the
  probability that it is in some cluster at all.

Only the Euclidean metric (the pipeline's) is supported.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CHUNK_ROWS = 50_000
#: Chunks scored side by side in threads. The neighbour search (BLAS and scikit-learn's compiled
#: reductions) releases the GIL, and at scale stage 04's HDBSCAN on the raw features is its longest task by
#: far: scoring 966,000 customers against 20,000 fitted ones took 336 s in one thread while the other
#: worker process had long finished. Results do not depend on it (each chunk writes its own rows).
PREDICT_THREADS = 2
DBL_MAX = np.finfo(np.float64).max


@dataclasses.dataclass(frozen=True)
class PredictionTables:
    """Lookup arrays built once per fitted clusterer from its condensed tree and prediction data.

    Cluster-tree nodes are numbered ``n_points ..``; arrays indexed by node
    subtract ``root``.
    """

    min_samples: int
    root: int
    point_parent: np.ndarray        # (n_points,) node a fitted point falls out of
    point_lambda: np.ndarray        # (n_points,) lambda at which it falls out
    node_parent: np.ndarray         # (n_nodes,) parent node, -1 for the root
    node_lambda: np.ndarray         # (n_nodes,) lambda at which the node split off its parent
    node_label: np.ndarray          # (n_nodes,) selected-cluster label it belongs to, -1 none
    node_max_lambda: np.ndarray     # (n_nodes,) prediction_data_.max_lambdas, NaN where absent
    node_leaf_max_lambda: np.ndarray  # (n_nodes,) prediction_data_.leaf_max_lambdas
    clusters: np.ndarray            # (k,) selected cluster nodes, in label order
    merge_lambda: np.ndarray        # (n_nodes, k) lambda where node and cluster merge; NaN if one holds the other


def prediction_tables(clusterer) -> PredictionTables:
    """Build the lookup arrays for a fitted ``hdbscan.HDBSCAN`` with prediction data."""
    data = clusterer.prediction_data_
    tree = clusterer.condensed_tree_._raw_tree
    n_points = len(data.raw_data)
    root = int(tree["parent"].min())
    point_rows = tree[tree["child"] < n_points]
    point_parent = np.full(n_points, root, dtype=np.int64)
    point_lambda = np.zeros(n_points)
    # hdbscan takes the first row with that child; a point appears once.
    point_parent[point_rows["child"]] = point_rows["parent"]
    point_lambda[point_rows["child"]] = point_rows["lambda_val"]

    cluster_rows = data.cluster_tree
    n_nodes = int(max(tree["parent"].max(), cluster_rows["child"].max() if len(cluster_rows) else root)) - root + 1
    node_parent = np.full(n_nodes, -1, dtype=np.int64)
    node_lambda = np.zeros(n_nodes)
    node_parent[cluster_rows["child"] - root] = cluster_rows["parent"]
    node_lambda[cluster_rows["child"] - root] = cluster_rows["lambda_val"]
    node_label = np.full(n_nodes, -1, dtype=np.int64)
    for node, label in data.cluster_map.items():
        node_label[int(node) - root] = label
    node_max_lambda = np.full(n_nodes, np.nan)
    for node, value in data.max_lambdas.items():
        node_max_lambda[int(node) - root] = value
    node_leaf_max_lambda = np.full(n_nodes, np.nan)
    for node, value in data.leaf_max_lambdas.items():
        node_leaf_max_lambda[int(node) - root] = value
    clusters = np.array(sorted(data.reverse_cluster_map.items()), dtype=np.int64).reshape(-1, 2)[:, 1]

    # Ancestors of every node, nearest first, to find where two nodes' branches meet.
    ancestors = []
    for node in range(n_nodes):
        chain, current = [], node + root
        while current != -1:
            chain.append(current)
            current = node_parent[current - root] if current - root < n_nodes else -1
        ancestors.append(chain)
    merge_lambda = np.full((n_nodes, len(clusters)), np.nan)
    for node in range(n_nodes):
        mine = ancestors[node]
        for j, cluster in enumerate(clusters):
            theirs = ancestors[int(cluster) - root]
            common = set(mine) & set(theirs)
            if not common:
                continue
            meet = max(common)  # the lowest common ancestor has the largest id on both chains
            if meet in (node + root, int(cluster)):
                continue  # one holds the other: hdbscan then uses the point's own lambda
            # hdbscan walks up whichever side has the larger id, one step at a time; the node it moved
            # last before the sides meet gives the merge lambda.
            left, right, last = node + root, int(cluster), None
            while left != right:
                if left > right:
                    last, left = left, node_parent[left - root]
                else:
                    last, right = right, node_parent[right - root]
            merge_lambda[node, j] = node_lambda[last - root]
    return PredictionTables(
        min_samples=int(clusterer.min_samples or clusterer.min_cluster_size), root=root,
        point_parent=point_parent, point_lambda=point_lambda, node_parent=node_parent, node_lambda=node_lambda,
        node_label=node_label, node_max_lambda=node_max_lambda, node_leaf_max_lambda=node_leaf_max_lambda,
        clusters=clusters, merge_lambda=merge_lambda)


#: Above this many dimensions the neighbour search is brute force (BLAS), below it the library's KD-tree:
#: in 22 dimensions a KD-tree query took 2.6 times as long as brute force, in 8 dimensions a third.
BRUTE_FORCE_FROM_DIMS = 12


def _neighbours(clusterer, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each point's ``k`` nearest fitted points, nearest first."""
    data = clusterer.prediction_data_
    if X.shape[1] < BRUTE_FORCE_FROM_DIMS:
        return data.tree.query(X, k=k)
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(data.raw_data)
    indices = search.kneighbors(X, return_distance=False)
    # Brute force ranks by the fast |x|^2 + |y|^2 - 2xy form; the distances used are recomputed exactly.
    distances = np.sqrt(((X[:, None, :] - data.raw_data[indices]) ** 2).sum(axis=2))
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _distance_to_nearest(points: np.ndarray, exemplars: list[np.ndarray], trees: list) -> np.ndarray:
    """Distance from each point to the nearest exemplar of each cluster, shape (n, k)."""
    if points.shape[1] < BRUTE_FORCE_FROM_DIMS:
        return np.column_stack([t.query(points, k=1)[0][:, 0] for t in trees])
    from sklearn.metrics import pairwise_distances_argmin

    out = np.empty((len(points), len(exemplars)))
    for j, e in enumerate(exemplars):
        # Brute force picks the nearest; its distance is recomputed exactly.
        nearest = e[pairwise_distances_argmin(points, e)]
        out[:, j] = np.sqrt(((points - nearest) ** 2).sum(axis=1))
    return out


def _nearest_and_lambda(clusterer, tables: PredictionTables, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest mutual-reachability neighbour among the fitted points, and its lambda."""
    data = clusterer.prediction_data_
    k = 2 * tables.min_samples
    distances, indices = _neighbours(clusterer, X, k)
    own_core = distances[:, tables.min_samples][:, None]
    reachability = np.maximum(np.maximum(data.core_distances[indices], own_core), distances)
    best = reachability.argmin(axis=1)  # the first minimum, as numpy's argmin in hdbscan
    rows = np.arange(len(X))
    nearest = indices[rows, best]
    mr = reachability[rows, best]
    with np.errstate(divide="ignore"):
        lam = np.where(mr > 0, 1.0 / np.where(mr > 0, mr, 1.0), DBL_MAX)
    return nearest, lam


def _chunks(n: int):
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n))


def _predict(tables: PredictionTables, nearest: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and probability from each point's nearest neighbour and lambda (``approximate_predict``)."""
    cluster = tables.point_parent[nearest].copy()
    # Walk up from the neighbour's cluster while that cluster was still whole at the point's lambda.
    walking = tables.point_lambda[nearest] > lam
    while walking.any():
        node = cluster[walking] - tables.root
        parent = tables.node_parent[node]
        moves = (cluster[walking] > tables.root) & (parent >= 0) & (tables.node_lambda[node] >= lam[walking])
        index = np.flatnonzero(walking)
        cluster[index[moves]] = parent[moves]
        walking[index[~moves]] = False
    label = tables.node_label[cluster - tables.root]
    max_lambda = tables.node_max_lambda[cluster - tables.root]
    safe = np.where(np.isfinite(max_lambda) & (max_lambda > 0), max_lambda, 1.0)
    prob = np.where(max_lambda > 0, np.minimum(max_lambda, lam) / safe, 1.0)
    return label, np.where(label >= 0, prob, 0.0)


def _membership(clusterer, tables: PredictionTables, points: np.ndarray, nearest: np.ndarray,
                lam: np.ndarray, exemplars: list, exemplar_trees: list) -> np.ndarray:
    """Soft membership from the points, their nearest neighbour and lambda (``membership_vector``)."""
    k = len(tables.clusters)
    node = tables.point_parent[nearest] - tables.root
    lam = np.minimum(lam, tables.point_lambda[nearest])

    # Distance part: 1 / distance to the nearest exemplar of each cluster, normalised.
    to_exemplar = _distance_to_nearest(points, exemplars, exemplar_trees)
    with np.errstate(divide="ignore"):
        inverse = np.where(to_exemplar != 0, 1.0 / np.where(to_exemplar != 0, to_exemplar, 1.0), DBL_MAX / k)
    distance_vec = inverse / inverse.sum(axis=1, keepdims=True)

    # Tree part: how high in the tree the point's branch meets each cluster (hdbscan's per-cluster
    # scores take lambda as float32), softmax-normalised.
    lam32 = lam.astype(np.float32).astype(np.float64)
    heights = np.where(np.isnan(tables.merge_lambda[node]), lam32[:, None], tables.merge_lambda[node])
    own_max = tables.node_leaf_max_lambda[node][:, None]
    denominator = own_max - heights
    scores = own_max / np.where(denominator <= 0, 1e-8, denominator)
    outlier_vec = np.exp(scores - np.nanmax(scores, axis=1, keepdims=True))
    outlier_vec /= outlier_vec.sum(axis=1, keepdims=True)

    combined = distance_vec ** 0.5 * outlier_vec ** 2.0
    combined /= combined.sum(axis=1, keepdims=True)

    # Probability of being in some cluster at all.
    heights64 = np.where(np.isnan(tables.merge_lambda[node]), lam[:, None], tables.merge_lambda[node])
    top = heights64.argmax(axis=1)
    point_height = heights64[np.arange(len(points)), top]
    nearest_max = tables.node_leaf_max_lambda[tables.clusters[top] - tables.root]
    in_some = point_height / (np.maximum(lam, nearest_max) + 1e-8)
    return combined * in_some[:, None]


def predict(clusterer, tables: PredictionTables, X: np.ndarray,
            membership: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, probabilities and membership vectors of new points, one neighbour search for all three.

    Parameters
    ----------
    membership : {"all", "noise", "none"}
        Rows whose membership vector is computed (the others are zero):
        every row, only those ``approximate_predict`` calls noise, or none
        (then None is returned).

    Returns
    -------
    labels : ndarray of int64 (``-1`` noise), probabilities : ndarray, membership : ndarray (n, k) or None
    """
    from sklearn.neighbors import KDTree

    X = np.asarray(X, dtype=np.float64)
    k = len(tables.clusters)
    labels = np.full(len(X), -1, dtype=np.int64)
    probabilities = np.zeros(len(X))
    soft = None if membership == "none" else np.zeros((len(X), k))
    if k == 0:
        return labels, probabilities, soft
    exemplars = [np.asarray(e, dtype=np.float64) for e in clusterer.prediction_data_.exemplars]
    exemplar_trees = ([KDTree(e) for e in exemplars]
                      if soft is not None and X.shape[1] < BRUTE_FORCE_FROM_DIMS else [])

    def score(part: slice) -> None:
        # Each chunk writes only its own rows, so chunks can run in any order, side by side.
        nearest, lam = _nearest_and_lambda(clusterer, tables, X[part])
        labels[part], probabilities[part] = _predict(tables, nearest, lam)
        if soft is not None:
            rows = np.arange(len(nearest)) if membership == "all" else np.flatnonzero(labels[part] == -1)
            if len(rows):
                soft[np.arange(part.start, part.stop)[rows]] = _membership(
                    clusterer, tables, X[part][rows], nearest[rows], lam[rows], exemplars, exemplar_trees)

    parts = list(_chunks(len(X)))
    if len(parts) == 1 or PREDICT_THREADS == 1:
        for part in parts:
            score(part)
        return labels, probabilities, soft
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    def score_alone(part: slice) -> None:
        with threadpool_limits(1):  # one native thread per chunk: the chunks are the parallelism
            score(part)

    with ThreadPoolExecutor(max_workers=min(PREDICT_THREADS, len(parts))) as pool:
        list(pool.map(score_alone, parts))  # list(): a chunk's exception is raised here
    return labels, probabilities, soft


def approximate_predict(clusterer, tables: PredictionTables, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (``-1`` noise) and membership probabilities of new points, as ``hdbscan.approximate_predict``."""
    labels, probabilities, _ = predict(clusterer, tables, X, membership="none")
    return labels, probabilities


def membership_vector(clusterer, tables: PredictionTables, X: np.ndarray) -> np.ndarray:
    """Soft membership of new points in each cluster, shape (n, k), as ``hdbscan.membership_vector``."""
    return predict(clusterer, tables, X, membership="all")[2]
