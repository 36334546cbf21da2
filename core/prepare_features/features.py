"""Customer features from order lines, eligibility, the three datasets and the model matrix.

The order lines are aggregated by DuckDB (an embedded SQL engine, chosen by
measurement: see README "02_prepare_features" and ``benchmarks/RESULTS.md``);
everything after the aggregation is NumPy and pandas on one row per customer.
Money is summed in whole hundredths of the currency unit (integers), so the
totals are exact and do not depend on how the engine splits the work over
threads: the same input always gives bit-identical features.

Which lines count
    *Spend lines* are the lines of merchandise departments and of the
    ``Unknown`` department (a real-data bucket for names the hierarchy does
    not know, and any other department name the hierarchy lacks). Lines of
    the other kinds of department (bag levy, gift cards, charity,
    concessions, goods not for resale, data-quality departments) are never
    customer spend. Lines after the analysis date are ignored.

Column roles
    Every column of the stage's tables has one role (:func:`column_roles`):
    ``id`` (``customer_id``), ``feature`` (behavioural, from the lines),
    ``profile`` (descriptive: demographics, first and last order dates),
    ``ground_truth`` (the generator's ``persona`` and ``dropout_date``).
    Identity columns (names, contact details) never get a role: they are
    dropped before anything is joined. The model matrix takes ``feature``
    columns only (:func:`resolve_model_columns`).

Each feature's formula is in ``docs/features.md`` (the data dictionary).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from core.domain.columns import ATTRIBUTE_COLUMNS, DAYS_PER_MONTH, ID_COLUMN, UNKNOWN, identifier_columns
from core.domain.hierarchy import Hierarchy, slug
from core.domain.tables import CUSTOMER_COLUMNS, GROUND_TRUTH_COLUMNS, IDENTITY_COLUMNS

UNKNOWN_DEPARTMENT = UNKNOWN

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
SCALERS = {"standard": StandardScaler, "robust": RobustScaler}

# The values core/tables.py documents for the attributes with a closed vocabulary; used to check
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
    patterns_without_data : dict of str to str
        Patterns that matched only features dropped for lack of data, with
        why (a retailer's file without brand tiers, say); not an error.
    """

    columns: list[str]
    log1p_columns: list[str]
    patterns_without_data: dict[str, str]


def resolve_model_columns(patterns: Iterable[str], log1p_patterns: Iterable[str], roles: dict[str, str],
                          dropped: dict[str, str]) -> ModelColumns:
    """Expand fnmatch ``patterns`` over the behavioural features, in feature order.

    Parameters
    ----------
    patterns, log1p_patterns : iterable of str
        Model-matrix and log1p patterns (config ``prepare_features``).
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
    return ModelColumns(columns=columns, log1p_columns=log1p, patterns_without_data=without_data)


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


# ---------------------------------------------------------------------------
# Aggregating the order lines


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """What the feature formulas need besides the lines (config ``prepare_features``).

    Attributes
    ----------
    holiday_window, back_to_school_window : tuple of str
        ``("MM-DD", "MM-DD")``, inclusive; a window may wrap over New Year.
    attributes : tuple of str
        Line attributes whose spend shares become features.
    max_attribute_values : int
        More values than this: the smaller ones are pooled as ``other``.
    kids_size_pattern : str
        Regular expression (case-insensitive) matching kids' sizes.
    engine_memory_mb : int
        Memory the engine may hold; beyond it, it spills to a temporary folder.
    attribute_columns : tuple of (str, tuple of str), optional
        Per attribute, the share columns to build instead of choosing them
        from the data: what scoring uses, so new customers get exactly the
        columns (and the same pooling into ``other``) stage 02 built. A
        value without a column pools into ``<attribute>_share__other`` when
        that is among the columns; a column whose value the data lacks is 0.
    """

    holiday_window: tuple[str, str] = ("11-01", "12-31")
    back_to_school_window: tuple[str, str] = ("07-15", "09-07")
    attributes: tuple[str, ...] = ("channel", "brand_tier", "style")
    max_attribute_values: int = 8
    kids_size_pattern: str = r"^(baby|toddler|child|kids?|teen)\b"
    engine_memory_mb: int = 2048
    attribute_columns: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "FeatureSettings":
        """From a ``PrepareFeaturesConfig``."""
        return cls(holiday_window=tuple(cfg.holiday_window), back_to_school_window=tuple(cfg.back_to_school_window),
                   attributes=tuple(cfg.attribute_shares), max_attribute_values=cfg.max_attribute_values,
                   kids_size_pattern=cfg.kids_size_pattern, engine_memory_mb=cfg.engine_memory_mb)


@dataclasses.dataclass(frozen=True)
class CustomerFeatures:
    """What :func:`build_customer_features` returns.

    Attributes
    ----------
    features : DataFrame
        One row per customer with a purchase by the analysis date, sorted by
        ``customer_id``: ``customer_id``, :data:`DATE_COLUMNS`, then the
        behavioural features (float64), in :attr:`feature_columns` order.
    feature_columns : list of str
    class_long : DataFrame
        ``customer_id``, ``department``, ``class``, ``spend``, ``units``
        (float32, net of returns) per customer and sellable merchandise class
        with a non-zero total, sorted by customer; customers of ``features``
        only. Two internal columns follow: ``class_idx`` (the class's
        position among the class columns) and ``row`` (the customer's row in
        ``features``).
    dropped : dict of str to str
        Feature (or pattern of features) -> why it was not computed.
    activity : DataFrame
        Per customer with any line: ``customer_id`` and the flags
        ``spend_purchase``, ``later_purchase``, ``other_purchase``,
        used to say why a customer gets no features.
    lines : dict
        Line counts for the manifest.
    """

    features: pd.DataFrame
    feature_columns: list[str]
    class_long: pd.DataFrame
    dropped: dict[str, str]
    activity: pd.DataFrame
    lines: dict[str, Any]


def _month_day(text: str) -> int:
    month, day = (int(p) for p in text.split("-"))
    return month * 100 + day


def _window_sql(window: tuple[str, str], md: str) -> str:
    """SQL condition: month-day expression ``md`` (month * 100 + day) within ``window``."""
    start, end = (_month_day(w) for w in window)
    if start <= end:
        return f"{md} BETWEEN {start} AND {end}"
    return f"({md} >= {start} OR {md} <= {end})"  # wraps over New Year


def _source(con, lines) -> list[str]:
    """Make ``lines`` (DataFrame, Arrow table or Parquet path) the view ``src``; return its columns."""
    if isinstance(lines, (str, Path)):
        path = str(lines).replace("'", "''")
        con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet('{path}')")
    else:
        table = lines if isinstance(lines, pa.Table) else pa.Table.from_pandas(lines, preserve_index=False)
        con.register("src", table)
    return [r[0] for r in con.execute("DESCRIBE src").fetchall()]


def build_customer_features(lines, hierarchy: Hierarchy, analysis_date: pd.Timestamp | None,
                            settings: FeatureSettings = FeatureSettings()) -> tuple[CustomerFeatures, pd.Timestamp]:
    """Behavioural features per customer, and net spend and units per class.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        Order lines with the columns of ``core.domain.tables.TRANSACTION_TABLE``;
        the optional ones (``channel``, ``brand``, ``brand_tier``, ``style``,
        ``color``, ``size``, ``discount_amount``, ...) may be absent or null.
        A path is scanned without loading the file into memory.
    hierarchy : Hierarchy
        Departments' kinds and their sellable classes.
    analysis_date : Timestamp or None
        The day features are measured at; None = the last ``order_date``.
    settings : FeatureSettings

    Returns
    -------
    (CustomerFeatures, Timestamp)
        The features and the analysis date used.

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    import duckdb

    with tempfile.TemporaryDirectory(prefix="features-spill-") as spill:
        # Row order never matters here (results are sorted), and not keeping it saves memory; past
        # the memory limit the engine spills to a folder that is removed afterwards.
        con = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": spill,
                                     "memory_limit": f"{settings.engine_memory_mb}MB"})
        try:
            return _build_from(con, lines, hierarchy, analysis_date, settings)
        finally:
            con.close()


