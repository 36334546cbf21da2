"""Stage 04's computation (core/segmentation.py) and its parts: evaluation, id matching across retraining."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from core.cluster import evaluation, segmentation
from core.cluster.clustering import NOISE, GaussianMixtureClusterer, HDBSCANClusterer, KMeansClusterer
from core.config import load_config
from core.cluster.matching import MIGRATION_COLUMNS, kept_share, match_cluster_ids, migration_table

N, CENTRES, DIMS = 500, 4, 5

# comparison.csv's columns in order, written out as README's table of stage 04 outputs lists them (not taken
# from segmentation.COMPARISON_COLUMNS: a column dropped or moved there must fail here).
COMPARISON_CSV_COLUMNS = [
    "method", "space", "clusters", "noise_ratio", "smallest_cluster", "largest_cluster", "smallest_share",
    "median_share", "largest_share", "silhouette", "davies_bouldin", "calinski_harabasz", "stability_reseed",
    "stability_bootstrap", "consensus", "high_confidence_share", "mean_uncertainty", "bic", "aic",
    "partition_coefficient", "partition_entropy", "ari", "nmi", "homogeneity", "completeness", "ari_to_reference",
]
# The ones measured against the ground truth; the rest describe the segmentation alone.
TRUTH_COLUMNS = ["ari", "nmi", "homogeneity", "completeness", "ari_to_reference"]


def blobs(n: int = N, seed: int = 0, std: float = 1.0):
    _, _, centres = make_blobs(n_samples=10, centers=CENTRES, n_features=DIMS, center_box=(-10, 10),
                               random_state=0, return_centers=True)
    return make_blobs(n_samples=n, centers=centres, n_features=DIMS, cluster_std=std, random_state=seed)


@pytest.fixture(scope="module")
def cluster_cfg(tmp_path_factory):
    from conftest import small_config_document, write_config

    config = load_config(write_config(tmp_path_factory.mktemp("config"), small_config_document()))
    return config.cluster


@pytest.fixture(scope="module")
def spaces():
    X, y = blobs()
    return {"raw": X, "latent": X[:, :3]}, pd.Series(np.array(["a", "b", "c", "d"])[y])


@pytest.fixture(scope="module")
def result(cluster_cfg, spaces):
    matrices, truth = spaces
    return segmentation.segment_customers(matrices, list(cluster_cfg.methods), cluster_cfg, seed=0, truth=truth)


# --- segment_customers -----------------------------------------------------------------------------

def test_every_method_and_space_is_fitted_scored_and_compared(result, cluster_cfg, spaces):
    matrices, _ = spaces
    # countmix is fitted in the counts space only, which these matrices do not have.
    pairs = [(m, s) for s in matrices for m in cluster_cfg.methods if m != "countmix"]
    assert list(result.models) == pairs and list(result.assignments) == pairs
    assert list(zip(result.comparison["method"], result.comparison["space"])) == pairs
    assert list(result.comparison.columns) == COMPARISON_CSV_COLUMNS
    for found in result.assignments.values():
        assert found.labels.shape == (N,) and ((found.strength >= 0) & (found.strength <= 1)).all()
    table = result.comparison.set_index(["method", "space"])
    # Four clear blobs: every partitioning method finds them, stably, matching the truth.
    for method in ("gmm", "kmeans"):
        row = table.loc[(method, "raw")]
        assert row["clusters"] == CENTRES and row["ari"] > 0.95 and row["stability_reseed"] > 0.95
        assert row["stability_bootstrap"] > 0.95 and row["ari_to_reference"] > 0.9
    assert (table["smallest_share"] <= table["median_share"]).all()
    assert (table["median_share"] <= table["largest_share"]).all()
    assert table.loc[("hdbscan", "raw"), "stability_reseed"] == 1.0, "deterministic"
    assert table.loc[("gmm", "raw"), "high_confidence_share"] > 0.9
    assert np.isfinite(table.loc[("gmm", "raw"), ["bic", "aic"]].astype(float)).all()
    assert np.isfinite(table.loc[("fcm", "raw"), ["partition_coefficient", "partition_entropy"]].astype(float)).all()
    assert result.reference["raw"]["ari"] > 0.95 and result.has_truth


def test_assignments_table_puts_the_primary_first(result):
    ids = np.arange(1000, 1000 + N)
    table = segmentation.assignments_table(result, ids, reconstruction_error=np.linspace(0, 1, N))
    method, space = result.primary
    assert list(table.columns[:5]) == ["customer_id", "segment", "segment_strength", "segment_runner_up",
                                       "reconstruction_error"]
    np.testing.assert_array_equal(table["segment"], table[f"{method}_{space}_label"])
    assert (table["segment_runner_up"] != table["segment"]).all()
    assert {"gmm_raw_uncertainty", "fcm_latent_uncertainty", "hdbscan_raw_noise"} <= set(table.columns)
    assert "kmeans_raw_uncertainty" not in table
    soft = segmentation.membership_table(result.assignments[("gmm", "raw")], ids)
    assert list(soft.columns) == ["customer_id"] + [f"segment_{i}" for i in range(CENTRES)]
    np.testing.assert_allclose(soft.drop(columns="customer_id").sum(axis=1), 1.0, atol=1e-5)


def test_the_ground_truth_never_reaches_a_fit_nor_the_primary(cluster_cfg, spaces, result):
    """The same fits and the same primary (auto) with the truth given, shuffled or withheld: only the agreement
    measures change."""
    matrices, truth = spaces
    shuffled = pd.Series(np.random.default_rng(1).permutation(truth.to_numpy()))
    assert cluster_cfg.primary.method == cluster_cfg.primary.space == "auto"
    runs = [segmentation.segment_customers(matrices, list(cluster_cfg.methods), cluster_cfg, seed=0, truth=t)
            for t in (truth, shuffled, None)]
    internal = [c for c in COMPARISON_CSV_COLUMNS if c not in TRUTH_COLUMNS]
    ids = np.arange(N)
    for other in runs[1:]:
        for key, found in runs[0].assignments.items():
            np.testing.assert_array_equal(other.assignments[key].labels, found.labels)
            np.testing.assert_array_equal(other.assignments[key].strength, found.strength)
        pd.testing.assert_frame_equal(other.comparison[internal], runs[0].comparison[internal])
        assert other.primary == runs[0].primary and other.primary_reason == runs[0].primary_reason
        pd.testing.assert_frame_equal(segmentation.assignments_table(other, ids)[["segment", "segment_strength"]],
                                      segmentation.assignments_table(runs[0], ids)[["segment", "segment_strength"]])
        assert (other.label_free["method"], other.label_free["space"]) == runs[0].primary
    assert runs[0].comparison["ari"].min() > 0.5 > runs[1].comparison["ari"].max()
    assert runs[2].comparison["ari"].isna().all() and runs[2].reference is None and not runs[2].has_truth
    assert runs[2].best_afterwards is None and np.isnan(runs[2].label_free["ari"])
    # With a truth, the best method is reported as picked afterwards, beside what was delivered.
    best = runs[0].comparison.loc[runs[0].comparison["ari"].idxmax()]
    assert (runs[0].best_afterwards["method"], runs[0].best_afterwards["space"]) == (best["method"], best["space"])
    assert runs[0].label_free["ari_to_reference"] == pytest.approx(
        runs[0].comparison.set_index(["method", "space"]).loc[runs[0].primary, "ari_to_reference"])
    for key, found in result.assignments.items():
        np.testing.assert_array_equal(runs[0].assignments[key].labels, found.labels)


def test_worker_processes_give_the_same_results(cluster_cfg, spaces, result):
    matrices, truth = spaces
    parallel = segmentation.segment_customers(matrices, list(cluster_cfg.methods),
                                              dataclasses.replace(cluster_cfg, n_jobs=2), seed=0, truth=truth)
    pd.testing.assert_frame_equal(parallel.comparison, result.comparison)
    for key, found in result.assignments.items():
        np.testing.assert_array_equal(parallel.assignments[key].labels, found.labels)
        np.testing.assert_array_equal(parallel.assignments[key].strength, found.strength)
        np.testing.assert_array_equal(parallel.models[key].predict(matrices[key[1]]), found.labels)
    assert parallel.primary == result.primary and parallel.reference == result.reference


def test_models_fit_on_a_sample_and_score_everyone(cluster_cfg):
    X, y = blobs(n=900)
    small = dataclasses.replace(cluster_cfg, fit_sample_size=300)
    run = segmentation.segment_customers({"raw": X}, ["gmm", "hdbscan"], small, seed=0)
    for (method, _), model in run.models.items():
        assert model.labels_.shape == (300,), "fitted on the sample"
        assert run.assignments[(method, "raw")].labels.shape == (900,), "everyone scored"
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, run.assignments[("gmm", "raw")].labels) > 0.95


def test_retraining_with_another_seed_keeps_the_segment_ids(cluster_cfg, spaces, result):
    """Seed 004's "cluster explosion": a refit renumbers its clusters; matching restores the old ids."""
    matrices, _ = spaces
    previous = {f"{m}_{s}": found.labels for (m, s), found in result.assignments.items()}
    unmatched = segmentation.segment_customers(matrices, ["gmm", "kmeans"], cluster_cfg, seed=3)
    matched = segmentation.segment_customers(matrices, ["gmm", "kmeans"], cluster_cfg, seed=3, previous=previous)
    renumbered = 0
    for key in [("gmm", "raw"), ("kmeans", "raw"), ("gmm", "latent"), ("kmeans", "latent")]:
        old = result.assignments[key].labels
        renumbered += np.mean(unmatched.assignments[key].labels != old) > 0.5
        assert np.mean(matched.assignments[key].labels == old) > 0.99
        np.testing.assert_array_equal(matched.models[key].predict(matrices[key[1]]), matched.assignments[key].labels)
        info = matched.matching[f"{key[0]}_{key[1]}"]
        assert info["matched"] and info["kept_segment"] > 0.99 and info["new_segments"] == []
    assert renumbered >= 2, "without matching, the refits number their clusters differently"
    migration = matched.migration
    assert list(migration.columns) == MIGRATION_COLUMNS
    gmm = migration[(migration["method"] == "gmm") & (migration["space"] == "raw")]
    assert gmm["customers"].sum() == N
    assert gmm.loc[gmm["previous_segment"] == gmm["segment"], "customers"].sum() > 0.99 * N


