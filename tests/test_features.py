"""Unit tests of core/prepare_features/ against values worked out by hand on tiny order-line tables.

The tiny hierarchy has two merchandise departments (Ladies Clothing with a
data-quality class DUMMY, and Home), a gift-card and a bag-levy department.
The analysis date is 2024-03-31 (2024 is a leap year). Amounts in GBP.

Customer 1
    order 101, 2024-01-01: Ladies Clothing/Dresses 2 x 20.00 = 40.00 (discount 10, premium, formal, size M, store);
                           Home/Candles 1 x 10.00 (no discount, value, casual, no size, store)
    order 102, 2024-03-01: Ladies Clothing/Tops 1 x 15.00 (discount 5, mid, casual, Teen 12-14, online);
                           Gift Cards/Gift Card 1 x 25.00 (online) -- never customer spend
    order 103, 2024-03-10: return of the Tops line (-1, -15.00, discount -5)
    order 104, 2024-04-15: Home/Cushions 1 x 30.00 -- after the analysis date, ignored
Customer 2
    order 201, 2024-03-31 (the analysis date): Home/Cushions 3 x 12.00 = 36.00 (value, casual, store)
Customer 3
    order 301, 2024-02-15: Gift Cards/Gift Card 1 x 50.00 -- no customer spend at all
Customer 4
    order 401, 2024-02-01: a return (-1, -8.00) of a purchase made before the data starts
Customer 5
    order 501, 2024-05-01: Home/Candles 1 x 9.00 -- only after the analysis date
Customer 6 (no attributes, no discounts recorded; store)
    order 601, 2023-07-20: Ladies Clothing/Dresses 1 x 30.00 (back-to-school window)
    order 602, 2023-11-15: Home/Candles 2 x 10.00 = 20.00; Bag Levy 1 x 0.10 -- never customer spend
    order 603, 2023-12-20: Unknown/Unknown 1 x 8.00 -- spend, but in no department
    order 604, 2024-02-10: Ladies Clothing/DUMMY 1 x 12.00 -- department spend, no class column
"""

from __future__ import annotations

import dataclasses
import json
import math

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from core.domain.hierarchy import parse_hierarchy
from core.domain.tables import IDENTITY_COLUMNS
from core.prepare_features import aggregate
from core.prepare_features.aggregate import FeatureSettings, build_customer_features, monthly_spend_stats
from core.prepare_features.columns import CORE_FEATURES, ROLE_FEATURE, column_roles, resolve_model_columns
from core.prepare_features.eligibility import BASIC_ELIGIBILITY, apply_eligibility, eligible_customer_features
from core.prepare_features.prepare import FeatureModel, prepare_features
from core.prepare_features.settings import EligibilityConfig
from core.prepare_features.transformers import ClassMixEmbedding, ModelMatrixTransformer, add_class_mix

ANALYSIS_DATE = pd.Timestamp("2024-03-31")
PROFILE_COLUMNS = ["persona", "age", "gender", "has_children", "lifestyle", "region", "signup_date", "dropout_date"]
ATTRIBUTES = ["channel", "brand", "brand_tier", "style", "color", "size", "discount_amount"]


def tiny_hierarchy():
    return parse_hierarchy({"departments": {
        "Ladies Clothing": {"kind": "merchandise", "classes": ["Dresses", "Tops"], "data_quality_classes": ["DUMMY"]},
        "Home": {"kind": "merchandise", "classes": ["Candles", "Cushions"]},
        "Gift Cards": {"kind": "gift_card", "classes": ["Gift Card"]},
        "Bag Levy": {"kind": "bag_levy", "classes": ["Paper Bags"]},
    }}, "test")


def tiny_transactions(attributes: bool = True) -> pd.DataFrame:
    """The lines above; ``attributes=False`` leaves out every optional column."""
    LC, H = "Ladies Clothing", "Home"
    rows = [
        # customer, order, date, department, class, quantity, amount, is_return, channel, tier, style, size, discount
        (1, 101, "2024-01-01", LC, "Dresses", 2, 40.00, False, "store", "premium", "formal", "M", 10.0),
        (1, 101, "2024-01-01", H, "Candles", 1, 10.00, False, "store", "value", "casual", None, 0.0),
        (1, 102, "2024-03-01", LC, "Tops", 1, 15.00, False, "online", "mid", "casual", "Teen 12-14", 5.0),
        (1, 102, "2024-03-01", "Gift Cards", "Gift Card", 1, 25.00, False, "online", None, None, None, None),
        (1, 103, "2024-03-10", LC, "Tops", -1, -15.00, True, "online", "mid", "casual", "Teen 12-14", -5.0),
        (1, 104, "2024-04-15", H, "Cushions", 1, 30.00, False, "store", "value", "casual", None, 0.0),
        (2, 201, "2024-03-31", H, "Cushions", 3, 36.00, False, "store", "value", "casual", None, 0.0),
        (3, 301, "2024-02-15", "Gift Cards", "Gift Card", 1, 50.00, False, "store", None, None, None, None),
        (4, 401, "2024-02-01", H, "Candles", -1, -8.00, True, "store", "value", "casual", None, 0.0),
        (5, 501, "2024-05-01", H, "Candles", 1, 9.00, False, "store", "value", "casual", None, 0.0),
        (6, 601, "2023-07-20", LC, "Dresses", 1, 30.00, False, "store", None, None, None, None),
        (6, 602, "2023-11-15", H, "Candles", 2, 20.00, False, "store", None, None, None, None),
        (6, 602, "2023-11-15", "Bag Levy", "Paper Bags", 1, 0.10, False, "store", None, None, None, None),
        (6, 603, "2023-12-20", "Unknown", "Unknown", 1, 8.00, False, "store", None, None, None, None),
        (6, 604, "2024-02-10", LC, "DUMMY", 1, 12.00, False, "store", None, None, None, None),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "order_date", "department", "class", "quantity",
                                        "line_amount", "is_return", "channel", "brand_tier", "style", "size",
                                        "discount_amount"])
    frame["order_date"] = pd.to_datetime(frame["order_date"])
    frame["unit_price"] = (frame["line_amount"] / frame["quantity"]).abs()
    frame["sku"] = "SKU-" + frame["class"].str.upper().str.replace(" ", "")
    frame["brand"] = None
    frame["color"] = None
    if not attributes:
        frame = frame.drop(columns=ATTRIBUTES)
    return frame


