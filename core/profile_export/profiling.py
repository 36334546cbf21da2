"""Segment profiles: statistics, a readable name, a description, a strategy and an explanation.

Names come from rules a person can check and say what kind of shopper the
segment holds: its *value* tier (median net revenue against population
quantiles) and *ordering rate* (against the population median; a median
tenure under half everyone's makes newcomers) give the position ("VIP
Champions", "Loyal Regulars", "Promising Newcomers", "Occasional Bargain
Hunters", ...); the department it over-indexes on most gives the focus.
Lifecycle state belongs to customers (``p_alive`` and ``churn_risk``, from
stage 02): a lifecycle word ("At-Risk", "Active") leads a name only when the
segment's mean ``p_alive`` is at least :data:`LIFECYCLE_MARGIN` from
everyone's (its lapsed share, when customer value was not estimated). A log
without a product hierarchy has no department to name, so its names stop at
the position. Segments whose names would still clash get the trait that sets
each apart from its namesakes (:func:`distinguishing_traits`: "frequent
orders", "big baskets", "December peak"), and a number only when no trait
does. Names are unique within a run and depend on the data only, so the same
data gives the same names.

Explanations are standardised mean differences (SMD) of the model features
between a segment and everyone else: the features that set the segment
apart, in the features' own units.

Profile columns (demographics) describe segments here and only here; direct
identifiers never reach a profile (:func:`identifier_columns`; before an
export is written, :func:`leaked_identifiers` looks for customers' identifier
values and for email-, postcode- and phone-shaped text).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.domain.columns import ID_COLUMN, NOISE, identifier_columns
from core.prepare_features.columns import CLASS_SPEND, DEPT_SHARE, DEPT_SPEND, DEPT_UNITS, class_column, dept_column
from core.domain.hierarchy import Hierarchy
from core.domain.tables import IDENTITY_COLUMNS
from core.profile_export.strategies import StrategyTable, strategy_for
from core.profile_export.strategies import cross_sell as strategies_cross_sell

# A department must hold at least this share of a segment's spend, bought at least this many times
# the average share, to name its focus.
MIN_FOCUS_SHARE = 0.10
MIN_FOCUS_LIFT = 1.2

# Position of HDBSCAN's noise group: not a segment, so it gets the catch-all strategy.
UNASSIGNED = "Unassigned"

# A segment's mean p_alive this far below (above) everyone's puts "At-Risk" ("Active") in its name: on the
# default data the ten large segments' means lie within 0.11 of everyone's 0.35 (shoppers of every kind stop),
# while the two whose customers have mostly gone sit 0.17 and 0.24 below it (docs/decisions.md). Without
# customer value, the same margin applies to the share of customers who have lapsed.
LIFECYCLE_MARGIN = 0.15
LIFECYCLE_WORDS = {"at_risk": "At-Risk", "active": "Active", "typical": ""}
CHURN_RISK_LEVELS = ("low", "medium", "high")

STAT_COLUMNS = ("recency_days", "orders", "orders_per_month", "net_revenue", "average_order_value", "tenure_days")

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

_CORE_LABELS = {
    "recency_days": "days since the last order", "tenure_days": "days since the first order",
    "orders": "number of orders", "orders_per_month": "orders per month", "gross_revenue": "gross spend",
    "returned_value": "value returned", "net_revenue": "net spend", "average_order_value": "average order value",
    "items_per_order": "items per order", "return_rate_value": "share of spend returned",
    "return_rate_units": "share of items returned", "n_departments": "departments bought from",
    "n_classes": "classes bought from", "mean_days_between_orders": "days between orders",
    "cv_days_between_orders": "irregularity of ordering", "dept_entropy": "spread of spend over departments",
    "spend_share_q1": "share of spend in January-March", "spend_share_q2": "share of spend in April-June",
    "spend_share_q3": "share of spend in July-September", "spend_share_q4": "share of spend in October-December",
    "holiday_share": "share of spend in the holiday season", "back_to_school_share": "share of spend at back to school",
    "monthly_spend_cv": "month-to-month swings in spend", "spend_trend": "growth of monthly spend",
    "discount_share": "share of value bought on discount", "kids_size_share": "share of spend on kids' sizes",
}
_ATTRIBUTE_LABELS = {"channel_share__": "share of spend {}", "brand_tier_share__": "share of spend on {} brands",
                     "style_share__": "share of spend on {} styles", "color_share__": "share of spend on {}",
                     "brand_share__": "share of spend on {}"}


# A segment's trait in a name: (higher than its namesakes, lower than them) per feature; None = not a trait.
_TRAITS = {
    "orders_per_month": ("frequent orders", "infrequent orders"),
    "average_order_value": ("big tickets", "small tickets"),
    "items_per_order": ("big baskets", "single items"),
    "return_rate_value": ("high returns", "low returns"),
    "discount_share": ("discount-driven", "full price"),
    "dept_entropy": ("broad baskets", "focused baskets"),
    "holiday_share": ("holiday season", None),
    "back_to_school_share": ("back to school", None),
    "kids_size_share": ("kids' sizes", None),
    "spend_share_q1": ("January-March", None), "spend_share_q2": ("April-June", None),
    "spend_share_q3": ("July-September", None), "spend_share_q4": ("October-December", None),
    "monthly_spend_cv": ("irregular", "regular"),
    "spend_trend": ("growing", "declining"),
}
_ATTRIBUTE_TRAITS = ("channel_share__", "brand_tier_share__", "style_share__")
# A trait must set a segment this far apart (standardised mean difference against its namesakes) to name it.
MIN_TRAIT_SMD = 0.2
# A month holding this many times its usual share of a segment's spend can name it ("December peak").
MIN_PEAK_INDEX = 1.5


def trait_phrase(column: str, higher: bool, hierarchy: Hierarchy) -> str | None:
    """How a name says that a segment is higher (or lower) on ``column`` than its namesakes; None if it cannot."""
    if column in _TRAITS:
        return _TRAITS[column][0 if higher else 1]
    if higher and column.startswith(_ATTRIBUTE_TRAITS):
        return column.split("__", 1)[1].replace("_", " ")
    if higher and column.startswith(DEPT_SHARE):
        label = feature_label(column, hierarchy)
        return label.removeprefix("share of spend in ") if label != column else None
    return None


def feature_label(column: str, hierarchy: Hierarchy) -> str:
    """Readable name of a feature column, e.g. ``dept_share__kids_clothing`` -> share of spend in Kids Clothing."""
    if column in _CORE_LABELS:
        return _CORE_LABELS[column]
    for prefix, text in _ATTRIBUTE_LABELS.items():
        if column.startswith(prefix):
            return text.format(column[len(prefix):].replace("_", " "))
    for prefix, text in ((DEPT_SHARE, "share of spend in {}"), (DEPT_SPEND, "net spend in {}"),
                         (DEPT_UNITS, "items bought in {}")):
        if column.startswith(prefix):
            for dept in hierarchy.merchandise_departments:
                if dept_column(prefix, dept) == column:
                    return text.format(dept)
    return column


def position_name(value_tier: str, frequent: bool, new: bool) -> str:
    """The kind-of-shopper half of a segment name (one of ``core.profile_export.strategies.POSITIONS``)."""
    if value_tier == "high":
        return "VIP Champions" if frequent else "Big-Basket Spenders"
    if value_tier == "mid":
        return "Loyal Regulars" if frequent else "Steady Shoppers"
    return "Promising Newcomers" if new else "Occasional Bargain Hunters"


def lifecycle_state(segment: float, population: float, higher_is_riskier: bool = False,
                    margin: float = LIFECYCLE_MARGIN) -> str:
    """``at_risk``, ``active`` or ``typical``: whether a segment's lifecycle measure differs clearly from everyone's.

    Parameters
    ----------
    segment, population : float
        The segment's and every customer's mean ``p_alive`` (or lapsed share,
        with ``higher_is_riskier``).
    margin : float
        The difference that counts as clear (:data:`LIFECYCLE_MARGIN`).
    """
    gap = (population - segment) if not higher_is_riskier else (segment - population)
    # Rounded so a gap of exactly the margin counts whatever the floating-point noise.
    gap = round(gap, 9)
    return "at_risk" if gap >= margin else "active" if gap <= -margin else "typical"


def customer_value_summary(members: pd.DataFrame, horizon_days: int | None, note: str) -> dict[str, Any]:
    """A segment's mean ``p_alive``, share of customers at each churn risk and total expected revenue.

    All null, with ``note`` saying why, when the columns are absent or null
    (customer value not estimated by stage 02).
    """
    estimated = not note and "p_alive" in members.columns and members["p_alive"].notna().all()
    if not estimated:
        return {"horizon_days": horizon_days, "mean_p_alive": None, "churn_risk_share": None,
                "expected_revenue": None, "note": note or "not estimated: no customer value columns"}
    shares = members["churn_risk"].astype(str).value_counts(normalize=True)
    return {"horizon_days": horizon_days, "mean_p_alive": round(float(members["p_alive"].mean()), 4),
            "churn_risk_share": {level: round(float(shares.get(level, 0.0)), 4) for level in CHURN_RISK_LEVELS},
            "expected_revenue": round(float(members["expected_revenue"].sum()), 2), "note": ""}


def department_spend(frame: pd.DataFrame, departments: list[str]) -> pd.DataFrame:
    """Net spend per department (negative net spend counted as 0), one column per department.

    A department without a column (stage 02 drops them for data without a hierarchy) counts 0.
    """
    columns = [dept_column(DEPT_SPEND, d) for d in departments]
    spend = frame.reindex(columns=columns, fill_value=0.0).clip(lower=0).to_numpy(np.float64)
    return pd.DataFrame(spend, columns=departments, index=frame.index)


def _stats(values: pd.Series) -> dict[str, float]:
    q1, median, q3 = np.quantile(values.to_numpy(np.float64), [0.25, 0.5, 0.75])
    return {"mean": round(float(values.mean()), 2), "median": round(float(median), 2),
            "q1": round(float(q1), 2), "q3": round(float(q3), 2)}


def _shares_with_lift(segment_totals: pd.Series, population_totals: pd.Series, top: int,
                      label: str | None = None) -> list[dict[str, Any]]:
    """Top entries of a segment's spend mix, each with its share and lift against the population."""
    segment_mix = segment_totals.clip(lower=0)
    segment_mix = segment_mix / segment_mix.sum() if segment_mix.sum() > 0 else segment_mix * 0
    population_mix = population_totals.clip(lower=0)
    population_mix = population_mix / population_mix.sum() if population_mix.sum() > 0 else population_mix * 0
    lift = (segment_mix / population_mix.replace(0, np.nan)).fillna(0.0)
    chosen = segment_mix[segment_mix > 0].sort_values(ascending=False, kind="stable").head(top)
    rows = []
    for key in chosen.index:
        entry = {"spend_share": round(float(segment_mix[key]), 4), "lift": round(float(lift[key]), 2)}
        if isinstance(key, tuple):
            rows.append({"department": key[0], "class": key[1], **entry})
        else:
            rows.append({label or "value": key, **entry})
    return rows


