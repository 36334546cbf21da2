"""Unit tests of segment profiling (core/profiling.py) on small hand-made customer frames.

The main frame has 14 customers: three clear segments of four and two noise points.

segment  net revenue            recency (days)     orders/month       Ladies Clothing : Home
0        1000 1100 1200 1300    5 10 3 8           4 5 4 6            80% : 20%
1        20 30 40 30            300 320 400 350    .1 .2 .1 .1        0% : 100%
2        200 250 300 250        20 30 40 30        1 1.5 2 1.5        50% : 50%
-1       500 60                 100 10             .5 3               50% : 50%

Population spend: Ladies Clothing 3680 + 0 + 500 + 280 = 4460, Home 920 + 120 + 500 + 280 = 1820,
total 6280. Net revenue quantiles (0.33, 0.67) = (100.6, 442); median orders/month = 1.5.

Without customer value the lifecycle word compares lapsed shares (recency >= 90 days): everyone 5/14 =
0.357 (segment 1's four and the noise customer of 100 days); segment 0 and 2 have 0 (0.357 below:
Active), segment 1 has 1 (0.643 above: At-Risk), both beyond the 0.15 margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from types import SimpleNamespace

from core.domain.hierarchy import parse_hierarchy
from core.profile_export import profiling
from core.profile_export.profiling import insights_table, profile_segments
from core.profile_export.strategies import parse_strategies

LAPSED_AFTER = 90


def tiny_hierarchy():
    return parse_hierarchy({"departments": {
        "Ladies Clothing": {"kind": "merchandise", "classes": ["Dresses", "Tops"]},
        "Home": {"kind": "merchandise", "classes": ["Candles"]},
        "Accessories": {"kind": "merchandise", "classes": ["Bags"]},
        "Gift Cards": {"kind": "gift_card", "classes": ["Gift Card"]},
    }}, "test")


def segment_rows(segment, net, recency, per_month, mix, tenure=700.0):
    """Customers of one segment; department spend splits each customer's net revenue by ``mix``."""
    net = np.asarray(net, dtype=float)
    per_month = np.asarray(per_month, dtype=float)
    orders = np.round(per_month * tenure / 30.4375)
    rows = pd.DataFrame({
        "segment": segment,
        "net_revenue": net,
        "recency_days": np.asarray(recency, dtype=float),
        "orders": orders,
        "orders_per_month": per_month,
        "average_order_value": net / np.maximum(orders, 1),
        "return_rate_value": 0.1,
        "tenure_days": tenure,
    })
    for column, share in (("ladies_clothing", "L"), ("home", "H"), ("accessories", "A")):
        rows[f"dept_spend__{column}"] = net * mix.get(share, 0.0)
    return rows


def main_frame() -> pd.DataFrame:
    frame = pd.concat([
        segment_rows(0, [1000, 1100, 1200, 1300], [5, 10, 3, 8], [4, 5, 4, 6], {"L": 0.8, "H": 0.2}),
        segment_rows(1, [20, 30, 40, 30], [300, 320, 400, 350], [0.1, 0.2, 0.1, 0.1], {"H": 1.0}),
        segment_rows(2, [200, 250, 300, 250], [20, 30, 40, 30], [1, 1.5, 2, 1.5], {"L": 0.5, "H": 0.5}),
        segment_rows(-1, [500, 60], [100, 10], [0.5, 3], {"L": 0.5, "H": 0.5}),
    ], ignore_index=True)
    return frame.sample(frac=1.0, random_state=0)  # segments interleaved, index not in row order


def settings(top_departments: int = 2) -> SimpleNamespace:
    """The profile_export settings profile_segments reads."""
    return SimpleNamespace(top_departments=top_departments, top_classes=0, value_quantiles=(0.33, 0.67),
                           lapsed_after_days=LAPSED_AFTER, currency="£", describe_columns=(), age_bands=(),
                           explain_features=3, min_segment_size=1)


def one_rule_table():
    return parse_strategies({"cross_sell": {"max_categories": 2, "min_lift": 0.0, "max_lift": 0.9,
                                            "min_population_share": 0.0},
                             "rules": [{"id": "everyone", "when": {}, "channel": ["email"], "offer": "o",
                                        "tone": "t", "timing": "w"}]}, "test", tiny_hierarchy())


def profile(frame: pd.DataFrame, top_departments: int = 2):
    customers = frame.drop(columns="segment")
    return profile_segments(customers, frame["segment"], tiny_hierarchy(), settings(top_departments),
                            one_rule_table(), model_columns=["net_revenue", "recency_days", "orders_per_month"])


@pytest.fixture
def profiles():
    return {p["segment_id"]: p for p in profile(main_frame())}


def test_one_profile_per_segment_ordered_by_id():
    assert [p["segment_id"] for p in profile(main_frame())] == [-1, 0, 1, 2]


