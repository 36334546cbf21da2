"""Unit tests of core/features.py against values worked out by hand on tiny order-line tables.

The tiny hierarchy has two merchandise departments (Ladies Clothing, Home) and a
gift-card department. The analysis date is 2024-03-31 (2024 is a leap year).

Customer 1
    order 101, 2024-01-01: Ladies Clothing/Dresses 2 x 20.00 = 40.00; Home/Candles 1 x 10.00
    order 102, 2024-03-01: Ladies Clothing/Tops 1 x 15.00; Gift Cards/Gift Card 1 x 25.00
    order 103, 2024-03-10: return of the Tops line of order 102 (-1, -15.00)
    order 104, 2024-04-15: Home/Cushions 1 x 30.00 -- after the analysis date, ignored
Customer 2
    order 201, 2024-03-31 (on the analysis date): Home/Cushions 3 x 12.00 = 36.00
Customer 3
    order 301, 2024-02-15: Gift Cards/Gift Card 1 x 50.00 -- no merchandise at all
Customer 4
    order 401, 2024-02-01: a return (-1, -8.00) of a purchase made before the data starts
Customer 5
    order 501, 2024-05-01: Home/Candles 1 x 9.00 -- only after the analysis date
"""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from core.features import (CORE_FEATURES, ModelMatrixTransformer, behavioural_feature_names,
                           build_customer_features, class_wide, prepare_features, resolve_model_columns)
from core.hierarchy import parse_hierarchy

ANALYSIS_DATE = pd.Timestamp("2024-03-31")
DAYS_PER_MONTH = 365.25 / 12  # 30.4375, an average month
PROFILE_COLUMNS = ["persona", "age", "gender", "has_children", "lifestyle", "region", "signup_date"]


def tiny_hierarchy():
    return parse_hierarchy({"departments": {
        "Ladies Clothing": {"kind": "merchandise", "classes": ["Dresses", "Tops"]},
        "Home": {"kind": "merchandise", "classes": ["Candles", "Cushions"]},
        "Gift Cards": {"kind": "gift_card", "classes": ["Gift Card"]},
    }}, "test")


def tiny_transactions() -> pd.DataFrame:
    rows = [
        # customer, order, date, department, class, quantity, amount, is_return
        (1, 101, "2024-01-01", "Ladies Clothing", "Dresses", 2, 40.00, False),
        (1, 101, "2024-01-01", "Home", "Candles", 1, 10.00, False),
        (1, 102, "2024-03-01", "Ladies Clothing", "Tops", 1, 15.00, False),
        (1, 102, "2024-03-01", "Gift Cards", "Gift Card", 1, 25.00, False),
        (1, 103, "2024-03-10", "Ladies Clothing", "Tops", -1, -15.00, True),
        (1, 104, "2024-04-15", "Home", "Cushions", 1, 30.00, False),
        (2, 201, "2024-03-31", "Home", "Cushions", 3, 36.00, False),
        (3, 301, "2024-02-15", "Gift Cards", "Gift Card", 1, 50.00, False),
        (4, 401, "2024-02-01", "Home", "Candles", -1, -8.00, True),
        (5, 501, "2024-05-01", "Home", "Candles", 1, 9.00, False),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "order_date", "department", "class",
                                        "quantity", "line_amount", "is_return"])
    frame["order_date"] = pd.to_datetime(frame["order_date"])
    frame["unit_price"] = (frame["line_amount"] / frame["quantity"]).abs()
    frame["sku"] = "SKU-" + frame["class"].str.upper().str.replace(" ", "")
    return frame


def tiny_customers() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [1, 2, 3, 4, 5],
        "persona": ["teenage_girl", "homemaker", "gifter", "returner", "late"],
        "age": [17, 45, 60, 30, 25],
        "gender": ["Female", "Female", "Male", "Male", "Female"],
        "has_children": [False, True, True, False, False],
        "lifestyle": ["student", "family", "retired", "busy", "new"],
        "region": ["London", "Wales", "Scotland", "London", "Wales"],
        "signup_date": pd.to_datetime(["2024-01-01", "2024-03-31", "2024-02-15", "2023-12-01", "2024-05-01"]),
    })


