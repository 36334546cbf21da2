"""k-means on sharpened customers (core/cluster/sharpened.py): the estimator contract, what sharpening buys on
overlapping groups of unequally noisy customers, scoring new customers, and its config checks."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from core.cluster.clustering import KMeansClusterer
from core.cluster.evaluation import stability
from core.cluster.methods import make_clusterer
from core.cluster.sharpened import SharpenedKMeansClusterer
from core.config import load_config
from core.framework import paths
from tests.conftest import small_config_document, write_config


def overlapping(n: int = 400, k: int = 4, dims: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``k`` groups whose customers are unequally noisy (as shares from a few or many order lines): each
    customer's noise scale is sqrt(20 / lines), lines log-normal around 20."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dims))
    y = np.arange(n) % k
    scale = np.sqrt(20 / rng.lognormal(np.log(20), 1.0, size=n))
    return centres[y] + rng.normal(size=(n, dims)) * scale[:, None], y


def sharpened(**params) -> SharpenedKMeansClusterer:
    defaults = {"n_clusters": (2, 6), "selection_sample_size": 400, "silhouette_sample_size": 400}
    return SharpenedKMeansClusterer(**{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    return overlapping()


@pytest.fixture(scope="module")
def fitted(data):
    return sharpened().fit(data[0])


def test_fit_predict_and_the_soft_assignment_agree(fitted, data):
    X, _ = data
    assert fitted.labels_.shape == (len(X),) and set(fitted.labels_) == set(range(fitted.n_clusters_))
    assert np.array_equal(fitted.predict(X), fitted.labels_)
    assert np.all((fitted.strength_ >= 0) & (fitted.strength_ <= 1))
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), fitted.n_clusters_)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba.argmax(axis=1), fitted.labels_)  # equal weights, one variance: the nearest centre
    assert fitted.assign(X).membership is None  # as k-means: no membership table in the stage's outputs
    report = fitted.selection_report()
    assert report["chosen_by"] == "silhouette" and report["sharpen_steps"] == 3 and report["sharpen_neighbours"] == 8


def test_sharpening_finds_overlapping_groups_that_plain_k_means_merges(fitted, data):
    X, y = data
    plain = KMeansClusterer(n_clusters=(2, 6), n_init=10, selection_sample_size=400, silhouette_sample_size=400).fit(X)
    assert fitted.n_clusters_ == 4 and adjusted_rand_score(y, fitted.labels_) >= 0.7
    # The noisiest customers blur the groups for plain k-means' silhouette, which chooses a coarser split.
    assert plain.n_clusters_ < 4 and adjusted_rand_score(y, plain.labels_) < adjusted_rand_score(y, fitted.labels_) - 0.3


def test_no_sharpening_is_plain_k_means(data):
    X, _ = data
    plain = KMeansClusterer(n_clusters=(4, 4), n_init=10, random_state=3).fit(X)
    zero = sharpened(n_clusters=(4, 4), steps=0, random_state=3).fit(X)
    assert zero.sharpener_ is None
    assert adjusted_rand_score(plain.labels_, zero.labels_) == 1.0


def test_new_customers_are_scored_by_the_fitted_map_alone(fitted, data, tmp_path):
    X, _ = data
    new, _ = overlapping(n=40, seed=9)
    together = fitted.predict(np.vstack([new, X[:10]]))
    assert np.array_equal(together[:40], fitted.predict(new))  # no customer moves another's segment
    assert np.array_equal(fitted.predict(new[:1]), together[:1])
    joblib.dump(fitted, tmp_path / "model.pkl")
    loaded = joblib.load(tmp_path / "model.pkl")
    assert np.array_equal(loaded.predict(new), fitted.predict(new))
    assert loaded.sharpener_.fitted_ is None  # the fitted rows' map is not kept in the model


def test_stability_refits_keep_the_chosen_count(fitted, data):
    X, _ = data
    assert fitted.fixed_params() == {"n_clusters": (fitted.n_clusters_, fitted.n_clusters_)}
    measured = stability(fitted, X, seed=0, reseeds=2, bootstraps=2, sample_size=300, bootstrap_fraction=0.8)
    assert 0.5 < measured["stability_reseed"] <= 1.0 and 0.5 < measured["stability_bootstrap"] <= 1.0


def test_bad_parameters_are_refused(data):
    with pytest.raises(ValueError, match="steps must be at least 0"):
        sharpened(steps=-1).fit(data[0])


def test_the_shipped_config_builds_it():
    cfg = load_config(paths.DEFAULT_CONFIG).cluster
    assert "sharpkmeans" in cfg.methods
    model = make_clusterer("sharpkmeans", cfg, 5, "raw")
    assert isinstance(model, SharpenedKMeansClusterer)
    assert (model.steps, model.neighbours_fraction, model.random_state) == (cfg.sharpkmeans.steps,
                                                                          cfg.sharpkmeans.neighbours_fraction, 5)


@pytest.mark.parametrize("change, key, message", [
    (lambda c: c.update(steps=-1), "cluster.sharpkmeans.steps", "below the minimum"),
    (lambda c: c.update(steps=11), "cluster.sharpkmeans.steps", "above the maximum"),
    (lambda c: c.update(neighbours_fraction=0), "cluster.sharpkmeans.neighbours_fraction", ""),
    (lambda c: c.update(n_clusters=[4, 3000]), "cluster.sharpkmeans.n_clusters",
     "[4, 3000] reaches beyond what can be fitted and scored"),
    (lambda c: c.update(ward_restarts=-1), "cluster.countmix.ward_restarts", "below the minimum"),
    (lambda c: c.update(restart_fraction=0), "cluster.countmix.restart_fraction", ""),
    (lambda c: c.update(restart_fraction=1.5), "cluster.countmix.restart_fraction", "above the maximum"),
])
def test_impossible_settings_are_config_errors_naming_the_key(tmp_path, change, key, message):
    from core.framework.schema import ConfigError

    doc = small_config_document()
    change(doc["cluster"][key.split(".")[1]])  # the section the key names
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, doc))
    assert f"key '{key}'" in str(error.value) and message in str(error.value)


def test_a_config_written_before_the_method_still_loads(tmp_path):
    doc = small_config_document()
    del doc["cluster"]["sharpkmeans"], doc["cluster"]["countmix"]
    doc["cluster"]["methods"] = ["hdbscan", "gmm", "fcm", "kmeans"]
    doc["cluster"]["spaces"] = ["raw", "latent"]
    cfg = load_config(write_config(tmp_path, doc)).cluster
    shipped = load_config(paths.DEFAULT_CONFIG).cluster
    # the sections' defaults are the shipped settings (the count mixture's too)
    assert cfg.sharpkmeans == shipped.sharpkmeans and cfg.countmix == shipped.countmix
    assert "sharpkmeans" not in cfg.methods and "countmix" not in cfg.methods


def test_the_fitted_rows_segments_are_those_of_mapping_them_anew(fitted, data, monkeypatch):
    """fit assigns its own rows from the map it already made (not by mapping them again), with the same result."""
    X, _ = data
    calls = []
    transform = fitted.sharpener_.transform
    monkeypatch.setattr(fitted.sharpener_, "transform", lambda rows: calls.append(len(rows)) or transform(rows))
    again = fitted.assign(X)
    assert calls == [len(X)] and fitted._sharpened_rows is None
    np.testing.assert_array_equal(again.labels, fitted.labels_)
    np.testing.assert_array_equal(again.strength, fitted.strength_)

    from core.cluster import clustering

    mapped = []
    original = clustering.Sharpener.transform
    monkeypatch.setattr(clustering.Sharpener, "transform", lambda self, rows: mapped.append(len(rows)) or original(self, rows))
    model = sharpened(selection_sample_size=150).fit(X)
    # Only the rows that are not reference points are mapped, once: the reference rows' map comes from building
    # the layers, and the fit's own assignment reuses the fitted rows' map.
    assert mapped == [len(X) - 150]
    mapped.clear()
    anew = model.assign(X)  # every row through the layers again, the reference rows included
    assert mapped == [len(X)]
    np.testing.assert_array_equal(anew.labels, model.labels_)
    np.testing.assert_array_equal(anew.strength, model.strength_)