def test_sizes_and_shares(profiles):
    assert {k: p["size"] for k, p in profiles.items()} == {-1: 2, 0: 4, 1: 4, 2: 4}
    assert profiles[0]["share_of_customers"] == pytest.approx(4 / 14, abs=1e-4)
    assert sum(p["share_of_customers"] for p in profiles.values()) == pytest.approx(1.0, abs=1e-3)


def test_revenue_shares(profiles):
    assert profiles[0]["revenue_share"] == pytest.approx(4600 / 6280, abs=1e-4)
    assert profiles[1]["revenue_share"] == pytest.approx(120 / 6280, abs=1e-4)
    assert sum(p["revenue_share"] for p in profiles.values()) == pytest.approx(1.0, abs=1e-3)


def test_statistics_of_a_segment(profiles):
    vip = profiles[0]
    # Quartiles by linear interpolation: 1000 1100 1200 1300 -> 1075, 1225; 3 5 8 10 -> 4.5, 8.5.
    assert vip["net_revenue"] == {"mean": 1150.0, "median": 1150.0, "q1": 1075.0, "q3": 1225.0}
    assert vip["recency_days"] == {"mean": 6.5, "median": 6.5, "q1": 4.5, "q3": 8.5}
    assert vip["lapsed_share"] == 0.0
    assert profiles[1]["lapsed_share"] == 1.0
    assert profiles[-1]["lapsed_share"] == 0.5  # 100 days > 90, 10 days not
    assert [p["value_tier"] for p in (profiles[0], profiles[1], profiles[2])] == ["high", "low", "mid"]


def test_high_value_recent_frequent_segment_is_vip_champions(profiles):
    # 80% Ladies Clothing against 71% for everyone: lift 1.13, under the 1.2 a focus needs.
    assert profiles[0]["name"] == "Active VIP Champions - Mixed Shoppers"


def test_a_lapsed_low_value_segment_is_named_for_its_shopping_with_a_lifecycle_word(profiles):
    assert profiles[1]["position"] == "Occasional Bargain Hunters"
    assert profiles[1]["lifecycle"] == {"state": "at_risk", "basis": "lapsed_share", "segment": 1.0,
                                        "population": round(5 / 14, 4), "margin": 0.15}
    assert profiles[1]["name"] == "At-Risk Occasional Bargain Hunters - Home Shoppers"


def test_mid_value_frequent_segment_names_its_highest_lift_department(profiles):
    """Segment 2 spends 50:50, but Home (lift 0.5 / 0.29) over-indexes, Ladies Clothing (0.5 / 0.71) does not."""
    assert profiles[2]["name"] == "Active Loyal Regulars - Home Shoppers"


def test_noise_segment_is_unassigned(profiles):
    assert profiles[-1]["name"] == "Unassigned (noise)"
    assert profiles[-1]["description"].startswith("Customers the density-based method could not place")


def test_top_department_and_lift(profiles):
    top = profiles[0]["top_departments"]
    assert [t["department"] for t in top] == ["Ladies Clothing", "Home"]
    assert top[0]["spend_share"] == pytest.approx(0.8)
    assert top[0]["lift"] == pytest.approx(round(0.8 / (4460 / 6280), 2))  # 1.13
    assert top[1]["lift"] == pytest.approx(round(0.2 / (1820 / 6280), 2))  # 0.69
    hibernating = profiles[1]["top_departments"][0]
    assert (hibernating["department"], hibernating["spend_share"]) == ("Home", 1.0)
    assert hibernating["lift"] == pytest.approx(round(1.0 / (1820 / 6280), 2))  # 3.45


def test_top_departments_lists_as_many_as_asked():
    profiles = profile(main_frame(), top_departments=1)
    assert all(len(p["top_departments"]) == 1 for p in profiles)


def test_descriptions_state_the_segment_size(profiles):
    for p in profiles.values():
        assert f"{p['size']:,} customers (" in p["description"]
    assert profiles[0]["description"].startswith("Active VIP Champions - Mixed Shoppers: 4 customers (28.6%)")
    assert "Customer value not estimated: no customer value columns." in profiles[0]["description"]
    assert "£" in profiles[0]["description"]


def test_twin_segments_get_unique_names():
    """Segment 3 is an exact copy of segment 1: same position, same single focus department."""
    frame = main_frame()
    twin = frame[frame["segment"] == 1].assign(segment=3)
    profiles = profile(pd.concat([frame, twin], ignore_index=True))
    names = [p["name"] for p in profiles]
    assert len(set(names)) == len(names)
    by_id = {p["segment_id"]: p["name"] for p in profiles}
    assert by_id[1] == "At-Risk Occasional Bargain Hunters - Home Shoppers"
    assert by_id[3] == "At-Risk Occasional Bargain Hunters - Home Shoppers #2"