def tiny_customers() -> pd.DataFrame:
    ids = [1, 2, 3, 4, 5, 6, 7]  # customer 7 has no order lines at all
    return pd.DataFrame({
        "customer_id": ids,
        "persona": ["teenage_girl", "homemaker", "gifter", "returner", "late", "seasonal", "signed_up"],
        "age": [17, 45, 60, 30, 25, 38, 50],
        "gender": ["Female", "Female", "Male", "Male", "Female", "Female", "Male"],
        "has_children": [False, True, True, False, False, True, False],
        "lifestyle": ["student", "family", "retired", "busy", "new", "busy", "none"],
        "region": ["London", "Wales", "Scotland", "London", "Wales", "London", "Wales"],
        "signup_date": pd.to_datetime(["2024-01-01", "2024-03-31", "2024-02-15", "2023-12-01", "2024-05-01",
                                       "2023-07-01", "2024-01-01"]),
        "dropout_date": pd.NaT,
        **{c: f"secret {c}" for c in IDENTITY_COLUMNS},
    })


def rules(**changed) -> EligibilityConfig:
    """The loosest rules (one order, net spend not below 0) with ``changed`` applied."""
    return dataclasses.replace(BASIC_ELIGIBILITY, **changed)


def build(lines=None, settings=FeatureSettings(), analysis_date=ANALYSIS_DATE):
    built, _ = build_customer_features(tiny_transactions() if lines is None else lines, tiny_hierarchy(),
                                       analysis_date, settings)
    return built


@pytest.fixture(scope="module")
def built():
    return build()


@pytest.fixture(scope="module")
def features(built) -> pd.DataFrame:
    return built.features.set_index("customer_id")


# --- which customers get features --------------------------------------------------------------

def test_one_row_per_customer_with_a_purchase_of_merchandise_by_the_analysis_date(features):
    """3 (gift card only), 4 (only a return) and 5 (only later lines) get no row."""
    assert list(features.index) == [1, 2, 6]


def test_customers_without_features_are_listed_with_their_rule():
    prepared = prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(), ["net_revenue"], [],
                                ANALYSIS_DATE)
    rules = dict(zip(prepared.excluded["customer_id"], prepared.excluded["rule"]))
    assert rules == {3: "only_non_merchandise_by_analysis_date", 4: "only_returns_by_analysis_date",
                     5: "first_purchase_after_analysis_date", 7: "no_order_lines"}
    assert prepared.details["excluded_customers"]["no_order_lines"] == 1


# --- recency, frequency, monetary, returns, tenure ------------------------------------------------

def test_dates_recency_and_tenure_come_from_purchases_only(features):
    """Customer 1's last purchase is 2024-03-01; the later return (03-10) and order (04-15) do not count."""
    c1 = features.loc[1]
    assert c1["first_order_date"] == pd.Timestamp("2024-01-01")
    assert c1["last_order_date"] == pd.Timestamp("2024-03-01")
    assert c1["recency_days"] == 30.0  # 1 March -> 31 March
    assert c1["tenure_days"] == 90.0   # 31 (Jan) + 29 (Feb 2024) + 30
    assert features.loc[2, ["recency_days", "tenure_days"]].tolist() == [0.0, 0.0]
    # Customer 6: 10 Feb -> 31 Mar = 19 + 31; 20 Jul 2023 -> 31 Mar 2024 = 11+31+30+31+30+31+31+29+31.
    assert features.loc[6, ["recency_days", "tenure_days"]].tolist() == [50.0, 255.0]


def test_orders_count_purchase_orders_with_merchandise(features):
    """Customer 1: orders 101 and 102 (the return 103 and the later 104 are not orders); customer 6: 4."""
    assert features["orders"].tolist() == [2.0, 1.0, 4.0]


def test_orders_per_month_uses_at_least_one_month_of_tenure(features):
    # 2 orders in 90 days of tenure; a month is 365.25 / 12 = 30.4375 days: 2 / (90 / 30.4375)
    assert features.loc[1, "orders_per_month"] == pytest.approx(0.676389, abs=1e-6)
    assert features.loc[2, "orders_per_month"] == pytest.approx(1.0)  # 0 days of tenure count as a month
    assert features.loc[6, "orders_per_month"] == pytest.approx(0.477451, abs=1e-6)  # 4 / (255 / 30.4375)


def test_revenue_returns_order_value_and_items(features):
    """Gift cards and the bag levy are never customer spend; the Unknown department's line is."""
    c1 = features.loc[1]
    assert c1["gross_revenue"] == pytest.approx(40 + 10 + 15)
    assert c1["returned_value"] == pytest.approx(15.0)
    assert c1["net_revenue"] == pytest.approx(50.0)
    assert c1["average_order_value"] == pytest.approx(65 / 2)
    assert c1["items_per_order"] == pytest.approx((2 + 1 + 1) / 2)
    assert c1["return_rate_value"] == pytest.approx(15 / 65)
    assert c1["return_rate_units"] == pytest.approx(1 / 4)
    c6 = features.loc[6]
    assert (c6["gross_revenue"], c6["net_revenue"], c6["average_order_value"], c6["items_per_order"]) == \
        pytest.approx((30 + 20 + 8 + 12, 70.0, 70 / 4, 5 / 4))
    assert (features.loc[2, "returned_value"], features.loc[2, "return_rate_value"]) == (0.0, 0.0)


def test_days_between_orders_mean_and_coefficient_of_variation(features):
    """Customer 6's gaps: 20 Jul -> 15 Nov = 118, -> 20 Dec = 35, -> 10 Feb = 52 days."""
    gaps = np.array([118.0, 35.0, 52.0])
    assert features.loc[6, "mean_days_between_orders"] == pytest.approx(gaps.mean())  # = (255 - 50) / 3
    assert features.loc[6, "cv_days_between_orders"] == pytest.approx(gaps.std() / gaps.mean())
    # One gap (customer 1: 60 days): its mean, and no variation to measure.
    assert features.loc[1, ["mean_days_between_orders", "cv_days_between_orders"]].tolist() == [60.0, 0.0]
    # One order: the tenure so far stands in for the gap (0 days for customer 2).
    assert features.loc[2, ["mean_days_between_orders", "cv_days_between_orders"]].tolist() == [0.0, 0.0]


# --- departments, classes, diversity -----------------------------------------------------------

