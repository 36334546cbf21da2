"""Segment profiles: statistics, a readable name and a description per segment.

Names come from rules a person can check: the segment's *value* position
(median net revenue against population quantiles) and *engagement*
(median recency against the lapsed threshold, ordering rate against the
population median) give the position ("VIP Champions", "Loyal Regulars",
"Promising", "At-Risk", "Hibernating", ...); the department it over-indexes
on most gives the focus. Names are made unique within a run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.clustering import NOISE
from core.features import DEPT_SPEND, dept_column
from core.hierarchy import Hierarchy

# A department must hold at least this share of a segment's spend to name its focus.
MIN_FOCUS_SHARE = 0.10


def _stats(values: pd.Series) -> dict[str, float]:
    return {"mean": round(float(values.mean()), 2), "median": round(float(values.median()), 2)}


def department_spend(frame: pd.DataFrame, departments: list[str]) -> pd.DataFrame:
    """Net spend per department (negative net spend counted as 0), one column per department."""
    spend = frame[[dept_column(DEPT_SPEND, d) for d in departments]].clip(lower=0).to_numpy(np.float64)
    return pd.DataFrame(spend, columns=departments, index=frame.index)


def position_name(value_tier: str, lapsed: bool, frequent: bool, new: bool) -> str:
    """The value-and-engagement half of a segment name."""
    if lapsed:
        return "Hibernating" if value_tier == "low" else "At-Risk"
    if value_tier == "high":
        return "VIP Champions" if frequent else "Big-Basket Spenders"
    if value_tier == "mid":
        return "Loyal Regulars" if frequent else "Steady Shoppers"
    return "Promising Newcomers" if new else "Occasional Bargain Hunters"


def profile_segments(customers: pd.DataFrame, segments: pd.Series, hierarchy: Hierarchy,
                     top_departments: int, value_quantiles: tuple[float, float],
                     lapsed_after_days: int, currency: str = "£") -> list[dict[str, Any]]:
    """Describe every segment.

    Parameters
    ----------
    customers : DataFrame
        One row per customer with the stage-02 features (``net_revenue``,
        ``recency_days``, ``orders``, ``orders_per_month``,
        ``average_order_value``, ``return_rate_value``, ``tenure_days``,
        ``dept_spend__*``), indexed like ``segments``.
    segments : Series
        Segment id per customer (``-1``: HDBSCAN noise).

    Returns
    -------
    list of dict
        One profile per segment, ordered by segment id: ``segment_id``,
        ``name``, ``description``, ``size``, ``share_of_customers``,
        ``revenue_share``, RFM statistics, ``lapsed_share`` and
        ``top_departments`` (spend share and lift against the population).
    """
    departments = hierarchy.merchandise_departments
    spend = department_spend(customers, departments)
    population_mix = spend.sum() / max(spend.to_numpy().sum(), 1e-12)
    low_q, high_q = np.quantile(customers["net_revenue"], value_quantiles)
    median_rate = customers["orders_per_month"].median()
    median_tenure = customers["tenure_days"].median()
    total_revenue = customers["net_revenue"].sum()
    profiles = []
    for segment_id in sorted(segments.unique()):
        members = customers[segments.to_numpy() == segment_id]
        mix = spend.loc[members.index].sum()
        mix = mix / max(mix.sum(), 1e-12)
        lift = (mix / population_mix.replace(0, np.nan)).fillna(0.0)
        top = mix[mix > 0].sort_values(ascending=False).head(top_departments)
        median_value = members["net_revenue"].median()
        tier = "high" if median_value >= high_q else "mid" if median_value >= low_q else "low"
        lapsed_share = float((members["recency_days"] > lapsed_after_days).mean())
        profiles.append({
            "segment_id": int(segment_id),
            "size": int(len(members)),
            "share_of_customers": round(len(members) / len(customers), 4),
            "revenue_share": round(float(members["net_revenue"].sum() / total_revenue), 4)
            if total_revenue else 0.0,
            "value_tier": tier,
            "recency_days": _stats(members["recency_days"]),
            "orders": _stats(members["orders"]),
            "orders_per_month": _stats(members["orders_per_month"]),
            "net_revenue": _stats(members["net_revenue"]),
            "average_order_value": _stats(members["average_order_value"]),
            "return_rate": round(float(members["return_rate_value"].mean()), 4),
            "tenure_days": _stats(members["tenure_days"]),
            "lapsed_share": round(lapsed_share, 4),
            "top_departments": [{"department": d, "spend_share": round(float(mix[d]), 4),
                                 "lift": round(float(lift[d]), 2)} for d in top.index],
            "_position": position_name(tier, members["recency_days"].median() > lapsed_after_days,
                                       members["orders_per_month"].median() >= median_rate,
                                       members["tenure_days"].median() < median_tenure / 2),
            "_focus": _focus_order(mix, lift),
        })
    _assign_unique_names(profiles)
    for profile in profiles:
        profile["description"] = describe(profile, lapsed_after_days, currency)
    lead = ("segment_id", "name", "description")
    return [{**{k: p[k] for k in lead}, **{k: v for k, v in p.items() if k not in lead}} for p in profiles]


def _focus_order(mix: pd.Series, lift: pd.Series) -> list[str]:
    """Departments by lift among those holding a real share of the segment's spend (none: "Mixed")."""
    return list(lift[mix >= MIN_FOCUS_SHARE].sort_values(ascending=False).index)