def demographics(members: pd.DataFrame, columns: Iterable[str], age_bands: Iterable[int],
                 min_count: int = 1) -> dict[str, Any]:
    """Summary of profile columns for a group of customers.

    Numbers: median and, for ``age``, the share per age band; true/false:
    the share true; text: the share of each of the three most common values
    held by at least ``min_count`` customers (rarer values could point at
    individuals, so they are only counted in ``other``).
    """
    summary: dict[str, Any] = {}
    edges = list(age_bands)
    for column in columns:
        if column not in members.columns:
            continue
        values = members[column].dropna()
        if values.empty:
            continue
        if pd.api.types.is_bool_dtype(values):
            summary[column] = {"share_true": round(float(values.mean()), 4)}
        elif pd.api.types.is_numeric_dtype(values):
            entry: dict[str, Any] = {"median": round(float(values.median()), 1)}
            if column == "age" and edges:
                bands = _age_band(values.to_numpy(), edges)
                shares = pd.Series(bands).value_counts(normalize=True)
                order = _band_names(edges)
                entry["bands"] = {b: round(float(shares.get(b, 0.0)), 4) for b in order if shares.get(b, 0.0) > 0}
            summary[column] = entry
        else:
            counts = values.astype(str).value_counts()
            common = counts[counts >= min_count].head(3)
            entry = {str(k): round(float(v) / len(values), 4) for k, v in common.items()}
            other = len(values) - int(common.sum())
            if other:
                entry["other"] = round(other / len(values), 4)
            summary[column] = entry
    return summary


def _band_names(edges: list[int]) -> list[str]:
    names = [f"under {edges[0]}"]
    names += [f"{low}-{high - 1}" for low, high in zip(edges[:-1], edges[1:])]
    return names + [f"{edges[-1]}+"]


def _age_band(ages: np.ndarray, edges: list[int]) -> np.ndarray:
    return np.asarray(_band_names(edges), dtype=object)[np.searchsorted(edges, ages, side="right")]


@dataclasses.dataclass(frozen=True)
class SegmentMoments:
    """Count, mean and centred sum of squares of each feature per segment, computed in one pass over the rows.

    Any union of segments' mean and variance follows from these (the
    pairwise update of Chan, Golub and LeVeque, stable where the
    one-pass sum of squares is not), so every segment's explanation and
    every trait comparison reads these few numbers instead of copying the
    customers x features matrix once per segment (at a million customers
    that copy, twice per segment, was most of the profiles' time).

    Attributes
    ----------
    segments : ndarray of shape (n_segments,)
        Segment ids, sorted.
    counts : ndarray of shape (n_segments,)
    means, m2 : ndarray of shape (n_segments, n_features)
        Mean and sum of squared deviations from that mean, per segment and feature.
    columns : list of str
    """

    segments: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    m2: np.ndarray
    columns: list

    @classmethod
    def of(cls, frame: pd.DataFrame, labels: np.ndarray, columns: list[str]) -> "SegmentMoments":
        """The moments of ``frame[columns]`` (as float64) grouped by ``labels``."""
        segments, codes = np.unique(np.asarray(labels), return_inverse=True)
        counts = np.bincount(codes, minlength=len(segments)).astype(np.float64)
        means = np.zeros((len(segments), len(columns)))
        m2 = np.zeros_like(means)
        for position, column in enumerate(columns):
            values = frame[column].to_numpy(np.float64)
            means[:, position] = np.bincount(codes, weights=values, minlength=len(segments)) / counts
            m2[:, position] = np.bincount(codes, weights=(values - means[codes, position]) ** 2,
                                          minlength=len(segments))
        return cls(segments, counts, means, m2, list(columns))

    def pooled(self, segment_ids) -> tuple[float, np.ndarray, np.ndarray]:
        """Count, mean and (population) variance of each feature over the customers of ``segment_ids``."""
        chosen = np.isin(self.segments, list(segment_ids))
        n = float(self.counts[chosen].sum())
        if n == 0:
            empty = np.full(len(self.columns), np.nan)
            return 0.0, empty, empty
        counts = self.counts[chosen][:, None]
        mean = (counts * self.means[chosen]).sum(axis=0) / n
        m2 = self.m2[chosen].sum(axis=0) + (counts * (self.means[chosen] - mean) ** 2).sum(axis=0)
        return n, mean, m2 / n

    def everyone_but(self, segment_id) -> list:
        """The ids of every other segment."""
        return [s for s in self.segments.tolist() if s != segment_id]


def _smd_of(inside: tuple, outside: tuple) -> np.ndarray:
    """Standardised mean difference per feature of two pooled groups (0 where both are constant)."""
    (_, inside_mean, inside_var), (_, outside_mean, outside_var) = inside, outside
    pooled = np.sqrt((inside_var + outside_var) / 2)
    diff = inside_mean - outside_mean
    return np.divide(diff, pooled, out=np.zeros_like(diff), where=pooled > 1e-12)


def explain_segment(features: pd.DataFrame, in_segment: np.ndarray, columns: list[str], top: int,
                    hierarchy: Hierarchy) -> dict[str, Any]:
    """The features that most set a segment apart, by standardised mean difference.

    SMD = (segment mean - rest mean) / sqrt((segment variance + rest variance) / 2),
    on the features' own (unscaled) values; 0 where both groups are constant.

    Returns
    -------
    dict
        ``summary`` (one sentence) and ``features``: up to ``top`` entries
        with ``feature``, ``label``, ``segment_mean``, ``population_mean``
        and ``smd``, largest absolute SMD first.
    """
    moments = SegmentMoments.of(features, np.asarray(in_segment, dtype=bool), columns)
    return explain_from_moments(moments, True, top, hierarchy)