def test_clashing_names_add_the_next_focus_department():
    """Two VIP segments over-index on Ladies Clothing only; their next departments by spend differ.

    Everyone's mix is Ladies Clothing 41%, Home 29%, Accessories 29%, so Home (15%) and Accessories (15%)
    are under-bought (lift 0.5) and cannot be a focus; they tell the twins apart as "+ Home" and
    "+ Accessories".
    """
    frame = pd.concat([
        segment_rows(0, [250, 260, 270, 280], [5, 6, 7, 8], [4, 4, 5, 5], {"L": 0.8, "H": 0.15, "A": 0.05}),
        segment_rows(1, [250, 260, 270, 280], [5, 6, 7, 8], [4, 4, 5, 5], {"L": 0.8, "A": 0.15, "H": 0.05}),
        segment_rows(2, [50] * 40, [200] * 40, [0.2] * 40, {"H": 0.5, "A": 0.5}),
    ], ignore_index=True)
    names = {p["segment_id"]: p["name"] for p in profile(frame)}
    # 40 of 48 customers lapsed (0.83, all of segment 2); segments 0 and 1, none: Active.
    assert names[0] == "Active VIP Champions - Ladies Clothing Shoppers (+ Home)"
    assert names[1] == "Active VIP Champions - Ladies Clothing Shoppers (+ Accessories)"
    assert len(set(names.values())) == 3


def test_a_segment_without_merchandise_spend_is_not_named_after_a_department():
    """Segment 3 buys only non-merchandise lines (gift cards): every dept_spend__ column is 0.

    Its focus should fall back to "Mixed" (the fallback _assign_unique_names provides), not to the
    first department of the hierarchy, which these customers never bought from.
    """
    frame = main_frame()
    gift_cards_only = segment_rows(3, [100, 120, 110, 90], [10, 12, 8, 9], [2, 2, 2, 2], mix={})
    profiles = {p["segment_id"]: p for p in profile(pd.concat([frame, gift_cards_only], ignore_index=True))}
    name = profiles[3]["name"]
    assert name.startswith("Active Loyal Regulars - ")
    assert not any(d in name for d in ("Ladies Clothing", "Home", "Accessories")), name
    assert name == "Active Loyal Regulars - Mixed Shoppers"


def test_insights_table_has_one_row_per_segment(profiles):
    table = insights_table(list(profiles.values()))
    assert len(table) == len(profiles)
    assert table["segment_id"].is_unique
    row = table.set_index("segment_id").loc[0]
    assert row["name"] == "Active VIP Champions - Mixed Shoppers"
    assert row["lifecycle"] == "active" and pd.isna(row["mean_p_alive"])
    assert row["customer_value_note"] == "not estimated: no customer value columns"
    assert row["size"] == 4
    assert row["net_revenue_median"] == 1150.0
    assert row["top_department_1"] == "Ladies Clothing"
    assert row["top_department_1_lift"] == pytest.approx(1.13)
    assert "description" not in table.columns


# --- seasonal peaks, attribute mixes, demographics, explanations --------------------------------

from core.profile_export.profiling import (attribute_spend_by_segment, demographics, explain_segment,  # noqa: E402
                            monthly_spend_by_segment)


def test_monthly_spend_and_seasonal_peaks():
    """Segment 7 buys mostly in December; its peak's index compares with everyone's December share."""
    lines = pd.DataFrame({
        "customer_id": [1, 1, 1, 2, 2],
        "order_date": pd.to_datetime(["2023-12-01", "2023-12-20", "2023-06-01", "2023-06-05", "2023-01-09"]),
        "line_amount": [60.0, 20.0, 20.0, 50.0, 50.0],
        "is_return": [False, False, False, False, False],
    })
    monthly = monthly_spend_by_segment(lines, pd.Series({1: 7, 2: 8}))
    assert monthly.loc[7, 12] == 80.0 and monthly.loc[7, 6] == 20.0 and monthly.loc[8, 1] == 50.0
    from core.profile_export.profiling import _seasonal_peaks

    peaks = _seasonal_peaks(monthly, 7)
    # Segment 7: December 80/100; everyone: December 80/200 -> index 0.8 / 0.4 = 2.0.
    assert peaks[0] == {"month": "December", "spend_share": 0.8, "index": 2.0}


def test_attribute_mix_only_for_attributes_the_catalog_has():
    lines = pd.DataFrame({"customer_id": [1, 1, 2], "sku": ["A", "B", "A"], "line_amount": [30.0, 10.0, 5.0],
                          "is_return": [False, False, False]})
    products = pd.DataFrame({"sku": ["A", "B"], "brand_tier": ["premium", "value"]})
    mixes = attribute_spend_by_segment(lines, products, pd.Series({1: 0, 2: 1}))
    assert list(mixes) == ["brand_tier"]
    assert mixes["brand_tier"].loc[0, "premium"] == 30.0 and mixes["brand_tier"].loc[0, "value"] == 10.0
    assert attribute_spend_by_segment(lines, products.drop(columns="brand_tier"), pd.Series({1: 0, 2: 1})) == {}