def test_department_spend_and_units_are_net_of_returns(features):
    c1 = features.loc[1]
    assert (c1["dept_spend__ladies_clothing"], c1["dept_units__ladies_clothing"]) == (40 + 15 - 15, 2 + 1 - 1)
    assert (c1["dept_spend__home"], c1["dept_units__home"]) == (10.0, 1.0)


def test_data_quality_classes_count_in_their_department_and_unknown_in_none(features):
    """Customer 6: Dresses 30 + DUMMY 12 in Ladies Clothing; the Unknown line (8) in no department."""
    c6 = features.loc[6]
    assert (c6["dept_spend__ladies_clothing"], c6["dept_spend__home"]) == (42.0, 20.0)
    assert not any("unknown" in c or "gift" in c or "bag" in c for c in features.columns)


def test_department_share_is_of_gross_merchandise_purchase_spend(features):
    assert features.loc[1, "dept_share__ladies_clothing"] == pytest.approx(55 / 65)
    assert features.loc[1, "dept_share__home"] == pytest.approx(10 / 65)
    assert features.loc[6, "dept_share__ladies_clothing"] == pytest.approx(42 / 62)
    assert features.loc[2, ["dept_share__ladies_clothing", "dept_share__home"]].tolist() == [0.0, 1.0]


def test_diversity_entropy_departments_and_classes(features):
    """n_classes counts sellable classes bought (a bought-and-returned one too, DUMMY never)."""
    p = np.array([55, 10]) / 65
    assert features.loc[1, "dept_entropy"] == pytest.approx(-(p * np.log(p)).sum())
    assert features.loc[2, "dept_entropy"] == 0.0
    assert features["n_departments"].tolist() == [2.0, 1.0, 2.0]
    assert features["n_classes"].tolist() == [3.0, 1.0, 2.0]


def test_class_totals_are_net_non_zero_sellable_classes(built):
    got = {(c, d, k): (s, u) for c, d, k, s, u in built.class_long[
        ["customer_id", "department", "class", "spend", "units"]].itertuples(index=False, name=None)}
    assert got == {  # Tops was bought and returned (net 0): left out; DUMMY has no class of its own
        (1, "Ladies Clothing", "Dresses"): (40.0, 2.0), (1, "Home", "Candles"): (10.0, 1.0),
        (2, "Home", "Cushions"): (36.0, 3.0),
        (6, "Ladies Clothing", "Dresses"): (30.0, 1.0), (6, "Home", "Candles"): (20.0, 2.0)}


# --- seasonality, stability, growth ------------------------------------------------------------

def test_seasonal_shares_of_gross_spend(features):
    """Customer 6 spends 70: Jan-Mar 12, Jul-Sep 30, Oct-Dec 20 + 8; holiday Nov-Dec 28; back to school 30."""
    got = features.loc[6, ["spend_share_q1", "spend_share_q2", "spend_share_q3", "spend_share_q4", "holiday_share",
                           "back_to_school_share"]].tolist()
    assert got == pytest.approx([12 / 70, 0.0, 30 / 70, 28 / 70, 28 / 70, 30 / 70])
    assert features.loc[1, ["spend_share_q1", "holiday_share"]].tolist() == [1.0, 0.0]


def test_season_windows_are_configurable_and_may_wrap_over_new_year():
    """15 Dec - 15 Jan holds customer 6's 20 Dec line (8.00) and customer 1's 1 Jan lines (50.00)."""
    features = build(settings=FeatureSettings(holiday_window=("12-15", "01-15"))).features.set_index("customer_id")
    assert features.loc[6, "holiday_share"] == pytest.approx(8 / 70)
    assert features.loc[1, "holiday_share"] == pytest.approx(50 / 65)