def _build_from(con, lines, hierarchy: Hierarchy, analysis_date, settings: FeatureSettings):
    columns = _source(con, lines)
    required = ("customer_id", "order_id", "order_date", "department", "class", "quantity", "line_amount",
                "is_return")
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"the order lines lack required column(s) {', '.join(missing)}")
    return _build(con, columns, hierarchy, analysis_date, settings)


def _build(con, columns: list[str], hierarchy: Hierarchy, analysis_date, settings: FeatureSettings):
    merch = hierarchy.merchandise_departments
    keys = sellable_classes(hierarchy)
    # Class keys: every sellable class (0 .. len(keys)-1, the class columns), then per merchandise
    # department one key for its data-quality classes and any class name the hierarchy lacks.
    other_key = {d: len(keys) + i for i, d in enumerate(merch)}
    dept_of_key = np.array([merch.index(d) for d, _ in keys] + list(range(len(merch))), dtype=np.int64)
    # "Unknown" is the bucket for a retailer's unmapped names: spend, in no department, even if a
    # hierarchy lists it (the lines of any name missing from the hierarchy are treated alike).
    named = [d for d in hierarchy.departments if d != UNKNOWN_DEPARTMENT]
    departments = pd.DataFrame({
        "department": pd.Series(named, dtype=object),
        "dept_key": pd.array([other_key.get(d) for d in named], "Int16"),
        "is_spend": [hierarchy.departments[d].kind == "merchandise" for d in named]})
    classes = pd.DataFrame({"department": pd.Series([d for d, _ in keys], dtype=object),
                            "class": pd.Series([c for _, c in keys], dtype=object),
                            "class_key": np.arange(len(keys), dtype=np.int16)})
    con.register("departments", departments)
    con.register("classes", classes)

    optional = {c: c in columns for c in ("discount_amount", "size", *settings.attributes)}
    counts = "".join(f", count({c}) AS n_{c}" for c, present in optional.items() if present)
    by_dept = con.execute(f"SELECT department, count(*) AS n_lines, max(order_date) AS last_date {counts} "
                          f"FROM src GROUP BY department").df()
    if by_dept.empty:
        raise ValueError("the order lines are empty")
    if analysis_date is None:
        analysis_date = pd.Timestamp(by_dept["last_date"].max())
    analysis_date = pd.Timestamp(analysis_date).normalize()
    non_null = {c: present and int(by_dept[f"n_{c}"].sum()) > 0 for c, present in optional.items()}
    dropped: dict[str, str] = {}

    def why_absent(column: str) -> str:
        return (f"column {column} is absent from the order lines" if not optional[column]
                else f"column {column} is null on every line")

    kinds = {name: d.kind for name, d in hierarchy.departments.items() if name != UNKNOWN_DEPARTMENT}
    lines_by_kind: dict[str, int] = {}
    for name, count in zip(by_dept["department"], by_dept["n_lines"]):
        kind = kinds.get(name, "Unknown or not in the hierarchy (spend, in no department)")
        lines_by_kind[kind] = lines_by_kind.get(kind, 0) + int(count)
    unmapped = sorted(str(d) for d in by_dept["department"] if d not in kinds and d != UNKNOWN_DEPARTMENT)

    # Attribute values become small integer codes; values equal once slugged ("Mid", "mid") share one.
    value_names: dict[str, list[str]] = {}
    joins, coded = [], []
    for attribute in [a for a in settings.attributes if non_null[a]] + (["size"] if non_null["size"] else []):
        raw = [r[0] for r in con.execute(f"SELECT DISTINCT CAST({attribute} AS VARCHAR) FROM src "
                                         f"WHERE {attribute} IS NOT NULL").fetchall()]
        if attribute == "size":
            pattern = re.compile(settings.kids_size_pattern, re.IGNORECASE)
            names, codes = ["adult", "kids"], [int(bool(pattern.search(v))) for v in raw]
        else:
            slugs = [slug(v) or "blank" for v in raw]
            names = sorted(set(slugs))
            code_of = {name: i for i, name in enumerate(names)}
            codes = [code_of[s] for s in slugs]
        value_names[attribute] = names
        con.register(f"values_{attribute}", pd.DataFrame({"value": pd.Series(raw, dtype=object),
                                                          "code": np.asarray(codes, dtype=np.int16)}))
        joins.append(f"LEFT JOIN values_{attribute} v_{attribute} "
                     f"ON CAST(l.{attribute} AS VARCHAR) = v_{attribute}.value")
        coded.append(f", v_{attribute}.code AS a_{attribute}")

    a_day = (analysis_date - pd.Timestamp("1970-01-01")).days
    disc = "CAST(round(l.discount_amount * 100) AS BIGINT)" if non_null["discount_amount"] else "NULL::BIGINT"
    # The lines once, as small numbers: days since 1970, whole cents, class keys and attribute
    # codes. Every aggregate below scans this table. Sums of cents and units are taken as doubles:
    # of whole numbers below 2^53 they are exact whatever order the threads add them in, and
    # several times faster than the engine's 128-bit integer sums.
    con.execute(f"""
        CREATE TEMP TABLE lines AS
        SELECT l.customer_id AS c, l.order_id AS o, l.is_return AS r,
               CAST(l.day - DATE '1970-01-01' AS INTEGER) AS dn,
               CAST(round(l.line_amount * 100) AS BIGINT) AS cents,
               CAST(l.quantity AS INTEGER) AS qty, {disc} AS disc,
               CAST(month(l.day) * 100 + day(l.day) AS SMALLINT) AS md,
               CAST(year(l.day) * 12 + month(l.day) - 1 AS SMALLINT) AS mi,
               coalesce(d.is_spend, TRUE) AS spend,
               CASE WHEN d.dept_key IS NULL THEN NULL ELSE coalesce(k.class_key, d.dept_key) END AS ck
               {''.join(coded)}
        FROM (SELECT *, CAST(order_date AS DATE) AS day FROM src) l
        LEFT JOIN departments d ON l.department = d.department
        LEFT JOIN classes k ON l.department = k.department AND l."class" = k."class"
        {' '.join(joins)}""")

    now = f"spend AND dn <= {a_day}"  # spend lines up to the analysis date
    buy = f"{now} AND NOT r"
    md = "md"
    # Purchases (prefiltered, CASE sums: far cheaper than a FILTER per aggregate) ...
    def within(condition: str) -> str:
        return f"sum(CASE WHEN {condition} THEN CAST(cents AS DOUBLE) ELSE 0.0 END)"

    sums = [f"{within(f'{md} BETWEEN {q * 300 + 101} AND {q * 300 + 331}')} AS q{q + 1}" for q in range(4)]
    sums += [f"{within(_window_sql(settings.holiday_window, md))} AS holiday",
             f"{within(_window_sql(settings.back_to_school_window, md))} AS back_to_school"]
    for attribute, names in value_names.items():
        sums += [f"{within(f'a_{attribute} = {i}')} AS a_{attribute}_{i}" for i in range(len(names))]
    bought = con.execute(f"""
        SELECT c, sum(CAST(cents AS DOUBLE)) AS gross, sum(CAST(qty AS DOUBLE)) AS units_bought,
               min(dn) AS first_dn, max(dn) AS last_dn,
               {', '.join(sums)}
        FROM lines WHERE {buy} GROUP BY c ORDER BY c""").fetchnumpy()
    # ... and what every customer with a line did: returns, discounts, why some get no features.
    customer = con.execute(f"""
        SELECT c,
               bool_or(spend AND dn > {a_day} AND NOT r) AS later_purchase,
               bool_or(NOT spend AND dn <= {a_day} AND NOT r) AS other_purchase,
               count(*) FILTER (dn > {a_day}) AS lines_after,
               -sum(CASE WHEN {now} AND r THEN CAST(cents AS DOUBLE) ELSE 0.0 END) AS returned,
               -sum(CASE WHEN {now} AND r THEN CAST(qty AS DOUBLE) ELSE 0.0 END) AS units_returned,
               sum(CASE WHEN {now} THEN CAST(disc AS DOUBLE) ELSE 0.0 END) AS discount
        FROM lines GROUP BY c ORDER BY c""").fetchnumpy()
    all_ids = _filled(customer["c"], 0).astype(np.int64)
    ids = _filled(bought["c"], 0).astype(np.int64)
    n = len(ids)
    featured = np.isin(all_ids, ids, assume_unique=True)
    customer["spend_purchase"] = featured
    purchase_columns = {k for k in bought.keys() if k != "c"}
    customer.update({k: bought[k] for k in purchase_columns})
    flags = {k: _filled(customer[k], False).astype(bool) for k in ("spend_purchase", "later_purchase",
                                                                    "other_purchase")}
    activity = pd.DataFrame({ID_COLUMN: all_ids, **flags})

    def col(name: str, scale: float = 1.0) -> np.ndarray:
        """A per-customer aggregate for the featured customers, nulls as 0, divided by ``scale``."""
        values = _filled(customer[name], 0).astype(np.float64)
        return (values if name in purchase_columns else values[featured]) / scale

    out: dict[str, np.ndarray] = {}
    first_dn = col("first_dn").astype(np.int64)
    last_dn = col("last_dn").astype(np.int64)
    out["recency_days"] = (a_day - last_dn).astype(np.float64)
    out["tenure_days"] = (a_day - first_dn).astype(np.float64)

    # Featured customers' rows, so the engine hands back row numbers instead of ids to look up.
    con.register("featured", pd.DataFrame({"c": ids, "rw": np.arange(n, dtype=np.int64)}))

    # Orders: distinct purchase order ids with spend lines, by date; gaps between consecutive orders.
    orders = con.execute(f"""
        SELECT rw, min(dn) AS dn FROM lines JOIN featured USING (c) WHERE {buy} GROUP BY rw, o
        ORDER BY rw, dn""").fetchnumpy()
    order_row = _filled(orders["rw"], 0).astype(np.int64)
    gap = np.diff(_filled(orders["dn"], 0).astype(np.float64))
    same = order_row[1:] == order_row[:-1]
    n_orders = np.bincount(order_row, minlength=n).astype(np.float64)
    s1 = np.bincount(order_row[1:][same], gap[same], n)
    s2 = np.bincount(order_row[1:][same], gap[same] ** 2, n)
    del orders, order_row, gap, same
    out["orders"] = n_orders
    out["orders_per_month"] = n_orders / (np.maximum(out["tenure_days"], DAYS_PER_MONTH) / DAYS_PER_MONTH)
    gross, returned = col("gross", 100), col("returned", 100)
    bought = col("units_bought")
    out["gross_revenue"] = gross
    out["returned_value"] = returned
    out["net_revenue"] = gross - returned
    out["average_order_value"] = _ratio(gross, n_orders)
    out["items_per_order"] = _ratio(bought, n_orders)
    out["return_rate_value"] = _ratio(returned, gross)
    out["return_rate_units"] = _ratio(col("units_returned"), bought)
    # Mean gap = (last - first) / (orders - 1); one order: the tenure, the wait so far without a second.
    gaps = n_orders - 1
    mean_gap = _ratio(s1, gaps)
    out["mean_days_between_orders"] = np.where(gaps >= 1, mean_gap, out["tenure_days"])
    std_gap = np.sqrt(np.maximum(_ratio(s2, gaps) - mean_gap ** 2, 0.0))
    out["cv_days_between_orders"] = np.where(gaps >= 2, _ratio(std_gap, mean_gap), 0.0)
    feature_columns = list(CORE_FEATURES)

    # Monthly purchase spend (used below, fetched while the engine still holds the lines).
    months = con.execute(f"""
        WITH m AS (SELECT rw, mi, sum(cents) AS y FROM lines JOIN featured USING (c)
                   WHERE {buy} GROUP BY rw, mi)
        SELECT rw, min(mi) AS first_mi, sum(y) AS sy, sum(y * y) AS syy, sum(CAST(mi AS INTEGER) * y) AS smy
        FROM m GROUP BY rw""").fetchnumpy()

    # Departments and classes: one row per customer and class key. Nearly every line is its own
    # (customer, class) group, so sorting the lines and summing runs beats a hash aggregate.
    n_keys = len(dept_of_key)
    keys_run, spend_c, gross_c, units = _run_sums(con.sql(f"""
        SELECT rw * {n_keys} + ck AS k, cents, qty, r FROM lines JOIN featured USING (c)
        WHERE {now} AND ck IS NOT NULL ORDER BY k""").to_arrow_reader(_BATCH_ROWS))
    # The engine's work is done: free its memory before the wide tables are built.
    con.execute("DROP TABLE lines")
    where, class_key = np.divmod(keys_run, n_keys)
    del keys_run
    class_names = sorted({k for _, k in keys})  # class names repeat across departments: one category each
    code_of_name = {name: i for i, name in enumerate(class_names)}
    class_code = np.array([code_of_name[k] for _, k in keys], dtype=np.int32)
    is_class = class_key < len(keys)
    nonzero = is_class & ((spend_c != 0) | (units != 0))
    class_long = pd.DataFrame({
        ID_COLUMN: ids[where[nonzero]],
        "department": pd.Categorical.from_codes(dept_of_key[class_key[nonzero]], categories=merch),
        "class": pd.Categorical.from_codes(class_code[class_key[nonzero]], categories=class_names),
        "spend": (spend_c[nonzero] / 100.0).astype(np.float32),
        "units": units[nonzero].astype(np.float32),
        "class_idx": class_key[nonzero].astype(np.int32),
        "row": where[nonzero].astype(np.int32)})
    if len(class_key) == 0:
        dropped["dept_*"] = ("no line falls in a merchandise department of the hierarchy (a log without "
                             "departments?)")
        dropped.update({name: dropped["dept_*"] for name in DIVERSITY_FEATURES})
    else:
        n_dept = len(merch)
        flat = where * n_dept + dept_of_key[class_key]
        d_spend = np.bincount(flat, spend_c, n * n_dept).reshape(n, n_dept) / 100.0
        d_units = np.bincount(flat, units, n * n_dept).reshape(n, n_dept)
        d_gross = np.bincount(flat, gross_c, n * n_dept).reshape(n, n_dept) / 100.0
        shares = _ratio(d_gross, d_gross.sum(axis=1, keepdims=True))
        for prefix, values in ((DEPT_SPEND, d_spend), (DEPT_UNITS, d_units), (DEPT_SHARE, shares)):
            for j, d in enumerate(merch):
                out[dept_column(prefix, d)] = values[:, j]
        feature_columns += department_feature_names(hierarchy)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["dept_entropy"] = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1) + 0.0
        out["n_departments"] = (d_gross > 0).sum(axis=1).astype(np.float64)
        out["n_classes"] = np.bincount(where[is_class & (gross_c > 0)], minlength=n).astype(np.float64)
        feature_columns += list(DIVERSITY_FEATURES)

    # Seasonality: shares of gross purchase spend by calendar window.
    for q in range(4):
        out[f"spend_share_q{q + 1}"] = _ratio(col(f"q{q + 1}", 100), gross)
    out["holiday_share"] = _ratio(col("holiday", 100), gross)
    out["back_to_school_share"] = _ratio(col("back_to_school", 100), gross)
    feature_columns += list(SEASONAL_FEATURES)

    # Monthly spend over the months from the first purchase's to the analysis date's (zeros included).
    first_mi, sy, syy, smy = (_spread(months, name, n) for name in ("first_mi", "sy", "syy", "smy"))
    a_mi = analysis_date.year * 12 + analysis_date.month - 1
    out.update(monthly_spend_stats(a_mi - first_mi + 1, sy / 100.0, syy / 1e4, (smy - first_mi * sy) / 100.0))
    feature_columns += list(TREND_FEATURES)

    if non_null["discount_amount"]:
        # Share of the regular-price value of what was kept that was given away as discount.
        discount = col("discount", 100)
        out[DISCOUNT_FEATURE] = _ratio(discount, out["net_revenue"] + discount)
        feature_columns.append(DISCOUNT_FEATURE)
    else:
        dropped[DISCOUNT_FEATURE] = why_absent("discount_amount")

    for attribute in settings.attributes:
        if not non_null[attribute]:
            dropped[f"{attribute}_share__*"] = why_absent(attribute)
            continue
        names = value_names[attribute]
        spend_by_value = np.stack([col(f"a_{attribute}_{i}") for i in range(len(names))], axis=1)
        known = spend_by_value.sum(axis=1)
        fixed = dict(settings.attribute_columns or ()).get(attribute)
        if fixed is not None:
            # Scoring: the columns stage 02 built, whatever values this data has.
            other = attribute_column(attribute, OTHER_VALUE)
            index = {attribute_column(attribute, n): i for i, n in enumerate(names)}
            kept = [index[c] for c in fixed if c in index and c != other]
            pooled = np.setdiff1d(np.arange(len(names)), kept)
            for name in fixed:
                if name == other:
                    values = spend_by_value[:, pooled].sum(axis=1)
                else:
                    values = spend_by_value[:, index[name]] if name in index else np.zeros(len(known))
                out[name] = _ratio(values, known)
                feature_columns.append(name)
            continue
        # The values with the most spend get a column each; past max_attribute_values the rest pool as "other".
        order = np.lexsort((np.asarray(names), -spend_by_value.sum(axis=0)))
        kept = order if len(names) <= settings.max_attribute_values else order[:settings.max_attribute_values - 1]
        for i in sorted(kept, key=lambda k: names[k]):
            out[attribute_column(attribute, names[i])] = _ratio(spend_by_value[:, i], known)
            feature_columns.append(attribute_column(attribute, names[i]))
        pooled = np.setdiff1d(np.arange(len(names)), kept)
        if len(pooled):
            name = attribute_column(attribute, OTHER_VALUE)
            out[name] = _ratio(spend_by_value[:, pooled].sum(axis=1), known)
            feature_columns.append(name)
    if non_null["size"]:
        out[KIDS_SIZE_FEATURE] = _ratio(col("a_size_1"), col("a_size_0") + col("a_size_1"))
        feature_columns.append(KIDS_SIZE_FEATURE)
    else:
        dropped[KIDS_SIZE_FEATURE] = why_absent("size")

    epoch = np.datetime64("1970-01-01", "D")
    features = pd.DataFrame({
        ID_COLUMN: ids.astype(np.int64),
        "first_order_date": (epoch + first_dn.astype("timedelta64[D]")).astype("datetime64[us]"),
        "last_order_date": (epoch + last_dn.astype("timedelta64[D]")).astype("datetime64[us]"),
        **{k: np.asarray(out.pop(k), np.float64) for k in feature_columns}})
    line_counts = {"total": int(by_dept["n_lines"].sum()),
                   "after_analysis_date": int(_filled(customer["lines_after"], 0).sum()),
                   "by_department_kind": dict(sorted(lines_by_kind.items())),
                   "departments_not_in_hierarchy": unmapped}
    return CustomerFeatures(features=features, feature_columns=feature_columns, class_long=class_long,
                            dropped=dropped, activity=activity, lines=line_counts), analysis_date


