"""Contract and behaviour tests of the clustering estimators (core/clustering.py) on well-separated blobs."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score

from core.clustering import (NOISE, FuzzyCMeansClusterer, GaussianMixtureClusterer, HDBSCANClusterer,
                             KMeansClusterer, cluster_all, sampled_silhouette, summarize_clustering)
from core.config import load_config

N, CENTRES, DIMS = 600, 4, 5


def blobs(n: int = N, seed: int = 0):
    """Four well-separated 5-d blobs; the centres are the same for every ``seed`` of the points."""
    _, _, centres = make_blobs(n_samples=10, centers=CENTRES, n_features=DIMS, center_box=(-10, 10),
                               random_state=0, return_centers=True)
    X, y = make_blobs(n_samples=n, centers=centres, n_features=DIMS, cluster_std=1.0, random_state=seed)
    return X, y


def make(method: str):
    return {
        "hdbscan": lambda: HDBSCANClusterer(min_cluster_size_fraction=0.05, min_samples=5),
        "gmm": lambda: GaussianMixtureClusterer(n_components=(2, 6), random_state=0),
        "fcm": lambda: FuzzyCMeansClusterer(n_clusters=(2, 6), random_state=0),
        "kmeans": lambda: KMeansClusterer(n_clusters=(2, 6), random_state=0),
    }[method]()


METHODS = ["hdbscan", "gmm", "fcm", "kmeans"]


@pytest.fixture(scope="module")
def data():
    return blobs(seed=0)


@pytest.fixture(scope="module")
def fitted(data):
    X, _ = data
    return {method: make(method).fit(X) for method in METHODS}


# --- every clusterer ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_labels_and_strength_shapes_and_range(method, fitted, data):
    X, _ = data
    model = fitted[method]
    assert model.labels_.shape == (len(X),)
    assert model.strength_.shape == (len(X),)
    assert model.labels_.dtype == np.int64
    assert np.all((model.strength_ >= 0) & (model.strength_ <= 1))
    assert model.n_features_in_ == DIMS


@pytest.mark.parametrize("method", METHODS)
def test_recovers_the_four_blobs(method, fitted, data):
    X, y = data
    model = fitted[method]
    assert adjusted_rand_score(y, model.labels_) > 0.9
    assert len(set(model.labels_) - {NOISE}) == CENTRES


@pytest.mark.parametrize("method", ["gmm", "fcm", "kmeans"])
def test_selected_number_of_clusters_is_four(method, fitted):
    model = fitted[method]
    chosen = {"gmm": lambda m: m.model_.n_components, "fcm": lambda m: m.n_clusters_,
              "kmeans": lambda m: m.model_.n_clusters}[method](model)
    assert chosen == CENTRES
    report = model.selection_report()
    scores = report.get("bic") or report.get("silhouette")
    assert sorted(scores) == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("method", ["gmm", "fcm", "kmeans"])
def test_predict_on_training_data_gives_the_training_labels(method, fitted, data):
    X, _ = data
    model = fitted[method]
    labels, strength = model.predict_with_strength(X)
    np.testing.assert_array_equal(labels, model.labels_)
    np.testing.assert_allclose(strength, model.strength_, atol=1e-9)
    np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_hdbscan_approximate_predict_agrees_on_clustered_training_points(fitted, data):
    X, _ = data
    model = fitted["hdbscan"]
    labels, strength = model.predict_with_strength(X)
    clustered = model.labels_ != NOISE
    assert clustered.mean() > 0.5
    assert np.mean(labels[clustered] == model.labels_[clustered]) >= 0.95
    assert np.all((strength >= 0) & (strength <= 1))


@pytest.mark.parametrize("method", METHODS)
def test_new_points_from_the_same_blobs_land_in_their_blob(method, fitted):
    X_new, y_new = blobs(n=200, seed=1)
    labels = fitted[method].predict(X_new)
    assert adjusted_rand_score(y_new, labels) > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_joblib_round_trip_predicts_identically(method, fitted, tmp_path):
    X_new, _ = blobs(n=200, seed=2)
    model = fitted[method]
    before_labels, before_strength = model.predict_with_strength(X_new)
    joblib.dump(model, tmp_path / f"{method}.pkl")
    loaded = joblib.load(tmp_path / f"{method}.pkl")
    after_labels, after_strength = loaded.predict_with_strength(X_new)

    np.testing.assert_array_equal(after_labels, before_labels)
    np.testing.assert_array_equal(after_strength, before_strength)
    np.testing.assert_array_equal(loaded.labels_, model.labels_)


def test_fcm_memberships_sum_to_one(fitted):
    model = fitted["fcm"]
    assert model.membership_.shape == (N, CENTRES)
    np.testing.assert_allclose(model.membership_.sum(axis=1), 1.0, atol=1e-9)
    X_new, _ = blobs(n=50, seed=3)
    membership = model.membership(X_new)
    assert membership.shape == (50, CENTRES)
    np.testing.assert_allclose(membership.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(model.strength_, model.membership_.max(axis=1))


def test_kmeans_strength_is_one_at_a_centre_and_zero_halfway_between_two():
    X, _ = blobs()
    model = KMeansClusterer(n_clusters=(4, 4), random_state=0).fit(X)
    centres = model.model_.cluster_centers_
    _, at_centres = model.predict_with_strength(centres)
    np.testing.assert_allclose(at_centres, 1.0, atol=1e-12)
    _, halfway = model.predict_with_strength(((centres[0] + centres[1]) / 2)[None, :])
    # Equidistant from centres 0 and 1 and nearer to them than to 2 and 3 on these blobs.
    assert halfway[0] == pytest.approx(0.0, abs=1e-9)


# --- sampled_silhouette and summarize_clustering ----------------------------------------------

def test_sampled_silhouette_is_nan_with_one_cluster(data):
    X, _ = data
    assert np.isnan(sampled_silhouette(X, np.zeros(len(X), dtype=np.int64), size=1000, seed=0))
    assert np.isnan(sampled_silhouette(X, np.full(len(X), NOISE), size=1000, seed=0))
    one_cluster_and_noise = np.where(np.arange(len(X)) % 2 == 0, 0, NOISE)
    assert np.isnan(sampled_silhouette(X, one_cluster_and_noise, size=1000, seed=0))


def test_sampled_silhouette_ignores_noise(data):
    X, y = data
    labels = y.copy()
    labels[::7] = NOISE  # mark some points noise: scattered across every blob
    keep = labels != NOISE
    expected = silhouette_score(X[keep], labels[keep])
    assert sampled_silhouette(X, labels, size=len(X), seed=0) == pytest.approx(expected)
    # Counting noise as a cluster of its own would give a very different score.
    assert abs(silhouette_score(X, labels) - expected) > 0.1


def test_sampled_silhouette_samples_with_its_seed(data):
    X, y = data
    a = sampled_silhouette(X, y, size=150, seed=1)
    assert a == sampled_silhouette(X, y, size=150, seed=1)
    assert 0.5 < a <= 1.0


def test_summarize_clustering_counts_on_a_hand_made_array():
    labels = np.array([0, 0, 0, 2, 2, NOISE, NOISE, 5])  # label 1, 3 and 4 unused
    X = np.random.default_rng(0).normal(size=(len(labels), 2))
    row = summarize_clustering("hdbscan", "latent", X, labels, sample_size=100, seed=0)
    assert row["method"] == "hdbscan" and row["space"] == "latent"
    assert row["clusters"] == 3
    assert row["noise_ratio"] == pytest.approx(2 / 8)
    assert row["smallest_cluster"] == 1
    assert row["largest_cluster"] == 3
    assert np.isfinite(row["silhouette"])


def test_summarize_clustering_of_all_noise():
    labels = np.full(6, NOISE)
    row = summarize_clustering("hdbscan", "raw", np.zeros((6, 2)), labels, sample_size=100, seed=0)
    assert (row["clusters"], row["noise_ratio"], row["smallest_cluster"], row["largest_cluster"]) == (0, 1.0, 0, 0)
    assert np.isnan(row["silhouette"])


# --- cluster_all -------------------------------------------------------------------------------

def test_cluster_all_fits_every_method_in_every_space(small_config_path, data):
    X, y = data
    cluster_cfg = load_config(small_config_path).cluster
    spaces = {"raw": X, "latent": X[:, :3]}
    methods = list(cluster_cfg.methods)
    assignments, comparison, models = cluster_all(spaces, methods, cluster_cfg, seed=0)

    expected = [f"{m}_{s}_{k}" for s in spaces for m in methods for k in ("label", "strength")]
    assert list(assignments.columns) == expected
    assert len(assignments) == len(X)
    assert list(zip(comparison["method"], comparison["space"])) == [(m, s) for s in spaces for m in methods]
    assert set(models) == {(m, s) for s in spaces for m in methods}
    for (m, s), model in models.items():
        np.testing.assert_array_equal(assignments[f"{m}_{s}_label"], model.labels_)
        strength = assignments[f"{m}_{s}_strength"]
        assert strength.between(0, 1).all()
    # The blobs stay apart in the first three dimensions too.
    assert adjusted_rand_score(y, assignments["kmeans_latent_label"]) > 0.9
    counts = comparison.set_index(["method", "space"])["clusters"]
    assert counts[("kmeans", "raw")] == CENTRES