def explain_from_moments(moments: SegmentMoments, segment_id, top: int, hierarchy: Hierarchy) -> dict[str, Any]:
    """:func:`explain_segment` of one segment of ``moments`` against all the others."""
    columns = moments.columns
    inside, outside = moments.pooled([segment_id]), moments.pooled(moments.everyone_but(segment_id))
    if inside[0] == 0 or outside[0] == 0:
        return {"summary": "The segment holds every customer; nothing sets it apart.", "features": []}
    smd = _smd_of(inside, outside)
    order = np.argsort(-np.abs(smd), kind="stable")[:top]
    population_mean = moments.pooled(moments.segments)[1]
    entries = [{"feature": columns[i], "label": feature_label(columns[i], hierarchy),
                "segment_mean": round(float(inside[1][i]), 4),
                "population_mean": round(float(population_mean[i]), 4), "smd": round(float(smd[i]), 2)}
               for i in order if abs(smd[i]) > 0]
    if not entries:
        return {"summary": "No feature sets this segment apart from the others.", "features": []}
    # Differences under MIN_TRAIT_SMD say nothing about the segment: the sentence names the clear ones (at least one).
    clear = [e for e in entries[:3] if abs(e["smd"]) >= MIN_TRAIT_SMD] or entries[:1]
    parts = [f"{'higher' if e['smd'] > 0 else 'lower'} {e['label']} ({e['smd']:+.1f} SD)" for e in clear]
    return {"summary": "Customers are here mainly for their " + ", ".join(parts) + " than other customers.",
            "features": entries}


def monthly_spend_by_segment(transactions: pd.DataFrame, segment_of: pd.Series) -> pd.DataFrame:
    """Purchase spend per segment (rows) and calendar month 1-12 (columns)."""
    purchases = transactions.loc[~transactions["is_return"].to_numpy(bool)]
    segment = purchases["customer_id"].map(segment_of)
    frame = pd.DataFrame({"segment": segment.to_numpy(), "month": purchases["order_date"].dt.month.to_numpy(),
                          "spend": purchases["line_amount"].to_numpy(np.float64)}).dropna(subset=["segment"])
    table = frame.groupby(["segment", "month"])["spend"].sum().unstack("month")
    return table.reindex(columns=range(1, 13)).fillna(0.0).rename(index=int)


def attribute_spend_by_segment(transactions: pd.DataFrame, products: pd.DataFrame, segment_of: pd.Series,
                               attributes: Iterable[str] = ("brand_tier", "size", "style")
                               ) -> dict[str, pd.DataFrame]:
    """Purchase spend per segment and value of each product attribute the catalog has."""
    present = [a for a in attributes if a in products.columns]
    if not present:
        return {}
    purchases = transactions.loc[~transactions["is_return"].to_numpy(bool), ["customer_id", "sku", "line_amount"]]
    joined = purchases.merge(products[["sku", *present]], on="sku", how="left")
    joined["segment"] = joined["customer_id"].map(segment_of)
    joined = joined.dropna(subset=["segment"])
    return {a: joined.groupby(["segment", a])["line_amount"].sum().unstack(a).fillna(0.0).rename(index=int)
            for a in present}