_BATCH_ROWS = 2_000_000


def _run_sums(reader) -> tuple[np.ndarray, ...]:
    """Sum ``cents`` (all, and purchases only) and ``qty`` over runs of equal ``k`` in sorted batches.

    Reads the batches one at a time, so only one batch of lines is in memory;
    a run cut by a batch boundary is joined up.
    """
    parts: list[list[np.ndarray]] = []
    for batch in reader:
        k = batch.column("k").to_numpy()
        if not len(k):
            continue
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        cents = batch.column("cents").to_numpy().astype(np.float64)
        bought = np.where(batch.column("r").to_numpy(zero_copy_only=False), 0.0, cents)
        part = [k[starts], np.add.reduceat(cents, starts), np.add.reduceat(bought, starts),
                np.add.reduceat(batch.column("qty").to_numpy().astype(np.float64), starts)]
        if parts and parts[-1][0][-1] == part[0][0]:
            # The previous batch ended inside this run: add its head to the previous tail.
            for previous, current in zip(parts[-1][1:], part[1:]):
                previous[-1] += current[0]
            part = [values[1:] for values in part]
        if len(part[0]):
            parts.append(part)
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(values) for values in zip(*parts))


def _filled(values, fill) -> np.ndarray:
    """A fetched column as a plain array, nulls replaced by ``fill``."""
    if isinstance(values, np.ma.MaskedArray):
        return values.filled(fill)
    return np.asarray(values)


