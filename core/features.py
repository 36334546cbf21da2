"""Customer features from order lines, the three datasets and the model matrix.

Every feature is computed from ``transactions`` alone; the customer profile
(persona, demographics) is joined only into the two *enriched* datasets,
which are for analysis. The model matrix is built from behavioural feature
columns only: :func:`resolve_model_columns` refuses any profile column.

Feature definitions (all measured at the analysis date; lines after it are
ignored) are listed in README "Data dictionary".
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted

from core.hierarchy import Hierarchy, slug

DAYS_PER_MONTH = 365.25 / 12

CORE_FEATURES = ("recency_days", "tenure_days", "orders", "orders_per_month", "gross_revenue",
                 "returned_value", "net_revenue", "average_order_value", "items_per_order",
                 "return_rate_value", "return_rate_units", "n_departments", "n_classes")
DEPT_SPEND, DEPT_UNITS, DEPT_SHARE = "dept_spend__", "dept_units__", "dept_share__"
CLASS_SPEND, CLASS_UNITS = "class_spend__", "class_units__"
DATE_COLUMNS = ("first_order_date", "last_order_date")
ID_COLUMN = "customer_id"


def dept_column(prefix: str, department: str) -> str:
    """Column name of a department measure: ``dept_spend__ladies_clothing``."""
    return f"{prefix}{slug(department)}"


def class_column(prefix: str, department: str, cls: str) -> str:
    """Column name of a class measure: ``class_spend__ladies_clothing__youth``."""
    return f"{prefix}{slug(department)}__{slug(cls)}"


def behavioural_feature_names(hierarchy: Hierarchy) -> list[str]:
    """Every column a model matrix may draw from: core features and department measures."""
    depts = hierarchy.merchandise_departments
    return (list(CORE_FEATURES) + [dept_column(p, d) for p in (DEPT_SPEND, DEPT_UNITS, DEPT_SHARE)
                                   for d in depts])


def resolve_model_columns(patterns: Iterable[str], feature_names: list[str],
                          profile_columns: Iterable[str]) -> list[str]:
    """Expand fnmatch ``patterns`` over behavioural features, in feature order.

    Raises
    ------
    ValueError
        If a pattern names a profile column or matches no feature.
    """
    profile = set(profile_columns)
    chosen: list[str] = []
    for pattern in patterns:
        banned = [c for c in profile if fnmatch.fnmatchcase(c, pattern)]
        if banned:
            raise ValueError(f"'{pattern}' names profile column(s) {', '.join(sorted(banned))}; profile "
                             f"columns describe segments but never enter the model matrix")
        matches = [c for c in feature_names if fnmatch.fnmatchcase(c, pattern)]
        if not matches:
            raise ValueError(f"'{pattern}' matches no behavioural feature; features are: "
                             f"{', '.join(feature_names[:20])}, ...")
        chosen.extend(c for c in matches if c not in chosen)
    return [c for c in feature_names if c in chosen]


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


class ModelMatrixTransformer(TransformerMixin, BaseEstimator):
    """Select feature columns, log1p the skewed ones, scale with a RobustScaler.

    Parameters
    ----------
    columns : list of str
        Feature columns of the model matrix, in order.
    log1p_columns : list of str
        Subset of ``columns`` transformed with ``log1p`` (after clipping
        below at 0) before scaling.

    Attributes
    ----------
    scaler_ : RobustScaler
        Fitted on the transformed columns.
    n_features_in_ : int
    """

    def __init__(self, columns=(), log1p_columns=()):
        self.columns = columns
        self.log1p_columns = log1p_columns

    def _prepared(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {', '.join(missing)}")
        values = frame[list(self.columns)].to_numpy(dtype=np.float64, copy=True)
        for i, name in enumerate(self.columns):
            if name in set(self.log1p_columns):
                values[:, i] = np.log1p(np.clip(values[:, i], 0.0, None))
        return values

    def fit(self, X: pd.DataFrame, y=None) -> "ModelMatrixTransformer":
        """Fit the scaler on ``X``'s selected, transformed columns."""
        unknown = set(self.log1p_columns) - set(self.columns)
        if unknown:
            raise ValueError(f"log1p columns not among the model columns: {', '.join(sorted(unknown))}")
        self.scaler_ = RobustScaler().fit(self._prepared(X))
        self.n_features_in_ = len(self.columns)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The scaled model matrix, shape (n_customers, len(columns))."""
        check_is_fitted(self, "scaler_")
        return self.scaler_.transform(self._prepared(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The model-matrix column names, in order."""
        return np.asarray(self.columns, dtype=object)