def test_demographics_summary():
    members = pd.DataFrame({"age": [20, 30, 31, 70], "gender": ["Female", "Female", "Male", "Female"],
                            "has_children": [True, False, False, False], "email": ["a", "b", "c", "d"]})
    summary = demographics(members, ["age", "gender", "has_children"], [25, 35, 45])
    assert summary["age"] == {"median": 30.5, "bands": {"under 25": 0.25, "25-34": 0.5, "45+": 0.25}}
    assert summary["gender"] == {"Female": 0.75, "Male": 0.25}
    assert summary["has_children"] == {"share_true": 0.25}
    assert "email" not in summary  # only the columns asked for


def test_explanation_ranks_features_by_standardised_mean_difference():
    frame = pd.DataFrame({"a": [10.0, 12.0, 0.0, 1.0, 0.0, 1.0], "b": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]})
    inside = np.array([True, True, False, False, False, False])
    result = explain_segment(frame, inside, ["b", "a"], top=2, hierarchy=tiny_hierarchy())
    # a: inside mean 11 (var 1), outside 0.5 (var 0.25): SMD = 10.5 / sqrt(0.625) = 13.28; b: no difference.
    assert [f["feature"] for f in result["features"]] == ["a"]
    assert result["features"][0]["smd"] == pytest.approx(13.28, abs=0.01)
    assert "higher a" in result["summary"]


def test_names_are_stable_for_the_same_data_in_any_row_order():
    frame = main_frame()
    first = [(p["segment_id"], p["name"], p["description"]) for p in profile(frame)]
    again = [(p["segment_id"], p["name"], p["description"]) for p in profile(frame.sample(frac=1.0, random_state=3))]
    assert first == again
    assert len({name for _, name, _ in first}) == len(first)


def test_identifier_scan_finds_full_names_and_contacts_but_not_a_surname_that_is_a_word():
    profile = pd.DataFrame({"customer_id": [1, 2], "first_name": ["Hope", "Jean"], "last_name": ["Pet", "Cook"],
                            "email": ["hope.pet1@example.com", "jean.cook2@example.com"],
                            "age": [30, 40]})
    assert profiling.identifier_values(profile) == {"hope pet", "jean cook", "hope.pet1@example.com",
                                                    "jean.cook2@example.com"}
    clean = {"segments": [{"name": "Pet lovers", "top_classes": ["Pet", "Hope"]}]}
    assert profiling.leaked_identifiers(clean, [profile]) == []
    leaking = {"segments": [{"examples": ["Jean Cook", "hope.pet1@example.com"]}]}
    assert sorted(leak.text for leak in profiling.leaked_identifiers(leaking, [profile])) == [
        "Jean Cook", "hope.pet1@example.com"]


# Written by hand: what each detector must find in a string, and strings it must leave alone.
IDENTIFIER_SHAPED = [
    ("jane.doe@example.com", "an email address", "jane.doe@example.com"),
    ("write to Jane.Doe+news@mail.co.uk.", "an email address", "Jane.Doe+news@mail.co.uk"),
    ("SW1A 1AA", "a UK postcode", "SW1A 1AA"),
    ("lives at b33 8th", "a UK postcode", "b33 8th"),
    ("EC1A1BB", "a UK postcode", "EC1A1BB"),
    ("+44 20 7946 0958", "a phone number", "+44 20 7946 0958"),
    ("call 07700 900123 today", "a phone number", "07700 900123"),
    ("(555) 123-4567", "a phone number", "(555) 123-4567"),
    ("555-123-4567", "a phone number", "555-123-4567"),
    ("tel:+33123456789", "a phone number", "+33123456789"),
    ("4477009001", "a phone number", "4477009001"),
]
NOT_IDENTIFIERS = [
    "Kids Clothing", "Ladies Footwear", "Home", "Pet", "North West", "Loyal Regulars - Home Shoppers (+ Beauty)",
    "£12.50", "£1,234,567", "12.5%", "1234567.50", "2024-03-31", "31/03/2024", "2026-11-21T12:00:00+00:00",
    "14:05", "Child 7-8", "Teen 12-14", "Baby 0-12m", "UK 10", "XS", "Q4 2nd week", "Q3", "sizes 10 12 14 16",
    "2023-2024", "0123456789abcdef", "a" * 64, "Small segment 3",
    "Loyal Regulars: 1,234 customers (12.3%) bringing 45.6% of net revenue. They last bought a median 12 days "
    "ago, order 1.2 times a month with a typical order of £45, and spend a median £1,200 in all.",
]


@pytest.mark.parametrize("text, kind, match", IDENTIFIER_SHAPED)
def test_identifier_shaped_text_is_found(text, kind, match):
    assert profiling.identifier_shapes(text) == [(kind, match)]


@pytest.mark.parametrize("text", NOT_IDENTIFIERS)
def test_words_departments_money_and_dates_are_not_identifiers(text):
    assert profiling.identifier_shapes(text) == []


def test_the_shipped_hierarchy_personas_and_strategies_hold_no_identifier_shaped_text():
    import yaml

    from core.framework import paths

    for name in ("hierarchy.yml", "personas.yml", "strategies.yml"):
        document = yaml.safe_load((paths.REPO_ROOT / "config" / name).read_text(encoding="utf-8"))
        assert profiling.leaked_identifiers(document) == [], name