def _spread(result: dict, name: str, n: int) -> np.ndarray:
    """A per-customer query column (rows ``rw``) as an array over the featured customers (0 where absent)."""
    out = np.zeros(n)
    out[_filled(result["rw"], 0).astype(np.int64)] = _filled(result[name], 0).astype(np.float64)
    return out


def monthly_spend_stats(n_months: np.ndarray, sum_y: np.ndarray, sum_yy: np.ndarray,
                        sum_ty: np.ndarray) -> dict[str, np.ndarray]:
    """Coefficient of variation and normalised least-squares slope of monthly spend.

    Months ``t = 0 .. n-1`` run from the customer's first purchase month to
    the analysis month; months without a purchase count as 0, so only the
    sums over months with spend are needed.

    Parameters
    ----------
    n_months : array
        ``n``, months in the span (at least 1).
    sum_y, sum_yy, sum_ty : array
        ``sum(y)``, ``sum(y^2)`` and ``sum(t * y)`` over the months.

    Returns
    -------
    dict
        ``monthly_spend_cv`` = std(y) / mean(y) (population std; 0 for one
        month) and ``spend_trend`` = slope / mean(y), the least-squares
        change in monthly spend per month relative to the average month (0
        for one month).
    """
    n = np.maximum(np.asarray(n_months, np.float64), 1.0)
    mean = sum_y / n
    variance = np.maximum(sum_yy / n - mean ** 2, 0.0)
    cv = np.where(n > 1, _ratio(np.sqrt(variance), mean), 0.0)
    t_mean = (n - 1) / 2
    s_tt = (n - 1) * n * (n + 1) / 12  # sum over t of (t - t_mean)^2
    slope = _ratio(sum_ty - t_mean * sum_y, s_tt)
    trend = np.where(n > 1, _ratio(slope, mean), 0.0)
    return {"monthly_spend_cv": cv, "spend_trend": trend}


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is not positive."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.broadcast_to(np.asarray(denominator, dtype=np.float64), num.shape)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