def test_previous_labels_come_by_customer_id_and_else_from_the_fallback():
    previous = pd.DataFrame({"customer_id": [5, 6, 7], "gmm_raw_label": [2, 0, 1], "kmeans_raw_label": [1, 1, 0]})
    out = segmentation.previous_labels(np.array([7, 8, 5]), previous, ["gmm_raw", "kmeans_raw", "fcm_raw"],
                                       fallback={"fcm_raw": np.array([3, 3, 4])})
    np.testing.assert_array_equal(out["gmm_raw"], [1, NOISE, 2])
    np.testing.assert_array_equal(out["kmeans_raw"], [0, NOISE, 1])
    np.testing.assert_array_equal(out["fcm_raw"], [3, 3, 4])
    disjoint = segmentation.previous_labels(np.array([100]), previous, ["gmm_raw"])
    assert disjoint == {}
    assert segmentation.previous_labels(np.array([1]), None, ["gmm_raw"]) is None


def test_json_ready_turns_nan_into_null_and_numpy_into_python():
    value = segmentation.json_ready({"a": np.float64("nan"), np.int64(3): [np.int32(2), float("inf"), "x"]})
    assert value == {"a": None, 3: [2, None, "x"]}
    assert type(value[3][0]) is int


# --- matching --------------------------------------------------------------------------------------

