"""Stage 02's customer value: orders from the lines, the fit and its fallback, the holdout check, the saved model.

Issue 14. The models themselves (MBG/NBD, Gamma-Gamma, ``rfm_summary``) are
in :mod:`core.prepare_features.customer_value`; this module puts them to
work on the pipeline's order lines:

- :func:`order_values`: one row per purchase order with its net merchandise
  value (DuckDB over the Parquet file, so memory does not grow with the
  lines), the same values as
  :func:`~core.prepare_features.customer_value.aggregate_orders`;
- :func:`estimate_values`: ``p_alive``, ``expected_orders``,
  ``expected_revenue`` and ``churn_risk`` for every customer with a purchase,
  segmented or not; when the fit is impossible (too few repeat buyers, a
  degenerate fit, the section disabled) the same rows with the columns null
  and the reason, never a crash;
- :func:`model_document` and :func:`predict_values`: the fitted parameters as
  plain JSON (``customer_value_model.json``, not a pickle), and the
  prediction rebuilt from them, for the score command;
- :func:`evaluate_holdout`: the temporal holdout check behind the report's
  calibration chart (``customer_value_evaluation.json``).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from core.domain.columns import ID_COLUMN, UNKNOWN
from core.domain.hierarchy import Hierarchy
from core.framework import progress
from core.prepare_features.aggregate import register_source
from core.prepare_features.customer_value import (BetaGeoModel, GammaGammaModel, MonthIndex, assign_churn_risk,
                                                  estimate_customer_value, purchase_clock, rfm_summary)
from core.prepare_features.settings import CustomerValueConfig

#: The per-customer columns, with these names wherever they appear (stage 05, the score command).
VALUE_COLUMNS = ("p_alive", "expected_orders", "expected_revenue", "churn_risk")
#: ``customer_value.parquet``'s columns.
TABLE_COLUMNS = (ID_COLUMN, *VALUE_COLUMNS, "segmented")
#: Order-line columns read (``original_order_id`` may be absent: returns then cannot be placed on an order).
LINE_COLUMNS = ("customer_id", "order_id", "order_date", "department", "line_amount", "is_return",
                "original_order_id")
# The holdout check refits with the analysis date moved back by the horizon; under 90 days of history
# before that cut, most customers would be a few weeks old and the fit says little about the full model.
MIN_CALIBRATION_DAYS = 90
MODEL_FORMAT = 1


def non_merchandise_departments(hierarchy: Hierarchy) -> list[str]:
    """Departments whose lines are never customer spend (bag levy, gift cards, ...), as stage 02's features."""
    return sorted(name for name, d in hierarchy.departments.items() if d.kind != "merchandise" and name != UNKNOWN)


# ---------------------------------------------------------------------------
# Orders from the lines