@pytest.fixture
def features() -> pd.DataFrame:
    built, _ = build_customer_features(tiny_transactions(), tiny_hierarchy(), ANALYSIS_DATE)
    return built.set_index("customer_id")


# --- build_customer_features -------------------------------------------------------------------

def test_one_row_per_customer_with_a_purchase_on_or_before_the_analysis_date(features):
    """Customer 4 (only a return) and customer 5 (only later lines) get no row."""
    assert list(features.index) == [1, 2, 3]


def test_dates_recency_and_tenure_come_from_purchases_only(features):
    """Customer 1's last purchase is 2024-03-01; the later return (03-10) and order (04-15) do not count."""
    c1 = features.loc[1]
    assert c1["first_order_date"] == pd.Timestamp("2024-01-01")
    assert c1["last_order_date"] == pd.Timestamp("2024-03-01")
    assert c1["recency_days"] == 30.0  # 1 March -> 31 March
    assert c1["tenure_days"] == 90.0   # 31 (Jan) + 29 (Feb 2024) + 30
    assert features.loc[2, ["recency_days", "tenure_days"]].tolist() == [0.0, 0.0]
    assert features.loc[3, ["recency_days", "tenure_days"]].tolist() == [45.0, 45.0]  # 15 Feb -> 31 Mar


def test_orders_count_distinct_purchase_orders_not_returns(features):
    """Customer 1 has order ids 101, 102 and the return 103 up to the analysis date: 2 orders."""
    assert features["orders"].tolist() == [2.0, 1.0, 1.0]


def test_orders_per_month_uses_at_least_one_month_of_tenure(features):
    assert features.loc[1, "orders_per_month"] == pytest.approx(2 / (90 / DAYS_PER_MONTH))
    # 0 and 45 days of tenure: customer 2 counts one month, customer 3 counts 45 days.
    assert features.loc[2, "orders_per_month"] == pytest.approx(1.0)
    assert features.loc[3, "orders_per_month"] == pytest.approx(1 / (45 / DAYS_PER_MONTH))


def test_revenue_returns_and_order_value(features):
    """Gift-card lines count in revenue; the return is a positive returned value."""
    c1 = features.loc[1]
    assert c1["gross_revenue"] == pytest.approx(40 + 10 + 15 + 25)
    assert c1["returned_value"] == pytest.approx(15.0)
    assert c1["net_revenue"] == pytest.approx(75.0)
    assert c1["average_order_value"] == pytest.approx(90 / 2)
    assert c1["items_per_order"] == pytest.approx((2 + 1 + 1 + 1) / 2)
    assert c1["return_rate_value"] == pytest.approx(15 / 90)
    assert c1["return_rate_units"] == pytest.approx(1 / 5)
    c2, c3 = features.loc[2], features.loc[3]
    assert (c2["gross_revenue"], c2["net_revenue"], c2["average_order_value"], c2["items_per_order"]) == \
        pytest.approx((36.0, 36.0, 36.0, 3.0))
    assert (c2["returned_value"], c2["return_rate_value"], c2["return_rate_units"]) == (0.0, 0.0, 0.0)
    assert (c3["gross_revenue"], c3["net_revenue"], c3["average_order_value"]) == pytest.approx((50, 50, 50))


def test_department_spend_and_units_are_net_of_returns(features):
    c1 = features.loc[1]
    assert c1["dept_spend__ladies_clothing"] == pytest.approx(40 + 15 - 15)
    assert c1["dept_units__ladies_clothing"] == pytest.approx(2 + 1 - 1)
    assert c1["dept_spend__home"] == pytest.approx(10.0)
    assert c1["dept_units__home"] == pytest.approx(1.0)
    assert features.loc[2, ["dept_spend__ladies_clothing", "dept_spend__home", "dept_units__home"]].tolist() \
        == pytest.approx([0.0, 36.0, 3.0])