def test_monthly_spend_cv_and_trend_count_empty_months(features):
    """Customer 6, July 2023 to March 2024 (9 months): 30 in month 0, 20 in 4, 8 in 5, 12 in 7."""
    y = np.zeros(9)
    y[[0, 4, 5, 7]] = [30, 20, 8, 12]
    t = np.arange(9)
    slope = ((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum()
    assert features.loc[6, "monthly_spend_cv"] == pytest.approx(y.std() / y.mean())
    assert features.loc[6, "spend_trend"] == pytest.approx(slope / y.mean())  # -1.2667 / 7.78 = -0.163
    # Customer 1: January 50, February 0, March 15.
    y1 = np.array([50.0, 0.0, 15.0])
    assert features.loc[1, "monthly_spend_cv"] == pytest.approx(y1.std() / y1.mean())
    assert features.loc[1, "spend_trend"] == pytest.approx(((15 - 50) / 2) / y1.mean())
    assert features.loc[2, ["monthly_spend_cv", "spend_trend"]].tolist() == [0.0, 0.0]  # one month


def test_monthly_spend_stats_match_a_least_squares_fit():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 100, 12) * (rng.random(12) < 0.6)
    t = np.arange(12)
    got = monthly_spend_stats(np.array([12]), np.array([y.sum()]), np.array([(y ** 2).sum()]),
                              np.array([(t * y).sum()]))
    assert got["spend_trend"][0] == pytest.approx(np.polyfit(t, y, 1)[0] / y.mean())
    assert got["monthly_spend_cv"][0] == pytest.approx(y.std() / y.mean())


# --- discounts and attribute mixes ---------------------------------------------------------------

def test_discount_share_is_discount_over_net_plus_discount(features):
    """Customer 1: discounts 10 + 0 + 5 - 5 (returned) = 10 on a net of 50; customer 6 has none recorded."""
    assert features.loc[1, "discount_share"] == pytest.approx(10 / (50 + 10))
    assert features.loc[6, "discount_share"] == 0.0


def test_attribute_shares_of_spend_with_a_known_value(features):
    c1 = features.loc[1]
    assert c1[["brand_tier_share__mid", "brand_tier_share__premium", "brand_tier_share__value"]].tolist() == \
        pytest.approx([15 / 65, 40 / 65, 10 / 65])
    assert c1[["style_share__casual", "style_share__formal"]].tolist() == pytest.approx([25 / 65, 40 / 65])
    assert c1[["channel_share__online", "channel_share__store"]].tolist() == pytest.approx([15 / 65, 50 / 65])
    # Customer 6's lines carry no tier: every tier share is 0, not a division by zero.
    assert features.loc[6, ["brand_tier_share__mid", "brand_tier_share__value"]].tolist() == [0.0, 0.0]


def test_kids_size_share_of_spend_with_a_size(features):
    """Customer 1 bought sized lines Dresses M (40) and Tops Teen 12-14 (15)."""
    assert features.loc[1, "kids_size_share"] == pytest.approx(15 / 55)
    assert features.loc[2, "kids_size_share"] == 0.0


def test_attribute_values_beyond_the_limit_pool_as_other():
    """At most 2 columns per attribute: tiers keep the largest by spend (value: 10 + 36) and pool the others
    (premium 40, mid 15)."""
    features = build(settings=FeatureSettings(max_attribute_values=2)).features.set_index("customer_id")
    assert [c for c in features.columns if c.startswith("brand_tier_share__")] == \
        ["brand_tier_share__value", "brand_tier_share__other"]
    assert features.loc[1, "brand_tier_share__other"] == pytest.approx(55 / 65)


# --- dropped features --------------------------------------------------------------------------

def test_features_needing_absent_columns_drop_out_and_say_why(built):
    full = built.features
    built = build(tiny_transactions(attributes=False))
    assert built.dropped == {
        "discount_share": "column discount_amount is absent from the order lines",
        "channel_share__*": "column channel is absent from the order lines",
        "brand_tier_share__*": "column brand_tier is absent from the order lines",
        "style_share__*": "column style is absent from the order lines",
        "kids_size_share": "column size is absent from the order lines"}
    assert not any(c.startswith(("discount", "channel", "brand", "style", "kids")) for c in built.features.columns)
    # Everything else is as with the columns present.
    pd.testing.assert_frame_equal(built.features, full[built.features.columns])


def test_features_needing_all_null_columns_drop_out():
    lines = tiny_transactions()
    lines["brand_tier"] = None
    lines["discount_amount"] = np.nan
    built = build(lines)
    assert built.dropped["brand_tier_share__*"] == "column brand_tier is null on every line"
    assert built.dropped["discount_share"] == "column discount_amount is null on every line"
    assert "style_share__casual" in built.features.columns


def test_department_features_drop_out_without_a_merchandise_department():
    """A log without a hierarchy: every line in Unknown. Totals and RFM stay, departments go."""
    lines = tiny_transactions(attributes=False).assign(department="Unknown", **{"class": "Unknown"})
    prepared = prepare_features(lines, None, tiny_hierarchy(), ["net_revenue", "dept_share__*", "dept_entropy"],
                                ["net_revenue"], ANALYSIS_DATE)
    assert not any(c.startswith("dept_") or c.startswith("class_") for c in prepared.enriched_class.columns)
    assert {"dept_*", "dept_entropy", "n_departments", "n_classes"} <= set(prepared.details["dropped_features"])
    assert prepared.feature_model.columns == ["net_revenue"]
    assert set(prepared.details["model_matrix"]["patterns_without_data"]) == {"dept_share__*", "dept_entropy"}
    # Customer 3's gift card is now in Unknown too, so it counts as spend.
    assert prepared.basic.set_index("customer_id").loc[3, "net_revenue"] == 50.0


def test_a_model_matrix_of_dropped_features_only_is_an_error():
    with pytest.raises(ValueError, match="no model feature has data.*discount_amount is absent"):
        prepare_features(tiny_transactions(attributes=False), None, tiny_hierarchy(), ["discount_share"], [],
                         ANALYSIS_DATE)


def test_departments_missing_from_the_hierarchy_count_as_unknown_and_are_listed():
    lines = tiny_transactions()
    lines.loc[lines["department"] == "Home", "department"] = "Garden"
    built = build(lines)
    assert built.lines["departments_not_in_hierarchy"] == ["Garden"]
    assert built.features.set_index("customer_id").loc[2, ["gross_revenue", "dept_spend__home"]].tolist() == \
        [36.0, 0.0]


def test_required_columns_are_checked():
    with pytest.raises(ValueError, match="lack required column.*line_amount"):
        build(tiny_transactions().drop(columns="line_amount"))


# --- eligibility -------------------------------------------------------------------------------

@pytest.mark.parametrize("eligibility, excluded", [
    (rules(), {}),
    (rules(min_tenure_days=30), {2: "min_tenure_days"}),
    (rules(min_orders=2), {2: "min_orders"}),
    (rules(min_orders=2, min_tenure_days=100), {2: "min_orders", 1: "min_tenure_days"}),
    (rules(min_net_spend=50.0), {2: "min_net_spend"}),  # customer 1 has exactly 50.00: kept
    (rules(max_recency_days=40), {6: "max_recency_days"}),
])
def test_eligibility_rules_exclude_with_the_first_rule_failed(features, eligibility, excluded):
    keep, failed = apply_eligibility(features.reset_index(), eligibility)
    assert dict(zip(failed["customer_id"], failed["rule"])) == excluded
    assert keep.tolist() == [c not in excluded for c in features.index]


def test_excluded_customers_leave_every_dataset_and_are_counted():
    prepared = prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(), ["net_revenue"], [],
                                ANALYSIS_DATE, eligibility=rules(min_tenure_days=30))
    for frame in (prepared.basic, prepared.enriched_department, prepared.enriched_class, prepared.model_matrix):
        assert frame["customer_id"].tolist() == [1, 6]
    row = prepared.excluded.set_index("customer_id").loc[2]
    assert row["rule"] == "min_tenure_days" and "0 days" in row["reason"] and "30" in row["reason"]
    assert prepared.details["excluded_customers"]["min_tenure_days"] == 1
    assert set(prepared.class_long["customer_id"]) == {1, 6}


def test_no_eligible_customer_is_an_error():
    with pytest.raises(ValueError, match="no customer passes the eligibility rules"):
        prepare_features(tiny_transactions(), None, tiny_hierarchy(), ["net_revenue"], [], ANALYSIS_DATE,
                         eligibility=rules(min_orders=10))


# --- column roles and the model matrix ----------------------------------------------------------

@pytest.fixture(scope="module")
def prepared():
    return prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                            ["recency_days", "orders", "net_revenue", "dept_share__*", "brand_tier_share__*"],
                            ["recency_days", "net_revenue"], ANALYSIS_DATE)


def test_every_column_of_every_dataset_has_a_role(prepared):
    for frame in (prepared.basic, prepared.enriched_department, prepared.enriched_class, prepared.model_matrix):
        assert set(frame.columns) <= set(prepared.roles)
    roles = prepared.roles
    assert roles["customer_id"] == "id" and roles["persona"] == roles["dropout_date"] == "ground_truth"
    assert roles["age"] == roles["first_order_date"] == "profile"
    assert roles["class_spend__home__cushions"] == roles["net_revenue"] == ROLE_FEATURE
    assert sum(prepared.details["column_roles"].values()) == prepared.enriched_class.shape[1]