# ---------------------------------------------------------------------------
# Eligibility


@dataclasses.dataclass(frozen=True)
class EligibilityRules:
    """Which customers with features are segmented (config ``prepare_features.eligibility``).

    Attributes
    ----------
    min_tenure_days : int
    min_orders : int
    min_net_spend : float
    max_recency_days : int or None
        None: lapsed customers stay (they are a segment).
    """

    min_tenure_days: int = 0
    min_orders: int = 1
    min_net_spend: float = 0.0
    max_recency_days: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "EligibilityRules":
        """From a ``PrepareFeaturesConfig.eligibility`` section."""
        return cls(min_tenure_days=cfg.min_tenure_days, min_orders=cfg.min_orders,
                   min_net_spend=cfg.min_net_spend, max_recency_days=cfg.max_recency_days)


# Rules for customers without features, then the configured rules, in the order they are checked.
NO_FEATURE_RULES = ("no_order_lines", "first_purchase_after_analysis_date", "only_returns_by_analysis_date",
                    "only_non_merchandise_by_analysis_date")
ELIGIBILITY_RULES = ("min_orders", "min_tenure_days", "min_net_spend", "max_recency_days")


def apply_eligibility(features: pd.DataFrame, rules: EligibilityRules) -> tuple[np.ndarray, pd.DataFrame]:
    """Which customers pass the eligibility rules; the others with the first rule they fail.

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
        for r in features.loc[new, ["customer_id", "orders", "tenure_days", "net_revenue", "recency_days"]
                              ].itertuples(index=False):
            rows.append((r.customer_id, rule, reason(r)))
        failed |= new
    excluded = pd.DataFrame(rows, columns=[ID_COLUMN, "rule", "reason"]).astype(
        {ID_COLUMN: np.int64, "rule": str, "reason": str})
    return ~failed.to_numpy(bool), excluded


def customers_without_features(activity: pd.DataFrame, customers: pd.DataFrame | None,
                               featured_ids: np.ndarray) -> pd.DataFrame:
    """Customers of the profile or the lines who get no features, each with the rule and reason.

    Returns
    -------
    DataFrame
        ``customer_id``, ``rule`` (one of :data:`NO_FEATURE_RULES`), ``reason``.
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
    text = {"no_order_lines": "no order lines",
            "first_purchase_after_analysis_date": "first purchase after the analysis date",
            "only_returns_by_analysis_date": "only return lines by the analysis date",
            "only_non_merchandise_by_analysis_date": "only non-merchandise lines (gift cards, bag levy, ...) "
                                                     "by the analysis date"}
    return pd.DataFrame({ID_COLUMN: ids.astype(np.int64), "rule": pd.Series(rule, dtype=str),
                         "reason": pd.Series([text[r] for r in rule], dtype=str)})


