"""Stage 02's config section, ``prepare_features``: its typed form and its checks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import re

from core.domain.hierarchy import Hierarchy
from core.framework.schema import Problems, spec
from core.prepare_features.columns import check_model_patterns, possible_feature_names


@dataclasses.dataclass(frozen=True)
class EligibilityConfig:
    """Stage 02: which customers with a purchase are segmented; the others are listed with the rule.

    The one type of the rules: the config section, what
    :func:`core.prepare_features.eligibility.apply_eligibility` applies, and
    what ``feature-scaler.pkl`` carries for scoring.
    """

    min_tenure_days: int = spec(minimum=0, help="days from the first order to the analysis date, at least")
    min_orders: int = spec(minimum=1, help="orders (purchase transactions with merchandise), at least")
    min_net_spend: float = spec(help="net spend after returns, at least (currency units)")
    max_recency_days: int | None = spec(minimum=0, help="days since the last order, at most; null = no limit "
                                                        "(lapsed customers are a segment)")


ATTRIBUTES = ("channel", "brand_tier", "style", "color", "brand")


@dataclasses.dataclass(frozen=True)
class PrepareFeaturesConfig:
    """Stage 02: customer features, eligibility and the model matrix."""

    analysis_date: dt.date | None = spec(help="date features are measured at; null = last date in the data")
    eligibility: EligibilityConfig = spec()
    holiday_window: tuple[str, ...] | None = spec(help="[MM-DD, MM-DD] first and last day (inclusive) of the "
                                                       "holiday season for holiday_share; null = not measured")
    back_to_school_window: tuple[str, ...] | None = spec(help="[MM-DD, MM-DD] first and last day (inclusive) of "
                                                              "the back-to-school season for back_to_school_share; "
                                                              "null = not measured")
    seasons_for_file_data: bool = spec(help="false: with data.source file the two seasons are not measured (they "
                                            "are the synthetic retailer's calendar); true: they are your "
                                            "retailer's seasons, measured on your log")
    attribute_shares: tuple[str, ...] = spec(choices=ATTRIBUTES, help="line attributes whose spend shares "
                                                                      "become features, where the data has them")
    max_attribute_values: int = spec(minimum=2, help="columns per attribute at most; values beyond the "
                                                     "largest by spend pool as 'other'")
    kids_size_pattern: str = spec(help="regular expression (case-insensitive) matching kids' sizes, for "
                                       "kids_size_share")
    engine_memory_mb: int = spec(minimum=256, help="memory (MB) the aggregation engine (DuckDB) may hold; "
                                                   "beyond it, it spills to a temporary folder")
    class_mix_components: int = spec(minimum=0, help="class-mix columns (class_mix_01, ...): each customer's "
                                                     "class spend shares, square-rooted and projected on this many "
                                                     "singular vectors; 0 = none")
    model_features: tuple[str, ...] = spec(help="feature columns (fnmatch patterns) entering the model matrix")
    scaler: str = spec(choices=("standard", "robust"), help="model-matrix scaling: standard (mean 0, sd 1) or "
                                                           "robust (median 0, interquartile range 1)")
    log1p_features: tuple[str, ...] = spec(help="model features (patterns) log1p-transformed before scaling")
    sqrt_features: tuple[str, ...] = spec(default=(), help="model features (patterns) square-rooted before scaling: "
                                                           "shares of a whole (department, channel, brand-tier and "
                                                           "style mixes), the Hellinger geometry of compositions; "
                                                           "[] = none")


def check_model_features(cfg: PrepareFeaturesConfig, hierarchy: Hierarchy, problems: Problems) -> None:
    """Model-matrix patterns must name behavioural features and never an id, profile or ground-truth column."""
    for problem in check_model_patterns(cfg.model_features, hierarchy, cfg.attribute_shares):
        problems.add("prepare_features.model_features", problem)
    possible = possible_feature_names(hierarchy, cfg.attribute_shares)
    for pattern in cfg.log1p_features:
        if not any(fnmatch.fnmatchcase(c, pattern) for c in possible) and not any(
                pattern.startswith(f"{a}_share__") for a in cfg.attribute_shares):
            problems.add("prepare_features.log1p_features",
                         f"'{pattern}' matches no behavioural feature (e.g. {', '.join(possible[:6])}, ...)")
    for pattern in cfg.sqrt_features:
        if not any(fnmatch.fnmatchcase(c, pattern) for c in possible) and not any(
                pattern.startswith(f"{a}_share__") for a in cfg.attribute_shares):
            problems.add("prepare_features.sqrt_features",
                         f"'{pattern}' matches no behavioural feature (e.g. {', '.join(possible[:6])}, ...)")
    for pattern in cfg.sqrt_features:
        clash = [p for p in cfg.log1p_features if any(fnmatch.fnmatchcase(c, pattern) and fnmatch.fnmatchcase(c, p)
                                                       for c in possible)]
        if clash:
            problems.add("prepare_features.sqrt_features",
                         f"'{pattern}' names a feature log1p_features also transforms ({', '.join(clash)}); "
                         f"a feature gets one transform: remove it from one of the two lists")


def check_prepare_features(cfg: PrepareFeaturesConfig, problems: Problems) -> None:
    for name in ("holiday_window", "back_to_school_window"):
        window = getattr(cfg, name)
        key = f"prepare_features.{name}"
        if window is None:
            continue
        if len(window) != 2:
            problems.add(key, f"{list(window)} must be two days [MM-DD, MM-DD] (first and last, inclusive)")
            continue
        for day in window:
            try:
                dt.date.fromisoformat(f"2024-{day}")  # a leap year, so 02-29 is allowed
            except ValueError:
                problems.add(key, f"'{day}' is not a day of the year written MM-DD (e.g. '07-15'); quote it in "
                                  f"YAML")
    try:
        re.compile(cfg.kids_size_pattern)
    except re.error as exc:
        problems.add("prepare_features.kids_size_pattern", f"{cfg.kids_size_pattern!r} is not a regular "
                                                           f"expression: {exc}")
    if len(set(cfg.attribute_shares)) != len(cfg.attribute_shares):
        problems.add("prepare_features.attribute_shares", f"{list(cfg.attribute_shares)} lists a value twice")


@dataclasses.dataclass(frozen=True)
class CustomerValueConfig:
    """Stage 02: each customer's chance of still being active, expected orders and revenue, churn risk.

    The top-level section ``customer_value``, read by stage 02 (where each
    customer's order summary is): changing it reruns stage 02 and the stages
    after it. The model (MBG/NBD and Gamma-Gamma) is in
    :mod:`core.prepare_features.customer_value`.
    """

    enabled: bool = spec(help="false: the customer value columns are null, with the reason in the manifest")
    horizon_days: int = spec(minimum=1, help="days after the analysis date that expected_orders and "
                                             "expected_revenue cover")
    churn_risk_thresholds: tuple[float, ...] = spec(help="[high_below, medium_below]: p_alive below the first "
                                                         "is high churn risk, below the second medium, else low")
    min_repeat_buyers: int = spec(minimum=2, help="fewest customers who bought on two different days to fit the "
                                                  "models; fewer: the columns are null, with the reason")
    seasonal_index: bool = spec(help="true: the purchase model counts time in seasonal days (a month-of-year "
                                     "index estimated from the orders: a busy month's day counts more); "
                                     "false: calendar days")
    fit_sample_size: int = spec(minimum=1000, help="the models are fitted on at most this many customers (a "
                                                   "seeded sample) and then predict for everyone, so the fits "
                                                   "do not grow with the customer count")


def check_customer_value(cfg: CustomerValueConfig, problems: Problems) -> None:
    """The churn-risk thresholds are two increasing probabilities strictly between 0 and 1."""
    thresholds = list(cfg.churn_risk_thresholds)
    if len(thresholds) != 2 or not 0 < thresholds[0] < thresholds[1] < 1:
        problems.add("customer_value.churn_risk_thresholds",
                     f"{thresholds} must be two numbers [high_below, medium_below] with "
                     f"0 < high_below < medium_below < 1 (e.g. [0.3, 0.7])")