def test_matching_recovers_a_permutation():
    old = np.repeat([0, 1, 2, 3], 25)
    new = np.array([2, 3, 0, 1])[old]  # the same clusters, numbered differently
    ids = match_cluster_ids(old, new, np.arange(4))
    np.testing.assert_array_equal(ids[new], old)


def test_new_clusters_get_fresh_ids_and_retired_ids_are_not_reused():
    old = np.repeat([0, 1, 5], 20)               # segment 5 exists; ids 2-4 were retired before
    new = np.repeat([1, 0, 2, 3], [20, 12, 8, 20])  # old 1 split into new 0 and new 2; new 4 is empty
    ids = match_cluster_ids(old, new, np.arange(5))
    np.testing.assert_array_equal(ids[[1, 0, 3]], [0, 1, 5])
    assert (ids[2], ids[4]) == (6, 7), "unmatched clusters, larger first, get ids above every old one"


def test_a_pair_sharing_no_customer_is_not_a_match():
    old = np.array([0, 0, 1, 1, NOISE, NOISE])
    new = np.array([0, 0, 0, 0, 1, 1])
    ids = match_cluster_ids(old, new, np.arange(2))
    assert ids[0] in (0, 1) and ids[1] == 2


def test_migration_table_counts_moves():
    table = migration_table("gmm", "raw", np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]))
    assert table.to_dict("records") == [
        {"method": "gmm", "space": "raw", "previous_segment": 0, "segment": 0, "customers": 1},
        {"method": "gmm", "space": "raw", "previous_segment": 0, "segment": 1, "customers": 1},
        {"method": "gmm", "space": "raw", "previous_segment": 1, "segment": 0, "customers": 1},
        {"method": "gmm", "space": "raw", "previous_segment": 1, "segment": 1, "customers": 2}]
    assert kept_share(np.array([0, 1, 1]), np.array([0, 1, 2])) == pytest.approx(2 / 3)


