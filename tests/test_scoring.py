"""The scoring chain on tiny data, without a network: stage 02's feature model, then a clustering model.

The end-to-end score command (saved files, the autoencoder, every stage-04
model) is tested in tests/test_pipeline.py; here the chain's own guarantees
are checked in a second: the training customers get their training segments,
whichever way they are handed over, and the customers stage 02 left out are
reported with stage 02's reasons.

The lines are the hand-worked customers of tests/test_features.py, copied
under several ids with their amounts scaled, so a clustering model has
enough customers to fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from test_features import ANALYSIS_DATE, tiny_customers, tiny_hierarchy, tiny_transactions
from core.cluster.clustering import KMeansClusterer
from core.framework.errors import PipelineError
from core.prepare_features.eligibility import BASIC_ELIGIBILITY
from core.prepare_features.prepare import prepare_features
from core.scoring import ScoringChain, score_customers

MODEL_FEATURES = ["orders_per_month", "average_order_value", "dept_share__*", "channel_share__*", "class_mix_*"]


def many_customers() -> pd.DataFrame:
    """Customers 1 to 7 of the tiny lines, and four copies of them (ids + 100, + 200, ...) spending more."""
    lines = tiny_transactions()
    copies = [lines.assign(customer_id=lines["customer_id"] + 100 * k, line_amount=lines["line_amount"] * (1 + k),
                           order_id=lines["order_id"] + 1000 * k) for k in range(1, 5)]
    return pd.concat([lines, *copies], ignore_index=True)


@pytest.fixture(scope="module")
def trained():
    """Stage 02 on the lines, then k-means on its model matrix: the chain and what training produced."""
    eligibility = dataclasses.replace(BASIC_ELIGIBILITY, min_tenure_days=30)
    prepared = prepare_features(many_customers(), None, tiny_hierarchy(), MODEL_FEATURES, ["average_order_value"],
                                ANALYSIS_DATE, eligibility=eligibility, class_mix_components=2)
    matrix = prepared.model_matrix.drop(columns="customer_id").to_numpy(np.float64)
    kmeans = KMeansClusterer(n_clusters=2, n_init=2, random_state=0).fit(matrix)
    chain = ScoringChain(feature_model=prepared.feature_model, autoencoder=None, models={("kmeans", "raw"): kmeans},
                         primary=("kmeans", "raw"), hierarchy=tiny_hierarchy())
    return prepared, kmeans, chain


def test_the_training_lines_score_to_the_training_segments(trained):
    prepared, kmeans, chain = trained
    scored = score_customers(many_customers(), chain, analysis_date=ANALYSIS_DATE)
    inside = scored[scored["excluded_reason"] == ""]
    assert inside["customer_id"].tolist() == prepared.model_matrix["customer_id"].tolist()
    np.testing.assert_array_equal(inside["segment"].to_numpy(), kmeans.labels_)
    np.testing.assert_array_equal(inside["kmeans_raw_label"].to_numpy(), kmeans.labels_)
    np.testing.assert_allclose(inside["segment_strength"].to_numpy(), kmeans.strength_)


def test_the_customers_stage_02_left_out_are_reported_with_its_reasons_after_the_scored_ones(trained):
    prepared, _, chain = trained
    scored = score_customers(many_customers(), chain, analysis_date=ANALYSIS_DATE)
    left_out = scored[scored["excluded_reason"] != ""]
    expected = prepared.excluded.set_index("customer_id")["reason"]
    assert sorted(left_out["customer_id"]) == sorted(expected.index)
    assert (left_out.set_index("customer_id")["excluded_reason"] == expected.loc[left_out["customer_id"]]).all()
    assert left_out["segment"].isna().all() and str(scored["segment"].dtype) == "Int64"
    assert scored.index[scored["excluded_reason"] != ""].min() > scored.index[scored["excluded_reason"] == ""].max()
    # Customer 2 has features but a tenure of 0 days: the saved rule (min_tenure_days 30) leaves it out.
    assert "min_tenure_days = 30" in left_out.set_index("customer_id").loc[2, "excluded_reason"]


def test_a_features_file_scores_to_the_same_segments_as_the_lines(trained):
    prepared, kmeans, chain = trained
    scored = score_customers(prepared.enriched_department, chain)
    assert (scored["excluded_reason"] == "").all()
    np.testing.assert_array_equal(scored["segment"].to_numpy(), kmeans.labels_)


def test_when_nobody_can_be_scored_the_columns_are_those_of_a_scored_table(trained):
    _, _, chain = trained
    lines = many_customers()
    scored = score_customers(lines, chain, analysis_date=ANALYSIS_DATE)
    later = lines[lines["customer_id"] == 5]  # customer 5 buys only after the analysis date
    nobody = score_customers(later, chain, analysis_date=ANALYSIS_DATE)
    assert list(nobody.columns) == list(scored.columns)
    assert nobody[["customer_id", "excluded_reason"]].values.tolist() == [[5, "first purchase after the analysis date"]]


def test_lines_without_a_column_the_model_needs_are_refused_naming_it(trained):
    _, _, chain = trained
    with pytest.raises(PipelineError, match="new.csv: the model needs channel_share__online.*column channel is absent"):
        score_customers(many_customers().drop(columns="channel"), chain, analysis_date=ANALYSIS_DATE,
                        source="new.csv")


def test_a_column_these_customers_left_null_scores_as_zero_shares_not_a_refusal(trained):
    """Training showed the log carries channel; customers with no channel on any line (a beauty-only shopper's
    lines have no size either) are scored with zero shares, as stage 02 would, and keep their segment."""
    _, _, chain = trained
    lines = many_customers()
    scored = score_customers(lines, chain, analysis_date=ANALYSIS_DATE)
    blank = score_customers(lines.assign(channel=None), chain, analysis_date=ANALYSIS_DATE)
    assert blank["customer_id"].tolist() == scored["customer_id"].tolist()
    assert (blank["excluded_reason"] == scored["excluded_reason"]).all()
    assert blank["segment"].notna().sum() == scored["segment"].notna().sum()


def test_the_profile_of_a_customer_file_is_not_needed_to_score(trained):
    """Stage 02 joined the customer table; scoring from lines alone gives the same model matrix rows."""
    prepared, _, chain = trained
    with_profile = prepare_features(many_customers(), tiny_customers(), tiny_hierarchy(), MODEL_FEATURES,
                                    ["average_order_value"], ANALYSIS_DATE,
                                    eligibility=chain.feature_model.eligibility, class_mix_components=2)
    pd.testing.assert_frame_equal(with_profile.model_matrix, prepared.model_matrix)
