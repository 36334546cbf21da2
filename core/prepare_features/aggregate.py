"""Behavioural features per customer from order lines: the DuckDB aggregation.

The order lines are aggregated by DuckDB (an embedded SQL engine, chosen by
measurement: see README "02_prepare_features" and ``benchmarks/RESULTS.md``);
everything after the aggregation is NumPy on one row per customer. Money is
summed in whole hundredths of the currency unit (integers), so the totals are
exact and do not depend on how the engine splits the work over threads: the
same input always gives bit-identical features.

Which lines count
    *Spend lines* are the lines of merchandise departments and of the
    ``Unknown`` department (a real-data bucket for names the hierarchy does
    not know, and any other department name the hierarchy lacks). Lines of
    the other kinds of department (bag levy, gift cards, charity,
    concessions, goods not for resale, data-quality departments) are never
    customer spend. Lines after the analysis date are ignored.

:func:`build_customer_features` reads top to bottom as the steps it takes:
register the hierarchy's keys, survey the lines, code the attribute values,
build one compact table of lines, then one group of features at a time.
Each feature's formula is in ``docs/features.md``.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.domain.columns import DAYS_PER_MONTH, ID_COLUMN, UNKNOWN
from core.domain.hierarchy import Hierarchy, slug
from core.framework import progress
from core.prepare_features.columns import (CORE_FEATURES, DEPT_SHARE, DEPT_SPEND, DEPT_UNITS, DISCOUNT_FEATURE,
                                           DIVERSITY_FEATURES, KIDS_SIZE_FEATURE, OTHER_VALUE, SEASONAL_FEATURES,
                                           TREND_FEATURES, attribute_column, dept_column,
                                           sellable_classes)
from core.prepare_features.settings import PrepareFeaturesConfig

#: Columns the order lines must have (the optional ones only feed optional features).
REQUIRED_LINE_COLUMNS = ("customer_id", "order_id", "order_date", "department", "class", "quantity",
                         "line_amount", "is_return")

@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """What the feature formulas need besides the lines (config ``prepare_features``).

    Attributes
    ----------
    holiday_window, back_to_school_window : tuple of str or None
        ``("MM-DD", "MM-DD")``, inclusive; a window may wrap over New Year.
        None: the season is not measured (not configured for this data), and
        its share feature is dropped with the reason.
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

    holiday_window: tuple[str, str] | None = ("11-01", "12-31")
    back_to_school_window: tuple[str, str] | None = ("07-15", "09-07")
    attributes: tuple[str, ...] = ("channel", "brand_tier", "style")
    max_attribute_values: int = 8
    kids_size_pattern: str = r"^(baby|toddler|child|kids?|teen)\b"
    engine_memory_mb: int = 2048
    attribute_columns: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    @classmethod
    def from_config(cls, cfg: PrepareFeaturesConfig, source: str = "synthetic") -> "FeatureSettings":
        """From the ``prepare_features`` config section, for data of ``source`` (``data.source``).

        The season windows are the synthetic retailer's calendar: a retailer's own log
        (``source`` file) is measured against them only with ``seasons_for_file_data``.
        """
        own = source == "synthetic" or cfg.seasons_for_file_data
        holiday = tuple(cfg.holiday_window) if own and cfg.holiday_window is not None else None
        school = tuple(cfg.back_to_school_window) if own and cfg.back_to_school_window is not None else None
        return cls(holiday_window=holiday, back_to_school_window=school,
                   attributes=tuple(cfg.attribute_shares), max_attribute_values=cfg.max_attribute_values,
                   kids_size_pattern=cfg.kids_size_pattern, engine_memory_mb=cfg.engine_memory_mb)

    def with_attribute_columns(self, feature_columns: list[str]) -> "FeatureSettings":
        """These settings, fixed to the attribute share columns among ``feature_columns``.

        What stage 02 saves for scoring: new customers then get exactly the
        share columns the model was trained with, whatever values their own
        lines show.
        """
        fixed = tuple((a, tuple(c for c in feature_columns if c.startswith(f"{a}_share__"))) for a in self.attributes
                      if any(c.startswith(f"{a}_share__") for c in feature_columns))
        return dataclasses.replace(self, attribute_columns=fixed)


@dataclasses.dataclass(frozen=True)
class CustomerFeatures:
    """What :func:`build_customer_features` returns.

    Attributes
    ----------
    features : DataFrame
        One row per customer with a purchase by the analysis date, sorted by
        ``customer_id``: ``customer_id``, the two order dates, then the
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
        If a required column is missing or there are no lines.
    """
    import duckdb

    with tempfile.TemporaryDirectory(prefix="features-spill-") as spill:
        # Row order never matters here (results are sorted), and not keeping it saves memory; past
        # the memory limit the engine spills to a folder that is removed afterwards.
        con = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": spill,
                                     "memory_limit": f"{settings.engine_memory_mb}MB"})
        try:
            columns = register_source(con, lines)
            missing = [c for c in REQUIRED_LINE_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"the order lines lack required column(s) {', '.join(missing)}")
            return _aggregate(con, columns, hierarchy, analysis_date, settings)
        finally:
            con.close()