# --- evaluation ------------------------------------------------------------------------------------

def test_internal_metrics_on_a_hand_made_assignment():
    from core.cluster.clustering import Assignment

    labels = np.array([0, 0, 0, 2, 2, 1, 1, 1, 1, 2])
    X = np.random.default_rng(0).normal(size=(10, 2)) + labels[:, None] * 5
    found = Assignment(labels=labels, strength=np.array([0.9] * 5 + [0.5] * 5), runner_up=np.full(10, NOISE),
                       membership=None, cluster_ids=np.arange(3), noise=np.array([False] * 9 + [True]))
    row = evaluation.internal_metrics(X, found, sample_size=100, seed=0, high_confidence=0.8)
    assert (row["clusters"], row["smallest_cluster"], row["largest_cluster"]) == (3, 3, 4)
    assert row["noise_ratio"] == pytest.approx(0.1) and row["high_confidence_share"] == pytest.approx(0.5)
    assert (row["smallest_share"], row["median_share"], row["largest_share"]) == pytest.approx((0.3, 0.3, 0.4))
    assert row["silhouette"] > 0.5 and row["davies_bouldin"] < 1 and row["calinski_harabasz"] > 10
    assert np.isnan(row["mean_uncertainty"])


def test_ground_truth_metrics_skip_unknown_truth():
    labels = np.array([0, 0, 1, 1, 1])
    truth = pd.Series(["a", "a", "b", "b", None])
    metrics = evaluation.ground_truth_metrics(labels, truth)
    assert metrics == {"ari": 1.0, "nmi": 1.0, "homogeneity": 1.0, "completeness": 1.0}
    assert np.isnan(evaluation.ground_truth_metrics(labels, pd.Series([None] * 5))["ari"])


def test_stability_is_high_on_blobs_and_low_on_structureless_data():
    X, _ = blobs()
    kw = dict(seed=0, reseeds=3, bootstraps=3, sample_size=400, bootstrap_fraction=0.8)
    good = evaluation.stability(GaussianMixtureClusterer(n_components=(4, 4)).fit(X), X, **kw)
    assert good["stability_reseed"] > 0.95 and good["stability_bootstrap"] > 0.95
    noise = np.random.default_rng(0).uniform(size=(400, 5))
    bad = evaluation.stability(KMeansClusterer(n_clusters=(6, 6), n_init=1).fit(noise), noise, **kw)
    assert bad["stability_reseed"] < 0.8 and bad["stability_bootstrap"] < 0.8
    hd = evaluation.stability(HDBSCANClusterer(min_cluster_size_fraction=0.05, min_samples=5).fit(X), X, **kw)
    assert hd["stability_reseed"] == 1.0 and hd["stability_bootstrap"] > 0.9


def test_supervised_reference_reaches_the_truth_the_features_carry():
    X, y = blobs()
    truth = pd.Series(np.array(["a", "b", "c", "d"])[y])
    ref = evaluation.supervised_reference(X, truth, folds=3, sample_size=300, seed=0)
    assert ref["ari"] > 0.95 and ref["rows"] == 300 and ref["folds"] == 3
    noise = evaluation.supervised_reference(np.random.default_rng(0).normal(size=(N, 3)), truth, folds=3,
                                            sample_size=300, seed=0)
    assert noise["ari"] < 0.1, "nothing to learn from columns unrelated to the truth"
    single = evaluation.supervised_reference(X, pd.Series(["a"] * N), folds=3, sample_size=300, seed=0)
    assert np.isnan(single["ari"])