def order_values(lines, non_merchandise: Iterable[str], analysis_date, cut=None,
                 engine_memory_mb: int = 2048) -> pd.DataFrame:
    """One row per purchase order up to ``analysis_date`` with its net merchandise value.

    What :func:`~core.prepare_features.customer_value.aggregate_orders` computes
    (its docstring says which lines count and how returns are placed), by
    DuckDB: the file is scanned, never loaded whole.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        Order lines with :data:`LINE_COLUMNS` (``original_order_id`` optional).
    non_merchandise : iterable of str
        Departments whose lines are dropped (:func:`non_merchandise_departments`).
    analysis_date : datetime-like
        Last day of lines read; later purchases and returns are ignored.
    cut : datetime-like, optional
        An earlier day: ``value_at_cut`` then nets only the returns made by
        it, which is what an order looked like on that day (the holdout check).

    Returns
    -------
    DataFrame
        Sorted by ``customer_id``, ``order_date``, ``order_id``:
        ``customer_id``, ``order_id``, ``order_date``, ``gross_value``,
        ``returned_value`` and ``order_value`` (gross minus returned by
        ``analysis_date``), and with ``cut`` also ``value_at_cut``. ``attrs``
        holds ``unlinked_return_lines`` and ``unlinked_return_value``.
    """
    import duckdb

    end = pd.Timestamp(analysis_date).normalize()
    cut_day = pd.Timestamp(cut).normalize() if cut is not None else end
    with tempfile.TemporaryDirectory(prefix="value-spill-") as spill:
        con = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": spill,
                                     "memory_limit": f"{engine_memory_mb}MB"})
        try:
            columns = register_source(con, lines)
            missing = [c for c in LINE_COLUMNS if c not in columns and c != "original_order_id"]
            if missing:
                raise ValueError(f"the order lines lack column(s) {', '.join(missing)}")
            con.register("non_merchandise", pd.DataFrame({"name": pd.Series(sorted(non_merchandise), dtype=object)}))
            original = "original_order_id" if "original_order_id" in columns else "CAST(NULL AS BIGINT)"
            # Whole cents, as aggregate_orders sums them: exact totals whatever order the engine adds in. One
            # grouped scan keyed by the order a line belongs to (a return: the order it returns); a temporary
            # table of the kept lines spilled to disk at a million customers and cost most of this step.
            con.execute(f"""
                CREATE TEMP TABLE by_order AS
                SELECT CASE WHEN is_return THEN {original} ELSE order_id END AS order_id,
                       min(customer_id) FILTER (WHERE NOT is_return) AS customer_id,
                       min(order_date) FILTER (WHERE NOT is_return) AS order_date,
                       count(*) FILTER (WHERE NOT is_return) AS purchase_lines,
                       coalesce(sum(cents) FILTER (WHERE NOT is_return), 0) AS gross,
                       count(*) FILTER (WHERE is_return) AS return_lines,
                       -coalesce(sum(cents) FILTER (WHERE is_return), 0) AS returned,
                       -coalesce(sum(cents) FILTER (WHERE is_return AND day <= DATE '{cut_day.date()}'), 0)
                           AS returned_at_cut
                FROM (SELECT customer_id, order_id, order_date, is_return, {original},
                             CAST(order_date AS DATE) AS day, CAST(round(line_amount * 100) AS BIGINT) AS cents
                      FROM src
                      WHERE CAST(order_date AS DATE) <= DATE '{end.date()}'
                        AND coalesce(department NOT IN (SELECT name FROM non_merchandise), true))
                GROUP BY 1""")
            # As arrays, not a DataFrame: the frame below is the only copy (40 M orders at a million customers).
            orders = con.execute("""
                SELECT customer_id, order_id, order_date, gross, returned, returned_at_cut FROM by_order
                WHERE purchase_lines > 0 ORDER BY customer_id, order_date, order_id""").fetchnumpy()
            # Returns of no purchase order kept here (no original order id, or one not among the purchases).
            unlinked = con.execute("""
                SELECT coalesce(sum(return_lines), 0), coalesce(sum(returned), 0) FROM by_order
                WHERE purchase_lines = 0""").fetchone()
        finally:
            con.close()
    # A purchase order always has a customer and a date, and the sums are coalesced: no nulls to fill.
    gross = np.asarray(orders.pop("gross")).astype(np.int64)
    returned = np.asarray(orders.pop("returned")).astype(np.int64)
    result = pd.DataFrame({
        "customer_id": np.asarray(orders.pop("customer_id")),
        "order_id": np.asarray(orders.pop("order_id")),
        "order_date": np.asarray(orders.pop("order_date")).astype("datetime64[ns]"),
        "gross_value": gross / 100,
        "returned_value": returned / 100,
        "order_value": (gross - returned) / 100,
    })
    if cut is not None:
        result["value_at_cut"] = (gross - np.asarray(orders.pop("returned_at_cut")).astype(np.int64)) / 100
    result.attrs.update(unlinked_return_lines=int(unlinked[0]), unlinked_return_value=float(unlinked[1]) / 100)
    return result


# ---------------------------------------------------------------------------
# The estimates, or the documented fallback


@dataclasses.dataclass(frozen=True)
class ValueEstimates:
    """What :func:`estimate_values` returns.

    Attributes
    ----------
    table : DataFrame
        ``customer_value.parquet``: :data:`TABLE_COLUMNS`, one row per
        customer with a purchase order by the analysis date, sorted by id;
        the value columns null when :attr:`reason` is set.
    model : dict
        ``customer_value_model.json`` (:func:`model_document`).
    reason : str or None
        Why nothing was estimated (None when estimated).
    warnings : list of str
        Warnings raised by the fit (a fit that stopped early is kept).
    """

    table: pd.DataFrame
    model: dict[str, Any]
    reason: str | None
    warnings: list[str]


