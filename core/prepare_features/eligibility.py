"""Who is segmented: the customers with features who pass the eligibility rules.

Every customer of the lines or of the customer table that is not segmented
is listed with a rule and a reason: first the customers who get no features
at all (:data:`NO_FEATURE_RULES`), then those whose features fail a
configured rule (:data:`ELIGIBILITY_RULES`, checked in that order; a customer
is listed under the first rule it fails).

:func:`eligible_customer_features` is the one path from order lines to the
eligible customers' features: stage 02 and the score command both call it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from core.domain.columns import ID_COLUMN
from core.domain.hierarchy import Hierarchy
from core.prepare_features.aggregate import FeatureSettings, build_customer_features
from core.prepare_features.settings import EligibilityConfig

# Rules for customers without features, then the configured rules, in the order they are checked.
NO_FEATURE_RULES = ("no_order_lines", "first_purchase_after_analysis_date", "only_returns_by_analysis_date",
                    "only_non_merchandise_by_analysis_date")
ELIGIBILITY_RULES = ("min_orders", "min_tenure_days", "min_net_spend", "max_recency_days")

_NO_FEATURE_REASONS = {
    "no_order_lines": "no order lines",
    "first_purchase_after_analysis_date": "first purchase after the analysis date",
    "only_returns_by_analysis_date": "only return lines by the analysis date",
    "only_non_merchandise_by_analysis_date": "only non-merchandise lines (gift cards, bag levy, ...) by the "
                                             "analysis date"}

#: The loosest rules: one order, net spend not below 0, any tenure and recency (the default of the functions
#: here; the pipeline always passes its config's ``prepare_features.eligibility``).
BASIC_ELIGIBILITY = EligibilityConfig(min_tenure_days=0, min_orders=1, min_net_spend=0.0, max_recency_days=None)


def apply_eligibility(features: pd.DataFrame, rules: EligibilityConfig) -> tuple[np.ndarray, pd.DataFrame]:
    """Which customers pass the eligibility rules; the others with the first rule they fail.

    Parameters
    ----------
    features : DataFrame
        One row per customer with ``customer_id``, ``orders``,
        ``tenure_days``, ``net_revenue`` and ``recency_days``.
    rules : EligibilityConfig
        Config ``prepare_features.eligibility``.

    Returns
    -------
    (keep, excluded)
        Boolean mask over ``features`` rows, and ``customer_id``, ``rule``,
        ``reason`` for the rows that fail.
    """
    checks = [
        ("min_orders", features["orders"] < rules.min_orders,
         lambda r: f"{r.orders:.0f} order(s), fewer than min_orders = {rules.min_orders}"),
        ("min_tenure_days", features["tenure_days"] < rules.min_tenure_days,
         lambda r: f"first order {r.tenure_days:.0f} days before the analysis date, under min_tenure_days = "
                   f"{rules.min_tenure_days}"),
        ("min_net_spend", features["net_revenue"] < rules.min_net_spend - 1e-9,
         lambda r: f"net spend {r.net_revenue:.2f}, below min_net_spend = {rules.min_net_spend:g}"),
        ("max_recency_days", (features["recency_days"] > rules.max_recency_days) if rules.max_recency_days is not None
         else pd.Series(False, index=features.index),
         lambda r: f"last order {r.recency_days:.0f} days ago, over max_recency_days = {rules.max_recency_days}"),
    ]
    failed = pd.Series(False, index=features.index)
    rows = []
    for rule, fails, reason in checks:
        new = fails.to_numpy(bool) & ~failed.to_numpy(bool)
        for r in features.loc[new, [ID_COLUMN, "orders", "tenure_days", "net_revenue", "recency_days"]
                              ].itertuples(index=False):
            rows.append((r.customer_id, rule, reason(r)))
        failed |= new
    excluded = pd.DataFrame(rows, columns=[ID_COLUMN, "rule", "reason"]).astype(
        {ID_COLUMN: np.int64, "rule": str, "reason": str})
    return ~failed.to_numpy(bool), excluded


def customers_without_features(activity: pd.DataFrame, customers: pd.DataFrame | None,
                               featured_ids: np.ndarray) -> pd.DataFrame:
    """Customers of the profile or the lines who get no features, each with the rule and reason.

    Parameters
    ----------
    activity : DataFrame
        :attr:`~core.prepare_features.aggregate.CustomerFeatures.activity`.
    customers : DataFrame or None
        The customer table: a customer in it without any line is listed too.
    featured_ids : ndarray
        The customers who got features.

    Returns
    -------
    DataFrame
        ``customer_id`` (sorted), ``rule`` (one of :data:`NO_FEATURE_RULES`), ``reason``.
    """
    seen = activity[ID_COLUMN].to_numpy()
    without = seen[~np.isin(seen, featured_ids)]
    if customers is not None:
        profiled = customers[ID_COLUMN].to_numpy()
        without = np.concatenate([without, profiled[~np.isin(profiled, seen)]])
    ids = np.unique(without)
    flags = activity.set_index(ID_COLUMN).reindex(ids)
    later = flags["later_purchase"].fillna(False).to_numpy(bool)
    other = flags["other_purchase"].fillna(False).to_numpy(bool)
    has_lines = flags["spend_purchase"].notna().to_numpy()
    rule = np.select([~has_lines, later, other],
                     ["no_order_lines", "first_purchase_after_analysis_date",
                      "only_non_merchandise_by_analysis_date"], "only_returns_by_analysis_date")
    return pd.DataFrame({ID_COLUMN: ids.astype(np.int64), "rule": pd.Series(rule, dtype=str),
                         "reason": pd.Series([_NO_FEATURE_REASONS[r] for r in rule], dtype=str)})


@dataclasses.dataclass(frozen=True)
class EligibleFeatures:
    """What :func:`eligible_customer_features` returns.

    Attributes
    ----------
    features : DataFrame
        The eligible customers' rows of
        :attr:`~core.prepare_features.aggregate.CustomerFeatures.features`,
        sorted by ``customer_id``, index 0..n-1.
    feature_columns : list of str
    class_long : DataFrame
        Their rows of ``CustomerFeatures.class_long``.
    dropped : dict of str to str
        Feature (or pattern) -> why it was not computed.
    excluded : DataFrame
        ``customer_id``, ``rule``, ``reason``: the customers without
        features (sorted by id), then those who failed a rule (in feature
        order).
    lines : dict
        Line counts for the manifest.
    analysis_date : Timestamp
    """

    features: pd.DataFrame
    feature_columns: list[str]
    class_long: pd.DataFrame
    dropped: dict[str, str]
    excluded: pd.DataFrame
    lines: dict[str, Any]
    analysis_date: pd.Timestamp

    @property
    def failed_rules(self) -> pd.DataFrame:
        """The rows of ``excluded`` of customers who had features but failed a rule."""
        return self.excluded[self.excluded["rule"].isin(ELIGIBILITY_RULES)]


def eligible_customer_features(lines, hierarchy: Hierarchy, analysis_date: pd.Timestamp | None,
                               settings: FeatureSettings = FeatureSettings(),
                               eligibility: EligibilityConfig = BASIC_ELIGIBILITY, *,
                               customers: pd.DataFrame | None = None) -> EligibleFeatures:
    """Features of the customers who pass the eligibility rules; the others listed with why.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        Order lines (see :func:`~core.prepare_features.aggregate.build_customer_features`).
    hierarchy : Hierarchy
    analysis_date : Timestamp or None
        None = the last ``order_date`` in the lines.
    settings : FeatureSettings
    eligibility : EligibilityConfig
    customers : DataFrame, optional
        The customer table: its customers without lines are listed as
        excluded too (stage 02); scoring passes none.

    Returns
    -------
    EligibleFeatures
        Possibly with no customer: the caller decides whether that is an error.
    """
    built, analysis_date = build_customer_features(lines, hierarchy, analysis_date, settings)
    # Only one full-width copy of the features is kept at a time: a million customers' is 0.6 GB.
    features, class_long = built.features, built.class_long
    no_features = customers_without_features(built.activity, customers, features[ID_COLUMN].to_numpy())
    feature_columns, dropped, line_counts = built.feature_columns, built.dropped, built.lines
    del built
    keep, failed = apply_eligibility(features, eligibility)
    if not keep.all():
        features = features[keep].reset_index(drop=True)
        class_long = class_long[keep[class_long["row"].to_numpy()]].reset_index(drop=True)
    return EligibleFeatures(features=features, feature_columns=feature_columns, class_long=class_long,
                            dropped=dropped, excluded=pd.concat([no_features, failed], ignore_index=True),
                            lines=line_counts, analysis_date=analysis_date)
