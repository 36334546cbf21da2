"""Stage 02's column vocabulary: feature names and their patterns, and the role of every column.

Column roles
    Every column of the stage's tables has one role (:func:`column_roles`):
    ``id`` (``customer_id``), ``feature`` (behavioural, from the lines),
    ``profile`` (descriptive: demographics, first and last order dates),
    ``ground_truth`` (the generator's ``persona`` and ``dropout_date``).
    Identity columns (names, contact details) never get a role: they are
    dropped before anything is joined. The model matrix takes ``feature``
    columns only (:func:`resolve_model_columns`).

The config loader checks model-feature patterns here before any data is read
(:func:`check_model_patterns`); the stage resolves them against the columns
it actually built (:func:`resolve_model_columns`). Each feature's formula is
in ``docs/features.md`` (the data dictionary).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Iterable

from core.domain.columns import ATTRIBUTE_COLUMNS, ID_COLUMN, identifier_columns
from core.domain.hierarchy import Hierarchy, slug
from core.domain.tables import CUSTOMER_COLUMNS, GROUND_TRUTH_COLUMNS, IDENTITY_COLUMNS

# Roles of the columns of stage 02's tables.
ROLE_ID, ROLE_FEATURE, ROLE_PROFILE, ROLE_GROUND_TRUTH = "id", "feature", "profile", "ground_truth"
ROLES = (ROLE_ID, ROLE_FEATURE, ROLE_PROFILE, ROLE_GROUND_TRUTH)

DATE_COLUMNS = ("first_order_date", "last_order_date")
CORE_FEATURES = ("recency_days", "tenure_days", "orders", "orders_per_month", "gross_revenue",
                 "returned_value", "net_revenue", "average_order_value", "items_per_order",
                 "return_rate_value", "return_rate_units", "mean_days_between_orders",
                 "cv_days_between_orders")
DIVERSITY_FEATURES = ("dept_entropy", "n_departments", "n_classes")
SEASONAL_FEATURES = ("spend_share_q1", "spend_share_q2", "spend_share_q3", "spend_share_q4",
                     "holiday_share", "back_to_school_share")
TREND_FEATURES = ("monthly_spend_cv", "spend_trend")
DISCOUNT_FEATURE = "discount_share"
KIDS_SIZE_FEATURE = "kids_size_share"
DEPT_SPEND, DEPT_UNITS, DEPT_SHARE = "dept_spend__", "dept_units__", "dept_share__"
CLASS_SPEND, CLASS_UNITS = "class_spend__", "class_units__"
OTHER_VALUE = "other"
CLASS_MIX = "class_mix_"

# The values core/domain/tables.py documents for the attributes with a closed vocabulary; used to check
# model-feature patterns at config load. Open vocabularies (colour, brand) match any value.
KNOWN_ATTRIBUTE_VALUES = {"channel": ("store", "online"), "brand_tier": ("value", "mid", "premium"),
                          "style": ("casual", "formal", "sport", "trend", "classic")}


def dept_column(prefix: str, department: str) -> str:
    """Column name of a department measure: ``dept_spend__ladies_clothing``."""
    return f"{prefix}{slug(department)}"


def class_column(prefix: str, department: str, cls: str) -> str:
    """Column name of a class measure: ``class_spend__ladies_clothing__youth``."""
    return f"{prefix}{slug(department)}__{slug(cls)}"


def attribute_column(attribute: str, value: str) -> str:
    """Column name of an attribute share: ``brand_tier_share__premium``."""
    return f"{attribute}_share__{slug(value) or 'blank'}"


def class_mix_column(number: int) -> str:
    """Name of the class-mix component ``number`` (1-based): ``class_mix_01``, ..."""
    return f"{CLASS_MIX}{number:02d}"


def department_feature_names(hierarchy: Hierarchy) -> list[str]:
    """Department columns of the enriched datasets: spend, units and share per merchandise department."""
    return [dept_column(p, d) for p in (DEPT_SPEND, DEPT_UNITS, DEPT_SHARE) for d in hierarchy.merchandise_departments]


def sellable_classes(hierarchy: Hierarchy) -> list[tuple[str, str]]:
    """(department, class) of every sellable merchandise class, in hierarchy order: the class columns."""
    return [(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes]


def class_feature_names(hierarchy: Hierarchy) -> list[str]:
    """Class columns of ``enriched_class.parquet``: spend then units per sellable merchandise class."""
    keys = sellable_classes(hierarchy)
    return [class_column(CLASS_SPEND, d, c) for d, c in keys] + [class_column(CLASS_UNITS, d, c) for d, c in keys]


def possible_feature_names(hierarchy: Hierarchy, attributes: Iterable[str] = ATTRIBUTE_COLUMNS) -> list[str]:
    """Every behavioural feature stage 02 can compute with this hierarchy, data permitting.

    Attribute shares are listed with the values :data:`KNOWN_ATTRIBUTE_VALUES`
    gives, plus ``other``; the actual values come from the data.
    """
    names = list(CORE_FEATURES) + department_feature_names(hierarchy) + list(DIVERSITY_FEATURES)
    names += list(SEASONAL_FEATURES) + list(TREND_FEATURES) + [DISCOUNT_FEATURE]
    for attribute in attributes:
        names += [attribute_column(attribute, v) for v in KNOWN_ATTRIBUTE_VALUES.get(attribute, ())]
        names.append(attribute_column(attribute, OTHER_VALUE))
    return names + [KIDS_SIZE_FEATURE]


def _could_match(pattern: str, hierarchy: Hierarchy, attributes: Iterable[str]) -> bool:
    """Whether ``pattern`` names a feature stage 02 can compute (with suitable data)."""
    if any(fnmatch.fnmatchcase(n, pattern) for n in possible_feature_names(hierarchy, attributes)):
        return True
    if fnmatch.fnmatchcase(class_mix_column(1), pattern):
        return True
    # Open-vocabulary attributes (colour, brand) get a column per value found in the data.
    return any(pattern.startswith(f"{a}_share__") for a in attributes)


def non_feature_columns() -> list[str]:
    """Columns that can never enter the model matrix: id, profile, ground truth, identity."""
    return [ID_COLUMN, *DATE_COLUMNS, *[c for c in CUSTOMER_COLUMNS if c != ID_COLUMN]]


def describable_columns(columns: Iterable[str]) -> list[str]:
    """The profile and ground-truth columns of the customer table among ``columns`` (never identities)."""
    allowed = set(CUSTOMER_COLUMNS) - set(IDENTITY_COLUMNS) - {ID_COLUMN}
    return [c for c in columns if c in allowed]


def check_model_patterns(patterns: Iterable[str], hierarchy: Hierarchy, attributes: Iterable[str]) -> list[str]:
    """Problems with model-feature patterns, before any data is read (used at config load).

    A pattern must name a feature stage 02 can compute and no column that is
    not a behavioural feature (``customer_id``, profile, ground truth,
    identity, the order dates).
    """
    problems = []
    banned_columns = non_feature_columns()
    for pattern in patterns:
        banned = sorted({c for c in banned_columns if fnmatch.fnmatchcase(c, pattern)})
        if banned:
            problems.append(f"'{pattern}' names {', '.join(banned)}: id, profile and ground-truth columns "
                            f"describe customers but never enter the model matrix")
        elif not _could_match(pattern, hierarchy, attributes):
            problems.append(f"'{pattern}' matches no behavioural feature; features are listed in "
                            f"docs/features.md (e.g. {', '.join(CORE_FEATURES[:4])}, dept_share__*)")
    return problems


@dataclasses.dataclass(frozen=True)
class ModelColumns:
    """The model matrix's columns resolved from config patterns.

    Attributes
    ----------
    columns : list of str
        Behavioural features, in feature order.
    log1p_columns : list of str
        The subset transformed with ``log1p``.
    sqrt_columns : list of str
        The subset replaced by its square root (shares of a whole: the
        Hellinger geometry of compositions).
    patterns_without_data : dict of str to str
        Patterns that matched only features dropped for lack of data, with
        why (a retailer's file without brand tiers, say); not an error.
    """

    columns: list[str]
    log1p_columns: list[str]
    patterns_without_data: dict[str, str]
    sqrt_columns: list[str] = dataclasses.field(default_factory=list)


def resolve_model_columns(patterns: Iterable[str], log1p_patterns: Iterable[str], roles: dict[str, str],
                          dropped: dict[str, str], sqrt_patterns: Iterable[str] = ()) -> ModelColumns:
    """Expand fnmatch ``patterns`` over the behavioural features, in feature order.

    Parameters
    ----------
    patterns, log1p_patterns : iterable of str
        Model-matrix and log1p patterns (config ``prepare_features``).
    sqrt_patterns : iterable of str
        Square-root patterns (``prepare_features.sqrt_features``); a column
        matched by both a log1p and a square-root pattern is an error.
    roles : dict of str to str
        Role of every column of the enriched dataset (:func:`column_roles`).
    dropped : dict of str to str
        Feature name or pattern -> why it was not computed.

    Raises
    ------
    ValueError
        If a pattern matches a column whose role is not ``feature`` (profile,
        ground truth, id), matches nothing computable, or no column is left.
    """
    features = [c for c, r in roles.items() if r == ROLE_FEATURE]
    chosen: set[str] = set()
    without_data: dict[str, str] = {}
    for pattern in patterns:
        banned = sorted(c for c, r in roles.items() if r != ROLE_FEATURE and fnmatch.fnmatchcase(c, pattern))
        if banned:
            raise ValueError(f"'{pattern}' names {', '.join(banned)} ({roles[banned[0]]}); only behavioural "
                             f"features enter the model matrix: profile and ground-truth columns never do")
        matches = [c for c in features if fnmatch.fnmatchcase(c, pattern)]
        if matches:
            chosen.update(matches)
            continue
        why = [f"{name}: {reason}" for name, reason in dropped.items()
               if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(pattern, name)
               or name.rstrip("*") and pattern.startswith(name.rstrip("*"))]
        if not why:
            raise ValueError(f"'{pattern}' matches no behavioural feature; features are: "
                             f"{', '.join(features[:20])}, ...")
        without_data[pattern] = "; ".join(why)
    columns = [c for c in features if c in chosen]
    if not columns:
        raise ValueError("no model feature has data: every pattern of prepare_features.model_features names "
                         "features dropped for lack of data (" + "; ".join(without_data.values()) + ")")
    log1p = [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in log1p_patterns)]
    sqrt_patterns = list(sqrt_patterns)
    roots = [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in sqrt_patterns)]
    both = sorted(set(log1p) & set(roots))
    if both:
        raise ValueError(f"{', '.join(both)} matched by both prepare_features.log1p_features and "
                         f"prepare_features.sqrt_features; a column gets one transform: remove it from one list")
    return ModelColumns(columns=columns, log1p_columns=log1p, patterns_without_data=without_data, sqrt_columns=roots)


def column_roles(columns: Iterable[str], feature_columns: Iterable[str],
                 profile_columns: Iterable[str] = ()) -> dict[str, str]:
    """The role of every column of a stage 02 table.

    Parameters
    ----------
    columns : iterable of str
        The table's columns.
    feature_columns : iterable of str
        The behavioural features computed from the lines.
    profile_columns : iterable of str
        Customer-table columns beyond ``core.domain.tables.CUSTOMER_TABLE`` (a
        source's extra descriptive columns).

    Raises
    ------
    ValueError
        If an identity column is present (it must have been dropped), or a
        column has no role (a bug: every column must be accounted for).
    """
    features = set(feature_columns)
    profile = ((set(CUSTOMER_COLUMNS) | set(profile_columns)) - set(GROUND_TRUTH_COLUMNS) - {ID_COLUMN}
               ) | set(DATE_COLUMNS)
    roles = {}
    for column in columns:
        if column in IDENTITY_COLUMNS:
            raise ValueError(f"identity column '{column}' reached a stage 02 table; identities never leave "
                             f"customers.parquet")
        if column == ID_COLUMN:
            roles[column] = ROLE_ID
        elif column in GROUND_TRUTH_COLUMNS:
            roles[column] = ROLE_GROUND_TRUTH
        elif column in features:
            roles[column] = ROLE_FEATURE
        elif column in profile:
            roles[column] = ROLE_PROFILE
        else:
            raise ValueError(f"column '{column}' has no role (id, feature, profile or ground truth)")
    return roles


def profile_columns(customers_columns: Iterable[str]) -> list[str]:
    """The customer table's columns that may join the enriched datasets: never identities, never the id."""
    columns = list(customers_columns)
    identifying = set(IDENTITY_COLUMNS) | set(identifier_columns(columns))
    return [c for c in columns if c != ID_COLUMN and c not in identifying]