def estimate_values(orders: pd.DataFrame, analysis_date, cfg: CustomerValueConfig, segmented: Iterable[int],
                    non_merchandise: Iterable[str] = ()) -> ValueEstimates:
    """Each customer's ``p_alive``, expected orders and revenue over the horizon, and churn risk.

    Fallback
        With ``cfg.enabled`` false, no order, or a fit
        :func:`~core.prepare_features.customer_value.estimate_customer_value`
        refuses (fewer than ``cfg.min_repeat_buyers`` repeat buyers, a fit
        ending on non-finite parameters), every customer keeps their row with
        the four value columns null, and :attr:`ValueEstimates.reason` says
        why. A fit that stops early with finite parameters is kept and its
        warning returned.

    Parameters
    ----------
    orders : DataFrame
        :func:`order_values` (``customer_id``, ``order_date``, ``order_value``).
    analysis_date : datetime-like
    cfg : CustomerValueConfig
    segmented : iterable of int
        Ids of the customers stage 02 segments; the others get ``segmented`` False.
    non_merchandise : iterable of str
        Saved in the model document, so scoring counts the same lines.

    Returns
    -------
    ValueEstimates
    """
    end = pd.Timestamp(analysis_date).normalize()
    ids = np.unique(orders[ID_COLUMN].to_numpy(np.int64))
    reason, result, caught = None, None, []
    if not cfg.enabled:
        reason = "customer_value.enabled is false"
    elif orders.empty:
        reason = f"no merchandise purchase order on or before the analysis date {end.date()}"
    else:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                result = estimate_customer_value(orders, end, cfg.horizon_days, tuple(cfg.churn_risk_thresholds),
                                                 min_repeat_buyers=cfg.min_repeat_buyers,
                                                 seasonal_index=cfg.seasonal_index,
                                                 fit_sample_size=cfg.fit_sample_size)
            except ValueError as error:
                reason = str(error)
        caught = [str(w.message) for w in seen if issubclass(w.category, ConvergenceWarning)]
    in_segments = np.isin(ids, np.fromiter(segmented, dtype=np.int64))
    if result is None:
        values = {c: np.full(len(ids), np.nan) for c in VALUE_COLUMNS[:-1]}
        risk = pd.array([pd.NA] * len(ids), dtype="string")
    else:
        estimates = result.estimates.reindex(ids)
        values = {c: estimates[c].to_numpy(np.float64) for c in VALUE_COLUMNS[:-1]}
        risk = pd.array(estimates["churn_risk"].astype(str).to_numpy(), dtype="string")
    table = pd.DataFrame({ID_COLUMN: ids, **values, "churn_risk": risk, "segmented": in_segments})
    model = model_document(result, cfg, end, non_merchandise, reason)
    return ValueEstimates(table=table, model=model, reason=reason, warnings=caught)


