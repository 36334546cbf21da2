"""Synthetic retail transactions, drawn order line by order line from personas.

Customer totals are never drawn: each customer gets a persona, a join date,
an order rate and a target order value; orders are dated within the
customer's active period; each order gets lines whose department and class
follow the persona's preferences and whose prices come from a product
catalog. Every total a later stage computes is a sum of these lines.

Everything is vectorised with NumPy over the customers of a chunk; the
only Python loops run over personas, departments and classes, never over
order lines.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from core.config import DataConfig, GenerateDataConfig
from core.hierarchy import Hierarchy, slug
from core.personas import Persona

log = logging.getLogger(__name__)

DAYS_PER_MONTH = 365.25 / 12

TRANSACTION_COLUMNS = ("customer_id", "order_id", "order_date", "department", "class", "sku",
                       "quantity", "unit_price", "line_amount", "is_return", "original_order_id")
CUSTOMER_COLUMNS = ("customer_id", "persona", "age", "gender", "has_children", "lifestyle", "region",
                    "signup_date")
PRODUCT_COLUMNS = ("sku", "department", "class", "base_price")


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Products and the index arrays the generator samples from.

    Attributes
    ----------
    products : DataFrame
        One row per SKU: ``sku``, ``department``, ``class``, ``base_price``.
    classes : DataFrame
        One row per sellable merchandise class: ``department``, ``class``,
        ``first_sku`` (row of its first SKU in ``products``), ``n_skus``.
    """

    products: pd.DataFrame
    classes: pd.DataFrame


def build_catalog(hierarchy: Hierarchy, cfg: GenerateDataConfig, seed: int) -> Catalog:
    """Draw SKUs and base prices for every sellable merchandise class.

    A class's typical price is drawn within its department's configured
    price range; its SKUs scatter lognormally around it.
    """
    rng = np.random.default_rng([seed, 1])
    rows = []
    for dept in hierarchy.merchandise_departments:
        low, high = cfg.department_price_ranges[dept]
        for cls in hierarchy.departments[dept].classes:
            rows.append((dept, cls, rng.uniform(low, high)))
    classes = pd.DataFrame(rows, columns=["department", "class", "class_price"])
    n_low, n_high = (int(v) for v in cfg.skus_per_class)
    classes["n_skus"] = rng.integers(n_low, n_high + 1, size=len(classes))
    classes["first_sku"] = np.concatenate([[0], np.cumsum(classes["n_skus"].to_numpy())[:-1]])
    sku_class = np.repeat(np.arange(len(classes)), classes["n_skus"].to_numpy())
    within = np.arange(len(sku_class)) - classes["first_sku"].to_numpy()[sku_class]
    sigma = cfg.sku_price_sigma
    price = classes["class_price"].to_numpy()[sku_class] * rng.lognormal(-sigma**2 / 2, sigma, len(sku_class))
    # Retail prices end in .99 or .49; keeps the data looking like a till's.
    price = np.maximum(np.floor(price) + np.where(rng.random(len(price)) < 0.7, 0.99, 0.49), 0.49)
    dept_codes = classes["department"].map(lambda d: slug(d)[:4].upper()).to_numpy()[sku_class]
    products = pd.DataFrame({
        "sku": [f"{d}-{c:03d}-{w:02d}" for d, c, w in zip(dept_codes, sku_class, within)],
        "department": classes["department"].to_numpy()[sku_class],
        "class": classes["class"].to_numpy()[sku_class],
        "base_price": np.round(price, 2),
    })
    return Catalog(products=products, classes=classes.drop(columns="class_price"))


def _expected_line_value(persona: Persona, catalog: Catalog, cfg: GenerateDataConfig) -> float:
    """Mean value of one order line for a persona: its department mix times department prices."""
    price_by_dept = catalog.products.groupby("department")["base_price"].mean()
    mean_quantity = float(np.dot(np.arange(1, len(cfg.quantity_probabilities) + 1),
                                 cfg.quantity_probabilities))
    return mean_quantity * sum(share * price_by_dept[d] for d, share in persona.department_preferences.items())