def test_identity_columns_never_reach_a_dataset(prepared):
    for frame in (prepared.basic, prepared.enriched_department, prepared.enriched_class, prepared.model_matrix,
                  prepared.excluded, prepared.class_spend_long):
        assert not set(IDENTITY_COLUMNS) & set(frame.columns)
        assert not frame.astype(str).apply(lambda c: c.str.startswith("secret")).any().any()
    with pytest.raises(ValueError, match="identity column 'email'"):
        column_roles(["customer_id", "email"], [])


@pytest.mark.parametrize("pattern", ["persona", "pers*", "age", "dropout_date", "first_order_date", "customer_id",
                                     "*", "*_date"])
def test_profile_ground_truth_and_id_columns_never_enter_the_model_matrix(prepared, pattern):
    with pytest.raises(ValueError, match="only behavioural features enter the model matrix"):
        resolve_model_columns(["net_revenue", pattern], [], prepared.roles, {})


def test_prepare_features_refuses_a_model_pattern_naming_a_profile_column():
    """The same check guards the stage's own function, not only the config loader."""
    with pytest.raises(ValueError, match="'gend\\*' names gender \\(profile\\); only behavioural features"):
        prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(), ["net_revenue", "gend*"], [],
                         ANALYSIS_DATE)


def test_a_column_without_a_role_is_refused():
    with pytest.raises(ValueError, match="column 'mystery' has no role"):
        column_roles(["customer_id", "net_revenue", "mystery"], ["net_revenue"])


def test_model_matrix_takes_the_patterns_in_feature_order_and_records_them(prepared):
    assert list(prepared.model_matrix.columns) == [
        "customer_id", "recency_days", "orders", "net_revenue", "dept_share__ladies_clothing", "dept_share__home",
        "brand_tier_share__mid", "brand_tier_share__premium", "brand_tier_share__value"]
    assert prepared.feature_model.matrix.log1p_columns == ["recency_days", "net_revenue"]
    recorded = prepared.details["model_matrix"]
    assert recorded["columns"] == list(prepared.model_matrix.columns[1:])
    assert recorded["log1p_columns"] == ["recency_days", "net_revenue"] and recorded["scaler"] == "StandardScaler"
    assert set(prepared.model_matrix.dtypes.iloc[1:]) == {np.dtype(np.float32)}


def test_a_pattern_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="'lifetime_value\\*' matches no behavioural feature"):
        prepare_features(tiny_transactions(), None, tiny_hierarchy(), ["net_revenue", "lifetime_value*"], [],
                         ANALYSIS_DATE)


# --- the datasets: columns and dtypes -----------------------------------------------------------

def test_dataset_columns_and_dtypes(prepared):
    basic, enriched, wide = prepared.basic, prepared.enriched_department, prepared.enriched_class
    departments = ["dept_spend__ladies_clothing", "dept_spend__home", "dept_units__ladies_clothing", "dept_units__home"]
    assert list(basic.columns) == ["customer_id", *CORE_FEATURES, *departments]
    assert basic["customer_id"].dtype == np.int64 and set(basic.dtypes.iloc[1:]) == {np.dtype(np.float64)}
    assert list(enriched.columns[:3]) == ["customer_id", "first_order_date", "last_order_date"]
    assert enriched.columns[-len(PROFILE_COLUMNS):].tolist() == PROFILE_COLUMNS
    assert set(basic.columns) < set(enriched.columns)
    assert {"dept_share__home", "dept_entropy", "holiday_share", "spend_trend", "discount_share",
            "kids_size_share", "style_share__formal"} < set(enriched.columns)
    classes = ["ladies_clothing__dresses", "ladies_clothing__tops", "home__candles", "home__cushions"]
    assert wide.columns.tolist() == enriched.columns.tolist() + [f"class_spend__{c}" for c in classes] + \
        [f"class_units__{c}" for c in classes]
    assert set(wide.dtypes.iloc[enriched.shape[1]:]) == {np.dtype(np.float32)}
    assert wide.set_index("customer_id").loc[2, ["class_spend__home__cushions", "class_units__home__cushions"]
                                             ].tolist() == [36.0, 3.0]
    long = prepared.class_spend_long
    assert list(long.columns) == ["customer_id", "department", "class", "spend", "units"]
    assert (long["spend"].dtype, long["units"].dtype) == (np.float32, np.float32)
    assert list(prepared.excluded.columns) == ["customer_id", "rule", "reason"]


def test_class_wide_batches_match_the_long_form(prepared):
    """Built a few customers at a time, the wide table still puts every long-form row in its cell."""
    wide = pd.concat([b.to_pandas() for b in prepared.enriched_class_batches(batch_rows=2)], ignore_index=True)
    pd.testing.assert_frame_equal(wide, prepared.enriched_class)
    for c, d, k, s, u in prepared.class_spend_long.itertuples(index=False, name=None):
        name = f"{d}__{k}".lower().replace(" ", "_")
        row = wide.set_index("customer_id").loc[c]
        assert (row[f"class_spend__{name}"], row[f"class_units__{name}"]) == (s, u)


def test_profile_and_ground_truth_join_only_the_enriched_datasets(prepared):
    for frame in (prepared.basic, prepared.model_matrix):
        assert not set(PROFILE_COLUMNS) & set(frame.columns)
    assert prepared.enriched_department.set_index("customer_id").loc[[1, 2, 6], "persona"].tolist() == \
        ["teenage_girl", "homemaker", "seasonal"]


def test_the_same_lines_in_another_order_give_identical_features(built):
    shuffled = tiny_transactions().sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(build(shuffled).features, built.features, check_exact=True)


def test_lines_after_the_analysis_date_change_nothing(built):
    lines = tiny_transactions()
    early = lines[lines["order_date"] <= ANALYSIS_DATE]
    pd.testing.assert_frame_equal(build(early).features, built.features)
    assert built.lines["after_analysis_date"] == 2  # orders 104 and 501