def model_document(result, cfg: CustomerValueConfig, analysis_date, non_merchandise: Iterable[str],
                   reason: str | None) -> dict[str, Any]:
    """``customer_value_model.json``: the fitted parameters as numbers, to rebuild the models from.

    Parameters
    ----------
    result : CustomerValue or None
        :func:`~core.prepare_features.customer_value.estimate_customer_value`'s
        result; None when nothing was estimated (``reason``).

    Returns
    -------
    dict
        ``estimated``, ``reason``, ``analysis_date``, ``horizon_days``,
        ``churn_risk_thresholds``, ``time_unit_days``, ``seasonal_index``
        (the twelve month factors of the purchase model's clock, January
        first, or null for calendar days), ``purchase_model``
        (``model``, ``dropout_at_first_purchase``, ``params`` r, alpha, a, b
        with alpha in time units), ``value_model`` (``model``, ``params`` p,
        q, v or null for the population-mean fallback,
        ``population_mean_order_value``), ``non_merchandise_departments``
        and the fit's ``report``. Floats are written in full, so the models
        rebuilt from them predict exactly what stage 02 wrote.
    """
    document: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "estimated": result is not None,
        "reason": reason,
        "analysis_date": str(pd.Timestamp(analysis_date).date()),
        "horizon_days": int(cfg.horizon_days),
        "churn_risk_thresholds": [float(v) for v in cfg.churn_risk_thresholds],
        "non_merchandise_departments": sorted(non_merchandise),
        "time_unit_days": None, "seasonal_index": None, "purchase_model": None, "value_model": None,
        "report": None,
    }
    if result is None:
        return document
    report = result.report
    purchase, value = result.purchase_model, result.value_model
    index = result.month_index
    document.update(
        time_unit_days=float(report["time_unit_days"]),
        seasonal_index=None if index is None else [float(f) for f in index.factors_],
        purchase_model={"model": report["purchase_model"]["model"],
                        "dropout_at_first_purchase": bool(purchase.dropout_at_first_purchase),
                        "params": {k: float(v) for k, v in purchase.params_.items()}},
        value_model={"model": report["value_model"]["model"],
                     "params": None if value is None else {k: float(v) for k, v in value.params_.items()},
                     "population_mean_order_value": float(report["value_model"]["population_mean_order_value"])},
        report=report)
    return document


def predict_values(orders: pd.DataFrame, analysis_date, model: dict[str, Any]) -> pd.DataFrame:
    """The value columns of each customer of ``orders``, from a saved :func:`model_document`.

    The same arithmetic as
    :func:`~core.prepare_features.customer_value.estimate_customer_value`
    after its fit, so the training customers at stage 02's analysis date
    get exactly stage 02's values.

    Parameters
    ----------
    orders : DataFrame
        :func:`order_values` of the customers to score.
    analysis_date : datetime-like
        The day they are scored at; later orders are ignored.
    model : dict
        A document with ``estimated`` true.

    Returns
    -------
    DataFrame
        Indexed by ``customer_id`` (customers with an order by the analysis
        date, sorted): :data:`VALUE_COLUMNS`, ``churn_risk`` as text.

    Raises
    ------
    ValueError
        When the document holds no model, or an estimate is not finite.
    """
    if not model.get("estimated"):
        raise ValueError(f"no customer-value model was fitted: {model.get('reason')}")
    end = pd.Timestamp(analysis_date).normalize()
    summary = rfm_summary(orders, end, time_unit_days=1.0)
    x, t_x_days, age_days = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    m = summary["monetary_value"].to_numpy(dtype=float)
    unit = float(model["time_unit_days"])
    purchase = BetaGeoModel(dropout_at_first_purchase=model["purchase_model"]["dropout_at_first_purchase"])
    purchase.params_ = {k: float(model["purchase_model"]["params"][k]) for k in ("r", "alpha", "a", "b")}
    index = None
    if model.get("seasonal_index") is not None:  # absent from documents written before the seasonal clock
        index = MonthIndex()
        index.factors_ = np.asarray(model["seasonal_index"], dtype=float)
    t_x, T, horizon = purchase_clock(t_x_days, age_days, end, model["horizon_days"], unit, index)
    p_alive = purchase.p_alive(x, t_x, T)
    expected_orders = purchase.expected_orders(horizon, x, t_x, T)
    non_positive = (x > 0) & (m <= 0)
    saved_value = model["value_model"]
    if saved_value["params"] is not None:
        value = GammaGammaModel()
        value.params_ = {k: float(saved_value["params"][k]) for k in ("p", "q", "v")}
        value.population_mean_ = float(saved_value["population_mean_order_value"])
        order_value = value.expected_order_value(x, np.where(non_positive, 0.0, m))
    else:
        order_value = np.full(x.size, float(saved_value["population_mean_order_value"]))
    # As in the fit: a repeat buyer whose repeat orders were worth nothing net is expected to spend nothing.
    order_value = np.where(non_positive, 0.0, order_value)
    expected_revenue = expected_orders * order_value
    numbers = np.column_stack([p_alive, expected_orders, expected_revenue])
    if not np.isfinite(numbers).all():
        raise ValueError(f"non-finite customer-value estimates for {int((~np.isfinite(numbers)).any(axis=1).sum())} "
                         f"customer(s)")
    risk = assign_churn_risk(p_alive, tuple(model["churn_risk_thresholds"]))
    return pd.DataFrame({"p_alive": p_alive, "expected_orders": expected_orders,
                         "expected_revenue": expected_revenue,
                         "churn_risk": pd.array(np.asarray(risk).astype(str), dtype="string")}, index=summary.index)