# ---------------------------------------------------------------------------
# The model matrix


class ModelMatrixTransformer(TransformerMixin, BaseEstimator):
    """Select feature columns, log1p the skewed ones, scale them.

    Parameters
    ----------
    columns : list of str
        Feature columns of the model matrix, in order.
    log1p_columns : list of str
        Subset of ``columns`` transformed with ``log1p`` (after clipping
        below at 0) before scaling.
    scaler : {"standard", "robust"}
        ``standard``: mean 0, standard deviation 1. ``robust``: median 0,
        interquartile range 1, which blows up a share that most customers
        leave at 0 (docs/decisions.md).
    class_mix : ClassMixEmbedding or None
        The fitted class-mix embedding whose columns (``class_mix_*``) are
        among ``columns``, kept here so that scoring can compute them for
        new customers (:func:`add_class_mix`).

    Attributes
    ----------
    scaler_ : StandardScaler or RobustScaler
        Fitted on the transformed columns.
    n_features_in_ : int
    """

    def __init__(self, columns=(), log1p_columns=(), scaler="standard", class_mix=None):
        self.columns = columns
        self.log1p_columns = log1p_columns
        self.scaler = scaler
        self.class_mix = class_mix

    def _prepared(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {', '.join(missing)}")
        values = frame[list(self.columns)].to_numpy(dtype=np.float64, copy=True)
        logged = set(self.log1p_columns)
        for i, name in enumerate(self.columns):
            if name in logged:
                values[:, i] = np.log1p(np.clip(values[:, i], 0.0, None))
        return values

    def fit(self, X: pd.DataFrame, y=None) -> "ModelMatrixTransformer":
        """Fit the scaler on ``X``'s selected, transformed columns."""
        unknown = set(self.log1p_columns) - set(self.columns)
        if unknown:
            raise ValueError(f"log1p columns not among the model columns: {', '.join(sorted(unknown))}")
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler {self.scaler!r} is not one of {', '.join(SCALERS)}")
        self.scaler_ = SCALERS[self.scaler]().fit(self._prepared(X))
        self.n_features_in_ = len(self.columns)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The scaled model matrix, shape (n_customers, len(columns))."""
        check_is_fitted(self, "scaler_")
        return self.scaler_.transform(self._prepared(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The model-matrix column names, in order."""
        return np.asarray(self.columns, dtype=object)


# ---------------------------------------------------------------------------
# What customers buy within departments


def class_spend_matrix(class_long: pd.DataFrame, customer_ids: np.ndarray, n_classes: int):
    """Customers x sellable classes of net spend (sparse, negatives as 0), rows in ``customer_ids`` order.

    ``class_long`` is :attr:`CustomerFeatures.class_long` (its ``class_idx``
    column); ``customer_ids`` must be sorted, and class rows of customers not
    in it are ignored.
    """
    import scipy.sparse as sparse

    if len(customer_ids) == 0:
        return sparse.csr_matrix((0, n_classes))
    ids = class_long[ID_COLUMN].to_numpy()
    rows = np.searchsorted(customer_ids, ids)
    found = (rows < len(customer_ids)) & (customer_ids[np.minimum(rows, len(customer_ids) - 1)] == ids)
    spend = np.clip(class_long["spend"].to_numpy(np.float64), 0.0, None)
    return sparse.csr_matrix((spend[found], (rows[found], class_long["class_idx"].to_numpy(np.int64)[found])),
                             shape=(len(customer_ids), n_classes))


class ClassMixEmbedding(TransformerMixin, BaseEstimator):
    """Each customer's mix of classes in a few dense columns: the square root of each class's share
    of the customer's spend (the Hellinger transform), projected on its leading singular vectors.

    Personas and real shoppers differ in *which* classes they buy within a
    department (school uniform or baby wear within kids' clothing); the
    department shares cannot show that, and hundreds of sparse class columns
    are too many to cluster. The square root keeps one large class from
    drowning the rest, and customers with little spend are not magnified
    (their row has length at most 1, like everyone's).

    Parameters
    ----------
    n_components : int
        Columns kept (capped at the number of classes minus one).
    max_fit_rows : int
        The singular vectors are fitted on at most this many customers (a
        seeded sample); every customer is transformed.
    random_state : int

    Attributes
    ----------
    components_ : ndarray, shape (n_components, n_classes)
    explained_variance_ratio_ : ndarray
    n_features_in_ : int
    """

    def __init__(self, n_components=12, max_fit_rows=200_000, random_state=0):
        self.n_components = n_components
        self.max_fit_rows = max_fit_rows
        self.random_state = random_state

    @staticmethod
    def _hellinger(X):
        import scipy.sparse as sparse

        X = sparse.csr_matrix(X, dtype=np.float64)
        if X.nnz and X.data.min() < 0:
            raise ValueError("class spend must not be negative (clip returns at 0 first)")
        totals = np.asarray(X.sum(axis=1)).ravel()
        totals[totals == 0] = 1.0
        return (sparse.diags(1.0 / totals) @ X).sqrt()

    def fit(self, X, y=None) -> "ClassMixEmbedding":
        """Fit the singular vectors on the Hellinger-transformed spend ``X`` (customers x classes)."""
        from sklearn.decomposition import TruncatedSVD

        shares = self._hellinger(X)
        n_rows, n_classes = shares.shape
        n = min(int(self.n_components), n_classes - 1, n_rows - 1)
        if n < 1:
            raise ValueError(f"a class mix needs at least 2 classes and 2 customers ({n_classes} and {n_rows})")
        if n_rows > self.max_fit_rows:
            rng = np.random.default_rng(self.random_state)
            shares = shares[np.sort(rng.choice(n_rows, self.max_fit_rows, replace=False))]
        svd = TruncatedSVD(n_components=n, algorithm="randomized", n_iter=7, random_state=self.random_state)
        svd.fit(shares)
        components = svd.components_
        # A singular vector's sign is arbitrary: fix it (largest loading positive) so the columns read
        # the same way whatever the solver's path.
        signs = np.sign(components[np.arange(n), np.abs(components).argmax(axis=1)])
        self.components_ = components * signs[:, None]
        self.explained_variance_ratio_ = svd.explained_variance_ratio_
        self.n_features_in_ = n_classes
        return self

    def transform(self, X) -> np.ndarray:
        """The class-mix columns, shape (n_customers, n_components)."""
        check_is_fitted(self, "components_")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"class spend has {X.shape[1]} classes; the embedding was fitted on "
                             f"{self.n_features_in_}")
        return np.asarray(self._hellinger(X) @ self.components_.T)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``class_mix_01``, ``class_mix_02``, ..."""
        check_is_fitted(self, "components_")
        return np.asarray([class_mix_column(i + 1) for i in range(len(self.components_))], dtype=object)


def add_class_mix(features: pd.DataFrame, class_long: pd.DataFrame, embedding: ClassMixEmbedding,
                  n_classes: int) -> pd.DataFrame:
    """``features`` (sorted by customer) with the embedding's ``class_mix_*`` columns computed from ``class_long``."""
    matrix = class_spend_matrix(class_long, features[ID_COLUMN].to_numpy(), n_classes)
    values = embedding.transform(matrix)
    mix = pd.DataFrame(values, columns=embedding.get_feature_names_out(), index=features.index)
    return pd.concat([features.drop(columns=[c for c in mix.columns if c in features.columns]), mix], axis=1)