def test_default_analysis_date_is_the_last_order_date_and_keeps_its_times():
    """order_date may carry a time of day: the last day's lines still count, with a recency of 0."""
    lines = tiny_transactions()
    lines = lines[lines["order_date"] <= ANALYSIS_DATE].copy()
    lines.loc[lines["customer_id"] == 2, "order_date"] = pd.Timestamp("2024-03-31 14:05")
    built, analysis_date = build_customer_features(lines, tiny_hierarchy(), None)
    assert analysis_date == pd.Timestamp("2024-03-31")
    assert built.features.set_index("customer_id").loc[2, ["net_revenue", "recency_days"]].tolist() == [36.0, 0.0]


def test_parquet_path_and_dataframe_give_the_same_features(built, tmp_path):
    tiny_transactions().to_parquet(tmp_path / "lines.parquet", index=False)
    from_file, _ = build_customer_features(tmp_path / "lines.parquet", tiny_hierarchy(), ANALYSIS_DATE)
    pd.testing.assert_frame_equal(from_file.features, built.features, check_exact=True)


# --- ModelMatrixTransformer --------------------------------------------------------------------

def skewed_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"revenue": rng.lognormal(3.0, 1.0, n), "share": rng.uniform(0, 1, n),
                         "other": rng.normal(size=n)})


def _robust(values: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return (values - median) / (q3 - q1)


def _standard(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


@pytest.mark.parametrize("scaler, scale", [("standard", _standard), ("robust", _robust)])
def test_model_matrix_logs_only_the_listed_columns_then_scales(scaler, scale):
    frame = skewed_frame()
    out = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"],
                                 scaler=scaler).fit_transform(frame)
    assert out.shape == (len(frame), 2)
    np.testing.assert_allclose(out[:, 0], scale(np.log1p(frame["revenue"].to_numpy())), atol=1e-12)
    np.testing.assert_allclose(out[:, 1], scale(frame["share"].to_numpy()), atol=1e-12)


def test_model_matrix_refuses_an_unknown_scaler():
    with pytest.raises(ValueError, match="scaler 'minmax' is not one of standard, robust"):
        ModelMatrixTransformer(columns=["share"], scaler="minmax").fit(skewed_frame())


def test_model_matrix_clips_negative_values_before_log1p():
    frame = pd.DataFrame({"x": [-5.0, 0.0, 1.0, 3.0, 7.0]})
    out = ModelMatrixTransformer(columns=["x"], log1p_columns=["x"]).fit(frame).transform(frame)[:, 0]
    assert out[0] == out[1]  # -5 is clipped to 0 like 0 itself
    assert math.isfinite(out[0])


def test_model_matrix_transform_before_fit_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        ModelMatrixTransformer(columns=["revenue"], log1p_columns=[]).transform(skewed_frame())


def test_model_matrix_refuses_log1p_columns_outside_its_columns():
    transformer = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue", "other"])
    with pytest.raises(ValueError, match="log1p columns not among the model columns: other"):
        transformer.fit(skewed_frame())


def test_model_matrix_square_roots_only_the_listed_shares_then_scales():
    """A share of 0.04 and one of 0.64 become 0.2 and 0.8 before standard scaling; negatives clip to 0."""
    frame = pd.DataFrame({"share": [0.0, 0.04, 0.64, 1.0, -0.01], "revenue": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = ModelMatrixTransformer(columns=["share", "revenue"], sqrt_columns=["share"]).fit_transform(frame)
    np.testing.assert_allclose(out[:, 0], _standard(np.array([0.0, 0.2, 0.8, 1.0, 0.0])), atol=1e-12)
    np.testing.assert_allclose(out[:, 1], _standard(frame["revenue"].to_numpy()), atol=1e-12)


def test_model_matrix_refuses_a_column_both_logged_and_square_rooted():
    transformer = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["share"], sqrt_columns=["share"])
    with pytest.raises(ValueError, match="columns both log1p and sqrt: share"):
        transformer.fit(skewed_frame())
    with pytest.raises(ValueError, match="sqrt columns not among the model columns: other"):
        ModelMatrixTransformer(columns=["revenue", "share"], sqrt_columns=["other"]).fit(skewed_frame())


def test_a_model_pickled_before_sqrt_columns_square_roots_nothing():
    """A feature model saved by older code has no sqrt_columns attribute: it transforms as it did."""
    fitted = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"]).fit(skewed_frame())
    expected = fitted.transform(skewed_frame())
    del fitted.sqrt_columns
    np.testing.assert_array_equal(fitted.transform(skewed_frame()), expected)


def test_sqrt_patterns_resolve_over_the_model_columns_and_are_recorded():
    prepared = prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                                ["net_revenue", "dept_share__*"], ["net_revenue"], ANALYSIS_DATE,
                                sqrt_patterns=["dept_share__*", "brand_tier_share__*"])
    assert prepared.feature_model.matrix.sqrt_columns == ["dept_share__ladies_clothing", "dept_share__home"]
    assert prepared.details["model_matrix"]["sqrt_columns"] == ["dept_share__ladies_clothing", "dept_share__home"]
    with pytest.raises(ValueError, match="net_revenue matched by both prepare_features.log1p_features and "
                                         "prepare_features.sqrt_features"):
        resolve_model_columns(["net_revenue"], ["net_*"], prepared.roles, {}, ["net_revenue"])


def test_model_matrix_refuses_input_missing_a_column():
    transformer = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"]).fit(skewed_frame())
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


def test_model_matrix_reads_only_its_columns_and_checks_them_at_transform():
    """Extra columns are ignored (the enriched table has profile columns); the columns read are recorded."""
    train = skewed_frame()
    transformer = ModelMatrixTransformer(columns=["share", "revenue"]).fit(train.assign(persona="x"))
    assert transformer.n_features_in_ == 2 and list(transformer.feature_names_in_) == ["share", "revenue"]
    np.testing.assert_array_equal(transformer.transform(train[["revenue", "share"]]), transformer.transform(train))
    with pytest.raises(ValueError, match="needs a DataFrame holding them, got ndarray"):
        transformer.transform(train[["share", "revenue"]].to_numpy())


def test_model_matrix_without_named_columns_takes_every_column_and_counts_them():
    values = skewed_frame().to_numpy()
    transformer = ModelMatrixTransformer(log1p_columns=["x0"]).fit(values)
    assert list(transformer.get_feature_names_out()) == ["x0", "x1", "x2"]
    np.testing.assert_allclose(transformer.transform(values)[:, 0], _standard(np.log1p(values[:, 0])), atol=1e-12)
    with pytest.raises(ValueError, match="X has 2 features, but ModelMatrixTransformer is expecting 3"):
        transformer.transform(values[:, :2])


def test_a_cloned_model_matrix_is_unfitted_with_the_same_parameters_and_refits_to_the_same_result():
    frame = skewed_frame()
    fitted = ModelMatrixTransformer(columns=["revenue", "share"], log1p_columns=["revenue"], scaler="robust").fit(frame)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "scaler_")
    np.testing.assert_array_equal(copy.fit(frame).transform(frame), fitted.transform(frame))


