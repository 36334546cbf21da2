"""Segments on a log without a product hierarchy (issue 13, item 2): seasons only where configured.

The synthetic retailer's season windows (holiday, back to school) are not a
retailer's calendar: with ``data.source: file`` they are measured only when
``prepare_features.seasons_for_file_data`` says they are the retailer's own,
so no segment of a real log is explained by a season nobody configured.
Naming on such a log is tested in tests/test_profiling.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from conftest import small_config_document, write_config
from core.config import load_config
from core.prepare_features.aggregate import FeatureSettings
from core.prepare_features.prepare import prepare_features_from_config
from test_features import build, tiny_customers, tiny_hierarchy, tiny_transactions


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    folder = tmp_path_factory.mktemp("config")
    return load_config(write_config(folder, small_config_document())).prepare_features


def test_the_configured_seasons_are_the_synthetic_retailers_unless_a_file_source_claims_them(section):
    assert FeatureSettings.from_config(section, "synthetic").holiday_window == ("11-01", "12-31")
    on_a_file = FeatureSettings.from_config(section, "file")
    assert on_a_file.holiday_window is None and on_a_file.back_to_school_window is None
    claimed = FeatureSettings.from_config(dataclasses.replace(section, seasons_for_file_data=True), "file")
    assert claimed.back_to_school_window == ("07-15", "09-07")
    # A window set to null is never measured, whatever the source.
    no_school = dataclasses.replace(section, back_to_school_window=None)
    assert FeatureSettings.from_config(no_school, "synthetic").back_to_school_window is None


def test_a_season_without_a_window_is_dropped_with_the_reason_and_the_quarters_stay():
    """Customer 6 spends 70: Jan-Mar 12, Jul-Sep 30, Oct-Dec 28 (the quarters need no configuration)."""
    built = build(settings=FeatureSettings(holiday_window=None, back_to_school_window=None))
    assert "holiday_share" not in built.features and "back_to_school_share" not in built.features
    assert "no holiday season configured" in built.dropped["holiday_share"]
    assert "prepare_features.back_to_school_window" in built.dropped["back_to_school_share"]
    features = built.features.set_index("customer_id")
    assert features.loc[6, ["spend_share_q1", "spend_share_q3", "spend_share_q4"]].tolist() == pytest.approx(
        [12 / 70, 30 / 70, 28 / 70])


def test_the_model_matrix_of_a_file_source_never_holds_an_unconfigured_season(section):
    file_matrix = prepare_features_from_config(tiny_transactions(), tiny_customers(), tiny_hierarchy(), section,
                                               "file").feature_model.columns
    synthetic_matrix = prepare_features_from_config(tiny_transactions(), tiny_customers(), tiny_hierarchy(),
                                                    section, "synthetic").feature_model.columns
    assert {"holiday_share", "back_to_school_share"} <= set(synthetic_matrix)
    assert not {"holiday_share", "back_to_school_share"} & set(file_matrix)
    assert set(file_matrix) == set(synthetic_matrix) - {"holiday_share", "back_to_school_share"}