def draw_customers(customer_ids: np.ndarray, personas: dict[str, Persona], data: DataConfig,
                   cfg: GenerateDataConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Draw each customer's persona, demographics and signup date.

    Returns
    -------
    DataFrame
        Columns :data:`CUSTOMER_COLUMNS`, one row per id.
    """
    names = list(personas)
    n = len(customer_ids)
    weights = np.array([personas[p].weight for p in names])
    persona_idx = rng.choice(len(names), size=n, p=weights / weights.sum())
    age = np.empty(n, dtype=np.int16)
    gender = np.empty(n, dtype=object)
    for i, name in enumerate(names):
        members = np.flatnonzero(persona_idx == i)
        demo = personas[name].demographics
        low, high = demo.age_range
        age[members] = rng.integers(int(low), int(high) + 1, size=len(members))
        genders = list(demo.gender)
        gender[members] = np.asarray(genders, dtype=object)[
            rng.choice(len(genders), size=len(members), p=list(demo.gender.values()))]
    regions = list(cfg.regions)
    window = (data.history_end - data.history_start).days
    at_start = rng.random(n) < cfg.start_customer_share
    join_offset = np.where(at_start, 0, rng.integers(0, window + 1, size=n))
    return pd.DataFrame({
        "customer_id": customer_ids.astype(np.int64),
        "persona": np.asarray(names, dtype=object)[persona_idx],
        "age": age,
        "gender": gender,
        "has_children": np.array([personas[names[i]].demographics.has_children for i in persona_idx]),
        "lifestyle": np.asarray([personas[p].demographics.lifestyle for p in names], dtype=object)[persona_idx],
        "region": np.asarray(regions, dtype=object)[rng.choice(len(regions), size=n,
                                                                p=list(cfg.regions.values()))],
        "signup_date": pd.Timestamp(data.history_start) + pd.to_timedelta(join_offset, unit="D"),
    })


def draw_transactions(customers: pd.DataFrame, personas: dict[str, Persona], catalog: Catalog,
                      data: DataConfig, cfg: GenerateDataConfig,
                      rng: np.random.Generator) -> pd.DataFrame:
    """Draw every order line (purchases and returns) of ``customers``.

    Each customer buys at a rate and target order value drawn within the
    persona's ``spending_profile`` ranges, on days spread over the time
    from signup to the end of the history, at least once. A line's
    department follows the persona's preferences; within a department with
    class preferences, a line takes a preferred class unless it is one of
    the ``exploration_share`` lines that take any class of the department.
    Returned lines come back as negative lines of a later return
    transaction linked by ``original_order_id``.

    Returns
    -------
    DataFrame
        Columns :data:`TRANSACTION_COLUMNS` except ``order_id``, which the
        caller assigns so ids stay unique across chunks; sorted by customer,
        date and transaction.
    """
    names = list(personas)
    persona_idx = pd.Categorical(customers["persona"], categories=names).codes
    n = len(customers)
    start = pd.Timestamp(data.history_start)
    window_end = (data.history_end - data.history_start).days
    join = ((customers["signup_date"] - start).dt.days).to_numpy()

    # Per-customer behaviour within the persona's spending profile.
    freq = np.array([personas[p].spending_profile.frequency_per_month for p in names])
    aov = np.array([personas[p].spending_profile.avg_order_value for p in names])
    rate = rng.uniform(freq[persona_idx, 0], freq[persona_idx, 1])
    target_aov = rng.uniform(aov[persona_idx, 0], aov[persona_idx, 1])
    line_value = np.array([_expected_line_value(personas[p], catalog, cfg) for p in names])
    extra_lines = np.maximum(target_aov / line_value[persona_idx] - 1.0, 0.0)

    active_days = window_end - join + 1
    n_orders = np.maximum(rng.poisson(rate * active_days / DAYS_PER_MONTH), 1)

    # Orders: one row each.
    order_customer = np.repeat(np.arange(n), n_orders)
    order_day = join[order_customer] + np.floor(rng.random(len(order_customer))
                                                * active_days[order_customer]).astype(np.int64)
    order_lines = 1 + rng.poisson(extra_lines[order_customer])

    # Lines: one row each.
    line_order = np.repeat(np.arange(len(order_customer)), order_lines)
    line_customer = order_customer[line_order]
    line_persona = persona_idx[line_customer]
    n_lines = len(line_order)
    departments = list(dict.fromkeys(catalog.classes["department"]))
    dept_share = np.array([[personas[p].department_preferences.get(d, 0.0) for d in departments]
                           for p in names])
    cumulative = np.cumsum(dept_share / dept_share.sum(axis=1, keepdims=True), axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random(n_lines)
    line_dept = np.empty(n_lines, dtype=np.int64)
    for p in range(len(names)):
        rows = np.flatnonzero(line_persona == p)
        line_dept[rows] = np.searchsorted(cumulative[p], u[rows], side="right")
    line_class = _draw_classes(line_persona, line_dept, names, departments, personas, catalog, cfg, rng)

    first_sku = catalog.classes["first_sku"].to_numpy()
    n_skus = catalog.classes["n_skus"].to_numpy()
    line_sku = first_sku[line_class] + np.floor(rng.random(n_lines) * n_skus[line_class]).astype(np.int64)
    q_probs = np.asarray(cfg.quantity_probabilities)
    quantity = 1 + rng.choice(len(q_probs), size=n_lines, p=q_probs / q_probs.sum())
    sigma = cfg.unit_price_sigma
    base = catalog.products["base_price"].to_numpy()[line_sku]
    unit_price = np.maximum(np.round(base * rng.lognormal(-sigma**2 / 2, sigma, n_lines), 2), 0.01)
    amount = np.round(quantity * unit_price, 2)

    purchases = pd.DataFrame({
        "customer_row": line_customer,
        "order_row": line_order,
        "day": order_day[line_order],
        "class_row": line_class,
        "sku_row": line_sku,
        "quantity": quantity.astype(np.int32),
        "unit_price": unit_price,
        "line_amount": amount,
        "is_return": False,
    })
    returns = _draw_returns(purchases, catalog, departments, order_day, window_end, cfg, rng)
    lines = pd.concat([purchases, returns], ignore_index=True)
    lines = lines.sort_values(["customer_row", "day", "is_return", "order_row"], kind="stable")
    return _to_transaction_frame(lines, customers, catalog, start)


def _draw_classes(line_persona: np.ndarray, line_dept: np.ndarray, names: list[str],
                  departments: list[str], personas: dict[str, Persona], catalog: Catalog,
                  cfg: GenerateDataConfig, rng: np.random.Generator) -> np.ndarray:
    """Class row (in ``catalog.classes``) of every line, given its persona and department."""
    class_table = catalog.classes.reset_index(drop=True)
    rows_by_dept = {d: np.flatnonzero(class_table["department"].to_numpy() == d) for d in departments}
    class_row_of = {(d, c): i for i, (d, c) in enumerate(zip(class_table["department"], class_table["class"]))}
    result = np.empty(len(line_persona), dtype=np.int64)
    explore = rng.random(len(line_persona)) < cfg.exploration_share
    for p, name in enumerate(names):
        preferred_by_dept = personas[name].class_preferences
        for d_idx, dept in enumerate(departments):
            rows = np.flatnonzero((line_persona == p) & (line_dept == d_idx))
            if len(rows) == 0:
                continue
            every = rows_by_dept[dept]
            preferred = np.array([class_row_of[(dept, c)] for c in preferred_by_dept.get(dept, ())],
                                 dtype=np.int64)
            if len(preferred) == 0:
                result[rows] = every[rng.integers(0, len(every), size=len(rows))]
                continue
            wander = explore[rows]
            result[rows[wander]] = every[rng.integers(0, len(every), size=int(wander.sum()))]
            result[rows[~wander]] = preferred[rng.integers(0, len(preferred), size=int((~wander).sum()))]
    return result


def _draw_returns(purchases: pd.DataFrame, catalog: Catalog, departments: list[str],
                  order_day: np.ndarray, window_end: int, cfg: GenerateDataConfig,
                  rng: np.random.Generator) -> pd.DataFrame:
    """Negative lines for returned purchases, one return transaction per order and return day."""
    dept_of_class = pd.Categorical(catalog.classes["department"], categories=departments).codes
    rate_by_dept = np.array([cfg.department_return_rates.get(d, cfg.return_rate) for d in departments])
    line_rate = rate_by_dept[dept_of_class[purchases["class_row"].to_numpy()]]
    returned = rng.random(len(purchases)) < line_rate
    low, high = (int(v) for v in cfg.return_delay_days)
    # One delay per order: a customer brings back an order's items together.
    delay = rng.integers(low, high + 1, size=len(order_day))
    ret = purchases.loc[returned].copy()
    ret["day"] = order_day[ret["order_row"].to_numpy()] + delay[ret["order_row"].to_numpy()]
    ret = ret[ret["day"] <= window_end]  # not yet returned when the history ends
    ret["quantity"] = -ret["quantity"]
    ret["line_amount"] = -ret["line_amount"]
    ret["is_return"] = True
    return ret


def _to_transaction_frame(lines: pd.DataFrame, customers: pd.DataFrame, catalog: Catalog,
                          start: pd.Timestamp) -> pd.DataFrame:
    products = catalog.products
    classes = catalog.classes
    # A transaction is a purchase order or a return of (part of) one on one day.
    txn_key = lines["order_row"].to_numpy() * 2 + lines["is_return"].to_numpy()
    new_txn = np.r_[True, txn_key[1:] != txn_key[:-1]]
    return pd.DataFrame({
        "customer_id": customers["customer_id"].to_numpy()[lines["customer_row"].to_numpy()],
        "transaction_row": np.cumsum(new_txn) - 1,
        "order_row": lines["order_row"].to_numpy(),
        "order_date": start + pd.to_timedelta(lines["day"].to_numpy(), unit="D"),
        "department": classes["department"].to_numpy()[lines["class_row"].to_numpy()],
        "class": classes["class"].to_numpy()[lines["class_row"].to_numpy()],
        "sku": products["sku"].to_numpy()[lines["sku_row"].to_numpy()],
        "quantity": lines["quantity"].to_numpy(np.int32),
        "unit_price": lines["unit_price"].to_numpy(np.float64),
        "line_amount": lines["line_amount"].to_numpy(np.float64),
        "is_return": lines["is_return"].to_numpy(bool),
    })


def generate(config_personas: dict[str, Persona], hierarchy: Hierarchy, data: DataConfig,
             cfg: GenerateDataConfig, seed: int,
             catalog: Catalog | None = None) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Yield ``(customers, transactions)`` chunk by chunk, ``cfg.chunk_size`` customers at a time.

    Order ids are unique across chunks and increase with customer, date
    and transaction; a return line carries its own return transaction's
    ``order_id`` and the purchase's ``original_order_id``.
    """
    catalog = catalog or build_catalog(hierarchy, cfg, seed)
    n_total = data.n_customers
    next_order_id = 1
    for chunk_index, first in enumerate(range(0, n_total, cfg.chunk_size)):
        rng = np.random.default_rng([seed, 2, chunk_index])
        ids = np.arange(first + 1, min(first + cfg.chunk_size, n_total) + 1)
        customers = draw_customers(ids, config_personas, data, cfg, rng)
        lines = draw_transactions(customers, config_personas, catalog, data, cfg, rng)
        order_id = next_order_id + lines.pop("transaction_row").to_numpy()
        # The purchase transaction of each order row is the first transaction holding it.
        order_rows = lines.pop("order_row").to_numpy()
        purchase_id = pd.Series(order_id[~lines["is_return"].to_numpy()],
                                index=order_rows[~lines["is_return"].to_numpy()])
        purchase_id = purchase_id[~purchase_id.index.duplicated()]
        original = pd.array(np.where(lines["is_return"].to_numpy(),
                                     purchase_id.reindex(order_rows).to_numpy(), 0), dtype="Int64")
        original[~lines["is_return"].to_numpy()] = pd.NA
        lines.insert(1, "order_id", order_id.astype(np.int64))
        lines["original_order_id"] = original
        next_order_id = int(order_id.max()) + 1 if len(order_id) else next_order_id
        log.info("generated customers %d-%d of %d: %d lines", ids[0], ids[-1], n_total, len(lines))
        yield customers, lines


_TRANSACTION_TYPES = pa.schema([
    ("customer_id", pa.int64()),
    ("order_id", pa.int64()),
    ("order_date", pa.timestamp("us")),
    ("department", pa.string()),
    ("class", pa.string()),
    ("sku", pa.string()),
    ("quantity", pa.int32()),
    ("unit_price", pa.float64()),
    ("line_amount", pa.float64()),
    ("is_return", pa.bool_()),
    ("original_order_id", pa.int64()),
])


def _transaction_schema() -> pa.Schema:
    # The pandas metadata makes readers get original_order_id back as nullable Int64, not float.
    empty = pd.DataFrame({f.name: pd.Series(dtype="Int64" if f.name == "original_order_id"
                                            else f.type.to_pandas_dtype()) for f in _TRANSACTION_TYPES})
    return _TRANSACTION_TYPES.with_metadata(pa.Schema.from_pandas(empty, preserve_index=False).metadata)


TRANSACTION_SCHEMA = _transaction_schema()
"""Arrow schema of ``transactions.parquet``; every chunk is written with it."""