def _comparison(**columns) -> pd.DataFrame:
    base = {"method": ["gmm", "kmeans", "hdbscan", "gmm"], "space": ["raw", "raw", "latent", "latent"],
            "clusters": [8, 6, 5, 9], "silhouette": [0.2, 0.4, 0.3, 0.1],
            "stability_reseed": [0.95, 0.99, 1.0, 0.7], "stability_bootstrap": [0.93, 0.97, 0.85, 0.7],
            "consensus": [0.7, 0.6, 0.8, 0.75], "ari": [0.8, 0.7, 0.9, 0.95]}
    return pd.DataFrame({**base, **columns})


def test_primary_named_in_config_is_kept_over_the_automatic_choice():
    # auto would pick gmm_raw (test below); the named kmeans_latent is neither stable nor in the table's lead.
    table = _comparison(method=["gmm", "kmeans", "hdbscan", "kmeans"])
    assert evaluation.choose_primary(table, "kmeans", "latent", 0.9) == (
        "kmeans", "latent", "named in config (cluster.primary)")


def test_a_named_primary_absent_from_the_comparison_is_returned_as_named():
    """choose_primary does not look a named pair up: config validation is what refuses a primary that is not
    among cluster.methods (test_primary_method_must_be_fitted in tests/test_config_validation.py)."""
    assert ("fcm", "raw") not in set(zip(_comparison()["method"], _comparison()["space"]))
    assert evaluation.choose_primary(_comparison(), "fcm", "raw", 0.9) == (
        "fcm", "raw", "named in config (cluster.primary)")


def test_auto_primary_is_stability_first_and_never_reads_the_truth():
    # Stabilities (lower of reseed and bootstrap): gmm_raw 0.93, kmeans_raw 0.97, hdbscan_latent 0.85,
    # gmm_latent 0.7. At 0.9 the two stable ones compete on consensus: gmm_raw 0.7 over kmeans_raw 0.6,
    # though hdbscan_latent agrees more (0.8) and won under consensus x stability (0.680 against 0.651).
    method, space, reason = evaluation.choose_primary(_comparison(), "auto", "auto", 0.9)
    assert (method, space) == ("gmm", "raw") and "consensus ARI 0.700" in reason
    assert "stability 0.930" in reason and "2 of 4 candidate(s)" in reason and "without the ground truth" in reason
    assert "below stability" not in reason
    assert evaluation.choose_primary(_comparison(), "auto", "auto", 0.95)[:2] == ("kmeans", "raw")
    # The ari column is not read: reversing it changes nothing.
    assert evaluation.choose_primary(_comparison(ari=[0.1, 0.99, 0.2, 0.3]), "auto", "auto", 0.9) == (
        method, space, reason)
    assert evaluation.choose_primary(_comparison(), "gmm", "auto", 0.9)[:2] == ("gmm", "raw")
    assert evaluation.choose_primary(_comparison(), "auto", "latent", 0.9)[:2] == ("hdbscan", "latent")
    # None stable enough: consensus x stability squared, and the reason says so. gmm_raw 0.7 x 0.93^2 = 0.605,
    # hdbscan_latent 0.8 x 0.85^2 = 0.578, kmeans_raw 0.6 x 0.97^2 = 0.565; with 0.95 for hdbscan_latent's
    # bootstraps it is 0.8 x 0.95^2 = 0.722.
    method, space, reason = evaluation.choose_primary(_comparison(), "auto", "auto", 0.99)
    assert (method, space) == ("gmm", "raw") and "below stability 0.99" in reason and "squared" in reason
    steadier = _comparison(stability_bootstrap=[0.93, 0.97, 0.95, 0.7])
    assert evaluation.choose_primary(steadier, "auto", "auto", 0.99)[:2] == ("hdbscan", "latent")
    # A reproducible but lonely segmentation loses to an agreed-on one that is stable enough.
    lonely = _comparison(consensus=[0.7, 0.2, 0.1, 0.1], stability_bootstrap=[0.93, 1.0, 0.85, 0.7],
                         stability_reseed=[0.95, 1.0, 1.0, 0.7])
    assert evaluation.choose_primary(lonely, "auto", "auto", 0.9)[:2] == ("gmm", "raw")
    # One segment is no segmentation: a single cluster never wins.
    single = _comparison(clusters=[1, 6, 5, 9])
    assert evaluation.choose_primary(single, "auto", "auto", 0.9)[:2] == ("kmeans", "raw")
    assert evaluation.choose_primary(_comparison(clusters=[8, 6, 1, 9]), "auto", "auto", 0.9)[:2] == ("gmm", "raw")