def test_class_totals_and_features_are_the_same_when_ids_are_too_large_for_one_group_key(built):
    """Ids near 2**62 take the two-column grouping instead of ``id * keys + class``: same totals, same rows."""
    shift = 2 ** 62
    lines = tiny_transactions()
    lines["customer_id"] += shift
    big = build(lines)
    expected = built.class_long.assign(customer_id=built.class_long["customer_id"] + shift)
    pd.testing.assert_frame_equal(big.class_long, expected)
    pd.testing.assert_frame_equal(big.features.drop(columns="customer_id"), built.features.drop(columns="customer_id"),
                                  check_exact=True)


def test_a_customer_with_only_returns_gets_no_class_totals(built):
    """Customer 4 returned a dress and bought nothing: the class query sees the line, the totals leave it out."""
    assert 4 not in set(built.class_long["customer_id"]) and 4 not in set(built.features["customer_id"])


def test_features_are_the_same_when_the_lines_are_aggregated_a_range_of_customers_at_a_time(built, monkeypatch):
    """A table too large for the engine's memory is built one range of customers at a time: same outputs."""
    monkeypatch.setattr(aggregate, "_LINE_BYTES", 2 ** 40)  # one line per part: one customer id per range
    ids = tiny_transactions()["customer_id"]
    parts = aggregate.customer_ranges((ids.min(), ids.max()), len(ids), FeatureSettings().engine_memory_mb)
    assert len(parts) == ids.max() - ids.min() + 1 > 5
    small = build()
    pd.testing.assert_frame_equal(small.features, built.features, check_exact=True)
    pd.testing.assert_frame_equal(small.class_long, built.class_long, check_exact=True)
    pd.testing.assert_frame_equal(small.activity, built.activity)
    assert small.lines == built.lines


def test_customer_ranges_cover_every_id_once_in_order():
    assert aggregate.customer_ranges((0, 99), 10, 2048) == [None]  # fits: one table
    assert aggregate.customer_ranges(None, 10 ** 12, 2048) == [None]  # no ids
    ranges = aggregate.customer_ranges((5, 1_000_004), 136_000_000, 2048)
    assert len(ranges) == 9 and ranges[0][0] == 5 and ranges[-1][1] == 1_000_004
    assert all(b[0] == a[1] + 1 and b[0] <= b[1] for a, b in zip(ranges, ranges[1:]))
    assert aggregate.customer_ranges((3, 4), 10 ** 12, 256) == [(3, 3), (4, 4)]  # never more ranges than ids


def test_unknown_department_is_spend_even_when_the_hierarchy_lists_it():
    """Customer 6's Unknown line (8.00) counts, whatever kind a hierarchy gives "Unknown"."""
    departments = dict(tiny_hierarchy().departments)
    with_unknown = parse_hierarchy({"departments": {
        **{name: {"kind": d.kind, "classes": list(d.classes), "data_quality_classes": list(d.data_quality_classes)}
           for name, d in departments.items()},
        "Unknown": {"kind": "data_quality", "classes": ["Unknown"]}}}, "test")
    built, _ = build_customer_features(tiny_transactions(), with_unknown, ANALYSIS_DATE)
    assert built.features.set_index("customer_id").loc[6, "gross_revenue"] == 70.0


# --- the class mix ------------------------------------------------------------------------------

def class_spend(rows):
    import scipy.sparse as sparse
    return sparse.csr_matrix(np.asarray(rows, dtype=np.float64))


def test_class_mix_is_the_hellinger_vector_projected_on_its_leading_singular_vectors():
    rng = np.random.default_rng(3)
    spend = rng.gamma(0.3, 20.0, size=(60, 8)) * (rng.random((60, 8)) < 0.5)
    spend[0] = 0.0  # a customer without class spend sits at the origin
    embedding = ClassMixEmbedding(n_components=3, random_state=0).fit(class_spend(spend))
    totals = spend.sum(axis=1, keepdims=True)
    hellinger = np.sqrt(np.divide(spend, totals, out=np.zeros_like(spend), where=totals > 0))
    # The components are the leading right singular vectors of the Hellinger matrix (up to sign).
    _, _, vt = np.linalg.svd(hellinger, full_matrices=False)
    for got, want in zip(embedding.components_, vt[:3]):
        assert abs(abs(got @ want) - 1.0) < 1e-6
        assert got[np.abs(got).argmax()] > 0, "sign fixed: largest loading positive"
    np.testing.assert_allclose(embedding.transform(class_spend(spend)), hellinger @ embedding.components_.T)
    np.testing.assert_array_equal(embedding.transform(class_spend(spend))[0], 0.0)
    # Scale-free: a customer spending ten times as much in the same proportions lands on the same point.
    np.testing.assert_allclose(embedding.transform(class_spend(spend[1:2] * 10)),
                               embedding.transform(class_spend(spend[1:2])))
    assert list(embedding.get_feature_names_out()) == ["class_mix_01", "class_mix_02", "class_mix_03"]


