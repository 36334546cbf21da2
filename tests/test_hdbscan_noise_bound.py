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