def test_auto_primary_sets_aside_a_stable_split_the_others_barely_agree_with():
    """The tests' small config with square-rooted shares, worked by hand: kmeans_latent is the only stable
    candidate (1.0) but its consensus 0.25 is below 0.67 x 0.46 = 0.308, so none is stable enough and consensus
    x stability squared decides among the agreed ones: kmeans_raw 0.46 x 0.7^2 = 0.225 over gmm_raw
    0.44 x 0.6^2 = 0.158 and hdbscan_latent 0.35 x 0.5^2 = 0.088."""
    table = _comparison(method=["gmm", "kmeans", "hdbscan", "kmeans"], clusters=[5, 5, 5, 3],
                        stability_reseed=[0.6, 0.7, 1.0, 1.0], stability_bootstrap=[0.6, 0.7, 0.5, 1.0],
                        consensus=[0.44, 0.46, 0.35, 0.25])
    assert evaluation.choose_primary(table, "auto", "auto", 0.9, 0.5)[:2] == ("kmeans", "latent")
    method, space, reason = evaluation.choose_primary(table, "auto", "auto", 0.9, 0.5, min_consensus_share=0.67)
    assert (method, space) == ("kmeans", "raw")
    assert "consensus at least 0.308 (0.67 of the highest)" in reason and "none of 3 candidate(s)" in reason
    # 0.5 of the highest (0.23) keeps kmeans_latent, which then wins on stability.
    assert evaluation.choose_primary(table, "auto", "auto", 0.9, 0.5, min_consensus_share=0.5)[:2] == (
        "kmeans", "latent")


def test_auto_sets_aside_a_space_named_as_unlearnt_unless_nothing_else_is_left():
    # Every candidate short of stability 0.99: hdbscan_latent leads (0.8 x 0.95^2 = 0.722, see above).
    steadier = _comparison(stability_bootstrap=[0.93, 0.97, 0.95, 0.7])
    aside = {"latent": "the autoencoder explains 2.0% of the held-out rows"}
    method, space, reason = evaluation.choose_primary(steadier, "auto", "auto", 0.99, 0.0, aside)
    assert (method, space) == ("gmm", "raw")  # 0.7 x 0.93^2 = 0.605 over kmeans_raw's 0.565
    assert "none of 2 candidate(s)" in reason
    assert reason.endswith("; set aside: latent space: the autoencoder explains 2.0% of the held-out rows")
    # Only with space auto: a latent space named in config is the user's choice.
    assert evaluation.choose_primary(steadier, "auto", "latent", 0.99, 0.0, aside)[:2] == ("hdbscan", "latent")
    # Nothing else fitted: the latent space is kept, and the reason says why.
    only_latent = steadier[steadier["space"] == "latent"]
    method, space, reason = evaluation.choose_primary(only_latent, "auto", "auto", 0.99, 0.0, aside)
    assert (method, space) == ("hdbscan", "latent") and "not set aside, as no other space was fitted" in reason


def test_the_latent_space_is_set_aside_only_below_the_minimum_explained_share():
    assert evaluation.spaces_set_aside({"share": 0.48, "on": "held-out rows"}, 0.1) == {}
    assert evaluation.spaces_set_aside({"share": 0.1, "on": "held-out rows"}, 0.1) == {}
    low = evaluation.spaces_set_aside({"share": 0.019, "on": "held-out rows"}, 0.1)
    assert list(low) == ["latent"] and "explains 1.9% of the held-out rows" in low["latent"]
    assert "cluster.primary.min_latent_explained 0.1" in low["latent"]
    assert evaluation.spaces_set_aside({"share": -0.3, "on": "held-out rows"}, 0.0) == {}  # 0 = never
    assert evaluation.spaces_set_aside(None, 0.1) == {}  # no record, no guard