def _assign_unique_names(profiles: list[dict[str, Any]]) -> None:
    """Position + focus department; a clash adds the next focus department, then a number."""
    for p in profiles:
        p["_depth"] = 1
    while True:
        for p in profiles:
            if p["segment_id"] == NOISE:
                p["name"] = "Unassigned (noise)"
            else:
                focus = " & ".join(p["_focus"][:p["_depth"]]) or "Mixed"
                p["name"] = f"{p['_position']} - {focus} Shoppers"
        names = pd.Series([p["name"] for p in profiles])
        clashing = names.duplicated(keep=False)
        grow = [p for p, c in zip(profiles, clashing) if c and p["_depth"] < len(p["_focus"])]
        if not clashing.any() or not grow:
            break
        for p in grow:
            p["_depth"] += 1
    seen: dict[str, int] = {}
    for p in profiles:
        seen[p["name"]] = seen.get(p["name"], 0) + 1
        if seen[p["name"]] > 1:
            p["name"] = f"{p['name']} #{seen[p['name']]}"
    for p in profiles:
        for key in ("_position", "_focus", "_depth"):
            p.pop(key)


def describe(profile: dict[str, Any], lapsed_after_days: int, currency: str) -> str:
    """One paragraph built from a profile's numbers."""
    if profile["segment_id"] == NOISE:
        lead = "Customers the density-based method could not place in any segment"
    else:
        lead = f"{profile['name']}"
    tops = profile["top_departments"]
    focus = ", ".join(f"{t['department']} ({100 * t['spend_share']:.0f}% of their spend, "
                      f"{t['lift']:.1f}x the average customer)" for t in tops[:2])
    rest = [t["department"] for t in tops[2:]]
    if rest:
        focus += f" and {', '.join(rest)}"
    focus = f"They buy most in {focus}" if tops else "They bought no merchandise"
    return (f"{lead}: {profile['size']:,} customers ({100 * profile['share_of_customers']:.1f}%) bringing "
            f"{100 * profile['revenue_share']:.1f}% of net revenue. They last bought a median "
            f"{profile['recency_days']['median']:.0f} days ago, order {profile['orders_per_month']['median']:.1f} "
            f"times a month with an average order of {currency}{profile['average_order_value']['mean']:.0f}, "
            f"and spend a median {currency}{profile['net_revenue']['median']:,.0f} in all. "
            f"{focus}. {100 * profile['lapsed_share']:.0f}% have not ordered in {lapsed_after_days}+ days; "
            f"{100 * profile['return_rate']:.0f}% of what they buy by value comes back.")


def insights_table(profiles: list[dict[str, Any]]) -> pd.DataFrame:
    """``cluster_insights.csv``: one row per segment, the profile's numbers flattened."""
    rows = []
    for p in profiles:
        row = {"segment_id": p["segment_id"], "name": p["name"], "size": p["size"],
               "share_of_customers": p["share_of_customers"], "revenue_share": p["revenue_share"],
               "value_tier": p["value_tier"]}
        for key in ("recency_days", "orders", "orders_per_month", "net_revenue", "average_order_value",
                    "tenure_days"):
            row[f"{key}_mean"] = p[key]["mean"]
            row[f"{key}_median"] = p[key]["median"]
        row["return_rate"] = p["return_rate"]
        row["lapsed_share"] = p["lapsed_share"]
        for i, t in enumerate(p["top_departments"], start=1):
            row[f"top_department_{i}"] = t["department"]
            row[f"top_department_{i}_share"] = t["spend_share"]
            row[f"top_department_{i}_lift"] = t["lift"]
        rows.append(row)
    return pd.DataFrame(rows)
