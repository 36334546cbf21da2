"""The mixture of Dirichlet-multinomials on unit counts (core/cluster/count_mixture.py), on small drawn counts.

The data are drawn the way the generator draws a customer's lines: a kind's department and class mix,
each customer's own mix a Dirichlet draw around it, then a number of units from that mix.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from core.cluster.count_mixture import CountMixtureClusterer, department_groups, restart_rows

# Three departments of two classes each; three kinds that prefer different classes.
COLUMNS = tuple(f"class_units__{d}__{c}" for d in ("ladies", "kids", "home") for c in ("a", "b"))
KINDS = np.array([[0.40, 0.20, 0.10, 0.10, 0.15, 0.05],
                  [0.05, 0.10, 0.40, 0.30, 0.05, 0.10],
                  [0.10, 0.05, 0.05, 0.10, 0.20, 0.50]])


def draw(n: int, seed: int, concentration: float = 20.0):
    """``n`` customers of the three kinds: own mix Dirichlet(concentration x kind), 3 to 150 units."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(KINDS), n)
    units = rng.integers(3, 150, n)
    X = np.vstack([rng.multinomial(u, rng.dirichlet(concentration * KINDS[k])) for k, u in zip(kind, units)])
    return X.astype(float), kind


@pytest.fixture(scope="module")
def fitted():
    X, kind = draw(450, seed=0)
    return CountMixtureClusterer(n_components=(2, 5), columns=COLUMNS, random_state=0).fit(X), X, kind


def test_department_of_each_column_is_read_from_its_name():
    assert department_groups(COLUMNS).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="class_units__<department>__<class>"):
        department_groups(("units_a", "class_units__x__y"))


def test_bic_finds_the_three_kinds_and_labels_them(fitted):
    model, X, kind = fitted
    assert model.n_clusters_ == 3
    assert min(model.bic_, key=model.bic_.get) == 3 and set(model.bic_) == {2, 3, 4, 5}
    assert adjusted_rand_score(kind, model.labels_) > 0.9


def test_new_customers_are_scored_from_their_counts(fitted):
    model, _, _ = fitted
    X_new, kind_new = draw(300, seed=1)
    proba = model.predict_proba(X_new)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(model.predict(X_new), proba.argmax(axis=1))
    found = model.assign(X_new)
    np.testing.assert_allclose(found.strength, proba.max(axis=1))
    assert found.membership.shape == (300, 3)
    assert adjusted_rand_score(kind_new, model.predict(X_new)) > 0.9


def test_few_units_say_less_than_many(fitted):
    """The same mix seen through 4 units is less certain than through 200 (what share columns cannot tell)."""
    model, _, _ = fitted
    mix = KINDS[1] / KINDS[1].sum()
    few, many = np.round(mix * 4), np.round(mix * 200)
    proba = model.predict_proba(np.vstack([few, many]))
    assert proba[1].max() > proba[0].max()


def test_same_seed_same_fit_and_ward_start_ignores_the_seed(fitted):
    model, X, _ = fitted
    again = clone(model).fit(X)
    other_seed = clone(model).set_params(random_state=5).fit(X)
    assert np.array_equal(model.labels_, again.labels_)
    assert np.array_equal(model.labels_, other_seed.labels_)
    assert model.deterministic


def test_restart_subsets_are_a_function_of_the_row_count_alone():
    """No random number: the same positions for any seed; halves at offsets 1/2 apart are complements."""
    subsets = [restart_rows(1000, index, 4, 0.5) for index in range(4)]
    assert all(abs(len(rows) - 500) <= 1 for rows in subsets)
    assert np.array_equal(np.union1d(subsets[0], subsets[2]), np.arange(1000))
    assert len(np.intersect1d(subsets[0], subsets[2])) == 0
    assert 200 <= len(np.intersect1d(subsets[0], subsets[1])) <= 300  # neither the same nor disjoint
    assert np.array_equal(restart_rows(1000, 1, 4, 0.5), subsets[1])


def test_restarts_run_the_most_likely_start_on_and_beat_the_one_ward_cut():
    """Overlapping kinds (own mixes Dirichlet(3 x kind)), four components: the tree's own cut leads EM to a less
    likely optimum than one of the restarts' cuts (mean log-likelihood per customer -83.590 against -83.579),
    and the fit keeps the likelier; the restarts use no seed, so the fit is still the same for every seed."""
    X, _ = draw(600, seed=1, concentration=3.0)
    single = CountMixtureClusterer(n_components=4, columns=COLUMNS, ward_restarts=0).fit(X)
    raced = CountMixtureClusterer(n_components=4, columns=COLUMNS, ward_restarts=4).fit(X)
    assert single.start_log_likelihoods_ is None and "start_chosen" not in single.selection_report()
    assert len(raced.start_log_likelihoods_) == 5
    assert raced.start_chosen_ == int(np.argmax(raced.start_log_likelihoods_)) != 0
    assert raced.mean_log_likelihood_ >= max(raced.start_log_likelihoods_)  # EM only climbs from the short run
    assert raced.mean_log_likelihood_ > single.mean_log_likelihood_ + 0.005
    assert raced.selection_report()["start_chosen"] == raced.start_chosen_
    other_seed = clone(raced).set_params(random_state=7).fit(X)
    assert raced.deterministic and np.array_equal(raced.labels_, other_seed.labels_)