@pytest.fixture(scope="module")
def encoded_blobs():
    """The blobs (standardised, as stage 02's model matrix) with two autoencoders' records: one trained (60
    epochs at lr 0.01) and one left at its random start (one epoch at lr 1e-7)."""
    from core.train_autoencoder.autoencoder import AutoencoderTransformer

    X, y = blobs()
    X = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(np.float32)
    params = dict(hidden_units=(8,), latent_dim=2, batch_size=64, early_stopping_patience=5, random_state=0)
    trained = AutoencoderTransformer(**params, epochs=60, learning_rate=1e-2).fit(X)
    untrained = AutoencoderTransformer(**params, epochs=1, learning_rate=1e-7).fit(X)
    truth = pd.Series(np.array(["a", "b", "c", "d"])[y])
    return X, truth, trained, untrained


def test_auto_keeps_the_latent_space_of_a_network_that_learnt(encoded_blobs, cluster_cfg):
    X, truth, trained, _ = encoded_blobs
    assert trained.explained_["share"] > 0.5 > cluster_cfg.primary.min_latent_explained
    result = segmentation.segment_customers({"raw": X, "latent": trained.transform(X)}, ["kmeans", "gmm"],
                                            cluster_cfg, seed=0, truth=truth, latent_explained=trained.explained_)
    assert result.label_free["set_aside"] == {} and "set aside" not in result.primary_reason
    # The guard changed nothing: the same choice as without a record of the network.
    unguarded = evaluation.choose_primary(result.comparison, "auto", "auto", cluster_cfg.evaluation.min_stability,
                                          cluster_cfg.primary.min_segments_share,
                                          min_consensus_share=cluster_cfg.primary.min_consensus_share)
    assert unguarded == (*result.primary, result.primary_reason)


def test_auto_sets_aside_the_latent_space_of_a_network_that_learnt_nothing(encoded_blobs, cluster_cfg):
    X, truth, _, untrained = encoded_blobs
    assert untrained.explained_["share"] < cluster_cfg.primary.min_latent_explained
    result = segmentation.segment_customers({"raw": X, "latent": untrained.transform(X)}, ["kmeans", "gmm"],
                                            cluster_cfg, seed=0, truth=truth, latent_explained=untrained.explained_)
    assert result.primary[1] == "raw" and "set aside: latent space: the autoencoder explains" in result.primary_reason
    assert list(result.label_free["set_aside"]) == ["latent"]
    # Still fitted, evaluated and compared.
    assert set(result.comparison["space"]) == {"raw", "latent"} and len(result.comparison) == 4


def test_consensus_is_the_mean_agreement_with_the_other_segmentations():
    a = np.repeat([0, 1, 2, 3], 25)
    same = (a + 1) % 4  # the same partition, other ids
    split = np.repeat(np.arange(10), 10)  # the four groups cut into ten
    scores = evaluation.consensus({"a": a, "same": same, "split": split}, sample_size=1000, seed=0)
    ari_split = adjusted_rand_score(a, split)
    assert scores["a"] == pytest.approx((1.0 + ari_split) / 2) == scores["same"]
    assert scores["split"] == pytest.approx(ari_split) and scores["split"] < scores["a"]
    assert np.isnan(evaluation.consensus({"a": a}, sample_size=1000, seed=0)["a"])