def test_an_identifier_is_masked_to_its_first_and_last_character():
    assert profiling.masked("jane.doe@example.com") == "j******************m"
    assert profiling.masked("ab") == "**"


def test_department_spend_counts_a_department_without_columns_as_zero():
    """Stage 02 drops department columns for data without a hierarchy; profiles then see no department spend."""
    from core.profile_export.profiling import department_spend, feature_label

    frame = pd.DataFrame({"dept_spend__home": [5.0, -2.0]})
    spend = department_spend(frame, ["Home", "Ladies Clothing"])
    assert spend.to_numpy().tolist() == [[5.0, 0.0], [0.0, 0.0]]
    assert feature_label("brand_tier_share__premium", None) == "share of spend on premium brands"
    assert feature_label("spend_trend", None) == "growth of monthly spend"


# --- a log without a product hierarchy (issue 13) -------------------------------------------------------------


def no_hierarchy_frame() -> pd.DataFrame:
    """Two high-value, recent, frequent segments and one lapsed low-value one; no department spend at all.

    Median orders/month of the 16 customers is (0.1 + 2) / 2 = 1.05, so segments 0 (6-7 a month) and 1 (2 a
    month) are both frequent, both high value, both Active: "Active VIP Champions" twice. Against each other
    segment 0 orders more often (SMD +12.7) and segment 1 buys bigger baskets (3.5 against 1 item, SMD +7.1);
    segment 1's lower ordering rate is no trait, as it is still above everyone's. Net revenue's 0.33 quantile
    is 30 (the 5th and 6th of the 16 sorted values), above segment 2's median 27.5: low value.
    """
    frame = pd.concat([
        segment_rows(0, [1000, 1100, 1200, 1300], [5, 5, 5, 5], [6, 7, 6, 7], {}).assign(items_per_order=1.0),
        segment_rows(1, [1000, 1100, 1200, 1300], [5, 5, 5, 5], [2, 2, 2, 2], {}).assign(
            items_per_order=[3.0, 4.0, 3.0, 4.0]),
        segment_rows(2, [20, 25, 30, 35] * 2, [300] * 8, [0.1] * 8, {}).assign(items_per_order=1.0),
    ], ignore_index=True)
    # The same order value in segments 0 and 1: it tells neither apart.
    frame["average_order_value"] = np.where(frame["segment"] == 2, 15.0, 50.0)
    return frame


def profile_no_hierarchy(frame: pd.DataFrame) -> dict[int, dict]:
    customers = frame.drop(columns="segment")
    found = profile_segments(customers, frame["segment"], tiny_hierarchy(), settings(), one_rule_table(),
                             model_columns=["orders_per_month", "average_order_value", "items_per_order"])
    return {p["segment_id"]: p for p in found}


def test_without_departments_names_stop_at_the_position_and_say_nothing_of_merchandise():
    profiles = profile_no_hierarchy(no_hierarchy_frame())
    assert profiles[2]["name"] == "At-Risk Occasional Bargain Hunters"
    for p in profiles.values():
        assert "Shoppers" not in p["name"] and "Mixed" not in p["name"]
        assert "merchandise" not in p["description"] and "They buy most in" not in p["description"]


def test_namesakes_are_told_apart_by_the_trait_that_sets_each_apart_not_by_a_number():
    profiles = profile_no_hierarchy(no_hierarchy_frame())
    assert profiles[0]["name"] == "Active VIP Champions (frequent orders)"
    assert profiles[1]["name"] == "Active VIP Champions (big baskets)"


def test_a_trait_is_named_only_when_it_also_holds_against_everyone():
    """Segment 1 with segment 0's one-item baskets: its only difference from segment 0 is ordering less often,
    yet it orders more often than most customers, so "infrequent orders" would mislead: segment 0 takes the
    trait and segment 1 keeps the plain name, still unique."""
    frame = no_hierarchy_frame()
    frame.loc[frame["segment"] == 1, "items_per_order"] = 1.0
    profiles = profile_no_hierarchy(frame)
    assert profiles[0]["name"] == "Active VIP Champions (frequent orders)"
    assert profiles[1]["name"] == "Active VIP Champions"


def test_a_number_only_when_no_trait_tells_namesakes_apart():
    frame = no_hierarchy_frame()
    twin = frame[frame["segment"] == 1].assign(segment=3)
    profiles = profile_no_hierarchy(pd.concat([frame, twin], ignore_index=True))
    names = [p["name"] for p in profiles.values()]
    assert len(set(names)) == len(names)
    assert profiles[0]["name"] == "Active VIP Champions (frequent orders)"
    # 1 and 3 are identical: nothing but a number can tell them apart.
    assert {profiles[1]["name"], profiles[3]["name"]} == {"Active VIP Champions (big baskets)",
                                                          "Active VIP Champions (big baskets) #2"}