def test_department_share_is_of_gross_merchandise_purchase_spend(features):
    """Customer 1 bought 55.00 of Ladies Clothing and 10.00 of Home; the gift card and return do not count."""
    assert features.loc[1, "dept_share__ladies_clothing"] == pytest.approx(55 / 65)
    assert features.loc[1, "dept_share__home"] == pytest.approx(10 / 65)
    assert features.loc[2, ["dept_share__ladies_clothing", "dept_share__home"]].tolist() == [0.0, 1.0]


def test_non_merchandise_lines_count_in_revenue_but_in_no_department(features):
    """Customer 3 bought only a gift card: revenue, but zero in every department column."""
    assert not any(c.endswith("gift_cards") for c in features.columns)
    dept_columns = [c for c in features.columns if c.startswith("dept_")]
    assert len(dept_columns) == 6
    assert features.loc[3, dept_columns].tolist() == [0.0] * 6
    assert features.loc[3, ["n_departments", "n_classes"]].tolist() == [0.0, 0.0]


def test_departments_and_classes_bought(features):
    """Customer 1 bought Dresses and Tops (Ladies Clothing) and Candles (Home); the return removes none."""
    assert features["n_departments"].tolist() == [2.0, 1.0, 0.0]
    assert features["n_classes"].tolist() == [3.0, 1.0, 0.0]


def test_lines_after_the_analysis_date_change_nothing():
    """Dropping the two lines dated after 2024-03-31 gives the very same features."""
    lines = tiny_transactions()
    hierarchy = tiny_hierarchy()
    with_later, _ = build_customer_features(lines, hierarchy, ANALYSIS_DATE)
    without, _ = build_customer_features(lines[lines["order_date"] <= ANALYSIS_DATE], hierarchy, ANALYSIS_DATE)
    pd.testing.assert_frame_equal(with_later, without)


def test_feature_columns_and_dtypes(features):
    hierarchy = tiny_hierarchy()
    expected = ["first_order_date", "last_order_date"] + behavioural_feature_names(hierarchy)
    assert list(features.columns) == expected
    numeric = features.drop(columns=["first_order_date", "last_order_date"])
    assert set(numeric.dtypes) == {np.dtype(np.float64)}
    assert list(CORE_FEATURES) == expected[2:2 + len(CORE_FEATURES)]


def test_class_totals_are_net_merchandise_classes_only():
    _, class_totals = build_customer_features(tiny_transactions(), tiny_hierarchy(), ANALYSIS_DATE)
    columns = ["customer_id", "department", "class", "spend", "units"]
    got = {(c, d, k): (s, u) for c, d, k, s, u in class_totals[columns].itertuples(index=False, name=None)}
    assert got == {
        (1, "Home", "Candles"): (10.0, 1.0),
        (1, "Ladies Clothing", "Dresses"): (40.0, 2.0),
        (1, "Ladies Clothing", "Tops"): (0.0, 0.0),  # bought and returned
        (2, "Home", "Cushions"): (36.0, 3.0),
    }
    assert class_totals["spend"].dtype == np.float32 and class_totals["units"].dtype == np.float32


# --- class_wide --------------------------------------------------------------------------------

def test_class_wide_puts_spend_and_units_in_their_columns_as_float32():
    hierarchy = tiny_hierarchy()
    _, class_totals = build_customer_features(tiny_transactions(), hierarchy, ANALYSIS_DATE)
    wide = class_wide(class_totals, hierarchy, pd.Series([1, 2, 3]))

    classes = ["ladies_clothing__dresses", "ladies_clothing__tops", "home__candles", "home__cushions"]
    assert list(wide.columns) == [f"class_spend__{c}" for c in classes] + [f"class_units__{c}" for c in classes]
    assert set(wide.dtypes) == {np.dtype(np.float32)}
    np.testing.assert_array_equal(wide.to_numpy(), np.array([
        [40, 0, 10, 0, 2, 0, 1, 0],
        [0, 0, 0, 36, 0, 0, 0, 3],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ], dtype=np.float32))


def test_class_wide_follows_the_order_of_the_customer_ids_given():
    hierarchy = tiny_hierarchy()
    _, class_totals = build_customer_features(tiny_transactions(), hierarchy, ANALYSIS_DATE)
    wide = class_wide(class_totals, hierarchy, pd.Series([2, 1]))
    assert wide["class_spend__home__cushions"].tolist() == [36.0, 0.0]
    assert wide["class_spend__ladies_clothing__dresses"].tolist() == [0.0, 40.0]