# ---------------------------------------------------------------------------
# The stage's function


@dataclasses.dataclass(frozen=True)
class PreparedFeatures:
    """Everything stage 02 writes, and what its manifest records.

    ``enriched_class`` is not held whole (a million customers times 664
    float32 class columns is 2.7 GB): :meth:`enriched_class_batches` builds
    it a batch of customers at a time from ``class_long``.
    """

    basic: pd.DataFrame
    enriched_department: pd.DataFrame
    class_long: pd.DataFrame
    class_columns: list[str]
    model_matrix: pd.DataFrame
    transformer: ModelMatrixTransformer
    analysis_date: pd.Timestamp
    excluded: pd.DataFrame
    roles: dict[str, str]
    details: dict[str, Any]

    def enriched_class_batches(self, batch_rows: int = 100_000) -> Iterator[pa.Table]:
        """``enriched_class.parquet`` a batch of customers at a time, as Arrow tables ready to write.

        Each batch is the batch's rows of ``enriched_department`` followed by
        float32 spend then units per sellable merchandise class
        (:attr:`class_columns`).
        """
        ids = self.enriched_department[ID_COLUMN].to_numpy()
        long_ids = self.class_long[ID_COLUMN].to_numpy()
        col = self.class_long["class_idx"].to_numpy(np.int64)
        spend = self.class_long["spend"].to_numpy(np.float32)
        units = self.class_long["units"].to_numpy(np.float32)
        n_classes = len(self.class_columns) // 2
        for start in range(0, len(ids), batch_rows):
            batch_ids = ids[start:start + batch_rows]
            # Both tables are sorted by customer: a batch's class rows are one slice.
            lo = np.searchsorted(long_ids, batch_ids[0], side="left")
            hi = np.searchsorted(long_ids, batch_ids[-1], side="right")
            rows = np.searchsorted(batch_ids, long_ids[lo:hi])
            # One contiguous row per column, so Arrow takes each without a copy.
            values = np.zeros((2 * n_classes, len(batch_ids)), dtype=np.float32)
            values[col[lo:hi], rows] = spend[lo:hi]
            values[n_classes + col[lo:hi], rows] = units[lo:hi]
            part = pa.Table.from_pandas(self.enriched_department.iloc[start:start + batch_rows], preserve_index=False)
            yield pa.Table.from_arrays(part.columns + [pa.array(v) for v in values],
                                       names=part.column_names + self.class_columns)

    @property
    def class_spend_long(self) -> pd.DataFrame:
        """``class_spend_long.parquet``: customer_id, department, class, spend, units (non-zero only)."""
        return self.class_long.drop(columns=["class_idx", "row"])

    @property
    def enriched_class(self) -> pd.DataFrame:
        """The whole of ``enriched_class.parquet`` in memory (small data and tests only)."""
        return pa.concat_tables(self.enriched_class_batches()).to_pandas()


def _scaler_center(scaler) -> np.ndarray:
    return scaler.center_ if hasattr(scaler, "center_") else scaler.mean_


def profile_columns(customers: pd.DataFrame) -> list[str]:
    """The customer table's columns that may join the enriched datasets: never identities."""
    identifying = set(IDENTITY_COLUMNS) | set(identifier_columns(customers.columns))
    return [c for c in customers.columns if c != ID_COLUMN and c not in identifying]


