"""The pandas implementation of stage 02's aggregation before DuckDB (commit b3c84c5), kept as the baseline.

``benchmarks/bench_features.py --engine pandas`` runs it on the same input as
the DuckDB implementation. It computes less than the current stage (the 13
core features, department and class totals; none of the inter-order,
seasonality, trend, discount or attribute features), so its time and memory
are a lower bound for a pandas version of the current feature set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.domain.columns import ID_COLUMN
from core.prepare_features.columns import (CLASS_SPEND, CLASS_UNITS, DEPT_SHARE, DEPT_SPEND, DEPT_UNITS, class_column,
                                           dept_column)
from core.domain.hierarchy import Hierarchy

DAYS_PER_MONTH = 365.25 / 12
CORE_FEATURES = ("recency_days", "tenure_days", "orders", "orders_per_month", "gross_revenue",
                 "returned_value", "net_revenue", "average_order_value", "items_per_order",
                 "return_rate_value", "return_rate_units", "n_departments", "n_classes")
DATE_COLUMNS = ("first_order_date", "last_order_date")
COLUMNS = ["customer_id", "order_id", "order_date", "department", "class", "quantity", "line_amount", "is_return"]


def build_customer_features(transactions: pd.DataFrame, hierarchy: Hierarchy,
                            analysis_date: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Behavioural features per customer, and net spend and units per class.

    Parameters
    ----------
    transactions : DataFrame
        Order lines with at least ``customer_id``, ``order_id``,
        ``order_date``, ``department``, ``class``, ``quantity``,
        ``line_amount`` and ``is_return``. Lines after ``analysis_date``
        are ignored.
    hierarchy : Hierarchy
        Department measures are built for its merchandise departments.
    analysis_date : Timestamp
        The day features are measured at.

    Returns
    -------
    features : DataFrame
        One row per customer with a purchase: ``customer_id``,
        :data:`DATE_COLUMNS`, :data:`CORE_FEATURES` and, per merchandise
        department, ``dept_spend__*``, ``dept_units__*`` (net of returns) and
        ``dept_share__*`` (share of gross purchase spend).
    class_totals : DataFrame
        Long form: ``customer_id``, ``department``, ``class``, ``spend``,
        ``units`` (net of returns), merchandise classes only.

    Customers without a purchase by ``analysis_date`` get no row (see
    :func:`excluded_customers`).
    """
    # Features count days: a till timestamp's time of day must not split the analysis day.
    analysis_date = pd.Timestamp(analysis_date).normalize()
    day = transactions["order_date"].dt.normalize()
    keep = (day <= analysis_date).to_numpy()
    lines = transactions.loc[keep].assign(order_date=day[keep])
    is_return = lines["is_return"].to_numpy(bool)
    amount = lines["line_amount"].to_numpy(np.float64)
    qty = lines["quantity"].to_numpy(np.float64)
    cust = lines[ID_COLUMN].to_numpy()
    frame = pd.DataFrame({
        ID_COLUMN: cust,
        "gross": np.where(is_return, 0.0, amount),
        "returned": np.where(is_return, -amount, 0.0),
        "units_bought": np.where(is_return, 0.0, qty),
        "units_returned": np.where(is_return, -qty, 0.0),
    })
    by_customer = frame.groupby(ID_COLUMN, sort=True)
    totals = by_customer[["gross", "returned", "units_bought", "units_returned"]].sum()
    purchases = lines.loc[~is_return, [ID_COLUMN, "order_id", "order_date"]]
    orders = purchases.groupby(ID_COLUMN)["order_id"].nunique()
    first = purchases.groupby(ID_COLUMN)["order_date"].min()
    last = purchases.groupby(ID_COLUMN)["order_date"].max()
    # Customers whose only lines are returns (of purchases before the data starts) have no orders.
    index = orders.index
    totals = totals.reindex(index)
    out = pd.DataFrame(index=index)
    out["first_order_date"] = first
    out["last_order_date"] = last
    out["recency_days"] = (analysis_date - last).dt.days.astype(np.float64)
    out["tenure_days"] = (analysis_date - first).dt.days.astype(np.float64)
    out["orders"] = orders.astype(np.float64)
    # At least one month of tenure, so a customer seen once this week is not "30 orders a month".
    out["orders_per_month"] = out["orders"] / (np.maximum(out["tenure_days"], DAYS_PER_MONTH) / DAYS_PER_MONTH)
    out["gross_revenue"] = totals["gross"]
    out["returned_value"] = totals["returned"]
    out["net_revenue"] = totals["gross"] - totals["returned"]
    out["average_order_value"] = totals["gross"] / out["orders"]
    out["items_per_order"] = totals["units_bought"] / out["orders"]
    out["return_rate_value"] = _ratio(totals["returned"], totals["gross"])
    out["return_rate_units"] = _ratio(totals["units_returned"], totals["units_bought"])

    merch = hierarchy.merchandise_departments
    in_merch = lines["department"].isin(merch).to_numpy()
    m = lines.loc[in_merch, [ID_COLUMN, "department", "class"]].assign(
        spend=amount[in_merch], units=qty[in_merch], gross=frame["gross"].to_numpy()[in_merch])
    dept = m.groupby([ID_COLUMN, "department"], sort=False, observed=True)[["spend", "units", "gross"]].sum()
    # Every merchandise department gets its columns, bought from or not.
    full = pd.MultiIndex.from_product([index, merch], names=[ID_COLUMN, "department"])
    dept = dept.reindex(full, fill_value=0.0)
    wide = {measure: dept[measure].unstack("department")[merch] for measure in ("spend", "units", "gross")}
    gross_merch = wide["gross"].sum(axis=1)
    for d in merch:
        out[dept_column(DEPT_SPEND, d)] = wide["spend"][d]
        out[dept_column(DEPT_UNITS, d)] = wide["units"][d]
        out[dept_column(DEPT_SHARE, d)] = _ratio(wide["gross"][d], gross_merch)
    bought = m.loc[m["gross"] > 0]
    out["n_departments"] = bought.groupby(ID_COLUMN)["department"].nunique().reindex(index).fillna(0.0)
    out["n_classes"] = (bought.groupby([ID_COLUMN, "department"], observed=True)["class"].nunique()
                        .groupby(level=0).sum().reindex(index).fillna(0.0))
    ordered = list(DATE_COLUMNS) + list(CORE_FEATURES) + [
        dept_column(p, d) for p in (DEPT_SPEND, DEPT_UNITS, DEPT_SHARE) for d in merch]
    features = out[ordered].astype({c: np.float64 for c in ordered if c not in DATE_COLUMNS})
    features = features.reset_index()

    class_totals = (m.groupby([ID_COLUMN, "department", "class"], sort=True, observed=True)[["spend", "units"]]
                    .sum().reset_index())
    class_totals = class_totals[class_totals[ID_COLUMN].isin(index)]
    return features, class_totals.astype({"spend": np.float32, "units": np.float32})


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is not positive."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def class_wide(class_totals: pd.DataFrame, hierarchy: Hierarchy, customer_ids: pd.Series) -> pd.DataFrame:
    """Spend and units per merchandise class as float32 columns, one row per customer."""
    merch = hierarchy.merchandise_departments
    keys = [(d, c) for d in merch for c in hierarchy.departments[d].classes]
    names = {k: i for i, k in enumerate(keys)}
    row = pd.Index(customer_ids).get_indexer(class_totals[ID_COLUMN])
    col = np.array([names.get(k, -1) for k in zip(class_totals["department"], class_totals["class"])],
                   dtype=np.int64)
    keep = (row >= 0) & (col >= 0)
    spend = np.zeros((len(customer_ids), len(keys)), dtype=np.float32)
    units = np.zeros_like(spend)
    spend[row[keep], col[keep]] = class_totals["spend"].to_numpy()[keep]
    units[row[keep], col[keep]] = class_totals["units"].to_numpy()[keep]
    columns = ([class_column(CLASS_SPEND, d, c) for d, c in keys]
               + [class_column(CLASS_UNITS, d, c) for d, c in keys])
    return pd.DataFrame(np.hstack([spend, units]), columns=columns)