# --- resolve_model_columns ---------------------------------------------------------------------

def test_resolve_model_columns_expands_patterns_in_feature_order():
    names = behavioural_feature_names(tiny_hierarchy())
    got = resolve_model_columns(["dept_share__*", "net_revenue", "recency_days", "dept_share__home"], names,
                                PROFILE_COLUMNS)
    assert got == ["recency_days", "net_revenue", "dept_share__ladies_clothing", "dept_share__home"]


@pytest.mark.parametrize("pattern", ["persona", "pers*", "gender"])
def test_resolve_model_columns_refuses_profile_columns(pattern):
    names = behavioural_feature_names(tiny_hierarchy())
    with pytest.raises(ValueError, match="profile columns .* never enter the model matrix"):
        resolve_model_columns(["net_revenue", pattern], names, PROFILE_COLUMNS)


def test_resolve_model_columns_refuses_a_pattern_matching_nothing():
    names = behavioural_feature_names(tiny_hierarchy())
    with pytest.raises(ValueError, match="'lifetime_value\\*' matches no behavioural feature"):
        resolve_model_columns(["net_revenue", "lifetime_value*"], names, PROFILE_COLUMNS)


# --- ModelMatrixTransformer --------------------------------------------------------------------

def skewed_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"revenue": rng.lognormal(3.0, 1.0, n), "share": rng.uniform(0, 1, n),
                         "other": rng.normal(size=n)})


def _robust(values: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return (values - median) / (q3 - q1)


def test_model_matrix_logs_only_the_listed_columns_then_robust_scales():
    frame = skewed_frame()
    out = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"]).fit_transform(frame)

    assert out.shape == (len(frame), 2)
    np.testing.assert_allclose(out[:, 0], _robust(np.log1p(frame["revenue"].to_numpy())), atol=1e-12)
    np.testing.assert_allclose(out[:, 1], _robust(frame["share"].to_numpy()), atol=1e-12)
    np.testing.assert_allclose(np.median(out, axis=0), 0.0, atol=1e-12)


def test_model_matrix_clips_negative_values_before_log1p():
    frame = pd.DataFrame({"x": [-5.0, 0.0, 1.0, 3.0, 7.0]})
    transformer = ModelMatrixTransformer(columns=["x"], log1p_columns=["x"]).fit(frame)
    out = transformer.transform(frame)[:, 0]
    assert out[0] == out[1]  # -5 is clipped to 0 like 0 itself


def test_model_matrix_transform_before_fit_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        ModelMatrixTransformer(columns=["revenue"], log1p_columns=[]).transform(skewed_frame())


def test_model_matrix_refuses_log1p_columns_outside_its_columns():
    transformer = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue", "other"])
    with pytest.raises(ValueError, match="log1p columns not among the model columns: other"):
        transformer.fit(skewed_frame())


def test_model_matrix_refuses_input_missing_a_column():
    transformer = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"])
    transformer.fit(skewed_frame())
    with pytest.raises(ValueError, match="feature columns missing from the input: share"):
        transformer.transform(skewed_frame().drop(columns="share"))


def test_model_matrix_save_load_round_trip(tmp_path):
    train, new = skewed_frame(seed=0), skewed_frame(seed=1)
    transformer = ModelMatrixTransformer(columns=["revenue", "share", "other"], log1p_columns=["revenue"])
    before = transformer.fit(train).transform(new)
    joblib.dump(transformer, tmp_path / "scaler.pkl")
    loaded = joblib.load(tmp_path / "scaler.pkl")

    np.testing.assert_array_equal(loaded.transform(new), before)
    assert list(loaded.get_feature_names_out()) == ["revenue", "share", "other"]


# --- prepare_features --------------------------------------------------------------------------

@pytest.fixture
def prepared():
    return prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                            model_patterns=["recency_days", "orders", "net_revenue", "dept_share__*"],
                            log1p_patterns=["recency_days", "net_revenue"], analysis_date=ANALYSIS_DATE)