def prepare_features(lines, customers: pd.DataFrame | None, hierarchy: Hierarchy, model_patterns: Iterable[str],
                     log1p_patterns: Iterable[str], analysis_date: pd.Timestamp | None = None,
                     eligibility: EligibilityRules = EligibilityRules(),
                     settings: FeatureSettings = FeatureSettings(), scaler: str = "standard",
                     class_mix_components: int = 12) -> PreparedFeatures:
    """Features, eligibility, the three datasets and the scaled model matrix.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        Order lines (see :func:`build_customer_features`).
    customers : DataFrame or None
        ``customers.parquet``: its profile and ground-truth columns join the
        enriched datasets; identity columns never do.
    hierarchy : Hierarchy
    model_patterns, log1p_patterns : iterable of str
        fnmatch patterns over behavioural features (:func:`resolve_model_columns`).
    analysis_date : Timestamp, optional
        Defaults to the last ``order_date`` in the lines.
    eligibility : EligibilityRules
    settings : FeatureSettings
    scaler : {"standard", "robust"}
        How the model matrix is scaled (:class:`ModelMatrixTransformer`).
    class_mix_components : int
        Columns of the class-mix embedding (:class:`ClassMixEmbedding`,
        fitted on the eligible customers); 0 = none.

    Returns
    -------
    PreparedFeatures
        ``basic`` (customer_id, core features, department spend and units),
        ``enriched_department`` (dates, every feature, profile and ground
        truth), ``class_long`` and the class columns of
        ``enriched_class``, ``model_matrix`` (customer_id and the scaled
        columns, float32), the fitted ``transformer``, ``excluded``
        (customer_id, rule, reason), every column's role and the manifest
        ``details``. Every dataset holds the eligible customers, sorted by id.

    Raises
    ------
    ValueError
        If no customer is eligible, a pattern names a non-feature column, or
        the lines lack a required column.
    """
    built, analysis_date = build_customer_features(lines, hierarchy, analysis_date, settings)
    # Only one full-width copy of the features is kept at a time: a million customers' is 0.6 GB.
    features, class_long, dropped = built.features, built.class_long, built.dropped
    no_features = customers_without_features(built.activity, customers, features[ID_COLUMN].to_numpy())
    feature_columns, line_counts = built.feature_columns, built.lines
    del built
    if features.empty:
        raise ValueError(f"no customer has a purchase on or before the analysis date {analysis_date.date()}")
    keep, failed = apply_eligibility(features, eligibility)
    excluded = pd.concat([no_features, failed], ignore_index=True).sort_values(ID_COLUMN, kind="stable")
    excluded = excluded.reset_index(drop=True)
    if not keep.all():
        features = features[keep].reset_index(drop=True)
        class_long = class_long[keep[class_long["row"].to_numpy()]].reset_index(drop=True)
    if features.empty:
        raise ValueError(f"no customer passes the eligibility rules ({len(failed):,} with features all fail "
                         f"them: {failed['rule'].value_counts().to_dict()})")
    class_columns = class_feature_names(hierarchy) if "dept_*" not in dropped else []
    class_mix = None
    n_classes = len(class_columns) // 2
    why_no_mix = ("prepare_features.class_mix_components is 0" if class_mix_components == 0
                  else dropped.get("dept_*") if not class_columns
                  else "the hierarchy has fewer than 2 sellable classes" if n_classes < 2
                  else "fewer than 2 eligible customers" if len(features) < 2
                  else None)
    if why_no_mix is None:
        shares = class_spend_matrix(class_long, features[ID_COLUMN].to_numpy(), n_classes)
        if shares.nnz == 0:
            why_no_mix = "no line falls in a sellable class of the hierarchy"
    if why_no_mix:
        dropped[f"{CLASS_MIX}*"] = why_no_mix
    else:
        class_mix = ClassMixEmbedding(n_components=class_mix_components).fit(shares)
        features = add_class_mix(features, class_long, class_mix, n_classes)
        feature_columns = feature_columns + list(class_mix.get_feature_names_out())
    if customers is not None:
        profile = customers[[ID_COLUMN] + profile_columns(customers)].drop_duplicates(ID_COLUMN)
        features = features.merge(profile, on=ID_COLUMN, how="left", validate="one_to_one")
    roles = column_roles(list(features.columns) + class_columns, feature_columns + class_columns,
                         profile_columns(customers) if customers is not None else ())
    # Class columns are behavioural but too many and too sparse to model: the matrix draws from the
    # department-level features only.
    model_roles = {c: r for c, r in roles.items() if c not in set(class_columns)}
    model = resolve_model_columns(model_patterns, log1p_patterns, model_roles, dropped)
    transformer = ModelMatrixTransformer(columns=model.columns, log1p_columns=model.log1p_columns, scaler=scaler,
                                         class_mix=class_mix if any(c.startswith(CLASS_MIX) for c in model.columns)
                                         else None).fit(features)
    # What scoring needs to build these same columns from new order lines (core.scoring).
    transformer.feature_settings_ = dataclasses.replace(settings, attribute_columns=tuple(
        (a, tuple(c for c in feature_columns if c.startswith(f"{a}_share__"))) for a in settings.attributes
        if any(c.startswith(f"{a}_share__") for c in feature_columns)))
    transformer.eligibility_ = eligibility
    transformer.sellable_classes_ = sellable_classes(hierarchy)
    matrix = pd.DataFrame(transformer.transform(features).astype(np.float32), columns=model.columns)
    matrix.insert(0, ID_COLUMN, features[ID_COLUMN].to_numpy())
    basic_columns = [ID_COLUMN] + list(CORE_FEATURES) + [c for c in feature_columns
                                                         if c.startswith((DEPT_SPEND, DEPT_UNITS))]
    rules_counts = {r: 0 for r in NO_FEATURE_RULES + ELIGIBILITY_RULES}
    rules_counts.update(excluded["rule"].value_counts().to_dict())
    details = {
        "analysis_date": analysis_date.date().isoformat(),
        "customers": len(features),
        "excluded_customers": {k: int(v) for k, v in rules_counts.items()},
        "eligibility": dataclasses.asdict(eligibility),
        "lines": line_counts,
        "dropped_features": dropped,
        "column_roles": {role: sum(r == role for r in roles.values()) for role in ROLES},
        "profile_columns": [c for c, r in roles.items() if r in (ROLE_PROFILE, ROLE_GROUND_TRUTH)],
        "model_matrix": {"columns": model.columns, "log1p_columns": model.log1p_columns,
                         "scaler": type(transformer.scaler_).__name__,
                         "center": [round(float(v), 6) for v in _scaler_center(transformer.scaler_)],
                         "scale": [round(float(v), 6) for v in transformer.scaler_.scale_],
                         "class_mix": None if class_mix is None else {
                             "components": len(class_mix.components_),
                             "explained_variance_ratio": [round(float(v), 4)
                                                          for v in class_mix.explained_variance_ratio_]},
                         "patterns_without_data": model.patterns_without_data},
    }
    return PreparedFeatures(basic=features[basic_columns], enriched_department=features, class_long=class_long,
                            class_columns=class_columns, model_matrix=matrix, transformer=transformer,
                            analysis_date=analysis_date, excluded=excluded, roles=roles, details=details)