def _aggregate(con, columns: list[str], hierarchy: Hierarchy, analysis_date: pd.Timestamp | None,
               settings: FeatureSettings) -> tuple[CustomerFeatures, pd.Timestamp]:
    """The steps of :func:`build_customer_features`, on the engine's view ``src`` of the lines."""
    # report(): how far through stage 02's features step, by each part's share of the time on 200,000 customers.
    keys = _register_hierarchy(con, hierarchy)
    survey = _survey_lines(con, columns, hierarchy, analysis_date, settings)
    value_names = _code_attribute_values(con, settings, survey)
    progress.report(0.07, "lines surveyed")
    ranges = customer_ranges(survey.customer_ids, survey.total_lines, settings.engine_memory_mb)
    parts = []
    for i, bounds in enumerate(ranges):
        parts.append(_aggregate_part(con, bounds, survey, settings, value_names, len(keys.dept_of_key)))
        progress.report(0.07 + 0.79 * (i + 1) / len(ranges), f"customers' lines aggregated (part {i + 1} of "
                                                               f"{len(ranges)})")
    sums = _customer_sums(*(_concat([part[k] for part in parts]) for k in ("bought", "customer")))
    built = _Built()
    dates = _order_features(_concat([part["orders"] for part in parts]), sums, survey.a_day, built)
    months = _concat([part["months"] for part in parts])
    months["rw"] = np.searchsorted(sums.ids, months.pop("c").astype(np.int64))
    runs = _class_runs(_concat([part["runs"] for part in parts]), sums.ids)
    del parts
    class_long = _class_long(runs, keys, sums.ids)
    _department_features(runs, keys, len(sums.ids), built)
    _seasonal_features(sums, settings, built)
    _trend_features(months, survey.analysis_date, len(sums.ids), built)
    _discount_feature(sums, survey, built)
    _attribute_shares(sums, survey, settings, value_names, built)
    _kids_size_feature(sums, survey, built)
    features = built.frame(sums.ids, *dates)
    line_counts = {"total": survey.total_lines, "after_analysis_date": sums.lines_after,
                   "by_department_kind": survey.lines_by_kind, "departments_not_in_hierarchy": survey.unmapped}
    return CustomerFeatures(features=features, feature_columns=built.columns, class_long=class_long,
                            dropped=built.dropped, activity=sums.activity, lines=line_counts), survey.analysis_date


# Bytes a line takes in the engine's ``lines`` table (measured: 56 of values, plus validity and overhead).
_LINE_BYTES = 64
# Share of engine_memory_mb one part's lines table may take: the rest is for the queries' hash tables.
_TABLE_SHARE = 0.5


