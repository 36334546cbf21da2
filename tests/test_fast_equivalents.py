"""Stage 04's faster equivalents against the library code they replace (issue 18): the silhouette from a distance
matrix (sklearn), fuzzy c-means (scikit-fuzzy) and HDBSCAN with brute-force core distances (hdbscan)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.neighbors import KDTree

from core.cluster import exact_neighbours, fuzzy_cmeans
from core.cluster.clustering import adaptive_fuzzifier, silhouette_from_distances


# --- silhouette ----------------------------------------------------------------------------------

def test_silhouette_from_distances_equals_sklearn_on_random_labelings_with_singletons():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(4, 250))
        X = rng.normal(size=(n, int(rng.integers(1, 8))))
        labels = rng.integers(0, int(rng.integers(2, n)), n) * 5 - 7  # sparse, negative ids, many singletons
        if not 2 <= len(np.unique(labels)) <= n - 1:
            continue
        D = pairwise_distances(X)
        assert silhouette_from_distances(D, labels) == pytest.approx(
            silhouette_score(D, labels, metric="precomputed"), abs=1e-12)
        checked += 1
    assert checked > 40


def test_silhouette_singletons_score_zero_and_duplicates_do_not_divide_by_zero():
    X = np.array([[0.0], [0.0], [0.0], [5.0], [5.0], [9.0]])  # duplicates: zero distances within a cluster
    labels = np.array([0, 0, 0, 1, 1, 2])  # cluster 2 is a singleton
    D = pairwise_distances(X)
    assert silhouette_from_distances(D, labels) == pytest.approx(silhouette_score(D, labels, metric="precomputed"),
                                                                  abs=1e-15)


def test_silhouette_refuses_one_label_or_one_label_per_row():
    D = pairwise_distances(np.arange(4.0)[:, None])
    with pytest.raises(ValueError, match="2 to 3 labels"):
        silhouette_from_distances(D, np.zeros(4))
    with pytest.raises(ValueError, match="2 to 3 labels"):
        silhouette_from_distances(D, np.arange(4))


# --- fuzzy c-means -------------------------------------------------------------------------------

def _fcm_data(n: int, dims: int, seed: int) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, centers=5, n_features=dims, cluster_std=2.5, random_state=seed)
    return (X - X.mean(axis=0)) / X.std(axis=0)


@pytest.mark.parametrize("dims, c, seed, m", [(4, 3, 0, None), (4, 6, 1, None), (45, 4, 2, None), (45, 8, 3, None),
                                              (45, 6, 4, 1.049)])
def test_cmeans_equals_scikit_fuzzy(dims, c, seed, m):
    import skfuzzy

    X = _fcm_data(400, dims, seed)
    # The adaptive fuzzifier is 1.083 for 400 rows of 45 features (the power -2/(m-1) is -24); 1.049 is the default
    # data's on 9,669 customers (-41).
    m = adaptive_fuzzifier(len(X), dims) if m is None else m
    error = 1e-4 * np.sqrt(len(X) * c)
    centers, u, _, _, _, n_iter, fpc = skfuzzy.cluster.cmeans(X.T, c, m, error=error, maxiter=300, seed=seed)
    ours_centers, ours_u, ours_iter, ours_fpc = fuzzy_cmeans.cmeans(X, c, m, error, 300, seed=seed)
    assert ours_iter == n_iter
    np.testing.assert_allclose(ours_u, u, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours_centers, centers, rtol=0, atol=1e-8)
    assert ours_fpc == pytest.approx(fpc, abs=1e-10)
    assert np.array_equal(ours_u.argmax(axis=0), u.argmax(axis=0))


def test_cmeans_from_given_memberships_and_until_maxiter_equals_scikit_fuzzy():
    import skfuzzy

    X = _fcm_data(300, 6, 4)
    start = np.random.default_rng(5).random((4, len(X)))
    start /= start.sum(axis=0)
    for maxiter, error in [(300, 1e-3), (3, 0.0)]:
        centers, u, _, _, _, n_iter, fpc = skfuzzy.cluster.cmeans(X.T, 4, 2.0, error=error, maxiter=maxiter,
                                                                  init=start.copy())
        ours = fuzzy_cmeans.cmeans(X, 4, 2.0, error, maxiter, init=start.copy())
        assert ours[2] == n_iter
        np.testing.assert_allclose(ours[1], u, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours[0], centers, rtol=0, atol=1e-8)


def test_cmeans_random_start_leaves_numpy_global_generator_alone():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    fuzzy_cmeans.cmeans(_fcm_data(100, 3, 0), 3, 2.0, 1e-3, 50, seed=7)
    assert np.array_equal(np.random.rand(3), expected)


@pytest.mark.parametrize("dims", [3, 45])
def test_fcm_predict_equals_scikit_fuzzy(dims):
    import skfuzzy

    X = _fcm_data(300, dims, 6)
    m = adaptive_fuzzifier(len(X), dims)
    centers = fuzzy_cmeans.cmeans(X[:150], 5, m, 1e-3, 300, seed=0)[0]
    u = skfuzzy.cluster.cmeans_predict(X[150:].T, centers, m, error=1e-3, maxiter=300, seed=0)[0]
    np.testing.assert_allclose(fuzzy_cmeans.predict(X[150:], centers, m), u, rtol=0, atol=1e-8)


def test_cmeans_refuses_no_iteration():
    with pytest.raises(ValueError, match="maxiter"):
        fuzzy_cmeans.cmeans(_fcm_data(50, 3, 0), 2, 2.0, 1e-3, 0, seed=0)


# --- HDBSCAN's core distances --------------------------------------------------------------------

def _hdbscan_data(n: int = 700, dims: int = 20, seed: int = 0) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, centers=4, n_features=dims, cluster_std=3.0, random_state=seed)
    return X


@pytest.mark.parametrize("k", [1, 2, 6, 11])
def test_exact_knn_returns_the_kd_trees_floats_and_order(k):
    X = _hdbscan_data()
    found = exact_neighbours.exact_knn(X, X, k, chunk=256)
    assert found is not None
    distances, indices = KDTree(X, leaf_size=40).query(X, k=k, dualtree=True, breadth_first=True)
    assert np.array_equal(found[0], distances)  # bit for bit
    assert np.array_equal(found[1], indices)


def test_exact_knn_gives_up_on_ties_unless_only_distances_count():
    X = _hdbscan_data(200)
    X[10] = X[3]  # a duplicate: two neighbours at distance 0, in an order only the tree knows
    assert exact_neighbours.exact_knn(X, X, 2) is None
    distances, _ = exact_neighbours.exact_knn(X, X, 3, ordered=False)
    assert np.array_equal(distances, KDTree(X).query(X, k=3)[0])


def _fit_both(X, **params):
    import hdbscan

    library = hdbscan.HDBSCAN(prediction_data=True, gen_min_span_tree=True, **params).fit(X)
    ours = exact_neighbours.fit_hdbscan(X, prediction_data=True, gen_min_span_tree=True, **params)
    return library, ours


@pytest.mark.parametrize("min_samples, method", [(1, "eom"), (5, "leaf"), (10, "eom")])
def test_fit_hdbscan_equals_the_library(min_samples, method):
    X = _hdbscan_data()
    library, ours = _fit_both(X, min_cluster_size=20, min_samples=min_samples, cluster_selection_method=method)
    assert np.array_equal(ours.single_linkage_tree_.to_numpy(), library.single_linkage_tree_.to_numpy())
    assert np.array_equal(ours.labels_, library.labels_)
    assert np.array_equal(ours.probabilities_, library.probabilities_)
    assert ours.relative_validity_ == library.relative_validity_
    mine, theirs = ours.prediction_data_, library.prediction_data_
    assert np.array_equal(mine.core_distances, theirs.core_distances)
    assert type(mine) is type(theirs) and type(mine.tree) is type(theirs.tree)
    assert np.array_equal(np.asarray(mine.tree.data), np.asarray(theirs.tree.data))
    assert mine.cluster_map == theirs.cluster_map
    assert all(np.array_equal(a, b) for a, b in zip(mine.exemplars, theirs.exemplars))


def test_fit_hdbscan_with_duplicates_falls_back_to_the_tree_and_still_equals_the_library():
    X = _hdbscan_data(400)
    X[50:60] = X[0]  # ties everywhere near row 0
    library, ours = _fit_both(X, min_cluster_size=15, min_samples=3)
    assert np.array_equal(ours.single_linkage_tree_.to_numpy(), library.single_linkage_tree_.to_numpy())
    assert np.array_equal(ours.labels_, library.labels_)
    assert np.array_equal(ours.prediction_data_.core_distances, library.prediction_data_.core_distances)


def test_fit_hdbscan_in_few_dimensions_is_the_library_path_and_pickles_without_this_module():
    import hdbscan

    X = _hdbscan_data(300, dims=3)
    library, ours = _fit_both(X, min_cluster_size=15, min_samples=5)
    assert np.array_equal(ours.labels_, library.labels_)
    assert ours.get_params()["memory"].location is None  # the library's default, not the stand-in
    many = exact_neighbours.fit_hdbscan(_hdbscan_data(300), min_cluster_size=15, prediction_data=True)
    blob = pickle.dumps(many)
    assert b"exact_neighbours" not in blob
    assert isinstance(pickle.loads(blob), hdbscan.HDBSCAN)


def test_brute_force_memory_keeps_joblib_caching(tmp_path):
    from joblib import Memory

    X = _hdbscan_data(300)
    memory = Memory(tmp_path, verbose=0)
    first = exact_neighbours.fit_hdbscan(X, min_cluster_size=15, min_samples=5, memory=memory)
    again = exact_neighbours.fit_hdbscan(X, min_cluster_size=15, min_samples=5, memory=memory,
                                         cluster_selection_method="leaf")
    assert any(tmp_path.rglob("*boruvka_kdtree*"))
    assert np.array_equal(first.single_linkage_tree_.to_numpy(), again.single_linkage_tree_.to_numpy())
    assert first.memory is memory


# --- sharpening's neighbour mean -----------------------------------------------------------------

@pytest.mark.parametrize("features, neighbours", [(1, 9), (2, 2), (3, 80), (45, 7), (45, 80)])
def test_neighbour_mean_is_numpys_mean_bit_for_bit(features, neighbours):
    from core.cluster.clustering import neighbour_mean

    rng = np.random.default_rng(features * 100 + neighbours)
    points = rng.normal(size=(500, features)) * 10 ** rng.uniform(-3, 3, size=features)
    rows = rng.integers(0, len(points), size=(300, neighbours))
    assert np.array_equal(neighbour_mean(points, rows), points[rows].mean(axis=1))


def test_brute_force_answers_the_core_distances_in_many_dimensions_only(monkeypatch):
    answered = []
    exact = exact_neighbours.exact_knn

    def counting(*args, **kwargs):
        found = exact(*args, **kwargs)
        answered.append(found is not None)
        return found

    monkeypatch.setattr(exact_neighbours, "exact_knn", counting)
    exact_neighbours.fit_hdbscan(_hdbscan_data(300), min_cluster_size=15, min_samples=5, prediction_data=True)
    assert answered == [True, True]  # the Boruvka fit's core distances, then the prediction data's
    answered.clear()
    exact_neighbours.fit_hdbscan(_hdbscan_data(300, dims=3), min_cluster_size=15, min_samples=5, prediction_data=True)
    assert answered == []