def class_spend_by_segment(class_spend: pd.DataFrame, segments: np.ndarray, hierarchy: Hierarchy) -> pd.DataFrame:
    """Net spend per segment (rows) and (department, class) (columns) from ``class_spend__*`` columns."""
    keys = [(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes]
    columns = [class_column(CLASS_SPEND, d, c) for d, c in keys]
    values = class_spend[columns].to_numpy(np.float64)
    totals = pd.DataFrame(values, columns=pd.MultiIndex.from_tuples(keys)).groupby(segments).sum()
    return totals


def class_spend_from_batches(batches: Iterable, segment_of: pd.Series, hierarchy: Hierarchy) -> pd.DataFrame | None:
    """:func:`class_spend_by_segment` over Arrow record batches of ``customer_id`` and ``class_spend__*`` columns.

    Each column of a batch is summed per segment by ``np.bincount`` straight
    from its Arrow buffer: no DataFrame of the 664 class columns is ever
    built, which was most of stage 05's time at 200,000 customers (58 s;
    docs/decisions.md). Customers missing from ``segment_of`` are left out,
    missing and NaN spend counts 0 (as the pandas sum). Columns absent from
    the batches are left out. None when no batch has a class column.

    Parameters
    ----------
    batches : iterable of pyarrow.RecordBatch
    segment_of : Series
        Segment id per customer id.
    """
    ids = np.sort(np.unique(segment_of.to_numpy()))
    lookup = pd.Series(np.searchsorted(ids, segment_of.to_numpy()), index=segment_of.index)
    keys, names, totals = None, None, None
    for batch in batches:
        if keys is None:
            present = set(batch.schema.names)
            keys = [(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes
                    if class_column(CLASS_SPEND, d, c) in present]
            names = [class_column(CLASS_SPEND, d, c) for d, c in keys]
            totals = np.zeros((len(ids), len(keys)))
        codes = lookup.reindex(batch.column("customer_id").to_numpy())
        known = codes.notna().to_numpy()
        everyone = bool(known.all())
        codes = codes.to_numpy()[known].astype(np.intp)
        for position, name in enumerate(names):
            values = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            values = values if everyone else values[known]
            values[np.isnan(values)] = 0.0
            totals[:, position] += np.bincount(codes, weights=values, minlength=len(ids))
    if not keys:
        return None
    return pd.DataFrame(totals, index=ids, columns=pd.MultiIndex.from_tuples(keys))


class NotInWideOrder(ValueError):
    """:func:`class_spend_from_long` was given a long file whose customers are not in the wide file's order."""


def class_spend_from_long(long_batches: Iterable, batch_ids: Iterable[np.ndarray], segment_of: pd.Series,
                          hierarchy: Hierarchy, present: Iterable[str]) -> pd.DataFrame | None:
    """:func:`class_spend_from_batches`' table from ``class_spend_long.parquet`` instead of the wide class columns.

    The wide file holds 664 class columns per customer, mostly zeros; the long one each customer's non-zero
    classes only (25.6 M rows at a million customers: 0.6 CPU-s to read against 3.8 for the wide columns).
    The sums are the wide ones bit for bit: each batch of customers of the wide file (``batch_ids``) is summed
    cell by cell in customer order (``np.add.at``, one addition after another as ``np.bincount`` makes them),
    and the batches' sums are added one after another; a class a customer lacks in the long file is a zero the
    wide sum adds exactly.

    Parameters
    ----------
    long_batches : iterable of pyarrow.RecordBatch
        ``customer_id``, ``department``, ``class``, ``spend``, rows grouped by customer in the wide file's order
        (as stage 02 writes them).
    batch_ids : iterable of arrays
        The wide file's ``customer_id``, in the batches :func:`class_spend_from_batches` would be given.
    segment_of : Series
        Segment id per customer id (others are left out).
    present : iterable of str
        The wide file's column names (a class without its ``class_spend__`` column is left out).

    Raises
    ------
    NotInWideOrder
        When the long file's customers are not in the wide file's order.
    """
    present = set(present)
    keys = [(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes
            if class_column(CLASS_SPEND, d, c) in present]
    if not keys:
        return None
    ids = np.sort(np.unique(segment_of.to_numpy()))
    batches = [np.asarray(b) for b in batch_ids]
    order = pd.Index(np.concatenate(batches) if batches else np.zeros(0, np.int64))
    # Each wide row's cell offset: (its batch, its segment) -> the first of its row of keys; -1 not segmented.
    where = order.get_indexer(segment_of.index)
    codes = np.full(len(order), -1, np.int64)
    codes[where[where >= 0]] = np.searchsorted(ids, segment_of.to_numpy()[where >= 0])
    offset = np.where(codes >= 0, (np.repeat(np.arange(len(batches)), [len(b) for b in batches]) * len(ids)
                                   + codes) * len(keys), -1)
    key_of = _ClassKeys(keys)
    sums, last = np.zeros(len(batches) * len(ids) * len(keys)), -1
    for batch in long_batches:
        position = order.get_indexer(batch.column("customer_id").to_numpy(zero_copy_only=False))
        inside = position[position >= 0]
        if len(inside) and (inside[0] < last or (np.diff(inside) < 0).any()):
            raise NotInWideOrder("class_spend_long's customers are not in the order of the wide class columns")
        last = int(inside[-1]) if len(inside) else last
        key = key_of(batch.column("department"), batch.column("class"))
        cell = np.where((position >= 0) & (key >= 0), offset[position] + key, -1)
        kept = (cell >= 0) & (offset[position] >= 0)
        spend = batch.column("spend").to_numpy(zero_copy_only=False).astype(np.float64)[kept]
        np.add.at(sums, cell[kept], np.where(np.isnan(spend), 0.0, spend))
    totals = np.zeros((len(ids), len(keys)))
    for part in sums.reshape(len(batches), len(ids), len(keys)):
        totals += part
    return pd.DataFrame(totals, index=ids, columns=pd.MultiIndex.from_tuples(keys))


class _ClassKeys:
    """Each row's position in ``keys`` ((department, class) pairs; -1 for another or a missing one), from two
    Arrow string columns, looked up once per distinct value of each."""

    def __init__(self, keys: list[tuple[str, str]]):
        self.departments = pd.Index(pd.unique(np.array([d for d, _ in keys], dtype=object)))
        self.classes = pd.Index(pd.unique(np.array([c for _, c in keys], dtype=object)))
        self.table = np.full((len(self.departments) + 1, len(self.classes) + 1), -1, np.int64)
        self.table[self.departments.get_indexer([d for d, _ in keys]),
                   self.classes.get_indexer([c for _, c in keys])] = np.arange(len(keys))

    def __call__(self, departments, classes) -> np.ndarray:
        return self.table[self._codes(departments, self.departments), self._codes(classes, self.classes)]

    @staticmethod
    def _codes(column, known: pd.Index) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        found = known.get_indexer(column.dictionary.to_numpy(zero_copy_only=False))
        # A value not known, and a missing one, pick the table's last row or column (-1 throughout).
        lookup = np.append(np.where(found >= 0, found, len(known)), len(known))
        indices = column.indices.fill_null(len(lookup) - 1) if column.null_count else column.indices
        return lookup[indices.to_numpy(zero_copy_only=False)]


def profile_segments(customers: pd.DataFrame, segments: pd.Series, hierarchy: Hierarchy, cfg,
                     strategies: StrategyTable, model_columns: list[str],
                     class_spend: pd.DataFrame | None = None, monthly_spend: pd.DataFrame | None = None,
                     attribute_spend: dict[str, pd.DataFrame] | None = None, horizon_days: int | None = None,
                     value_note: str = "", cross_sell: dict[int, list[str]] | None = None) -> list[dict[str, Any]]:
    """Describe every segment in full (the agent export suppresses small ones afterwards).

    Parameters
    ----------
    customers : DataFrame
        One row per customer: the stage-02 features (``net_revenue``,
        ``recency_days``, ``orders``, ``orders_per_month``,
        ``average_order_value``, ``return_rate_value``, ``tenure_days``,
        ``dept_spend__*`` and ``model_columns``) and the profile columns
        named in ``cfg.describe_columns``, indexed like ``segments``; and,
        when stage 02 estimated them, ``p_alive``, ``expected_revenue`` and
        ``churn_risk`` (``customer_value`` and ``lifecycle`` of each profile).
    segments : Series
        Segment id per customer (``-1``: HDBSCAN noise).
    cfg : ProfileExportConfig
        ``top_departments``, ``top_classes``, ``value_quantiles``,
        ``lapsed_after_days``, ``currency``, ``describe_columns``,
        ``age_bands``, ``explain_features``.
    strategies : StrategyTable
    model_columns : list of str
        Features used for the explanation.
    class_spend : DataFrame, optional
        Segments x (department, class) spend (:func:`class_spend_by_segment`).
    monthly_spend : DataFrame, optional
        Segments x month spend (:func:`monthly_spend_by_segment`).
    attribute_spend : dict, optional
        Attribute -> segments x value spend (:func:`attribute_spend_by_segment`).
    horizon_days : int, optional
        The horizon of ``expected_revenue`` (stage 02's ``customer_value.horizon_days``).
    value_note : str
        ``not estimated: <reason>`` when stage 02 could not estimate customer
        value: the profiles' customer value is then null, with this note.

    cross_sell : dict of int to list of str, optional
        Departments ranked by the recommendation model for the segments
        where it beat the lift heuristic on the holdout
        (:func:`core.profile_export.recommendation_outputs.fit_recommendations`):
        their cross-sell list is the first ``max_categories`` of these not
        among the segment's top departments (``strategy.cross_sell_source``
        ``recommendations``); other segments keep the lift heuristic
        (``lift``).
    Returns
    -------
    list of dict
        One profile per segment, ordered by segment id, keys in the order of
        the export schema (``schemas/segment_profiles.schema.json``).
    """
    departments = hierarchy.merchandise_departments
    spend = department_spend(customers, departments)
    spend_by_segment = spend.groupby(segments.to_numpy()).sum()
    population_spend = spend_by_segment.sum()
    population_share = (population_spend / population_spend.sum()).to_dict() if population_spend.sum() else {}
    low_q, high_q = np.quantile(customers["net_revenue"], cfg.value_quantiles)
    median_rate = customers["orders_per_month"].median()
    median_tenure = customers["tenure_days"].median()
    total_revenue = customers["net_revenue"].sum()
    lapsed = (customers["recency_days"] >= cfg.lapsed_after_days).to_numpy()
    everyone = customer_value_summary(customers, horizon_days, value_note)
    # The lifecycle word's yardstick: everyone's mean p_alive, or everyone's lapsed share without it.
    by_p_alive = everyone["mean_p_alive"] is not None
    population_lifecycle = everyone["mean_p_alive"] if by_p_alive else float(lapsed.mean())
    labels = segments.to_numpy()
    # Every explanation and trait comparison reads these per-segment moments (one pass over the features).
    moments = SegmentMoments.of(customers, labels, model_columns)
    # A log without a product hierarchy has no department to name or describe.
    has_departments = bool(population_spend.sum() > 0)
    profiles = []
    # Each segment's rows of the columns its profile reads, not of all ~100 (a copy of everyone otherwise).
    described = customers[[c for c in dict.fromkeys(
        ["net_revenue", "orders_per_month", "tenure_days", "return_rate_value", *STAT_COLUMNS,
         "p_alive", "churn_risk", "expected_revenue", *cfg.describe_columns]) if c in customers.columns]]
    for segment_id in sorted(np.unique(labels)):
        in_segment = labels == segment_id
        members = described[in_segment]
        department_mix = _shares_with_lift(spend_by_segment.loc[segment_id], population_spend, len(departments),
                                           label="department")
        lift = {d["department"]: d["lift"] for d in department_mix}
        share = {d["department"]: d["spend_share"] for d in department_mix}
        median_value = members["net_revenue"].median()
        tier = "high" if median_value >= high_q else "mid" if median_value >= low_q else "low"
        value = customer_value_summary(members, horizon_days, value_note)
        lapsed_share = round(float(lapsed[in_segment].mean()), 4)
        measure = value["mean_p_alive"] if by_p_alive else lapsed_share
        profile: dict[str, Any] = {
            "segment_id": int(segment_id),
            "name": "",
            "suppressed": False,
            "description": "",
            "size": int(in_segment.sum()),
            "share_of_customers": round(float(in_segment.mean()), 4),
            "revenue_share": round(float(members["net_revenue"].sum() / total_revenue), 4) if total_revenue else 0.0,
            "value_tier": tier,
            "position": (UNASSIGNED if segment_id == NOISE else
                         position_name(tier, members["orders_per_month"].median() >= median_rate,
                                       members["tenure_days"].median() < median_tenure / 2)),
            **{column: _stats(members[column]) for column in STAT_COLUMNS},
            "return_rate": round(float(members["return_rate_value"].mean()), 4),
            "lapsed_share": lapsed_share,
            "customer_value": value,
            "lifecycle": {"state": lifecycle_state(measure, population_lifecycle, higher_is_riskier=not by_p_alive),
                          "basis": "mean_p_alive" if by_p_alive else "lapsed_share",
                          "segment": round(float(measure), 4), "population": round(float(population_lifecycle), 4),
                          "margin": LIFECYCLE_MARGIN},
            "top_departments": department_mix[:cfg.top_departments],
            "top_classes": (_shares_with_lift(class_spend.loc[segment_id], class_spend.sum(), cfg.top_classes)
                            if class_spend is not None and cfg.top_classes else []),
            "seasonal_peaks": _seasonal_peaks(monthly_spend, segment_id) if monthly_spend is not None else [],
            "attribute_mix": {a: _shares_with_lift(t.loc[segment_id], t.sum(), 5, label="value")
                              for a, t in (attribute_spend or {}).items() if segment_id in t.index},
            "demographics": demographics(members, cfg.describe_columns, cfg.age_bands, cfg.min_segment_size),
            "_focus": focus_departments(share, lift),
            "_by_share": [d["department"] for d in department_mix],
            "_has_departments": has_departments,
        }
        profile["strategy"] = strategy_for(strategies, profile, lift, population_share,
                                           catch_all=segment_id == NOISE)
        profile["strategy"]["cross_sell_source"] = "lift"
        _apply_model_cross_sell(profile, cross_sell, strategies)
        profile["explanation"] = explain_from_moments(moments, segment_id, cfg.explain_features, hierarchy)
        profiles.append(profile)
    _assign_unique_names(profiles, customers, labels, model_columns, hierarchy, moments)
    for profile in profiles:
        profile["description"] = describe(profile, cfg.lapsed_after_days, cfg.currency, has_departments)
    return profiles


def with_cross_sell(profiles: list[dict[str, Any]], cross_sell: dict[int, list[str]] | None,
                    strategies: StrategyTable) -> list[dict[str, Any]]:
    """:func:`profile_segments`' profiles as they would be with ``cross_sell`` given (the model's ranked
    departments): a copy, where each listed segment's ``strategy.cross_sell`` comes from them
    (``cross_sell_source`` ``recommendations``). Lets the profiles be built before the model is fitted."""
    out = copy.deepcopy(profiles)
    for profile in out:
        _apply_model_cross_sell(profile, cross_sell, strategies)
    return out


def _apply_model_cross_sell(profile: dict[str, Any], cross_sell: dict[int, list[str]] | None,
                            strategies: StrategyTable) -> None:
    """Give ``profile`` the model's cross-sell list when ``cross_sell`` ranks departments for its segment."""
    if cross_sell and int(profile["segment_id"]) in cross_sell:
        profile["strategy"]["cross_sell"] = pick_cross_sell(
            cross_sell[int(profile["segment_id"])], [t["department"] for t in profile["top_departments"]],
            strategies.cross_sell.max_categories)
        profile["strategy"]["cross_sell_source"] = "recommendations"


def pick_cross_sell(ranked: list[str], exclude: list[str], n: int) -> list[str]:
    """The first ``n`` departments of ``ranked`` not in ``exclude`` (the segment's own top departments)."""
    return [d for d in ranked if d not in exclude][:n]


def lift_cross_sell(spend_by_segment: pd.DataFrame, top_departments: int, strategies: StrategyTable
                    ) -> dict[int, tuple[list[str], list[str]]]:
    """The lift heuristic's cross-sell list of each segment, and the top departments it excludes.

    The computation :func:`profile_segments` makes from the segment x
    department net spend (rows: segment ids), so the holdout can measure the
    heuristic on spend before its window.
    """
    population = spend_by_segment.sum()
    share = (population / population.sum()).to_dict() if population.sum() else {}
    out = {}
    for segment_id in spend_by_segment.index:
        mix = _shares_with_lift(spend_by_segment.loc[segment_id], population, spend_by_segment.shape[1],
                                label="department")
        top = [d["department"] for d in mix[:top_departments]]
        lift = {d["department"]: d["lift"] for d in mix}
        out[int(segment_id)] = (strategies_cross_sell(lift, share, top, strategies.cross_sell), top)
    return out


def focus_departments(share: dict[str, float], lift: dict[str, float]) -> list[str]:
    """Departments that set a segment apart, most distinctive first.

    Distinctiveness is a department's term in the divergence of the
    segment's spend mix from everyone's, ``share * ln(lift)``: a large share
    bought well above the average. Only departments with at least
    :data:`MIN_FOCUS_SHARE` of the spend and a lift of at least
    :data:`MIN_FOCUS_LIFT` qualify; none gives the name "Mixed".
    """
    qualified = [d for d in share if share[d] >= MIN_FOCUS_SHARE and lift.get(d, 0.0) >= MIN_FOCUS_LIFT]
    return sorted(qualified, key=lambda d: (-share[d] * np.log(lift[d]), d))


def _seasonal_peaks(monthly_spend: pd.DataFrame, segment_id: int) -> list[dict[str, Any]]:
    """The two months holding the most of the segment's spend, with their index against everyone."""
    if segment_id not in monthly_spend.index:
        return []
    segment = monthly_spend.loc[segment_id]
    population = monthly_spend.sum()
    if segment.sum() <= 0 or population.sum() <= 0:
        return []
    segment_share = segment / segment.sum()
    population_share = population / population.sum()
    peaks = segment_share.sort_values(ascending=False, kind="stable").head(2)
    return [{"month": MONTHS[int(m) - 1], "spend_share": round(float(v), 4),
             "index": round(float(v / population_share[m]), 2) if population_share[m] > 0 else 0.0}
            for m, v in peaks.items()]


def _assign_unique_names(profiles: list[dict[str, Any]], customers: pd.DataFrame | None = None,
                         labels: np.ndarray | None = None, columns: list[str] | None = None,
                         hierarchy: Hierarchy | None = None, moments: SegmentMoments | None = None) -> None:
    """Lifecycle word (only where it sets the segment apart) + position + focus department; a clash adds
    the next focus department, then the segment's next department by spend ("+ Home"), then the traits
    that set each clashing segment apart from its namesakes (:func:`distinguishing_traits`), and a number
    only when none does. Without departments in the data, names stop at the position."""
    for p in profiles:
        p["_depth"] = 1
    while True:
        for p in profiles:
            if p["segment_id"] == NOISE:
                p["name"] = "Unassigned (noise)"
            else:
                word = LIFECYCLE_WORDS[p["lifecycle"]["state"]]
                p["name"] = f"{word + ' ' if word else ''}{p['position']}"
                if p["_has_departments"]:
                    p["name"] += f" - {' & '.join(p['_focus'][:p['_depth']]) or 'Mixed'} Shoppers"
        names = pd.Series([p["name"] for p in profiles])
        clashing = names.duplicated(keep=False)
        grow = [p for p, c in zip(profiles, clashing) if c and p["_depth"] < len(p["_focus"])]
        if not clashing.any() or not grow:
            break
        for p in grow:
            p["_depth"] += 1
    clashing = pd.Series([p["name"] for p in profiles]).duplicated(keep=False)
    for p, clash in zip(profiles, clashing):
        extra = [d for d in p["_by_share"] if d not in p["_focus"][:p["_depth"]]]
        if clash and extra and p["segment_id"] != NOISE:
            p["name"] = f"{p['name']} (+ {extra[0]})"
    if customers is not None and labels is not None:
        _name_traits(profiles, customers, labels, columns or [], hierarchy, moments)
    seen: dict[str, int] = {}
    for p in profiles:
        seen[p["name"]] = seen.get(p["name"], 0) + 1
        if seen[p["name"]] > 1:
            p["name"] = f"{p['name']} #{seen[p['name']]}"
    for p in profiles:
        for key in ("_focus", "_depth", "_by_share", "_has_departments", "_traits", "_named", "_base"):
            p.pop(key, None)


def _name_traits(profiles: list[dict[str, Any]], customers: pd.DataFrame, labels: np.ndarray,
                 columns: list[str], hierarchy: Hierarchy | None, moments: SegmentMoments | None = None) -> None:
    """Add to each group of clashing names the traits that tell its segments apart, one more while they clash."""
    for _ in range(3):
        names = pd.Series([p["name"] for p in profiles])
        groups = [g for _, g in names[names.duplicated(keep=False)].groupby(names, sort=False)]
        if not groups:
            return
        grew = False
        for group in groups:
            members = [profiles[i] for i in group.index if profiles[i]["segment_id"] != NOISE]
            ids = [p["segment_id"] for p in members]
            for p in members:
                p.setdefault("_traits", distinguishing_traits(customers, labels, p["segment_id"], ids, columns,
                                                              hierarchy, p.get("seasonal_peaks") or [], moments))
                p.setdefault("_named", 0)
                p.setdefault("_base", p["name"])
                if p["_named"] < len(p["_traits"]):
                    p["_named"] += 1
                    grew = True
                    p["name"] = f"{p['_base']} ({', '.join(p['_traits'][:p['_named']])})"
        if not grew:
            return


def distinguishing_traits(customers: pd.DataFrame, labels: np.ndarray, segment_id: int, namesakes: list[int],
                          columns: list[str], hierarchy: Hierarchy | None,
                          peaks: list[dict[str, Any]], moments: SegmentMoments | None = None) -> list[str]:
    """What sets a segment apart from the segments sharing its name, strongest first.

    Each feature of ``columns`` with a phrase (:func:`trait_phrase`) is
    compared between the segment's customers and its namesakes' by
    standardised mean difference; those at least :data:`MIN_TRAIT_SMD` apart
    give a trait ("frequent orders", "big baskets"). Then the segment's
    busiest month, when it holds :data:`MIN_PEAK_INDEX` times its usual
    share of spend ("December peak"): measured on the data's own calendar.
    """
    present = [c for c in columns if c in customers.columns]
    if moments is None or not set(present) <= set(moments.columns):
        moments = SegmentMoments.of(customers, labels, present)
    position = {c: i for i, c in enumerate(moments.columns)}
    inside = moments.pooled([segment_id])
    others = moments.pooled([s for s in namesakes if s != segment_id])
    rest = moments.pooled(moments.everyone_but(segment_id))
    ranked = []
    if inside[0] and others[0] and rest[0]:
        against_namesakes, against_rest = _smd_of(inside, others), _smd_of(inside, rest)
        for column in present:
            smd, against_everyone = against_namesakes[position[column]], against_rest[position[column]]
            # A trait must hold against everyone too: a segment less frequent than its namesake but more
            # frequent than most customers is not named for "infrequent orders".
            if min(abs(smd), abs(against_everyone)) < MIN_TRAIT_SMD or np.sign(against_everyone) != np.sign(smd):
                continue
            phrase = trait_phrase(column, smd > 0, hierarchy) if hierarchy is not None else _TRAITS.get(
                column, (None, None))[0 if smd > 0 else 1]
            if phrase:
                ranked.append((-abs(smd), column, phrase))
    traits = [phrase for _, _, phrase in sorted(ranked)]
    if peaks and peaks[0]["index"] >= MIN_PEAK_INDEX:
        traits.append(f"{peaks[0]['month']} peak")
    return list(dict.fromkeys(traits))


def describe(profile: dict[str, Any], lapsed_after_days: int, currency: str, has_departments: bool = True) -> str:
    """One paragraph built from a profile's numbers (departments only when the data has them)."""
    if profile["segment_id"] == NOISE:
        lead = "Customers the density-based method could not place in any segment"
    else:
        lead = profile["name"]
    tops = profile["top_departments"]
    focus = ", ".join(f"{t['department']} ({100 * t['spend_share']:.0f}% of their spend, "
                      f"{t['lift']:.1f}x the average customer)" for t in tops[:2])
    rest = [t["department"] for t in tops[2:]]
    if rest:
        focus += f" and {', '.join(rest)}"
    focus = f"They buy most in {focus}. " if tops else "They bought no merchandise. " if has_departments else ""
    text = (f"{lead}: {profile['size']:,} customers ({100 * profile['share_of_customers']:.1f}%) bringing "
            f"{100 * profile['revenue_share']:.1f}% of net revenue. They last bought a median "
            f"{profile['recency_days']['median']:.0f} days ago, order {profile['orders_per_month']['median']:.1f} "
            f"times a month with a typical order of {currency}{profile['average_order_value']['median']:,.0f}, "
            f"and spend a median {currency}{profile['net_revenue']['median']:,.0f} in all. {focus}"
            f"{100 * profile['lapsed_share']:.0f}% have not ordered in {lapsed_after_days}+ days; "
            f"{100 * profile['return_rate']:.0f}% of what they buy by value comes back.")
    text += " " + _value_sentence(profile.get("customer_value"), currency)
    peaks = profile.get("seasonal_peaks") or []
    if peaks and peaks[0]["index"] >= 1.15:
        text += f" Their busiest month is {peaks[0]['month']} ({peaks[0]['index']:.1f}x the usual share)."
    who = _who(profile.get("demographics") or {})
    return f"{text} {who}" if who else text


def _value_sentence(value: dict[str, Any] | None, currency: str) -> str:
    """Chance of still being a customer, churn risk and expected revenue, or why they are not known."""
    if not value or value.get("mean_p_alive") is None:
        note = (value or {}).get("note") or "not estimated"
        return f"Customer value {note}."
    return (f"On average they have a {100 * value['mean_p_alive']:.0f}% chance of still being customers; "
            f"{100 * value['churn_risk_share']['high']:.0f}% are at high churn risk, and together they are "
            f"expected to spend {currency}{value['expected_revenue']:,.0f} in the next {value['horizon_days']} days.")


def _who(demo: dict[str, Any]) -> str:
    """A short sentence on who the customers are, from the demographics summary."""
    parts = []
    gender = demo.get("gender")
    if gender:
        top, share = next(iter(gender.items()))
        parts.append(f"{100 * share:.0f}% {top.lower()}")
    bands = (demo.get("age") or {}).get("bands")
    if bands:
        band, share = max(bands.items(), key=lambda kv: kv[1])
        parts.append(f"most often aged {band} ({100 * share:.0f}%)")
    children = demo.get("has_children")
    if children:
        parts.append(f"{100 * children['share_true']:.0f}% with children")
    return ("They are " + ", ".join(parts) + ".") if parts else ""


def suppress_small_segments(profiles: list[dict[str, Any]], min_segment_size: int) -> list[dict[str, Any]]:
    """Segments below ``min_segment_size`` keep only id, a neutral name and size.

    Their descriptive name would already describe a handful of customers, so
    it becomes "Small segment <id>" (everywhere: export, report, per-customer
    table).
    """
    out = []
    for p in profiles:
        if p["size"] >= min_segment_size:
            out.append(p)
        else:
            out.append({"segment_id": p["segment_id"], "name": f"Small segment {p['segment_id']}", "suppressed": True,
                        "size": p["size"], "share_of_customers": p["share_of_customers"],
                        "reason": f"Fewer than {min_segment_size} customers, so not described, to protect privacy."})
    return out


# --- identifiers: what stage 05 looks for before it writes an export --------------------------------

# Shapes of direct identifiers, found wherever a string comes from (a profile column, strategies.yml, a
# name): an email address, a UK postcode, a phone number with 7 to 15 digits.
EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# The Royal Mail's outward code (area letters, district) and inward code (sector digit, two unit letters,
# which never use C I K M O V); letters all upper or all lower case ("Q4 2nd" is not a postcode).
UK_POSTCODE = re.compile(
    r"(?<![A-Za-z0-9])(?:[A-PR-UWYZ](?:[0-9]{1,2}|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPSTUW]|[A-HK-Y][0-9][ABEHMNPRVWXY])"
    r" ?[0-9][ABD-HJLNP-UW-Z]{2}|GIR ?0AA)(?![A-Za-z0-9])", re.IGNORECASE)
# A run of digits with the separators phone numbers are written with (spaces, hyphens, dots, brackets),
# optionally after +. Not after a letter, digit or currency sign: ids, hashes and amounts are not phones.
_PHONE_CANDIDATE = re.compile(r"(?<![\w+£$€¥.,/-])(?:\+|\()?\d[\d ().-]*\d(?![\w/])")
# Dates and times are digits and separators too: blanked out before phones are looked for.
_DATE_OR_TIME = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
                           r"|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?")
_DECIMAL = re.compile(r"\d+\.\d{1,2}")
PHONE_DIGITS = (7, 15)

# A value of an identifier column shorter than this, or a single word, is not looked for: it identifies
# nobody and collides with ordinary words (a first name "Hope", a surname "Pet", "n/a").
MIN_IDENTIFIER_LENGTH = 5
# Identifiers are looked for inside longer text as runs of up to this many words (a full name, a street
# address such as "Flat 58C, Rosie Curve"); a whole string is compared however long.
MAX_IDENTIFIER_WORDS = 8
_EDGE_PUNCTUATION = ".,;:!?()[]{}\"'"


def identifier_shapes(text: str) -> list[tuple[str, str]]:
    """The email-, UK-postcode- and phone-shaped parts of ``text``, as (kind, matched text) pairs.

    Money (``£12.50``, ``1,234``), dates and times (``2024-03-31``,
    ``31/03/2024``, ``12:00``), ids and hashes glued to letters, and ordinary
    words are not identifiers.
    """
    found = [("an email address", m.group()) for m in EMAIL.finditer(text)]
    rest = EMAIL.sub(" ", text)
    for m in UK_POSTCODE.finditer(rest):
        letters = "".join(ch for ch in m.group() if ch.isalpha())
        if letters.isupper() or letters.islower():
            found.append(("a UK postcode", m.group()))
    for m in _PHONE_CANDIDATE.finditer(_DATE_OR_TIME.sub(" ", rest)):
        if _phone_shaped(m.group()):
            found.append(("a phone number", m.group()))
    return found


def _phone_shaped(candidate: str) -> bool:
    """7 to 15 digits written as a phone number is: after +, ( or a trunk 0 (``+44 20 7946 0958``,
    ``(555) 123-4567``, ``07700 900123``), as one block of 10 or more digits, or in three or more groups
    ending in one of 3 or more digits (``555-123-4567``); not a decimal (``1234567.50``) nor a list of small
    numbers or a year range (``10 12 14 16``, ``2023-2024``)."""
    groups = re.findall(r"\d+", candidate)
    digits = sum(len(g) for g in groups)
    if not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1] or _DECIMAL.fullmatch(candidate):
        return False
    return (candidate[0] in "+(0" or (len(groups) == 1 and digits >= 10)
            or (len(groups) >= 3 and len(groups[-1]) >= 3))


def _normalised(text: str) -> str:
    return " ".join(str(text).split()).strip(_EDGE_PUNCTUATION).casefold()


def identifier_values(frame: pd.DataFrame) -> set[str]:
    """Values of ``frame``'s direct-identifier columns that could single a customer out, normalised.

    The columns are those named like identifiers
    (:func:`core.domain.columns.identifier_columns`) and the identity columns
    of ``customers.parquet`` (:data:`core.domain.tables.IDENTITY_COLUMNS`),
    except ``customer_id`` (small integers that match counts by chance; the
    export has no per-customer rows by construction). A first or last name
    alone identifies nobody and collides with ordinary words (a class called
    "Pet", a surname "Hope"); the full name does, so it is what is kept. So
    is every other value that is at least :data:`MIN_IDENTIFIER_LENGTH`
    characters long and holds a digit, an ``@`` or more than one word.
    Values are compared case-insensitively with spaces collapsed.
    """
    columns = [c for c in dict.fromkeys([*identifier_columns(frame.columns),
                                         *(c for c in IDENTITY_COLUMNS if c in frame.columns)])
               if c != ID_COLUMN]
    values: set[str] = set()
    for column in columns:
        if column in ("first_name", "last_name"):
            continue
        values.update(frame[column].dropna().astype(str).map(_normalised))
    if "first_name" in frame.columns and "last_name" in frame.columns:
        full = frame["first_name"].astype("string") + " " + frame["last_name"].astype("string")
        values.update(full.dropna().map(_normalised))
    return {v for v in values if _is_identifier(v)}


def _is_identifier(value: str) -> bool:
    """The test :func:`identifier_values` puts a normalised value to (long enough, and not one bare word)."""
    return len(value) >= MIN_IDENTIFIER_LENGTH and (" " in value or "@" in value or any(ch.isdigit() for ch in value))


def known_identifiers(table, phrases: set[str]) -> set[str]:
    """``identifier_values(table) & phrases``, without normalising every value in Python.

    ``table`` is a DataFrame or a pyarrow Table. Text columns are normalised
    by Arrow where :func:`_normalised` is plain ASCII work (strings of
    printable ASCII, where Python's whitespace is the space alone and
    ``casefold`` is ``lower``: spaces collapsed, edge punctuation stripped,
    lower case), and only then matched against ``phrases``; any other value
    (non-ASCII, control characters, a column that is not text) goes through
    :func:`_normalised` itself, so the result is exactly what
    :func:`identifier_values` gives. The Python route alone took 9.9 s per
    100,000 customers of customers.parquet (docs/decisions.md).
    """
    return NormalisedIdentifiers([table]).matches(phrases)


class NormalisedIdentifiers:
    """Tables' identifier values (those :func:`identifier_values` reads) normalised once, to be matched against
    the phrases of any number of exports (:meth:`matches`, :func:`leaked_identifiers`).

    Normalising is the costly part (Arrow's string kernels over every value; at a million customers about 1.5
    CPU-s with the read); matching a document's few thousand phrases is a hash lookup per value. Stage 05
    normalises customers.parquet's while the next-best classes are still being fitted, and checks each export
    once they are. ``tables`` as :func:`known_identifiers`' ``table``, read one after another (memory: the
    normalised text, not the tables).
    """

    def __init__(self, tables: Iterable = ()):
        self._arrow: list = []  # normalised Arrow text, plain printable ASCII values
        self._python: set[str] = set()  # every other value, normalised by _normalised
        for table in tables:
            self._add(table)

    def _add(self, table) -> None:
        names = list(table.columns) if isinstance(table, pd.DataFrame) else table.column_names
        columns = [c for c in dict.fromkeys([*identifier_columns(names), *(c for c in IDENTITY_COLUMNS if c in names)])
                   if c != ID_COLUMN and c not in ("first_name", "last_name")]
        for column in columns:
            self._add_text(_arrow_text(table, column), lambda c=column: _pandas_column(table, c).dropna().astype(str))
        if "first_name" in names and "last_name" in names:
            first, last = _arrow_text(table, "first_name"), _arrow_text(table, "last_name")
            full = None
            if first is not None and last is not None:
                import pyarrow as pa
                import pyarrow.compute as pc

                full = pc.binary_join_element_wise(first, last.cast(first.type), pa.scalar(" ", first.type))
            self._add_text(full, lambda: (_pandas_column(table, "first_name").astype("string") + " "
                                          + _pandas_column(table, "last_name").astype("string")).dropna())

    def _add_text(self, text, values) -> None:
        """Normalise Arrow ``text`` (None: ``values()``, a Series, through :func:`_normalised` in Python)."""
        if text is None:
            self._python.update(map(_normalised, values()))
            return
        import pyarrow.compute as pc

        text = text.drop_null()
        # Printable ASCII without a double space: the only whitespace is single spaces (no regex: RE2 was 80% of it).
        plain = pc.and_(pc.and_(pc.string_is_ascii(text), pc.ascii_is_printable(text)),
                        pc.invert(pc.match_substring(text, "  ")))
        simple = pc.utf8_trim(pc.filter(text, plain), characters=" ")
        self._arrow.append(pc.ascii_lower(pc.utf8_trim(simple, characters=_EDGE_PUNCTUATION)))
        self._python.update(map(_normalised, pc.filter(text, pc.invert(plain)).to_pylist()))

    def matches(self, phrases: set[str]) -> set[str]:
        """The normalised identifier values among ``phrases`` (normalised text), as :func:`identifier_values`
        keeps them (long enough, not one bare word)."""
        found = self._python & set(phrases)
        if phrases and self._arrow:
            import pyarrow as pa
            import pyarrow.compute as pc

            for simple in self._arrow:
                wanted = pa.array(sorted(phrases), type=simple.type)
                found |= set(pc.filter(simple, pc.is_in(simple, value_set=wanted)).to_pylist())
        return {v for v in found if _is_identifier(v)}


def _pandas_column(table, column: str) -> pd.Series:
    return table[column] if isinstance(table, pd.DataFrame) else table.column(column).to_pandas()


def _arrow_text(table, column: str):
    """One column as Arrow text, or None when it is not text (it then takes the Python route)."""
    import pyarrow as pa

    if isinstance(table, pd.DataFrame):
        try:
            array = pa.array(table[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
    else:
        array = table.column(column)
    return array if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) else None


@dataclasses.dataclass(frozen=True)
class IdentifierLeak:
    """A direct identifier found in an export.

    Attributes
    ----------
    path : tuple
        Where, as keys and list positions from the document's root, e.g.
        ``("segments", 0, "demographics", "region", "jane@example.com")``.
    kind : str
        ``an email address``, ``a UK postcode``, ``a phone number`` or
        ``a customer's identifier in customers.parquet``.
    text : str
        The identifier itself: show it through :func:`masked` only.
    """

    path: tuple
    kind: str
    text: str


def leaked_identifiers(export: Any, identifier_tables: Iterable[pd.DataFrame] = ()) -> list[IdentifierLeak]:
    """Every identifier in ``export`` (keys and string values): identifier-shaped text and customers' values.

    Parameters
    ----------
    export : dict or list
        The document about to be written.
    identifier_tables : iterable of DataFrame, Arrow Table or NormalisedIdentifiers
        Tables whose identifier columns hold customers' identifiers
        (:func:`identifier_values` of each), e.g. ``customers.parquet`` in
        batches, or their values already normalised (a
        :class:`NormalisedIdentifiers`, for several exports). A value is found as a whole string or as a run of up to
        :data:`MAX_IDENTIFIER_WORDS` words inside one. The export's phrases
        are gathered first and each table checked against them, so memory
        stays that of the export and one table, however many customers.

    Returns
    -------
    list of IdentifierLeak
        In document order; empty when the export is clean.
    """
    strings: list[tuple[tuple, str]] = []

    def walk(value: Any, path: tuple) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    strings.append(((*path, key), key))
                walk(item, (*path, key))
        elif isinstance(value, (list, tuple)):
            for position, item in enumerate(value):
                walk(item, (*path, position))
        elif isinstance(value, str):
            strings.append((path, value))

    walk(export, ())
    # Each string's shapes, and its phrases: the whole string and every run of a few words.
    scanned = []
    for path, text in strings:
        words = text.split()
        runs = {" ".join(words[i:j]) for i in range(len(words))
                for j in range(i + 1, min(len(words), i + MAX_IDENTIFIER_WORDS) + 1)} | {text}
        scanned.append((path, identifier_shapes(text), {_normalised(run): run.strip(_EDGE_PUNCTUATION)
                                                        for run in sorted(runs, key=len)}))
    phrases = set().union(*(runs for _, _, runs in scanned))
    known: set[str] = set()
    for table in identifier_tables:
        normalised = table if isinstance(table, NormalisedIdentifiers) else NormalisedIdentifiers([table])
        known |= normalised.matches(phrases)
    found: list[IdentifierLeak] = []
    for path, shapes, runs in scanned:
        found.extend(IdentifierLeak(path, kind, match) for kind, match in shapes)
        found.extend(IdentifierLeak(path, "a customer's identifier in customers.parquet", run)
                     for phrase, run in runs.items()
                     if phrase in known and not any(run in match for _, match in shapes))
    return found


def masked(text: str) -> str:
    """``text`` with all but its first and last character starred (``j******************m``): enough to find
    it in one's own data, not enough to read it off a log."""
    text = str(text)
    if len(text) <= 2:
        return "*" * len(text)
    return text[0] + "*" * (len(text) - 2) + text[-1]


def insights_table(profiles: list[dict[str, Any]]) -> pd.DataFrame:
    """``cluster_insights.csv``: one row per segment, the profile's numbers flattened."""
    rows = []
    for p in profiles:
        row = {"segment_id": p["segment_id"], "name": p["name"], "size": p["size"],
               "share_of_customers": p["share_of_customers"], "revenue_share": p["revenue_share"],
               "value_tier": p["value_tier"], "position": p["position"]}
        for key in STAT_COLUMNS:
            for stat in ("mean", "median", "q1", "q3"):
                row[f"{key}_{stat}"] = p[key][stat]
        row["return_rate"] = p["return_rate"]
        row["lapsed_share"] = p["lapsed_share"]
        value = p["customer_value"]
        row["mean_p_alive"] = value["mean_p_alive"]
        for level in CHURN_RISK_LEVELS:
            row[f"churn_risk_{level}_share"] = value["churn_risk_share"][level] if value["churn_risk_share"] else None
        row["expected_revenue"] = value["expected_revenue"]
        row["expected_revenue_horizon_days"] = value["horizon_days"]
        row["customer_value_note"] = value["note"]
        row["lifecycle"] = p["lifecycle"]["state"]
        for i, t in enumerate(p["top_departments"], start=1):
            row[f"top_department_{i}"] = t["department"]
            row[f"top_department_{i}_share"] = t["spend_share"]
            row[f"top_department_{i}_lift"] = t["lift"]
        for i, t in enumerate(p.get("top_classes", []), start=1):
            row[f"top_class_{i}"] = f"{t['department']}: {t['class']}"
            row[f"top_class_{i}_share"] = t["spend_share"]
            row[f"top_class_{i}_lift"] = t["lift"]
        peaks = p.get("seasonal_peaks") or []
        for i in range(2):
            row[f"peak_month_{i + 1}"] = peaks[i]["month"] if len(peaks) > i else ""
            row[f"peak_month_{i + 1}_index"] = peaks[i]["index"] if len(peaks) > i else None
        for column, summary in (p.get("demographics") or {}).items():
            for key, value in summary.items():
                if isinstance(value, dict):  # age bands
                    row.update({f"{column}_{band}": share for band, share in value.items()})
                else:
                    row[f"{column}_{key}"] = value
        for attribute, mix in (p.get("attribute_mix") or {}).items():
            row.update({f"{attribute}_{m['value']}_share": m["spend_share"] for m in mix})
        row["strategy_rule"] = p["strategy"]["rule"]
        row["cross_sell"] = "; ".join(p["strategy"]["cross_sell"])
        row["distinguishing_features"] = "; ".join(f"{e['label']} ({e['smd']:+.1f} SD)"
                                                   for e in p["explanation"]["features"])
        rows.append(row)
    return pd.DataFrame(rows)


def text_column(values, codes: np.ndarray):
    """``values[codes]`` as the text column pandas makes of Python strings (the ``str`` dtype, Arrow-backed; a
    None of ``values`` is missing), taken in Arrow from the few distinct values: no Python string per row (at a
    million rows, a Python string each and back was most of the time of a table's text columns)."""
    import pyarrow as pa

    taken = pa.array(list(values), pa.large_string()).take(pa.array(codes))  # the str dtype's own type: no cast
    return pd.array(taken, dtype=pd.StringDtype(na_value=np.nan))


def _names_of(labels: np.ndarray, names: dict[int, str], missing: str | None):
    """Each label's name (``missing`` for a label ``names`` lacks) as a :func:`text_column`."""
    known = np.array(sorted(names), dtype=np.int64)
    where = np.minimum(np.searchsorted(known, labels), max(len(known) - 1, 0))
    found = known[where] == labels if len(known) else np.zeros(len(labels), bool)
    return text_column([*(names[k] for k in known), missing], np.where(found, where, len(known)))


def customers_with_segments(assignments: pd.DataFrame, names: dict[int, str],
                            values: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per customer: segment id and name, strength, the runner-up segment, and customer value.

    Parameters
    ----------
    assignments : DataFrame
        ``customer_id``, ``segment``, ``segment_strength``, ``segment_runner_up`` and,
        when stage 04 passed it on, ``reconstruction_error`` (the autoencoder's
        outlier signal), copied as it is.
    names : dict of int to str
        Segment id -> name.
    values : DataFrame, optional
        Stage 02's ``p_alive``, ``expected_orders``, ``expected_revenue`` and
        ``churn_risk`` indexed by ``customer_id`` (null when not estimated);
        appended as they are. Every customer of ``assignments`` must be there.
    """
    runner_up = assignments["segment_runner_up"].to_numpy()
    extra = ({"reconstruction_error": assignments["reconstruction_error"].to_numpy(np.float64)}
             if "reconstruction_error" in assignments else {})
    segments = assignments["segment"].to_numpy()
    table = pd.DataFrame({
        "customer_id": assignments["customer_id"].to_numpy(),
        "segment_id": segments,
        "segment_name": _names_of(segments, names, None),
        "strength": assignments["segment_strength"].to_numpy(np.float64),
        "runner_up_segment_id": runner_up,
        "runner_up_segment_name": _names_of(runner_up, names, ""),
        **extra,
    })
    if values is not None:
        joined = values.reindex(assignments["customer_id"].to_numpy())
        for column in values.columns:
            table[column] = pd.Series(joined[column].array, index=table.index)  # keeps the text dtype of churn_risk
    return table