# ---------------------------------------------------------------------------
# The temporal holdout check


def evaluate_holdout(orders: pd.DataFrame, analysis_date, cfg: CustomerValueConfig) -> dict[str, Any]:
    """Refit with the analysis date moved back by the horizon, predict, and compare with what happened.

    The models are fitted on the orders up to ``cut = analysis_date -
    horizon_days`` valued as they stood that day (returns made later
    unseen), and their predictions for the customers of that day compared
    with the purchase days and net revenue (returns up to the analysis date
    netted) each had in ``(cut, analysis_date]``: in total (relative error),
    per customer (mean absolute error of the model and of a naive baseline,
    the customer's past repeat-purchase days per day of age times the
    horizon, revenue at their past mean order value; Spearman correlation),
    by decile of predicted orders (the calibration chart), and how well
    ``p_alive`` ranks who bought again (ROC AUC). Purchase days, not order
    rows, are counted: the model's unit.

    Skipped, with the reason in ``status``, when the history before the
    analysis date is shorter than ``horizon_days`` + :data:`MIN_CALIBRATION_DAYS`
    days or the fit at the cut is impossible.

    Parameters
    ----------
    orders : DataFrame
        :func:`order_values` called with ``cut`` (``value_at_cut`` present).
    analysis_date : datetime-like
    cfg : CustomerValueConfig

    Returns
    -------
    dict
        JSON-ready: ``status`` (``done`` or ``skipped: ...``), the dates,
        ``customers``, ``orders`` and ``revenue`` (``predicted``, ``actual``,
        ``relative_error``, ``mae_model``, ``mae_naive``, ``spearman_model``,
        ``spearman_naive``), ``p_alive_auc_bought_again`` and ``deciles``.
    """
    end = pd.Timestamp(analysis_date).normalize()
    cut = end - pd.Timedelta(days=cfg.horizon_days)
    base = {"analysis_date": str(end.date()), "cut_date": str(cut.date()), "horizon_days": int(cfg.horizon_days)}
    needed = cfg.horizon_days + MIN_CALIBRATION_DAYS
    first = orders["order_date"].min().normalize() if len(orders) else end
    history = int((end - first).days)
    if history < needed:
        return {"status": f"skipped: history shorter than horizon_days + {MIN_CALIBRATION_DAYS} = {needed} days "
                          f"({history} days from the first order to the analysis date)", **base}
    day = orders["order_date"].dt.normalize()
    calibration = orders.loc[day <= cut, [ID_COLUMN, "order_date"]].assign(
        order_value=orders.loc[day <= cut, "value_at_cut"].to_numpy())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the fit report says converged: false
            fitted = estimate_customer_value(calibration, cut, cfg.horizon_days, tuple(cfg.churn_risk_thresholds),
                                             min_repeat_buyers=cfg.min_repeat_buyers,
                                             seasonal_index=cfg.seasonal_index,
                                             fit_sample_size=cfg.fit_sample_size)
    except ValueError as error:
        return {"status": f"skipped: the fit at {cut.date()} is impossible: {error}", **base}
    estimates = fitted.estimates
    actual = _purchases_after(orders, cut, end, estimates.index)
    naive = _naive_forecast(estimates, calibration, cfg.horizon_days)
    predicted = {"orders": estimates["expected_orders"].to_numpy(), "revenue": estimates["expected_revenue"].to_numpy()}
    scores = {}
    for what in ("orders", "revenue"):
        truth, guess, baseline = actual[what].to_numpy(), predicted[what], naive[what].to_numpy()
        scores[what] = {
            "predicted": round(float(guess.sum()), 2), "actual": round(float(truth.sum()), 2),
            "relative_error": round(float(guess.sum() / truth.sum() - 1), 4) if truth.sum() else None,
            "naive": round(float(baseline.sum()), 2),
            "mae_model": round(float(np.abs(guess - truth).mean()), 4),
            "mae_naive": round(float(np.abs(baseline - truth).mean()), 4),
            "spearman_model": _spearman(guess, truth), "spearman_naive": _spearman(baseline, truth)}
    bought = actual["orders"].to_numpy() > 0
    auc = (round(float(roc_auc_score(bought, estimates["p_alive"].to_numpy())), 4)
           if 0 < bought.sum() < len(bought) else None)
    return {"status": "done", **base, "customers": int(len(estimates)),
            "purchase_model_params": fitted.purchase_model.params_, "orders": scores["orders"],
            "revenue": scores["revenue"], "p_alive_auc_bought_again": auc,
            "naive_baseline": "each customer's past repeat-purchase days per day of age times the horizon; "
                              "revenue at their past mean order value",
            "deciles": _deciles(predicted, actual)}