def test_a_seasonal_peak_measured_on_the_datas_own_calendar_can_name_a_segment():
    peaks = [{"month": "December", "spend_share": 0.4, "index": 4.8}]
    frame = no_hierarchy_frame()
    labels = frame["segment"].to_numpy()
    traits = profiling.distinguishing_traits(frame, labels, 1, [0, 1], ["orders_per_month"], tiny_hierarchy(),
                                             peaks)
    assert traits == ["December peak"]
    assert profiling.distinguishing_traits(frame, labels, 1, [0, 1], [], tiny_hierarchy(),
                                           [{"month": "May", "spend_share": 0.1, "index": 1.2}]) == []


# --- the stage's large-data paths give what the plain ones give ---------------------------------

def test_class_spend_from_arrow_batches_sums_each_segment_and_skips_unsegmented_customers():
    import pyarrow as pa

    # Customers 1 and 3 in segment 5, 2 in segment 0, 4 unsegmented; a missing value counts 0.
    # Segment 5, Dresses: 10 + 2.5 = 12.5; Tops: 1 + 0 (missing) = 1; Candles: 0 + 4 = 4.
    # Segment 0: Dresses 3, Tops 7, Candles 0. Customer 4's 100s are left out. No Bags column is written.
    frame = pd.DataFrame({"customer_id": [1, 2, 3, 4],
                          "class_spend__ladies_clothing__dresses": [10.0, 3.0, 2.5, 100.0],
                          "class_spend__ladies_clothing__tops": [1.0, 7.0, None, 100.0],
                          "class_spend__home__candles": [0.0, 0.0, 4.0, 100.0]}).astype({"customer_id": "int64"})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    segment_of = pd.Series({1: 5, 2: 0, 3: 5})
    totals = profiling.class_spend_from_batches(table.to_batches(max_chunksize=2), segment_of, tiny_hierarchy())
    assert list(totals.index) == [0, 5]
    assert list(totals.columns) == [("Ladies Clothing", "Dresses"), ("Ladies Clothing", "Tops"), ("Home", "Candles")]
    assert totals.loc[5].tolist() == [12.5, 1.0, 4.0]
    assert totals.loc[0].tolist() == [3.0, 7.0, 0.0]
    assert profiling.class_spend_from_batches(iter(()), segment_of, tiny_hierarchy()) is None


def _wide_and_long(rng, customers: int):
    """A wide table of class spend columns (float32, mostly zero, some missing) and its long form (the non-zero
    rows, as stage 02 writes class_spend_long.parquet), plus a class the hierarchy does not know."""
    import pyarrow as pa

    keys = [("Ladies Clothing", "Dresses"), ("Ladies Clothing", "Tops"), ("Home", "Candles"), ("Accessories", "Bags")]
    names = [f"class_spend__{d.lower().replace(' ', '_')}__{c.lower()}" for d, c in keys]
    # Amounts from a thousandth to a hundred million: their float64 sums round, so the order of the additions shows.
    scale = 10.0 ** rng.integers(-3, 9, (customers, len(keys)))
    spend = np.where(rng.random((customers, len(keys))) < 0.4, rng.normal(30, 40, (customers, len(keys))) * scale, 0.0)
    spend = spend.astype(np.float32)
    ids = np.arange(1, customers + 1) * 3
    wide = pd.DataFrame({"customer_id": ids, **{n: spend[:, i] for i, n in enumerate(names)}})
    row, column = np.nonzero(spend)
    long = pd.DataFrame({"customer_id": ids[row], "department": [keys[c][0] for c in column],
                         "class": [keys[c][1] for c in column], "spend": spend[row, column]})
    long.loc[len(long)] = [ids[-1], "Nowhere", "Nothing", np.float32(5.0)]  # not a class of the hierarchy
    long = long.astype({"customer_id": "int64", "spend": "float32"})
    return pa.Table.from_pandas(wide, preserve_index=False), pa.Table.from_pandas(long, preserve_index=False)