def test_class_mix_is_deterministic_capped_and_refuses_bad_input():
    spend = np.random.default_rng(0).gamma(0.5, 10.0, size=(40, 5))
    one = ClassMixEmbedding(n_components=3, random_state=7).fit(class_spend(spend))
    two = ClassMixEmbedding(n_components=3, random_state=7).fit(class_spend(spend))
    np.testing.assert_array_equal(one.components_, two.components_)
    assert len(ClassMixEmbedding(n_components=12).fit(class_spend(spend)).components_) == 4, "at most classes - 1"
    with pytest.raises(ValueError, match="Negative values in data passed to ClassMixEmbedding.*clip returns"):
        ClassMixEmbedding(n_components=2).fit(class_spend([[1.0, -2.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="X has 4 features, but ClassMixEmbedding is expecting 5"):
        one.transform(class_spend(spend[:, :4]))
    with pytest.raises(ValueError, match="1 feature\\(s\\).*minimum of 2"):
        ClassMixEmbedding().fit(class_spend([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="1 sample\\(s\\).*minimum of 2"):
        ClassMixEmbedding().fit(class_spend([[1.0, 2.0]]))


def test_prepare_features_adds_the_class_mix_and_keeps_its_projection_for_scoring():
    prepared = prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                                ["orders_per_month", "dept_share__*", "class_mix_*"], [], ANALYSIS_DATE,
                                class_mix_components=12, scaler="robust")
    mix = [c for c in prepared.model_matrix.columns if c.startswith("class_mix_")]
    # The tiny hierarchy sells 4 merchandise classes and 3 customers are eligible: at most 2 components.
    assert len(prepared.model_matrix) == 3 and mix == ["class_mix_01", "class_mix_02"]
    assert all(prepared.roles[c] == ROLE_FEATURE for c in mix)
    assert set(mix) <= set(prepared.enriched_department.columns) and not set(mix) & set(prepared.basic.columns)
    embedding = prepared.feature_model.class_mix
    assert embedding.n_features_in_ == 4 and prepared.details["model_matrix"]["scaler"] == "RobustScaler"
    assert prepared.details["model_matrix"]["class_mix"]["components"] == 2
    # Recomputing the columns from the long class table with the saved projection gives the same values.
    again = add_class_mix(prepared.enriched_department.drop(columns=mix), prepared.class_long, embedding)
    np.testing.assert_allclose(again[mix].to_numpy(), prepared.enriched_department[mix].to_numpy())
    # Customer 1 bought dresses, tops, candles and cushions; customer 2 only cushions: different mixes.
    rows = prepared.enriched_department.set_index("customer_id")[mix]
    assert not np.allclose(rows.loc[1], rows.loc[2])


def test_the_class_mix_is_fitted_when_computed_and_absent_when_switched_off(prepared):
    # Computed (a feature like any other, in enriched_department) though not in this matrix.
    assert [c for c in prepared.enriched_department.columns if c.startswith("class_mix_")]
    assert prepared.feature_model.class_mix is not None
    assert not [c for c in prepared.model_matrix.columns if c.startswith("class_mix_")]
    off = prepare_features(tiny_transactions(), None, tiny_hierarchy(), ["orders_per_month"], [], ANALYSIS_DATE,
                           class_mix_components=0)
    assert not [c for c in off.enriched_department.columns if c.startswith("class_mix_")]
    assert off.feature_model.class_mix is None and off.details["model_matrix"]["class_mix"] is None


def test_class_mix_is_dropped_with_its_reason_when_it_cannot_be_built():
    patterns = ["orders_per_month", "class_mix_*"]
    off = prepare_features(tiny_transactions(), None, tiny_hierarchy(), patterns, [], ANALYSIS_DATE,
                           class_mix_components=0)
    assert off.details["model_matrix"]["patterns_without_data"] == {
        "class_mix_*": "class_mix_*: prepare_features.class_mix_components is 0"}
    unknown_classes = tiny_transactions().assign(**{"class": "No Such Class"})
    none = prepare_features(unknown_classes, None, tiny_hierarchy(), patterns, [], ANALYSIS_DATE)
    assert "no line falls in a sellable class" in none.details["dropped_features"]["class_mix_*"]
    assert none.feature_model.columns == ["orders_per_month"]
    json.dumps(none.details, allow_nan=False)  # nothing undefined reaches the manifest


# --- the saved feature model: what scoring runs --------------------------------------------------

@pytest.fixture(scope="module")
def with_mix():
    return prepare_features(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                            ["orders_per_month", "net_revenue", "dept_share__*", "brand_tier_share__*", "class_mix_*"],
                            ["net_revenue"], ANALYSIS_DATE, eligibility=rules(max_recency_days=60))


def test_the_saved_feature_model_rebuilds_the_training_rows_from_the_lines(with_mix, tmp_path):
    """Save, load, transform: the same features and the same model matrix as stage 02 wrote."""
    joblib.dump(with_mix.feature_model, tmp_path / "feature-scaler.pkl")
    loaded = joblib.load(tmp_path / "feature-scaler.pkl")
    assert isinstance(loaded, FeatureModel) and loaded.columns == list(with_mix.model_matrix.columns[1:])
    again = loaded.customer_features(tiny_transactions(), tiny_hierarchy(), ANALYSIS_DATE)
    written = with_mix.enriched_department
    pd.testing.assert_frame_equal(again.features, written[again.features.columns], check_exact=True)
    np.testing.assert_array_equal(loaded.transform(again.features), with_mix.model_matrix.iloc[:, 1:].to_numpy())
    # The rules travel with the model: customer 6 (last order 50 days ago) passes, none fails.
    assert again.features["customer_id"].tolist() == [1, 2, 6] and again.failed_rules.empty


def test_the_feature_model_builds_a_customer_alone_as_in_training_and_applies_the_saved_rules(with_mix):
    """Stage 02's settings are saved: a customer's own lines give the training columns and values."""
    model = dataclasses.replace(with_mix.feature_model, eligibility=rules(max_recency_days=40))
    alone = model.customer_features(tiny_transactions().query("customer_id in [2, 6]"), tiny_hierarchy(),
                                    ANALYSIS_DATE)
    # Customer 2 bought only value-tier cushions, yet gets every brand-tier column stage 02 built.
    assert [c for c in alone.features.columns if c.startswith("brand_tier_share__")] == \
        ["brand_tier_share__mid", "brand_tier_share__premium", "brand_tier_share__value"]
    trained = with_mix.enriched_department.set_index("customer_id").loc[[2], alone.features.columns[1:]]
    pd.testing.assert_frame_equal(alone.features.set_index("customer_id"), trained, check_exact=True)
    assert alone.excluded[["customer_id", "rule"]].values.tolist() == [[6, "max_recency_days"]]


def test_eligible_features_list_customers_without_features_first_then_failed_rules():
    eligible = eligible_customer_features(tiny_transactions(), tiny_hierarchy(), ANALYSIS_DATE,
                                          eligibility=rules(min_orders=2), customers=tiny_customers())
    assert eligible.excluded[["customer_id", "rule"]].values.tolist() == [
        [3, "only_non_merchandise_by_analysis_date"], [4, "only_returns_by_analysis_date"],
        [5, "first_purchase_after_analysis_date"], [7, "no_order_lines"], [2, "min_orders"]]
    assert eligible.features["customer_id"].tolist() == [1, 6] and eligible.failed_rules["customer_id"].tolist() == [2]
    assert set(eligible.class_long["customer_id"]) == {1, 6}