def _purchases_after(orders: pd.DataFrame, start, end, customers: pd.Index) -> pd.DataFrame:
    """Purchase days and net revenue of each of ``customers`` in ``(start, end]``."""
    day = orders["order_date"].dt.normalize()
    later = orders[(day > start) & (day <= end)].assign(day=day)
    days = later.drop_duplicates([ID_COLUMN, "day"]).groupby(ID_COLUMN).size()
    revenue = later.groupby(ID_COLUMN)["order_value"].sum()
    return pd.DataFrame({"orders": days.reindex(customers, fill_value=0).astype(float),
                         "revenue": revenue.reindex(customers, fill_value=0.0)}, index=customers)


def _naive_forecast(estimates: pd.DataFrame, calibration: pd.DataFrame, horizon_days: float) -> pd.DataFrame:
    """Past repeat-purchase days per day of age times the horizon (0 at age 0); revenue at the past mean."""
    age = estimates["age_days"].to_numpy()
    rate = np.divide(estimates["frequency"].to_numpy(dtype=float), age, out=np.zeros(len(age)), where=age > 0)
    mean_value = (calibration.groupby(ID_COLUMN)["order_value"].sum().reindex(estimates.index)
                  / (estimates["frequency"] + 1)).to_numpy()
    return pd.DataFrame({"orders": rate * horizon_days, "revenue": rate * horizon_days * mean_value},
                        index=estimates.index)


def _spearman(guess: np.ndarray, truth: np.ndarray) -> float | None:
    if np.ptp(guess) == 0 or np.ptp(truth) == 0:
        return None  # a constant has no ranking
    return round(float(spearmanr(guess, truth)[0]), 4)