def test_prepare_features_keeps_profile_columns_out_of_basic_and_model_matrix(prepared):
    for frame in (prepared.basic, prepared.model_matrix):
        assert not set(PROFILE_COLUMNS) & set(frame.columns)
    assert list(prepared.model_matrix.columns) == ["customer_id", "recency_days", "orders", "net_revenue",
                                                   "dept_share__ladies_clothing", "dept_share__home"]
    assert list(prepared.transformer.log1p_columns) == ["recency_days", "net_revenue"]


def test_prepare_features_joins_the_profile_into_the_enriched_datasets(prepared):
    for frame in (prepared.enriched_department, prepared.enriched_class):
        assert set(PROFILE_COLUMNS) <= set(frame.columns)
    enriched = prepared.enriched_department.set_index("customer_id")
    assert enriched.loc[[1, 2, 3], "persona"].tolist() == ["teenage_girl", "homemaker", "gifter"]


def test_prepare_features_has_one_row_per_customer_in_every_dataset(prepared):
    for frame in (prepared.basic, prepared.enriched_department, prepared.enriched_class, prepared.model_matrix):
        assert frame["customer_id"].tolist() == [1, 2, 3]


def test_enriched_class_adds_two_columns_per_merchandise_class(prepared):
    added = [c for c in prepared.enriched_class.columns if c not in prepared.enriched_department.columns]
    assert len(added) == 2 * 4
    assert all(c.startswith(("class_spend__", "class_units__")) for c in added)
    row = prepared.enriched_class.set_index("customer_id").loc[2]
    assert (row["class_spend__home__cushions"], row["class_units__home__cushions"]) == (36.0, 3.0)


def test_prepare_features_refuses_a_model_pattern_naming_a_profile_column():
    with pytest.raises(ValueError, match="never enter the model matrix"):
        prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                         model_patterns=["net_revenue", "age"], log1p_patterns=[], analysis_date=ANALYSIS_DATE)


def test_prepare_features_defaults_the_analysis_date_to_the_last_order_date():
    result = prepare_features(tiny_transactions(), None, tiny_hierarchy(), model_patterns=["net_revenue"],
                              log1p_patterns=[])
    assert result.analysis_date == pd.Timestamp("2024-05-01")
    # Every customer with a purchase by then, now including customer 5.
    assert result.basic["customer_id"].tolist() == [1, 2, 3, 5]


def test_default_analysis_date_keeps_the_lines_of_the_last_day_when_dates_carry_times():
    """order_date is an Arrow timestamp, so lines may carry a time of day.

    The default analysis date is "the last order_date in transactions"; customer 2's only
    purchase is at 14:05 on that day (2024-03-31) and must count, with a recency of 0 days.
    """
    lines = tiny_transactions()
    lines = lines[lines["order_date"] <= ANALYSIS_DATE].copy()
    lines.loc[lines["customer_id"] == 2, "order_date"] = pd.Timestamp("2024-03-31 14:05")
    result = prepare_features(lines, None, tiny_hierarchy(), model_patterns=["net_revenue"], log1p_patterns=[])

    assert result.analysis_date.normalize() == pd.Timestamp("2024-03-31")
    assert result.basic["customer_id"].tolist() == [1, 2, 3]
    assert result.basic.set_index("customer_id").loc[2, "net_revenue"] == pytest.approx(36.0)


def test_lines_without_any_merchandise_give_zero_department_columns():
    """Only gift-card lines (customers 1 and 3): revenue, and 0 in every department column."""
    lines = tiny_transactions()
    lines = lines[lines["department"] == "Gift Cards"]
    built, class_totals = build_customer_features(lines, tiny_hierarchy(), ANALYSIS_DATE)

    assert built["customer_id"].tolist() == [1, 3]
    assert built["gross_revenue"].tolist() == [25.0, 50.0]
    dept_columns = [c for c in built.columns if c.startswith("dept_")]
    assert len(dept_columns) == 6 and (built[dept_columns] == 0).all().all()
    assert class_totals.empty