def test_kmeans_plus_plus_start_is_seeded(fitted):
    _, X, kind = fitted
    a = CountMixtureClusterer(n_components=3, columns=COLUMNS, start="kmeans++", n_init=2, random_state=3).fit(X)
    b = clone(a).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert adjusted_rand_score(kind, a.labels_) > 0.9


def test_save_load_predict_round_trip(fitted, tmp_path):
    model, X, _ = fitted
    joblib.dump(model, tmp_path / "count-mixture.pkl")
    loaded = joblib.load(tmp_path / "count-mixture.pkl")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_bad_input_is_refused_with_the_reason(fitted):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="non-negative"):
        model.predict(-X)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :4])
    with pytest.raises(ValueError, match="named in columns"):
        CountMixtureClusterer(n_components=3, columns=COLUMNS[:4]).fit(X)


def test_the_terms_on_distinct_column_count_pairs_equal_the_terms_of_every_nonzero(fitted):
    """The DM log-likelihood computed once per distinct (column, count) pair and carried to the rows equals the
    textbook sum over each row's nonzero counts."""
    from scipy.special import gammaln

    from core.cluster.count_mixture import CountBlock

    model, X, _ = fitted
    groups = department_groups(COLUMNS)
    block = CountBlock(X, groups)
    alpha = model.params_[0][1]
    direct = np.zeros((len(X), len(alpha)))
    for k, a in enumerate(alpha):
        A = np.bincount(groups, weights=a)
        N = np.vstack([np.bincount(groups, weights=row) for row in X])
        direct[:, k] = ((gammaln(X + a) - gammaln(a)).sum(axis=1)
                        + np.where(N > 0, gammaln(A) - gammaln(N + A), 0.0).sum(axis=1))
    np.testing.assert_allclose(block.log_likelihood(alpha), direct, rtol=1e-10, atol=1e-8)


def test_sparse_counts_fit_and_score_as_dense_ones(fitted):
    import scipy.sparse as sp

    model, X, _ = fitted
    sparse = clone(model).fit(sp.csr_matrix(X))
    assert sparse.n_clusters_ == model.n_clusters_
    np.testing.assert_array_equal(sparse.labels_, model.labels_)
    np.testing.assert_allclose(model.predict_proba(sp.csr_matrix(X)), model.predict_proba(X))


def test_wards_tree_from_one_product_is_scipys(fitted):
    from scipy.cluster.hierarchy import fcluster, ward

    from core.cluster.count_mixture import hellinger_rows, ward_linkage

    _, X, _ = fitted
    H = hellinger_rows(X, department_groups(COLUMNS))
    ours, theirs = ward_linkage(H), ward(H.toarray())
    np.testing.assert_allclose(ours[:, 2], theirs[:, 2], rtol=1e-6, atol=1e-9)
    for k in (2, 3, 5):
        assert adjusted_rand_score(fcluster(ours, k, "maxclust"), fcluster(theirs, k, "maxclust")) == 1.0


def test_a_coarse_scan_then_the_best_neighbours_finds_the_full_scans_count():
    X, _ = draw(450, seed=3)
    full = CountMixtureClusterer(n_components=(2, 9), columns=COLUMNS, scan_step=1).fit(X)
    coarse = CountMixtureClusterer(n_components=(2, 9), columns=COLUMNS, scan_step=3).fit(X)
    assert coarse.n_clusters_ == full.n_clusters_ == 3
    assert len(coarse.bic_) < len(full.bic_) == 8
    best = min(coarse.bic_, key=coarse.bic_.get)
    assert {best - 1, best + 1} <= set(coarse.bic_)  # a local minimum at step 1


def test_counts_matrix_keeps_the_segmented_customers_and_counts_no_negative_units():
    from core.cluster.count_mixture import counts_matrix

    X = counts_matrix(np.array([7, 3]), np.array([3, 3, 7, 9, 7]), np.array([0, 2, 1, 0, 2]),
                      np.array([2.0, 1.0, 4.0, 5.0, -1.0]), 3)
    # Rows in the order of the ids given; customer 9 is not segmented; customer 7 returned more than bought in
    # class 2.
    np.testing.assert_array_equal(X.toarray(), [[0, 4, 0], [2, 0, 1]])


def test_each_rows_sellable_class_is_found_from_its_categories():
    import pandas as pd

    from core.cluster.count_mixture import sellable_index

    keys = [("Home", "Bedding"), ("Kids", "Bedding"), ("Kids", "Toys")]
    departments = pd.Categorical(["Kids", "Home", "Kids", "Garden", None])
    classes = pd.Categorical(["Toys", "Bedding", "Bedding", "Toys", "Toys"])
    assert sellable_index(departments, classes, keys).tolist() == [2, 0, 1, -1, -1]