def customer_ranges(customer_ids: tuple[int, int] | None, total_lines: int,
                    engine_memory_mb: int) -> list[tuple[int, int] | None]:
    """Ranges of customer ids whose lines are aggregated one range at a time; ``[None]`` = all at once.

    Every feature is a sum over one customer's lines, so the lines can be
    aggregated a range of customers at a time and the results put end to
    end: the outputs are the same. The ranges are as many as it takes for
    one range's lines table to fit in half of ``engine_memory_mb``, so the
    engine never spills it to disk: at a million customers (136 M lines,
    8 GB as a table) the spilled table made every query several times
    slower than at 200,000 customers per line. Ranges split the ids evenly;
    a log written customer by customer (stage 01's) is read once in all,
    the Parquet reader skipping the row groups outside each range.

    Parameters
    ----------
    customer_ids : (int, int) or None
        The smallest and largest ``customer_id`` of the lines (None: no lines).
    total_lines : int
    engine_memory_mb : int

    Returns
    -------
    list of (int, int) or None
        Inclusive ``(first, last)`` id ranges in increasing order, covering
        every id from the smallest to the largest.
    """
    per_part = max(int(engine_memory_mb * 2 ** 20 * _TABLE_SHARE) // _LINE_BYTES, 1)
    n_parts = -(-total_lines // per_part)
    if customer_ids is None or n_parts <= 1:
        return [None]
    low, high = customer_ids
    n_parts = min(n_parts, high - low + 1)
    edges = [low + (high - low + 1) * i // n_parts for i in range(n_parts + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(n_parts)]


def _aggregate_part(con, bounds: tuple[int, int] | None, survey: "_LineSurvey", settings: FeatureSettings,
                    value_names: dict[str, list[str]], n_keys: int) -> dict[str, dict[str, np.ndarray]]:
    """Every query's result for the customers in ``bounds`` (None = all), from a lines table of theirs only."""
    _create_lines_table(con, list(value_names), has_discount=survey.non_null["discount_amount"], bounds=bounds,
                        last=bounds is None or bounds[1] == survey.customer_ids[1])
    a_day = survey.a_day
    part = _customer_sums_queries(con, a_day, settings, value_names)
    part["orders"] = _order_days(con, a_day)
    part["months"] = _monthly_spend_sums(con, a_day)
    part["runs"] = _class_sums(con, a_day, n_keys, survey.customer_ids)
    # This part's work is done: free the engine's memory for the next part and the wide tables.
    con.execute("DROP TABLE lines")
    return part


def _concat(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Query results (``fetchnumpy``) of the parts put end to end, nulls as 0 (False for flags)."""
    return {name: np.concatenate([_filled(r[name], False if np.asarray(r[name]).dtype == bool else 0)
                                  for r in results]) for name in results[0]}


# ---------------------------------------------------------------------------
# The engine's inputs: the lines, the hierarchy's keys, the attribute codes


def register_source(con, lines) -> list[str]:
    """Make ``lines`` (DataFrame, Arrow table or Parquet path) the view ``src``; return its columns."""
    if isinstance(lines, (str, Path)):
        path = str(lines).replace("'", "''")
        con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet('{path}')")
    else:
        table = lines if isinstance(lines, pa.Table) else pa.Table.from_pandas(lines, preserve_index=False)
        con.register("src", table)
    return [r[0] for r in con.execute("DESCRIBE src").fetchall()]


@dataclasses.dataclass(frozen=True)
class _ClassKeys:
    """Integer keys of the (department, class) a line falls in.

    Keys ``0 .. len(sellable)-1`` are the sellable classes (the class
    columns); then one key per merchandise department for its data-quality
    classes and any class name the hierarchy lacks.
    """

    merchandise: list[str]
    sellable: list[tuple[str, str]]
    dept_of_key: np.ndarray  # merchandise department index of each key


def _register_hierarchy(con, hierarchy: Hierarchy) -> _ClassKeys:
    """Register the tables ``departments`` and ``classes`` that give each line its keys."""
    merch = hierarchy.merchandise_departments
    keys = sellable_classes(hierarchy)
    other_key = {d: len(keys) + i for i, d in enumerate(merch)}
    dept_of_key = np.array([merch.index(d) for d, _ in keys] + list(range(len(merch))), dtype=np.int64)
    # "Unknown" is the bucket for a retailer's unmapped names: spend, in no department, even if a
    # hierarchy lists it (the lines of any name missing from the hierarchy are treated alike).
    named = [d for d in hierarchy.departments if d != UNKNOWN]
    departments = pd.DataFrame({
        "department": pd.Series(named, dtype=object),
        "dept_key": pd.array([other_key.get(d) for d in named], "Int16"),
        "is_spend": [hierarchy.departments[d].kind == "merchandise" for d in named]})
    classes = pd.DataFrame({"department": pd.Series([d for d, _ in keys], dtype=object),
                            "class": pd.Series([c for _, c in keys], dtype=object),
                            "class_key": np.arange(len(keys), dtype=np.int16)})
    con.register("departments", departments)
    con.register("classes", classes)
    return _ClassKeys(merchandise=merch, sellable=keys, dept_of_key=dept_of_key)


@dataclasses.dataclass(frozen=True)
class _LineSurvey:
    """What one pass over the lines by department says before anything is aggregated."""

    analysis_date: pd.Timestamp
    present: dict[str, bool]  # optional column -> in the lines
    non_null: dict[str, bool]  # optional column -> in the lines with a value somewhere
    total_lines: int
    customer_ids: tuple[int, int] | None  # smallest and largest customer id (None: no id)
    lines_by_kind: dict[str, int]
    unmapped: list[str]

    @property
    def a_day(self) -> int:
        """The analysis date as days since 1970-01-01, the unit of the lines table."""
        return (self.analysis_date - pd.Timestamp("1970-01-01")).days

    def why_absent(self, column: str) -> str:
        """Why the features needing optional ``column`` were not computed."""
        return (f"column {column} is absent from the order lines" if not self.present[column]
                else f"column {column} is null on every line")


def _survey_lines(con, columns: list[str], hierarchy: Hierarchy, analysis_date: pd.Timestamp | None,
                  settings: FeatureSettings) -> _LineSurvey:
    """Lines per department, the analysis date, and which optional columns hold values."""
    present = {c: c in columns for c in ("discount_amount", "size", *settings.attributes)}
    counts = "".join(f", count({c}) AS n_{c}" for c, there in present.items() if there)
    by_dept = con.execute(f"SELECT department, count(*) AS n_lines, max(order_date) AS last_date, "
                          f"min(customer_id) AS first_id, max(customer_id) AS last_id {counts} "
                          f"FROM src GROUP BY department").df()
    if by_dept.empty:
        raise ValueError("the order lines are empty")
    if analysis_date is None:
        analysis_date = pd.Timestamp(by_dept["last_date"].max())
    kinds = {name: d.kind for name, d in hierarchy.departments.items() if name != UNKNOWN}
    lines_by_kind: dict[str, int] = {}
    for name, count in zip(by_dept["department"], by_dept["n_lines"]):
        kind = kinds.get(name, "Unknown or not in the hierarchy (spend, in no department)")
        lines_by_kind[kind] = lines_by_kind.get(kind, 0) + int(count)
    return _LineSurvey(
        analysis_date=pd.Timestamp(analysis_date).normalize(), present=present,
        # Scoring (fixed columns): a column the lines carry counts even when these customers left it null on
        # every line (nothing with a size bought is a zero share); training showed the log carries it.
        non_null={c: there and (int(by_dept[f"n_{c}"].sum()) > 0 or settings.attribute_columns is not None)
                  for c, there in present.items()},
        total_lines=int(by_dept["n_lines"].sum()), lines_by_kind=dict(sorted(lines_by_kind.items())),
        customer_ids=(None if by_dept["first_id"].isna().all()
                      else (int(by_dept["first_id"].min()), int(by_dept["last_id"].max()))),
        unmapped=sorted(str(d) for d in by_dept["department"] if d not in kinds and d != UNKNOWN))


def _code_attribute_values(con, settings: FeatureSettings, survey: _LineSurvey) -> dict[str, list[str]]:
    """Register each attribute's values as small integer codes (table ``values_<attribute>``).

    Values equal once slugged ("Mid", "mid") share one code; sizes get two,
    adult (0) and kids (1). Returns each coded attribute's value names, in
    code order.
    """
    value_names: dict[str, list[str]] = {}
    coded = [a for a in settings.attributes if survey.non_null[a]] + (["size"] if survey.non_null["size"] else [])
    # Every attribute's distinct values in one scan of the lines, not one scan each.
    distinct = con.execute("SELECT " + ", ".join(f"list(DISTINCT CAST({a} AS VARCHAR)) FILTER ({a} IS NOT NULL)"
                                                 for a in coded) + " FROM src").fetchall()[0] if coded else ()
    for attribute, raw in zip(coded, distinct):
        raw = list(raw or [])
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
    return value_names


def _create_lines_table(con, coded_attributes: list[str], has_discount: bool,
                        bounds: tuple[int, int] | None = None, last: bool = True) -> None:
    """The temporary table ``lines``: every line once (of the customers in ``bounds``), as small numbers.

    ``last``: the last range also takes lines without a customer id, as the
    whole table would.

    Days since 1970, whole cents, class keys and attribute codes. Every
    aggregate below scans this table. Sums of cents and units are taken as
    doubles: of whole numbers below 2^53 they are exact whatever order the
    threads add them in, and several times faster than the engine's 128-bit
    integer sums.
    """
    joins = " ".join(f"LEFT JOIN values_{a} v_{a} ON CAST(l.{a} AS VARCHAR) = v_{a}.value" for a in coded_attributes)
    codes = "".join(f", v_{a}.code AS a_{a}" for a in coded_attributes)
    disc = "CAST(round(l.discount_amount * 100) AS BIGINT)" if has_discount else "NULL::BIGINT"
    where = "" if bounds is None else (f"WHERE (l.customer_id BETWEEN {int(bounds[0])} AND {int(bounds[1])}"
                                       f"{' OR l.customer_id IS NULL' if last else ''})")
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
               {codes}
        FROM (SELECT *, CAST(order_date AS DATE) AS day FROM src) l
        LEFT JOIN departments d ON l.department = d.department
        LEFT JOIN classes k ON l.department = k.department AND l."class" = k."class"
        {joins} {where}""")


def _spend_by_now(a_day: int) -> str:
    """SQL condition: a spend line up to the analysis date."""
    return f"spend AND dn <= {a_day}"


def _purchase_by_now(a_day: int) -> str:
    """SQL condition: a purchase (not a return) spend line up to the analysis date."""
    return f"{_spend_by_now(a_day)} AND NOT r"


# ---------------------------------------------------------------------------
# Per-customer sums


@dataclasses.dataclass
class _CustomerSums:
    """The per-customer aggregates, fetched from the engine as arrays.

    ``values`` holds two kinds of column: those of the purchase query (one
    row per featured customer, in ``ids`` order) and those of the query over
    every customer with a line (``featured`` selects the featured ones).
    """

    values: dict[str, np.ndarray]
    purchase_columns: set[str]
    featured: np.ndarray
    ids: np.ndarray
    activity: pd.DataFrame
    lines_after: int

    def column(self, name: str, scale: float = 1.0) -> np.ndarray:
        """A per-customer aggregate for the featured customers, nulls as 0, divided by ``scale``."""
        values = _filled(self.values[name], 0).astype(np.float64)
        return (values if name in self.purchase_columns else values[self.featured]) / scale


def _customer_sums_queries(con, a_day: int, settings: FeatureSettings,
                           value_names: dict[str, list[str]]) -> dict[str, dict[str, np.ndarray]]:
    """``bought``: purchase sums per customer with a purchase by now; ``customer``: what every customer did.

    Both sorted by customer id (``c``).
    """
    # Purchases (prefiltered, CASE sums: far cheaper than a FILTER per aggregate) ...
    def within(condition: str) -> str:
        return f"sum(CASE WHEN {condition} THEN CAST(cents AS DOUBLE) ELSE 0.0 END)"

    sums = [f"{within(f'md BETWEEN {q * 300 + 101} AND {q * 300 + 331}')} AS q{q + 1}" for q in range(4)]
    sums += [f"{within(_window_sql(window, 'md'))} AS {name}" for name, window in season_windows(settings).items()]
    for attribute, names in value_names.items():
        sums += [f"{within(f'a_{attribute} = {i}')} AS a_{attribute}_{i}" for i in range(len(names))]
    bought = con.execute(f"""
        SELECT c, sum(CAST(cents AS DOUBLE)) AS gross, sum(CAST(qty AS DOUBLE)) AS units_bought,
               min(dn) AS first_dn, max(dn) AS last_dn,
               {', '.join(sums)}
        FROM lines WHERE {_purchase_by_now(a_day)} GROUP BY c ORDER BY c""").fetchnumpy()
    # ... and what every customer with a line did: returns, discounts, why some get no features.
    now = _spend_by_now(a_day)
    customer = con.execute(f"""
        SELECT c,
               bool_or(spend AND dn > {a_day} AND NOT r) AS later_purchase,
               bool_or(NOT spend AND dn <= {a_day} AND NOT r) AS other_purchase,
               count(*) FILTER (dn > {a_day}) AS lines_after,
               -sum(CASE WHEN {now} AND r THEN CAST(cents AS DOUBLE) ELSE 0.0 END) AS returned,
               -sum(CASE WHEN {now} AND r THEN CAST(qty AS DOUBLE) ELSE 0.0 END) AS units_returned,
               sum(CASE WHEN {now} THEN CAST(disc AS DOUBLE) ELSE 0.0 END) AS discount
        FROM lines GROUP BY c ORDER BY c""").fetchnumpy()
    return {"bought": bought, "customer": customer}


def _customer_sums(bought: dict[str, np.ndarray], customer: dict[str, np.ndarray]) -> _CustomerSums:
    """The two queries of :func:`_customer_sums_queries` as per-customer sums.

    The featured customers' ids are sorted: later queries group by id and
    find each customer's row by binary search.
    """
    all_ids = _filled(customer["c"], 0).astype(np.int64)
    ids = _filled(bought["c"], 0).astype(np.int64)
    featured = np.isin(all_ids, ids, assume_unique=True)
    customer["spend_purchase"] = featured
    purchase_columns = {k for k in bought.keys() if k != "c"}
    customer.update({k: bought[k] for k in purchase_columns})
    flags = {k: _filled(customer[k], False).astype(bool) for k in ("spend_purchase", "later_purchase",
                                                                    "other_purchase")}
    return _CustomerSums(values=customer, purchase_columns=purchase_columns, featured=featured, ids=ids,
                         activity=pd.DataFrame({ID_COLUMN: all_ids, **flags}),
                         lines_after=int(_filled(customer["lines_after"], 0).sum()))


def _window_sql(window: tuple[str, str], md: str) -> str:
    """SQL condition: month-day expression ``md`` (month * 100 + day) within ``window``."""
    start, end = (_month_day(w) for w in window)
    if start <= end:
        return f"{md} BETWEEN {start} AND {end}"
    return f"({md} >= {start} OR {md} <= {end})"  # wraps over New Year


def _month_day(text: str) -> int:
    month, day = (int(p) for p in text.split("-"))
    return month * 100 + day


# ---------------------------------------------------------------------------
# The features, one group at a time


class _Built:
    """The features computed so far: values by name, their column order, and what was dropped and why."""

    def __init__(self):
        self.values: dict[str, np.ndarray] = {}
        self.columns: list[str] = []
        self.dropped: dict[str, str] = {}

    def add(self, name: str, values: np.ndarray) -> None:
        """Add feature ``name`` (one value per featured customer) after those added before."""
        self.values[name] = values
        self.columns.append(name)

    def frame(self, ids: np.ndarray, first_dn: np.ndarray, last_dn: np.ndarray) -> pd.DataFrame:
        """``customer_id``, the two order dates, then every feature as float64, in column order."""
        epoch = np.datetime64("1970-01-01", "D")
        # Popped as they are copied in, so the features are held once, not twice.
        return pd.DataFrame({
            ID_COLUMN: ids.astype(np.int64),
            "first_order_date": (epoch + first_dn.astype("timedelta64[D]")).astype("datetime64[us]"),
            "last_order_date": (epoch + last_dn.astype("timedelta64[D]")).astype("datetime64[us]"),
            **{k: np.asarray(self.values.pop(k), np.float64) for k in self.columns}})


def _order_days(con, a_day: int) -> dict[str, np.ndarray]:
    """Each purchase order's customer ``c`` and day ``dn``, sorted by customer then day."""
    # Orders: distinct purchase order ids with spend lines. Grouped by customer id, not joined to rows: a
    # third cheaper (200,000 customers); every customer with a purchase by now is featured.
    return con.execute(f"""
        SELECT c, min(dn) AS dn FROM lines WHERE {_purchase_by_now(a_day)}
        GROUP BY c, o ORDER BY c, dn""").fetchnumpy()


def _order_features(orders: dict[str, np.ndarray], sums: _CustomerSums, a_day: int,
                    built: _Built) -> tuple[np.ndarray, np.ndarray]:
    """The core features (:data:`CORE_FEATURES`) from :func:`_order_days`; returns the first and last purchase days."""
    n = len(sums.ids)
    first_dn = sums.column("first_dn").astype(np.int64)
    last_dn = sums.column("last_dn").astype(np.int64)
    core: dict[str, np.ndarray] = {}
    core["recency_days"] = (a_day - last_dn).astype(np.float64)
    core["tenure_days"] = (a_day - first_dn).astype(np.float64)
    # Gaps between consecutive orders of a customer.
    order_row = np.searchsorted(sums.ids, _filled(orders["c"], 0).astype(np.int64))
    gap = np.diff(_filled(orders["dn"], 0).astype(np.float64))
    same = order_row[1:] == order_row[:-1]
    n_orders = np.bincount(order_row, minlength=n).astype(np.float64)
    s1 = np.bincount(order_row[1:][same], gap[same], n)
    s2 = np.bincount(order_row[1:][same], gap[same] ** 2, n)
    del orders, order_row, gap, same
    core["orders"] = n_orders
    core["orders_per_month"] = n_orders / (np.maximum(core["tenure_days"], DAYS_PER_MONTH) / DAYS_PER_MONTH)
    gross, returned = sums.column("gross", 100), sums.column("returned", 100)
    units_bought = sums.column("units_bought")
    core["gross_revenue"] = gross
    core["returned_value"] = returned
    core["net_revenue"] = gross - returned
    core["average_order_value"] = _ratio(gross, n_orders)
    core["items_per_order"] = _ratio(units_bought, n_orders)
    core["return_rate_value"] = _ratio(returned, gross)
    core["return_rate_units"] = _ratio(sums.column("units_returned"), units_bought)
    # Mean gap = (last - first) / (orders - 1); one order: the tenure, the wait so far without a second.
    gaps = n_orders - 1
    mean_gap = _ratio(s1, gaps)
    core["mean_days_between_orders"] = np.where(gaps >= 1, mean_gap, core["tenure_days"])
    std_gap = np.sqrt(np.maximum(_ratio(s2, gaps) - mean_gap ** 2, 0.0))
    core["cv_days_between_orders"] = np.where(gaps >= 2, _ratio(std_gap, mean_gap), 0.0)
    for name in CORE_FEATURES:
        built.add(name, core[name])
    return first_dn, last_dn


def _monthly_spend_sums(con, a_day: int) -> dict[str, Any]:
    """Per customer ``c`` with a purchase: first purchase month and the sums over months of y, y^2 and month * y.

    ``y`` is a month's purchase spend in cents.
    """
    return con.execute(f"""
        WITH m AS (SELECT c, mi, sum(cents) AS y FROM lines WHERE {_purchase_by_now(a_day)} GROUP BY c, mi)
        SELECT c, min(mi) AS first_mi, sum(y) AS sy, sum(y * y) AS syy, sum(CAST(mi AS INTEGER) * y) AS smy
        FROM m GROUP BY c""").fetchnumpy()


@dataclasses.dataclass(frozen=True)
class _ClassRuns:
    """Sums per featured row and class key (only pairs with a line)."""

    row: np.ndarray
    class_key: np.ndarray
    spend: np.ndarray  # net cents
    gross: np.ndarray  # purchase cents
    units: np.ndarray  # net units


def _class_sums(con, a_day: int, n_keys: int, customer_ids: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Net spend, purchase spend and net units per customer ``c`` and class key ``ck``, sorted by both.

    A customer buys about five lines per class they buy in, so a hash
    aggregate of the (customer, class) groups beats sorting every line
    (-33% CPU at 200,000 customers), and grouping by customer id and mapping
    to rows afterwards beats joining every line to a table of rows. One 64-bit
    key per group when the ids allow it (a fifth cheaper than two columns).
    Sums of whole cents as doubles are exact, so the totals do not depend on
    the engine's grouping.
    """
    sums = ("sum(CAST(cents AS DOUBLE)) AS spend, sum(CASE WHEN r THEN 0.0 ELSE CAST(cents AS DOUBLE) END) AS gross, "
            "sum(CAST(qty AS DOUBLE)) AS units")
    where = f"{_spend_by_now(a_day)} AND ck IS NOT NULL"
    low, high = customer_ids or (0, 0)
    if low >= 0 and high < (2 ** 62) // max(n_keys, 1):
        runs = con.execute(f"SELECT c * {n_keys} + ck AS k, {sums} FROM lines WHERE {where} GROUP BY k ORDER BY k"
                           ).fetchnumpy()
        runs["c"], runs["ck"] = np.divmod(_filled(runs.pop("k"), 0).astype(np.int64), n_keys)
        return runs
    # Ids too large (or negative) for one key.
    return con.execute(f"SELECT c, ck, {sums} FROM lines WHERE {where} GROUP BY c, ck ORDER BY c, ck").fetchnumpy()


def _class_runs(runs: dict[str, np.ndarray], ids: np.ndarray) -> _ClassRuns:
    """:func:`_class_sums` of the featured customers, by row; customers with only returns by now are left out."""
    customer = runs["c"].astype(np.int64)
    row = np.searchsorted(ids, customer)
    featured = ids[np.minimum(row, len(ids) - 1)] == customer if len(ids) else np.zeros(len(customer), bool)
    return _ClassRuns(row=row[featured], class_key=runs["ck"].astype(np.int64)[featured],
                      **{name: runs[name].astype(np.float64)[featured] for name in ("spend", "gross", "units")})


def _class_long(runs: _ClassRuns, keys: _ClassKeys, ids: np.ndarray) -> pd.DataFrame:
    """:attr:`CustomerFeatures.class_long`: the non-zero sellable (customer, class) totals."""
    class_names = sorted({k for _, k in keys.sellable})  # class names repeat across departments: one category each
    code_of_name = {name: i for i, name in enumerate(class_names)}
    class_code = np.array([code_of_name[k] for _, k in keys.sellable], dtype=np.int32)
    is_class = runs.class_key < len(keys.sellable)
    nonzero = is_class & ((runs.spend != 0) | (runs.units != 0))
    class_key, row = runs.class_key[nonzero], runs.row[nonzero]
    return pd.DataFrame({
        ID_COLUMN: ids[row],
        "department": pd.Categorical.from_codes(keys.dept_of_key[class_key], categories=keys.merchandise),
        "class": pd.Categorical.from_codes(class_code[class_key], categories=class_names),
        "spend": (runs.spend[nonzero] / 100.0).astype(np.float32),
        "units": runs.units[nonzero].astype(np.float32),
        "class_idx": class_key.astype(np.int32),
        "row": row.astype(np.int32)})


def _department_features(runs: _ClassRuns, keys: _ClassKeys, n: int, built: _Built) -> None:
    """Spend, units and share per merchandise department, then the diversity features.

    The department columns come in the order of
    :func:`~core.prepare_features.columns.department_feature_names`.
    """
    if len(runs.class_key) == 0:
        built.dropped["dept_*"] = ("no line falls in a merchandise department of the hierarchy (a log without "
                                   "departments?)")
        built.dropped.update({name: built.dropped["dept_*"] for name in DIVERSITY_FEATURES})
        return
    n_dept = len(keys.merchandise)
    flat = runs.row * n_dept + keys.dept_of_key[runs.class_key]
    d_spend = np.bincount(flat, runs.spend, n * n_dept).reshape(n, n_dept) / 100.0
    d_units = np.bincount(flat, runs.units, n * n_dept).reshape(n, n_dept)
    d_gross = np.bincount(flat, runs.gross, n * n_dept).reshape(n, n_dept) / 100.0
    shares = _ratio(d_gross, d_gross.sum(axis=1, keepdims=True))
    for prefix, values in ((DEPT_SPEND, d_spend), (DEPT_UNITS, d_units), (DEPT_SHARE, shares)):
        for j, d in enumerate(keys.merchandise):
            built.add(dept_column(prefix, d), values[:, j])
    with np.errstate(divide="ignore", invalid="ignore"):
        built.add("dept_entropy", -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1) + 0.0)
    built.add("n_departments", (d_gross > 0).sum(axis=1).astype(np.float64))
    is_class = runs.class_key < len(keys.sellable)
    built.add("n_classes", np.bincount(runs.row[is_class & (runs.gross > 0)], minlength=n).astype(np.float64))


def season_windows(settings: FeatureSettings) -> dict[str, tuple[str, str]]:
    """The configured season windows by name (``holiday``, ``back_to_school``): those not None."""
    windows = {"holiday": settings.holiday_window, "back_to_school": settings.back_to_school_window}
    return {name: window for name, window in windows.items() if window is not None}


def _seasonal_features(sums: _CustomerSums, settings: FeatureSettings, built: _Built) -> None:
    """Shares of gross purchase spend by quarter and by the configured calendar windows.

    A season with no window is not measured: its feature is dropped, so no
    segment is ever explained by a season the retailer did not configure.
    """
    gross = sums.column("gross", 100)
    spend = {f"spend_share_q{q + 1}": sums.column(f"q{q + 1}", 100) for q in range(4)}
    windows = season_windows(settings)
    spend.update({f"{name}_share": sums.column(name, 100) for name in windows})
    for name in SEASONAL_FEATURES:
        if name in spend:
            built.add(name, _ratio(spend[name], gross))
        else:
            built.dropped[name] = (f"no {name.removesuffix('_share').replace('_', '-')} season configured for this "
                                   f"data (prepare_features.{name.removesuffix('_share')}_window, "
                                   f"seasons_for_file_data)")


def _trend_features(months: dict[str, Any], analysis_date: pd.Timestamp, n: int, built: _Built) -> None:
    """Monthly spend over the months from the first purchase's to the analysis date's (zeros included)."""
    first_mi, sy, syy, smy = (_spread(months, name, n) for name in ("first_mi", "sy", "syy", "smy"))
    a_mi = analysis_date.year * 12 + analysis_date.month - 1
    stats = monthly_spend_stats(a_mi - first_mi + 1, sy / 100.0, syy / 1e4, (smy - first_mi * sy) / 100.0)
    for name in TREND_FEATURES:
        built.add(name, stats[name])


def _discount_feature(sums: _CustomerSums, survey: _LineSurvey, built: _Built) -> None:
    """Share of the regular-price value of what was kept that was given away as discount."""
    if not survey.non_null["discount_amount"]:
        built.dropped[DISCOUNT_FEATURE] = survey.why_absent("discount_amount")
        return
    discount = sums.column("discount", 100)
    built.add(DISCOUNT_FEATURE, _ratio(discount, built.values["net_revenue"] + discount))


def _attribute_shares(sums: _CustomerSums, survey: _LineSurvey, settings: FeatureSettings,
                      value_names: dict[str, list[str]], built: _Built) -> None:
    """Per attribute, each value's share of the spend with a known value.

    The values with the most spend get a column each; past
    ``max_attribute_values`` the rest pool as ``other``. With
    ``settings.attribute_columns`` (scoring), the columns stage 02 built.
    """
    for attribute in settings.attributes:
        if not survey.non_null[attribute]:
            built.dropped[f"{attribute}_share__*"] = survey.why_absent(attribute)
            continue
        names = value_names[attribute]
        columns = [sums.column(f"a_{attribute}_{i}") for i in range(len(names))]
        # No value at all (scoring customers who left the attribute null): every share is 0.
        spend_by_value = (np.stack(columns, axis=1) if columns
                          else np.zeros((len(built.values["net_revenue"]), 0)))
        known = spend_by_value.sum(axis=1)
        fixed = dict(settings.attribute_columns or ()).get(attribute)
        if fixed is not None:
            shares = _fixed_attribute_shares(attribute, names, spend_by_value, fixed)
        else:
            shares = _chosen_attribute_shares(attribute, names, spend_by_value, settings.max_attribute_values)
        for name, values in shares.items():
            built.add(name, _ratio(values, known))


def _chosen_attribute_shares(attribute: str, names: list[str], spend_by_value: np.ndarray,
                             max_values: int) -> dict[str, np.ndarray]:
    """Spend per share column chosen from the data: the largest values by spend, then ``other``."""
    order = np.lexsort((np.asarray(names), -spend_by_value.sum(axis=0)))
    kept = order if len(names) <= max_values else order[:max_values - 1]
    spend = {attribute_column(attribute, names[i]): spend_by_value[:, i] for i in sorted(kept, key=lambda k: names[k])}
    pooled = np.setdiff1d(np.arange(len(names)), kept)
    if len(pooled):
        spend[attribute_column(attribute, OTHER_VALUE)] = spend_by_value[:, pooled].sum(axis=1)
    return spend


def _fixed_attribute_shares(attribute: str, names: list[str], spend_by_value: np.ndarray,
                            fixed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Spend per share column of ``fixed`` (stage 02's columns), whatever values this data has."""
    other = attribute_column(attribute, OTHER_VALUE)
    index = {attribute_column(attribute, n): i for i, n in enumerate(names)}
    kept = [index[c] for c in fixed if c in index and c != other]
    pooled = np.setdiff1d(np.arange(len(names)), kept)
    spend = {}
    for name in fixed:
        if name == other:
            spend[name] = spend_by_value[:, pooled].sum(axis=1)
        else:
            spend[name] = spend_by_value[:, index[name]] if name in index else np.zeros(len(spend_by_value))
    return spend


def _kids_size_feature(sums: _CustomerSums, survey: _LineSurvey, built: _Built) -> None:
    """Share of the spend with a size that went on kids' sizes."""
    if not survey.non_null["size"]:
        built.dropped[KIDS_SIZE_FEATURE] = survey.why_absent("size")
        return
    built.add(KIDS_SIZE_FEATURE, _ratio(sums.column("a_size_1"), sums.column("a_size_0") + sums.column("a_size_1")))


# ---------------------------------------------------------------------------
# Arithmetic helpers


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
