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

from core.cluster.count_mixture import CountMixtureClusterer, department_groups

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