def test_class_spend_from_the_long_file_is_the_wide_sum_bit_for_bit():
    """Non-round float32 amounts, batches of the wide file and of the long file that end anywhere, a customer
    not segmented and one not in the profile: the same float64 sums as the wide columns' (the order of the
    additions is the wide sum's)."""
    rng = np.random.default_rng(11)
    wide, long = _wide_and_long(rng, 1_000)
    ids = wide.column("customer_id").to_numpy()
    segment_of = pd.Series(rng.integers(0, 4, len(ids) - 10), index=ids[10:])  # the first 10 not segmented
    expected = profiling.class_spend_from_batches(wide.to_batches(max_chunksize=300), segment_of, tiny_hierarchy())
    got = profiling.class_spend_from_long(
        long.to_batches(max_chunksize=257), (b.column("customer_id").to_numpy() for b in wide.to_batches(300)),
        segment_of, tiny_hierarchy(), wide.schema.names)
    assert got.index.equals(expected.index) and got.columns.equals(expected.columns)
    assert np.array_equal(got.to_numpy(), expected.to_numpy())  # bit for bit, not approximately
    # Summed as one batch the sums differ in their last bits: the wide file's batches are what is followed.
    unbatched = profiling.class_spend_from_long(long.to_batches(), [ids], segment_of, tiny_hierarchy(),
                                                wide.schema.names)
    assert np.allclose(unbatched.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert not np.array_equal(unbatched.to_numpy(), expected.to_numpy())


def test_class_spend_from_the_long_file_refuses_another_order():
    rng = np.random.default_rng(12)
    wide, long = _wide_and_long(rng, 50)
    ids = wide.column("customer_id").to_numpy()
    shuffled = long.take(np.random.default_rng(1).permutation(long.num_rows))
    with pytest.raises(profiling.NotInWideOrder, match="not in the order"):
        profiling.class_spend_from_long(shuffled.to_batches(), [ids], pd.Series(0, index=ids), tiny_hierarchy(),
                                        wide.schema.names)


def test_stage_05_waits_for_the_spend_totals_the_next_best_thread_sets_on_its_way():
    """The spend by month and attribute comes from the next-best classes' read of the order lines: the stage
    gets it while the thread goes on; the thread's error when it ends without setting it; the read's error
    when it failed."""
    import concurrent.futures
    import threading

    from core.profile_export.stage import _Background

    handed, go_on = concurrent.futures.Future(), threading.Event()

    def fit(future):
        future.set_result("spend")
        go_on.wait(10)
        return "fitted"

    background = _Background(fit, handed)
    assert background.wait_for(handed) == "spend"  # before the thread ends
    go_on.set()
    assert background.result() == "fitted"
    never = concurrent.futures.Future()
    with pytest.raises(ZeroDivisionError):
        _Background(lambda: 1 / 0).wait_for(never)
    failed = concurrent.futures.Future()
    failed.set_exception(OSError("the order lines could not be read"))
    with pytest.raises(OSError, match="could not be read"):
        _Background(lambda: None).wait_for(failed)


def test_the_heap_keeps_freed_memory_on_linux_and_nothing_changes_elsewhere(monkeypatch):
    import sys

    import pyarrow as pa

    from core.framework import memory

    monkeypatch.setattr(sys, "platform", "win32")
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "linux")
    if memory.keep_freed_memory():  # glibc: Arrow's buffers come from the same heap, NumPy asks for no huge pages
        assert pa.default_memory_pool().backend_name == "system"
        switch = np._core.multiarray._set_madvise_hugepage
        assert switch(False) is False  # returns the setting before: already off


AWKWARD_IDENTIFIERS = pd.DataFrame({
    "customer_id": range(9),
    "first_name": ["Jean", "Hope", None, "Ann", "Zé", "x", "Y", "Bo", "Al"],
    "last_name": ["Cook", "Pet", "X", "Lee  ", "Ça", "y", "Q  R", "Li", "Mo"],
    "email": ["  A.B@X.COM ", "Straße 12 x", "(Flat 2,  Patel  Underpass).", "a\tb  cdef", "x\x1fy zzzz", None,
              "ÉCOLE 12", "..( ab cd )", "AB CD\x7f"],
    "phone": [1234567, None, 7, 8, 9, 10, 11, 12, 13],
})


@pytest.mark.parametrize("as_arrow", [False, True])
def test_identifiers_matched_in_arrow_are_exactly_those_of_the_python_normalisation(as_arrow):
    """Tabs, double spaces, control characters, non-ASCII case folding (ß -> ss), edge punctuation, numbers."""
    import pyarrow as pa

    everything = profiling.identifier_values(AWKWARD_IDENTIFIERS)
    assert {"a.b@x.com", "strasse 12 x", "flat 2, patel underpass", "a b cdef", "x y zzzz", "zé ça", "y q r",
            " ab cd ", "1234567.0", "jean cook"} <= everything
    table = pa.Table.from_pandas(AWKWARD_IDENTIFIERS, preserve_index=False) if as_arrow else AWKWARD_IDENTIFIERS
    assert profiling.known_identifiers(table, everything | {"not anyone"}) == everything
    some = {"strasse 12 x", " ab cd ", "jean cook", "1234567.0", "hope"}
    assert profiling.known_identifiers(table, some) == some - {"hope"}
    numbered = AWKWARD_IDENTIFIERS.assign(first_name=range(9))  # not text: the Python route
    assert profiling.known_identifiers(numbered, profiling.identifier_values(numbered)) == \
        profiling.identifier_values(numbered)


