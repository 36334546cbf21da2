"""BG/NBD and Gamma-Gamma against their published CDNOW fits, and the RFM summary they read.

The reference data are the CDNOW 1/10 sample shipped with ``lifetimes`` 0.11.3
(tests/data/cdnow/README.md). Published values: Fader, Hardie & Lee (2005a),
BG/NBD r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 and E[Y(39) | x=2,
t_x=30.43, T=38.86] = 1.226; Fader, Hardie & Lee (2005b), Gamma-Gamma
p = 6.25, q = 3.74, v = 15.44 (15.45 in the ``lifetimes`` docs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import OptimizeResult
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from core.prepare_features import customer_value
from core.prepare_features.customer_value import BetaGeoModel, GammaGammaModel, rfm_summary

CDNOW = Path(__file__).parent / "data" / "cdnow"
CALIBRATION_END = pd.Timestamp("1997-09-30")  # end of week 39: T = 272 days = 38.86 weeks for 1 Jan buyers
HOLDOUT_WEEKS = 39


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return pd.read_csv(CDNOW / "cdnow_customers_summary.csv", index_col="ID")


@pytest.fixture(scope="module")
def summary_with_value() -> pd.DataFrame:
    return pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv", index_col="ID")


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    raw = pd.read_csv(CDNOW / "CDNOW_sample.txt", sep=r"\s+", header=None, dtype={2: str},
                      names=["master_id", "customer_id", "date", "n_cds", "order_value"])
    return raw.assign(order_date=pd.to_datetime(raw["date"], format="%Y%m%d"))


@pytest.fixture(scope="module")
def calibration(transactions) -> pd.DataFrame:
    return rfm_summary(transactions, CALIBRATION_END, time_unit_days=7.0)


@pytest.fixture(scope="module")
def bgnbd(summary) -> BetaGeoModel:
    return BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])


def test_reference_files_are_the_published_sample(summary, summary_with_value, transactions):
    assert len(summary) == len(summary_with_value) == 2357
    assert transactions["customer_id"].nunique() == 2357
    assert (summary_with_value["x"] > 0).sum() == 946
    assert summary["frequency"].sum() == 2457


def test_bgnbd_reproduces_published_fit(bgnbd):
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert bgnbd.converged_ and bgnbd.n_customers_ == 2357
    assert bgnbd.params_ == pytest.approx(published, rel=0.02)


def test_bgnbd_conditional_expectation_matches_paper_example(bgnbd):
    # The paper's worked example, also checked by lifetimes against Hardie's spreadsheet.
    assert bgnbd.expected_orders(39, 2, 30.43, 38.86)[0] == pytest.approx(1.226, abs=1e-3)


def test_gamma_gamma_reproduces_published_fit(summary_with_value):
    repeat = summary_with_value[summary_with_value["x"] > 0]
    model = GammaGammaModel().fit(repeat["x"], repeat["zbar"])
    assert model.converged_ and model.n_customers_ == 946
    assert model.params_ == pytest.approx({"p": 6.25, "q": 3.74, "v": 15.45}, rel=0.02)


def test_rfm_summary_on_hand_worked_orders():
    day = pd.Timestamp("2024-01-01")
    orders = pd.DataFrame([
        ("a", 0, 10.0), ("a", 10, 20.0), ("a", 10.9, 5.0),  # same day, late hour: one purchase of 25
        ("a", 30, 40.0), ("a", 45, 1000.0),  # day 45 is after the analysis day: ignored
        ("b", 5, 7.0), ("b", 5, 3.0),
        ("c", 41, 99.0),  # only orders after the analysis day: not a customer yet
    ], columns=["customer_id", "days", "order_value"])
    orders["order_date"] = day + pd.to_timedelta(orders.pop("days"), unit="D")
    result = rfm_summary(orders, day + pd.Timedelta(days=40))
    expected = pd.DataFrame({"frequency": [2, 0], "recency": [30.0, 0.0], "T": [40.0, 35.0],
                             "monetary_value": [(25.0 + 40.0) / 2, 0.0]},
                            index=pd.Index(["a", "b"], name="customer_id"))
    pd.testing.assert_frame_equal(result, expected)
    weekly = rfm_summary(orders, day + pd.Timedelta(days=40), time_unit_days=7.0)
    np.testing.assert_allclose(weekly[["recency", "T"]].to_numpy(), [[30 / 7, 40 / 7], [0.0, 5.0]])


def test_rfm_summary_reproduces_cdnow_calibration_summary(calibration, summary, summary_with_value):
    assert calibration.index.tolist() == summary.index.tolist()
    np.testing.assert_array_equal(calibration["frequency"].to_numpy(), summary["frequency"].to_numpy())
    # The published files round weeks and dollars to 2 decimals.
    for column, published in (("recency", summary["recency"]), ("T", summary["T"]),
                              ("monetary_value", summary_with_value["zbar"])):
        np.testing.assert_allclose(calibration[column].to_numpy(), published.to_numpy(), rtol=0, atol=0.005 + 1e-9)


def test_p_alive_and_expected_orders_behave_as_the_model_implies(bgnbd):
    assert bgnbd.p_alive([0, 0], [0, 0], [1, 50]) == pytest.approx([1.0, 1.0])
    alive = bgnbd.p_alive([3] * 4, [10] * 4, [10, 20, 40, 80])
    assert alive[0] == pytest.approx(1 / (1 + 0.793 / (2.426 + 2)), rel=0.01)  # no silence yet: prior odds only
    assert np.all(np.diff(alive) < 0)
    orders = bgnbd.expected_orders([1, 10, 39, 100], [2] * 4, [30.43] * 4, [38.86] * 4)
    assert orders[0] > 0 and np.all(np.diff(orders) > 0)


def test_expected_orders_stays_finite_for_heavy_buyers(bgnbd):
    # From x of a few thousand hyp2f1's direct series overflows and the Euler form takes over.
    x = np.array([50.0, 1_000.0, 5_000.0, 100_000.0])
    r, alpha = bgnbd.params_["r"], bgnbd.params_["alpha"]
    orders = bgnbd.expected_orders(39, x, [38.86] * 4, [38.86] * 4)
    # Bought on the last day, so alive and rate ~ Gamma(r + x, alpha + T): dropout only lowers 39 * E[rate].
    share = orders / (39 * (r + x) / (alpha + 38.86))
    assert np.all(np.isfinite(orders)) and np.all(np.diff(orders) > 0)
    assert np.all((share > 0.7) & (share < 1)) and np.ptp(share[1:]) < 0.01


def test_predicting_before_fit_raises():
    with pytest.raises(NotFittedError):
        BetaGeoModel().p_alive([1], [1], [2])
    with pytest.raises(NotFittedError):
        BetaGeoModel().expected_orders(1, [1], [1], [2])
    with pytest.raises(NotFittedError):
        GammaGammaModel().expected_order_value([1], [10.0])


@pytest.mark.parametrize("frequency, value, named", [
    ([1, 2, 3], [10.0, 0.0, 5.0], "monetary_value"),
    ([1, 2, 3], [10.0, -4.0, 5.0], "monetary_value"),
    ([0, 2, 3], [10.0, 4.0, 5.0], "frequency"),
])
def test_gamma_gamma_rejects_non_positive_values(frequency, value, named):
    with pytest.raises(ValueError, match=f"positive {named}: 1 value"):
        GammaGammaModel().fit(frequency, value)


def test_gamma_gamma_needs_two_customers():
    with pytest.raises(ValueError, match="at least 2"):
        GammaGammaModel().fit([2], [10.0])


def test_gamma_gamma_expected_value_shrinks_towards_population_mean(summary_with_value):
    repeat = summary_with_value[summary_with_value["x"] > 0]
    model = GammaGammaModel().fit(repeat["x"], repeat["zbar"])
    p, q, v = model.params_.values()
    assert model.population_mean_ == pytest.approx(v * p / (q - 1))
    value = model.expected_order_value([0, 1, 5, 1000], [0.0, 100.0, 100.0, 100.0])
    assert value[0] == model.population_mean_
    assert model.population_mean_ < value[1] < value[2] < value[3] < 100.0
    assert value[3] == pytest.approx(100.0, rel=0.01)


def test_bgnbd_fit_reports_failure_instead_of_nan(monkeypatch, summary):
    args = (summary["frequency"], summary["recency"], summary["T"])

    def stalled(*_, **__):
        return OptimizeResult(x=np.zeros(4), fun=1.0, success=False, message="stalled")

    monkeypatch.setattr(customer_value, "minimize", stalled)
    with pytest.warns(ConvergenceWarning, match="stalled"):
        assert BetaGeoModel().fit(*args).converged_ is False

    def diverged(*_, **__):
        return OptimizeResult(x=np.array([0.0, np.nan, 0.0, 0.0]), fun=np.nan, success=False, message="nan")

    monkeypatch.setattr(customer_value, "minimize", diverged)
    with pytest.raises(ValueError, match="non-finite"):
        BetaGeoModel().fit(*args)


def holdout_relative_error(transactions, calibration) -> float:
    """Relative error of the summed 39-week predictions against the actual holdout repeat purchase days."""
    model = BetaGeoModel().fit(calibration["frequency"], calibration["recency"], calibration["T"])
    predicted = model.expected_orders(HOLDOUT_WEEKS, calibration["frequency"], calibration["recency"],
                                      calibration["T"]).sum()
    end = CALIBRATION_END + pd.Timedelta(weeks=HOLDOUT_WEEKS)  # 1998-06-30, the last day of the data
    days = transactions.drop_duplicates(["customer_id", "order_date"])["order_date"]
    actual = int(((days > CALIBRATION_END) & (days <= end)).sum())
    assert actual == 1882
    return predicted / actual - 1


def test_cdnow_holdout_aggregate_as_measured(transactions, calibration):
    # Measured: 1,653.4 predicted vs 1,882 actual repeat purchase days, -12.1 %. The formula itself is
    # checked against the paper above; BG/NBD under-forecasts this holdout at the aggregate level.
    assert holdout_relative_error(transactions, calibration) == pytest.approx(-0.1215, abs=0.005)


@pytest.mark.xfail(strict=True, reason="issue target of 10 % not met: measured -12.1 % on the CDNOW holdout")
def test_cdnow_holdout_aggregate_within_issue_target(transactions, calibration):
    assert abs(holdout_relative_error(transactions, calibration)) <= 0.10