@dataclasses.dataclass(frozen=True)
class PreparedFeatures:
    """Everything stage 02 writes."""

    basic: pd.DataFrame
    enriched_department: pd.DataFrame
    enriched_class: pd.DataFrame
    model_matrix: pd.DataFrame
    transformer: ModelMatrixTransformer
    analysis_date: pd.Timestamp
    excluded: pd.DataFrame


def excluded_customers(transactions: pd.DataFrame, customers: pd.DataFrame | None,
                       featured_ids: pd.Series, analysis_date: pd.Timestamp) -> pd.DataFrame:
    """Customers known from the profile or the lines who get no features, each with the reason.

    Returns
    -------
    DataFrame
        ``customer_id`` and ``reason``, one row per excluded customer.
    """
    known = [transactions[ID_COLUMN]] + ([customers[ID_COLUMN]] if customers is not None else [])
    ids = pd.Index(pd.unique(pd.concat(known, ignore_index=True))).difference(pd.Index(featured_ids))
    day = transactions["order_date"].dt.normalize()
    purchases = transactions.loc[~transactions["is_return"].to_numpy(bool), ID_COLUMN]
    later = set(purchases[(day > analysis_date)[purchases.index]])
    with_lines = set(transactions[ID_COLUMN])
    reasons = ["first purchase after the analysis date" if c in later
               else "only return lines by the analysis date" if c in with_lines
               else "no order lines" for c in ids]
    return pd.DataFrame({ID_COLUMN: ids.to_numpy(), "reason": pd.Series(reasons, dtype="str")})


def prepare_features(transactions: pd.DataFrame, customers: pd.DataFrame | None, hierarchy: Hierarchy,
                     model_patterns: Iterable[str], log1p_patterns: Iterable[str],
                     analysis_date: pd.Timestamp | None = None) -> PreparedFeatures:
    """Build the three datasets and the scaled model matrix.

    Parameters
    ----------
    transactions : DataFrame
        Order lines (see :func:`build_customer_features`).
    customers : DataFrame or None
        Profile per ``customer_id``; joined only into the enriched datasets.
    model_patterns, log1p_patterns : iterable of str
        fnmatch patterns over behavioural features (see
        :func:`resolve_model_columns`).
    analysis_date : Timestamp, optional
        Defaults to the last ``order_date`` in ``transactions``.

    Returns
    -------
    PreparedFeatures
        ``basic`` (customer_id, core features, department spend and units),
        ``enriched_department`` (all features and the profile),
        ``enriched_class`` (as enriched_department plus class spend and
        units), ``model_matrix`` (customer_id and the scaled columns), the
        fitted ``transformer`` and ``excluded`` (customers without features,
        with the reason).

    Raises
    ------
    ValueError
        If no customer has a purchase by the analysis date.
    """
    if analysis_date is None:
        analysis_date = pd.Timestamp(transactions["order_date"].max())
    analysis_date = pd.Timestamp(analysis_date).normalize()
    features, class_totals = build_customer_features(transactions, hierarchy, analysis_date)
    if features.empty:
        raise ValueError(f"no customer has a purchase on or before the analysis date {analysis_date.date()}")
    profile_columns = [c for c in (customers.columns if customers is not None else []) if c != ID_COLUMN]
    columns = resolve_model_columns(model_patterns, behavioural_feature_names(hierarchy), profile_columns)
    log1p = [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in log1p_patterns)]
    merch = hierarchy.merchandise_departments
    basic_columns = ([ID_COLUMN] + list(CORE_FEATURES)
                     + [dept_column(p, d) for p in (DEPT_SPEND, DEPT_UNITS) for d in merch])
    basic = features[basic_columns]
    enriched = features
    if customers is not None:
        profile = customers.drop_duplicates(ID_COLUMN)
        enriched = features.merge(profile, on=ID_COLUMN, how="left", validate="one_to_one")
    enriched_class = pd.concat([enriched.reset_index(drop=True),
                                class_wide(class_totals, hierarchy, features[ID_COLUMN])], axis=1)
    transformer = ModelMatrixTransformer(columns=columns, log1p_columns=log1p).fit(features)
    matrix = pd.DataFrame(transformer.transform(features).astype(np.float32), columns=columns)
    matrix.insert(0, ID_COLUMN, features[ID_COLUMN].to_numpy())
    excluded = excluded_customers(transactions, customers, features[ID_COLUMN], analysis_date)
    return PreparedFeatures(basic=basic, enriched_department=enriched, enriched_class=enriched_class,
                            model_matrix=matrix, transformer=transformer, analysis_date=analysis_date,
                            excluded=excluded)