def test_auto_primary_does_not_deliver_a_coarse_split_where_other_methods_found_more_segments():
    # The 2-segment splits are the most reproducible and agree with each other (as fuzzy c-means and k-means
    # latent did on a 14-persona set): consensus x stability alone takes one of them.
    table = _comparison(clusters=[2, 18, 2, 14], consensus=[0.3, 0.17, 0.28, 0.2],
                        stability_reseed=[0.97, 0.6, 1.0, 0.7], stability_bootstrap=[0.96, 0.55, 0.95, 0.65])
    assert evaluation.choose_primary(table, "auto", "auto", 0.9, 0.0)[:2] == ("gmm", "raw")
    # With half the most segments any method found (18) as the bar, only the 18- and 14-segment ones
    # compete, neither stable: 0.17 x 0.55^2 = 0.051 against 0.2 x 0.65^2 = 0.085.
    method, space, reason = evaluation.choose_primary(table, "auto", "auto", 0.9, 0.5)
    assert (method, space) == ("gmm", "latent") and "with at least 9 segments" in reason
    # The bar is never below 2, and never leaves nothing to choose from.
    assert evaluation.choose_primary(_comparison(clusters=[1, 2, 2, 3]), "auto", "auto", 0.9, 0.5)[:2] == (
        "kmeans", "raw")
    assert evaluation.choose_primary(table, "auto", "auto", 0.9, 1.0)[:2] == ("kmeans", "raw")


def test_auto_delivers_the_most_agreed_of_the_stable_segmentations(result, cluster_cfg):
    """segment_customers on real data: auto delivers, among the segmentations with enough segments that reach
    min_stability, the one agreeing most with the others fine enough to be delivered (the voters)."""
    table = result.comparison.assign(stability=result.comparison[["stability_reseed", "stability_bootstrap"]]
                                     .min(axis=1))
    floor = evaluation.segment_floor(table["clusters"], cluster_cfg.primary.min_segments_share)
    stable = table[(table["stability"] >= cluster_cfg.evaluation.min_stability) & (table["clusters"] >= floor)]
    assert not stable.empty
    chosen = table.set_index(["method", "space"]).loc[result.primary]
    assert chosen["stability"] >= cluster_cfg.evaluation.min_stability
    assert chosen["consensus"] == stable["consensus"].max()
    assert (result.label_free["method"], result.label_free["space"]) == result.primary
    # The consensus column is the mean ARI with the voters, recomputed here from the labels.
    voters = [key for key in result.assignments if table.set_index(["method", "space"]).loc[key, "clusters"] >= floor]
    labels = {key: found.labels for key, found in result.assignments.items()}
    again = evaluation.consensus(labels, cluster_cfg.silhouette_sample_size, 0, voters=voters)
    for key, value in again.items():
        assert table.set_index(["method", "space"]).loc[key, "consensus"] == pytest.approx(value)


def test_consensus_counts_only_the_voters():
    a = np.repeat([0, 1, 2, 3], 25)
    coarse = np.repeat([0, 1], 50)
    also_coarse = coarse.copy()
    scores = evaluation.consensus({"a": a, "coarse": coarse, "also": also_coarse}, 1000, 0, voters=["a"])
    assert scores["coarse"] == pytest.approx(adjusted_rand_score(a, coarse)) == scores["also"]
    assert np.isnan(scores["a"])  # no other voter
    assert evaluation.segment_floor([2, 18, 14], 0.5) == 9 and evaluation.segment_floor([1, 3], 0.5) == 2


def test_split_stability_chooses_every_count_in_a_real_run(cluster_cfg, spaces):
    """With cluster.count_stability, each count-chosen model of segment_customers reports its candidates'
    split stability, and finds the four blobs again from either half."""
    matrices, truth = spaces
    cfg = dataclasses.replace(cluster_cfg, count_stability=True, methods=("gmm", "fcm", "kmeans"))
    found = segmentation.segment_customers({"raw": matrices["raw"]}, list(cfg.methods), cfg, seed=0, truth=truth)
    for (method, space), model in found.models.items():
        report = model.selection_report()
        assert report["chosen_by"] == "silhouette x split stability", method
        assert model.n_clusters_ == 4 and report["split_stability"][4] > 0.95, method


def test_fits_are_submitted_longest_first_and_unknown_pairs_keep_their_place():
    from core.cluster.segmentation import submission_order

    tasks = [("reference", "raw"), ("gmm", "latent"), ("hdbscan", "raw"), ("newmethod", "raw"),
             ("countmix", "counts"), ("othermethod", "raw")]
    order = submission_order(tasks)
    assert sorted(order) == list(range(len(tasks)))
    assert [tasks[i] for i in order] == [("countmix", "counts"), ("hdbscan", "raw"), ("reference", "raw"),
                                        ("newmethod", "raw"), ("othermethod", "raw"), ("gmm", "latent")]