def test_identifiers_normalised_once_match_every_documents_phrases_as_a_fresh_check_does():
    """Stage 05 normalises customers.parquet's identifiers once (while the next-best classes are fitted) and checks
    each export against them: the same leaks as reading the tables for each document."""
    import pyarrow as pa

    tables = [AWKWARD_IDENTIFIERS.iloc[:4], pa.Table.from_pandas(AWKWARD_IDENTIFIERS.iloc[4:], preserve_index=False),
              AWKWARD_IDENTIFIERS.assign(first_name=range(9)).iloc[2:5]]
    once = profiling.NormalisedIdentifiers(tables)
    everything = set().union(*(profiling.identifier_values(t if isinstance(t, pd.DataFrame) else t.to_pandas())
                               for t in tables))
    assert once.matches(everything | {"not anyone"}) == everything
    assert once.matches({"jean cook", "hope", "zé ça"}) == {"jean cook", "zé ça"}
    assert once.matches(set()) == set()
    documents = [{"segments": [{"name": "Jean Cook", "note": "write to a.b@x.com or Zé Ça"}]},
                 {"segments": [{"name": "Pet lovers", "demographics": {"region": {"Straße 12 x": 0.1}}}]},
                 {"segments": [{"name": "Plain", "note": "nobody here"}]}]
    for document in documents:
        fresh = profiling.leaked_identifiers(document, tables)
        assert profiling.leaked_identifiers(document, [once]) == fresh
    assert sorted(leak.text for leak in profiling.leaked_identifiers(documents[0], [once])) == [
        "Jean Cook", "Zé Ça", "a.b@x.com"]
    assert profiling.leaked_identifiers(documents[2], [once]) == []


def test_explanations_from_segment_moments_match_the_direct_computation():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5, 2, 300), "b": rng.exponential(3, 300), "c": np.full(300, 0.1)})
    labels = rng.integers(0, 4, 300)
    moments = profiling.SegmentMoments.of(frame, labels, ["a", "b", "c"])
    for segment in range(4):
        inside, outside = frame[labels == segment], frame[labels != segment]
        for column in "abc":
            pooled = np.sqrt((inside[column].var(ddof=0) + outside[column].var(ddof=0)) / 2)
            expected = (inside[column].mean() - outside[column].mean()) / pooled if pooled > 1e-12 else 0.0
            got = profiling._smd_of(moments.pooled([segment]), moments.pooled(moments.everyone_but(segment)))
            assert got["abc".index(column)] == pytest.approx(expected, abs=1e-9)
        entries = profiling.explain_from_moments(moments, segment, 3, tiny_hierarchy())["features"]
        assert sorted(e["feature"] for e in entries) == ["a", "b"]  # c is constant: it sets nobody apart
        assert entries[0]["population_mean"] == round(frame[entries[0]["feature"]].mean(), 4)


def test_stage_05s_next_best_thread_hands_back_its_value_or_raises_its_error_in_the_stage():
    """The next-best classes run in a thread beside the profiles: their result, or their exception, reaches the
    stage's own thread; leaving the block by the stage's own error waits for the thread first."""
    from core.profile_export.stage import _Background

    assert _Background(sum, [1, 2]).result() == 3
    with pytest.raises(ZeroDivisionError):
        _Background(lambda: 1 / 0).result()
    finished = []
    with pytest.raises(KeyError):
        with _Background(lambda: finished.append(sum(range(10 ** 6)))):
            raise KeyError("the stage's own error")
    assert finished == [sum(range(10 ** 6))]
    # A function that watches ``stop`` is told to give up when the block ends by an error.
    import threading
    import time

    stop, seen = threading.Event(), []

    def watch(stop):
        for _ in range(1000):  # at most 10 s, were it never told
            if stop.is_set():
                seen.append("stopped")
                raise RuntimeError("gave up")
            time.sleep(0.01)

    with pytest.raises(KeyError):
        with _Background(watch, stop, stop=stop):
            raise KeyError("the stage's own error")
    assert seen == ["stopped"]


def test_customers_with_segments_names_are_the_text_a_python_string_per_row_gives():
    """Segment and runner-up names are taken in Arrow from the few names: the same column, dtype and missing
    values as mapping each row's label to a Python string (a label without a name: missing for the segment,
    empty for the runner-up)."""
    names = {-1: "Unassigned", 0: "Loyal families", 2: "Bargain hunters"}
    labels = np.array([0, 2, -1, 5, 0, 2])
    runner_up = np.array([2, 0, 0, 2, 7, -1])
    assignments = pd.DataFrame({"customer_id": np.arange(6) + 10, "segment": labels,
                                "segment_strength": np.linspace(0, 1, 6), "segment_runner_up": runner_up})
    table = profiling.customers_with_segments(assignments, names)
    expected_names = pd.Series(labels).map(names).astype("str")
    expected_runner_up = pd.Series(runner_up).map(names).fillna("").astype("str")
    pd.testing.assert_series_equal(table["segment_name"], expected_names, check_names=False)
    pd.testing.assert_series_equal(table["runner_up_segment_name"], expected_runner_up, check_names=False)
    assert table["segment_name"].isna().tolist() == [False, False, False, True, False, False]
    assert table["runner_up_segment_name"].tolist() == ["Bargain hunters", "Loyal families", "Loyal families",
                                                        "Bargain hunters", "", "Unassigned"]
    assert profiling.customers_with_segments(assignments, {})["segment_name"].isna().all()
