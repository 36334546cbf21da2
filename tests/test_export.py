"""The agent export: schema validity, privacy (no identifiers, small segments suppressed), smuggling attempts."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from conftest import small_config_document, write_config
from core.profile_export import export
from core.framework import paths
from core.config import load_config
from core.profile_export.profiling import identifier_columns, leaked_identifiers, suppress_small_segments
from core.framework.schema import ConfigError


def full_segment(segment_id=0, size=50, name="Loyal Regulars - Home Shoppers"):
    stats = {"mean": 1.0, "median": 1.0, "q1": 0.5, "q3": 1.5}
    return {
        "segment_id": segment_id, "name": name, "suppressed": False, "description": "Some words.",
        "size": size, "share_of_customers": 0.5, "revenue_share": 0.4, "value_tier": "mid",
        "position": "Loyal Regulars", "recency_days": stats, "orders": stats, "orders_per_month": stats,
        "net_revenue": stats, "average_order_value": stats, "tenure_days": stats, "return_rate": 0.05,
        "lapsed_share": 0.1,
        "customer_value": {"horizon_days": 365, "mean_p_alive": 0.42,
                           "churn_risk_share": {"low": 0.4, "medium": 0.1, "high": 0.5}, "expected_revenue": 1234.5,
                           "note": ""},
        "lifecycle": {"state": "typical", "basis": "mean_p_alive", "segment": 0.42, "population": 0.35,
                      "margin": 0.15},
        "top_departments": [{"department": "Home", "spend_share": 0.6, "lift": 1.4}],
        "top_classes": [{"department": "Home", "class": "Candles", "spend_share": 0.2, "lift": 2.0}],
        "seasonal_peaks": [{"month": "December", "spend_share": 0.2, "index": 1.6}],
        "attribute_mix": {"brand_tier": [{"value": "premium", "spend_share": 0.3, "lift": 1.2}]},
        "demographics": {"gender": {"Female": 0.7, "Male": 0.3}, "has_children": {"share_true": 0.4}},
        "strategy": {"rule": "r", "channel": ["email"], "offer": "o", "tone": "t", "timing": "w",
                     "cross_sell": ["Home"], "retention_actions": []},
        "explanation": {"summary": "s", "features": [{"feature": "net_revenue", "label": "net spend",
                                                      "segment_mean": 2.0, "population_mean": 1.0, "smd": 0.8}]},
    }


def document(segments):
    return export.build_export(segments, run_id="0123456789abcdef", config_hash="a" * 64, method="gmm",
                               space="latent", primary=True, customers=70, first_order="2023-01-01",
                               last_order="2023-12-31", generated_at="2026-11-21T12:00:00+00:00",
                               currency="£", min_segment_size=20)


def test_a_complete_export_validates():
    segments = suppress_small_segments([full_segment(0, 50), full_segment(1, 5, "Tiny")], min_segment_size=20)
    assert export.schema_errors(document(segments)) == []


@pytest.mark.parametrize("breakage, where", [
    (lambda d: d["segments"][0].pop("strategy"), "segments/0"),
    (lambda d: d["segments"][0].update(share_of_customers=1.5), "segments/0"),
    (lambda d: d["metadata"].update(run_id="not hex"), "metadata/run_id"),
    (lambda d: d["segments"][0].update(customer_rows=[{"customer_id": 1}]), "segments/0"),
    (lambda d: d["segments"][0]["demographics"].update(email={"a@b.c": 1.0}), "segments/0"),
    (lambda d: d["segments"][0]["customer_value"]["churn_risk_share"].update(high=1.2), "segments/0"),
    (lambda d: d["segments"][0]["lifecycle"].update(state="lapsed"), "segments/0"),
])
def test_a_broken_export_fails_its_schema(breakage, where):
    broken = document([full_segment()])
    breakage(broken)
    problems = export.schema_errors(broken)
    assert problems and any(p.startswith(where) for p in problems)


def test_customer_value_not_estimated_is_null_with_its_note():
    segment = full_segment()
    segment["customer_value"] = {"horizon_days": 365, "mean_p_alive": None, "churn_risk_share": None,
                                 "expected_revenue": None, "note": "not estimated: too few repeat buyers"}
    segment["lifecycle"].update(basis="lapsed_share", segment=0.1, population=0.6, state="active")
    assert export.schema_errors(document([segment])) == []


def test_small_segments_keep_only_their_size():
    out = suppress_small_segments([full_segment(0, 19), full_segment(1, 20)], min_segment_size=20)
    # Even the rule-based name would describe a handful of customers: it becomes neutral.
    assert out[0] == {"segment_id": 0, "name": "Small segment 0", "suppressed": True, "size": 19,
                      "share_of_customers": 0.5, "reason": out[0]["reason"]}
    assert "Fewer than 20 customers" in out[0]["reason"]
    assert out[1]["suppressed"] is False and out[1]["description"]


@pytest.mark.parametrize("column", ["email", "Email_Address", "first_name", "phone_number", "postcode",
                                    "street", "customer_id", "mobile"])
def test_identifier_columns_are_recognised(column):
    assert identifier_columns([column, "age"]) == [column]


@pytest.mark.parametrize("smuggled", ["email", "last_name", "home_address", "phone"])
def test_smuggling_an_identifier_through_config_is_refused(tmp_path, smuggled):
    config = small_config_document()
    config["profile_export"]["describe_columns"] = ["age", smuggled]
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"key 'profile_export.describe_columns': {smuggled} look\(s\) like "
                                          r"direct identifiers"):
        load_config(path)


def test_an_identifier_value_in_an_export_is_found_with_where_it_is():
    customers = pd.DataFrame({"customer_id": [1, 2], "email": ["ann@example.com", "bob@example.com"],
                              "street_address": ["3 Shane Street", "Flat 2, Patel Underpass"], "age": [30, 40]})
    clean = document([full_segment()])
    assert leaked_identifiers(clean, [customers]) == []
    dirty = copy.deepcopy(clean)
    dirty["segments"][0]["demographics"]["region"] = {"Flat 2, Patel Underpass": 0.6, "other": 0.4}
    dirty["segments"][0]["description"] = "Mostly from flat 2, patel underpass."
    assert [(leak.path, leak.text) for leak in leaked_identifiers(dirty, [customers])] == [
        (("segments", 0, "description"), "flat 2, patel underpass"),
        (("segments", 0, "demographics", "region", "Flat 2, Patel Underpass"), "Flat 2, Patel Underpass")]


def test_the_shipped_schema_is_itself_valid():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(json.loads(paths.SEGMENT_PROFILES_SCHEMA.read_text(encoding="utf-8")))
