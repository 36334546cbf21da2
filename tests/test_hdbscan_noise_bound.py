"""HDBSCAN's search tries smaller minimum cluster sizes while no setting meets the noise bound (issue 13, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from core.cluster.clustering import HDBSCANClusterer

SEARCH = dict(min_cluster_size_fraction=0.05, min_samples=1, cluster_selection_method="leaf", search_min_samples=(5,),
              search_selection_methods=("eom",), max_noise=0.1)


@pytest.fixture(scope="module")
def groups_of_two_sizes():
    """Three groups of 200 and eight tight groups of 15 (2.1% of the 720 rows each, 16.7% in all)."""
    rng = np.random.default_rng(3)
    big = [rng.normal(c, 0.5, size=(200, 2)) for c in ((0, 0), (8, 0), (0, 8))]
    small = [rng.normal(c, 0.15, size=(15, 2))
             for c in ((15, 15), (-8, 12), (12, -9), (-9, -9), (20, 4), (4, 20), (-12, 2), (16, 9))]
    return np.vstack(big + small)


def test_a_smaller_minimum_size_is_tried_only_when_no_setting_meets_the_noise_bound(groups_of_two_sizes):
    X = groups_of_two_sizes
    model = HDBSCANClusterer(**SEARCH, search_min_cluster_size_fractions=(0.015, 0.005)).fit(X)
    tried = [(c["min_cluster_size_fraction"], c["cluster_selection_method"], c["min_samples"]) for c in model.search_]
    # At 5% (36 rows) the groups of 15 cannot be clusters, so they are noise: above the bound with every setting.
    assert all(c["noise"] > 0.1 for c in model.search_ if c["min_cluster_size_fraction"] == 0.05)
    # 1.5% (11 rows) meets it, so 0.5% is never fitted.
    assert tried == [(f, m, s) for f in (0.05, 0.015) for m in ("leaf", "eom") for s in (1, 5)]
    within = [c for c in model.search_ if c["noise"] <= 0.1 and c["clusters"] >= 2]
    best = max(within, key=lambda c: c["relative_validity"])
    assert (model.min_cluster_size_fraction_, model.cluster_selection_method_, model.min_samples_) == (
        0.015, best["cluster_selection_method"], best["min_samples"])
    # The measured noise is the fit's own (every row fitted, none reassigned): every small group is a cluster.
    assert model.n_clusters_ == 11 and best["noise"] <= 0.1
    assert model.fit_noise_ratio_ == pytest.approx(best["noise"])
    assert model.selection_report()["min_cluster_size_fraction"] == 0.015
    refit = HDBSCANClusterer(**{**model.get_params(), **model.fixed_params()}).fit(X)
    assert refit.search_ == [] and refit.min_cluster_size_fraction_ == 0.015
    np.testing.assert_array_equal(refit.labels_, model.labels_)


def test_without_smaller_sizes_the_configured_size_is_kept(groups_of_two_sizes):
    model = HDBSCANClusterer(**SEARCH).fit(groups_of_two_sizes)
    assert {c["min_cluster_size_fraction"] for c in model.search_} == {0.05}
    assert model.min_cluster_size_fraction_ == 0.05 and model.fit_noise_ratio_ > 0.1


# --- data sharpening while the bound is not met ---------------------------------------------------------------

SHARPEN = dict(min_cluster_size_fraction=0.05, min_samples=1, cluster_selection_method="leaf", search_min_samples=(5,),
               search_selection_methods=("eom",), max_noise=0.1, selection_sample_size=2000,
               sharpen_neighbours_fraction=0.02)


@pytest.fixture(scope="module")
def heavy_tailed_groups():
    """Four groups of 250 with Student-t (3 degrees of freedom) spread: long tails reaching into each other."""
    rng = np.random.default_rng(7)
    return np.vstack([np.array(c) + rng.standard_t(3, size=(250, 2)) * 1.5 for c in ((0, 0), (7, 0), (0, 7), (7, 7))])


def test_sharpening_is_tried_while_no_setting_meets_the_bound_and_keeps_the_groups(heavy_tailed_groups):
    X = heavy_tailed_groups
    plain = HDBSCANClusterer(**SHARPEN).fit(X)
    assert plain.n_clusters_ == 4 and plain.fit_noise_ratio_ > 0.1 and plain.sharpen_steps_ == 0
    model = HDBSCANClusterer(**SHARPEN, search_sharpen_steps=(1, 2, 3)).fit(X)
    # One step meets the bound with the four groups kept, so steps 2 and 3 are never fitted.
    assert {c["sharpen_steps"] for c in model.search_} == {0, 1}
    assert model.sharpen_steps_ == 1 and model.n_clusters_ == 4
    # The noise is HDBSCAN's own on the sharpened rows (no reassignment counted), and the fit's.
    assert model.fit_noise_ratio_ <= 0.1
    assert np.mean(model.fit_assignment().noise) == pytest.approx(model.fit_noise_ratio_)
    report = model.selection_report()
    assert report["sharpen_steps"] == 1 and report["sharpen_neighbours"] == 20  # 2% of 1,000 rows


def test_the_sharpened_model_maps_new_rows_as_it_mapped_its_own(heavy_tailed_groups):
    import pickle

    X = heavy_tailed_groups
    model = HDBSCANClusterer(**SHARPEN, search_sharpen_steps=(1, 2, 3)).fit(X)
    # The fitted rows mapped again are exactly the matrix HDBSCAN was fitted on.
    np.testing.assert_array_equal(model.sharpener_.transform(X), model.sharpener_.fitted_)
    np.testing.assert_array_equal(model.assign(X).labels, model.labels_)
    # A pickled model scores new customers the same way; a refit with the chosen settings searches nothing.
    new = np.random.default_rng(8).normal(3.5, 4.0, size=(300, 2))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.assign(new).labels, model.assign(new).labels)
    refit = HDBSCANClusterer(**{**model.get_params(), **model.fixed_params()}).fit(X)
    assert refit.search_ == [] and refit.sharpen_steps_ == 1
    np.testing.assert_array_equal(refit.labels_, model.labels_)


def test_a_merge_into_fewer_than_half_the_clusters_does_not_meet_the_bound():
    # Six groups in two far-apart triples: eom merges each triple (2 clusters, almost no noise), leaf keeps six.
    rng = np.random.default_rng(11)
    centres = ((0, 0), (3, 0), (1.5, 2.6), (20, 0), (23, 0), (21.5, 2.6))
    X = np.vstack([np.array(c) + rng.standard_t(3, size=(150, 2)) * 0.8 for c in centres])
    model = HDBSCANClusterer(**{**SHARPEN, "max_noise": 0.15}, search_sharpen_steps=(1, 2, 3)).fit(X)
    merge = [c for c in model.search_ if c["sharpen_steps"] == 0 and c["cluster_selection_method"] == "eom"]
    assert merge and all(c["clusters"] == 2 and c["noise"] <= 0.15 for c in merge)
    # Half of the six found unsharpened is 3: the merge is no answer, sharpening is tried instead.
    assert model.sharpen_steps_ >= 1 and model.n_clusters_ >= 3 and model.fit_noise_ratio_ <= 0.15