def _deciles(predicted: dict[str, np.ndarray], actual: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean predicted and actual orders and revenue by decile of predicted orders (1 = lowest)."""
    n_groups = min(10, len(actual))
    rank = pd.Series(predicted["orders"]).rank(method="first")
    group = pd.qcut(rank, n_groups, labels=range(1, n_groups + 1)).to_numpy()
    frame = pd.DataFrame({"decile": group, "predicted_orders": predicted["orders"],
                          "actual_orders": actual["orders"].to_numpy(), "predicted_revenue": predicted["revenue"],
                          "actual_revenue": actual["revenue"].to_numpy()})
    table = frame.groupby("decile", observed=True).agg(
        customers=("actual_orders", "size"), predicted_orders=("predicted_orders", "mean"),
        actual_orders=("actual_orders", "mean"), predicted_revenue=("predicted_revenue", "mean"),
        actual_revenue=("actual_revenue", "mean"))
    return [{"decile": int(decile), "customers": int(row.customers),
             **{k: round(float(getattr(row, k)), 4) for k in ("predicted_orders", "actual_orders",
                                                               "predicted_revenue", "actual_revenue")}}
            for decile, row in zip(table.index, table.itertuples())]


# ---------------------------------------------------------------------------
# What stage 02 runs


@dataclasses.dataclass(frozen=True)
class CustomerValueOutputs:
    """Stage 02's three customer-value files and its manifest entry.

    Attributes
    ----------
    table : DataFrame
        ``customer_value.parquet``.
    model : dict
        ``customer_value_model.json``.
    evaluation : dict
        ``customer_value_evaluation.json``.
    details : dict
        The manifest's ``customer_value`` entry.
    warning : str or None
        One line to log when nothing was estimated.
    """

    table: pd.DataFrame
    model: dict[str, Any]
    evaluation: dict[str, Any]
    details: dict[str, Any]
    warning: str | None


def customer_value_from_config(lines, hierarchy: Hierarchy, cfg: CustomerValueConfig, analysis_date,
                               segmented: Iterable[int], engine_memory_mb: int = 2048) -> CustomerValueOutputs:
    """The estimates for every customer with a purchase, the saved model and the holdout check.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        The order lines (``transactions.parquet``).
    hierarchy : Hierarchy
        Which departments are merchandise.
    cfg : CustomerValueConfig
        Config section ``customer_value``.
    analysis_date : datetime-like
        Stage 02's analysis date.
    segmented : iterable of int
        The customers stage 02 segments.
    engine_memory_mb : int
        DuckDB's memory limit (``prepare_features.engine_memory_mb``).

    Returns
    -------
    CustomerValueOutputs
    """
    end = pd.Timestamp(analysis_date).normalize()
    excluded_departments = non_merchandise_departments(hierarchy)
    started = time.perf_counter()
    # Read even when disabled: every customer with a purchase keeps a row (with null values).
    orders = order_values(lines, excluded_departments, end, end - pd.Timedelta(days=cfg.horizon_days),
                          engine_memory_mb)
    read = time.perf_counter()
    progress.report(0.7, "orders")  # shares of this step's time on 200,000 customers
    estimates = estimate_values(orders, end, cfg, segmented, excluded_departments)
    fitted = time.perf_counter()
    progress.report(0.83, "models fitted")
    if estimates.reason is None:
        evaluation = evaluate_holdout(orders, end, cfg)
    else:
        evaluation = {"status": f"skipped: customer value not estimated ({estimates.reason})",
                      "analysis_date": str(end.date()), "horizon_days": int(cfg.horizon_days)}
    evaluated = time.perf_counter()
    table = estimates.table
    details: dict[str, Any] = {
        "estimated": estimates.reason is None,
        "reason": None if estimates.reason is None else f"not estimated: {estimates.reason}",
        "fallback": None if estimates.reason is None else "p_alive, expected_orders, expected_revenue and "
                                                          "churn_risk are null for every customer",
        "customers": int(len(table)), "segmented": int(table["segmented"].sum()),
        "not_segmented": int((~table["segmented"]).sum()),
        "horizon_days": int(cfg.horizon_days),
        "unlinked_return_lines": int(orders.attrs.get("unlinked_return_lines", 0)),
        "evaluation": evaluation["status"],
        "seconds": {"orders": round(read - started, 3), "fit": round(fitted - read, 3),
                    "holdout_check": round(evaluated - fitted, 3)},
    }
    if estimates.reason is None:
        report = estimates.model["report"]
        details.update(repeat_buyers=report["repeat_buyers"], churn_risk_counts=report["churn_risk_counts"],
                       purchase_model=report["purchase_model"], value_model=report["value_model"],
                       notes=report["notes"] + estimates.warnings,
                       expected_revenue=round(float(table["expected_revenue"].sum()), 2))
        if evaluation["status"] == "done":
            details["holdout"] = {"orders_relative_error": evaluation["orders"]["relative_error"],
                                  "revenue_relative_error": evaluation["revenue"]["relative_error"],
                                  "orders_mae_model": evaluation["orders"]["mae_model"],
                                  "orders_mae_naive": evaluation["orders"]["mae_naive"]}
    warning = None if estimates.reason is None else (
        f"customer value not estimated: {estimates.reason}; p_alive, expected_orders, expected_revenue and "
        f"churn_risk are null for every customer (see the manifest's details)")
    return CustomerValueOutputs(table=table, model=estimates.model, evaluation=evaluation, details=details,
                                warning=warning)
