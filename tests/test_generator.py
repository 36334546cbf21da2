"""Contract and behaviour tests of the synthetic transaction generator (core/generate_data/: generator,
products, workers).

Real data through the real code, from configs written to YAML and loaded like
any other:

- ``shipped``: the shipped hierarchy, personas and scenarios on 2,500
  customers over 2023-2024 (about 340,000 lines);
- ``custom``: four personas and two scenarios made for these tests (a class
  level persona, a department-level one without exploration, a parent of one
  child, a seasonal shopper) on a flat calendar, without data-quality noise;
- ``switched_off``: 300 customers with the channel and identity fields off.

Tolerances are several standard errors wide at these sizes, so the tests do
not depend on the seed, yet each fails when the rule it checks is broken.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.wintypes
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import chisquare

import yaml

from conftest import SHIPPED_CONFIG, small_config_document, write_config
from core.framework import paths
from core.framework import processes
from core.generate_data import generator, workers
from core.domain import tables
from core.generate_data.products import scale_size_names, size_scale_of
from core.config import PipelineConfig, load_config
from core.generate_data.settings import ADULT_SCALES, BRAND_TIERS

TILL_KINDS = ("bag_levy", "gift_card", "charity", "concession")
APPAREL = ("Ladies Clothing", "Mens Clothing", "Ladies Footwear")


# --- running the generator ---------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One generation: config, plan, the chunks as yielded, and both tables as pandas."""

    config: PipelineConfig
    plan: generator.GenerationPlan
    chunks: list[tuple[pd.DataFrame, pa.Table]]
    customers: pd.DataFrame
    tx: pd.DataFrame
    persona: pd.Series  # persona of each transaction line, aligned with tx

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.config.data.history_start)

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.config.data.history_end)

    @functools.cached_property
    def kind(self) -> pd.Series:
        """Department kind of each line (merchandise, bag_levy, ..., data_quality)."""
        kinds = {name: d.kind for name, d in self.config.hierarchy.departments.items()}
        return self.tx["department"].map(kinds)

    @functools.cached_property
    def data_quality(self) -> np.ndarray:
        """Lines recorded under a DUMMY / UNASSIGNED / Unknown class or a data-quality department."""
        hierarchy = self.config.hierarchy
        noise = {f"{d}/{c}" for d, dept in hierarchy.departments.items() for c in dept.data_quality_classes}
        pairs = self.tx["department"] + "/" + self.tx["class"]
        return pairs.isin(noise).to_numpy() | (self.kind == "data_quality").to_numpy()

    @functools.cached_property
    def goods(self) -> pd.DataFrame:
        """Purchase lines of goods (merchandise and its data-quality noise), with a persona column.

        Read only: shared by the tests of a module.
        """
        tx = self.tx.assign(persona=self.persona)
        return tx[~tx["is_return"] & ~self.kind.isin(TILL_KINDS)]

    @functools.cached_property
    def catalog(self) -> pd.DataFrame:
        """The catalog row of each line's SKU (all null for till lines), aligned with tx."""
        products = self.plan.catalog.products
        return self.tx[["sku"]].merge(products, on="sku", how="left", validate="many_to_one").set_index(self.tx.index)


def config_document(n_customers: int, start: str = "2023-01-01", end: str = "2024-12-31") -> dict:
    """The shipped config with ``n_customers`` over [start, end], in blocks of 1,000, small Faker pools."""
    doc = small_config_document()
    doc["data"].update(n_customers=n_customers, history_start=start, history_end=end)
    gen = doc["generate_data"]
    gen["chunk_size"] = 1000
    gen["identity"]["pool_size"] = 300  # Faker costs ~0.3 ms a value; 300 keep the pools fast
    # Stage 01's tests: some histories here are shorter than stage 04's snapshot window, which the
    # config check refuses (rightly, for a pipeline run); these tests never reach stage 04.
    doc["cluster"]["snapshots"]["enabled"] = False
    return doc


def load(folder, document: dict, personas: dict | None = None) -> PipelineConfig:
    others = {"personas": personas} if personas is not None else {}
    return load_config(write_config(folder, document, **others))


def generate(config: PipelineConfig, seed: int | None = None) -> Run:
    """Build the plan and run :func:`generator.generate` to the end."""
    seed = config.seed if seed is None else seed
    plan = generator.build_plan(config.personas, config.scenarios, config.hierarchy, config.data,
                                config.generate_data, seed)
    chunks = list(generator.generate(plan, seed))
    customers = pd.concat([c for c, _ in chunks], ignore_index=True)
    tx = pa.concat_tables([t.cast(generator.TRANSACTION_SCHEMA) for _, t in chunks]).to_pandas()
    persona = tx["customer_id"].map(customers.set_index("customer_id")["persona"])
    return Run(config, plan, chunks, customers, tx, persona)


def month_day(dates: pd.Series) -> np.ndarray:
    """MM-DD of each date as the number MMDD, for scenario windows."""
    return (dates.dt.month * 100 + dates.dt.day).to_numpy()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Run:
    """The shipped config without households and life events: these tests read a customer's persona as that
    of all their lines (households: test_household_customers_buy_for_their_member and the generation
    report; life events: tests/test_life_events.py)."""
    doc = config_document(2500)
    doc["generate_data"]["households"]["share"] = 0.0
    personas = yaml.safe_load((SHIPPED_CONFIG / "personas.yml").read_text(encoding="utf-8"))
    for persona in personas["personas"].values():
        persona.pop("life_events", None)  # life events: tests/test_life_events.py
    return generate(load(tmp_path_factory.mktemp("shipped"), doc, personas=personas))


def test_household_customers_buy_for_their_member(tmp_path):
    """Every customer of a persona with household members shops for one, half their lines: professional
    men (members professional_woman, teenage_boy) then buy Ladies Clothing, which their own persona never
    does, about 0.5 x 1/2 x 0.45 = 0.11 of their lines; teenage girls (no members) stay in their mix."""
    doc = config_document(1000, "2024-01-01", "2024-12-31")
    doc["generate_data"]["households"].update(share=1.0, member_line_share=[0.5, 0.5])
    run = generate(load(tmp_path, doc))
    goods = run.goods[run.kind[run.goods.index] == "merchandise"]
    shares = goods.groupby("persona")["department"].value_counts(normalize=True)
    assert shares["professional_man"]["Ladies Clothing"] == pytest.approx(0.5 * 0.5 * 0.45, abs=0.04)
    assert set(shares["teenage_girl"].index) <= set(run.config.personas["teenage_girl"].department_preferences)
    # The member buys in their own sizes: men's customers buy ladies' sizes too.
    men = goods[goods["persona"] == "professional_man"]
    scale = men[["sku"]].merge(run.plan.catalog.products, on="sku", how="left")["size_scale"]
    assert (scale == "ladies").mean() > 0.05


CUSTOM_PERSONAS = {
    "personas": {
        "denim_and_jumpers": {
            "weight": 0.25,
            "description": "Class level: buys denim and jumpers, exploring other classes a fifth of the time",
            "demographics": {"age_range": [25, 40], "gender": "Female", "has_children": False,
                             "lifestyle": "casual"},
            "department_preferences": {"Ladies Clothing": 0.8, "Accessories": 0.2},
            "class_preferences": {"Ladies Clothing": ["Ladies Denim", "Jumpers"]},
            "spending_profile": {"avg_order_value": [40, 80], "frequency_per_month": [2.0, 3.0]},
        },
        "home_and_menswear": {
            "weight": 0.25,
            "description": "Department level without exploration: each customer keeps to a few classes",
            "demographics": {"age_range": [30, 60], "gender": "Male", "has_children": False,
                             "lifestyle": "home-maker"},
            "department_preferences": {"Home": 0.5, "Mens Clothing": 0.5},
            "classes_per_department": {"Home": [2, 3]},
            "exploration_share": 0.0,
            "spending_profile": {"avg_order_value": [40, 80], "frequency_per_month": [2.0, 3.0]},
        },
        "one_child_parent": {
            "weight": 0.25,
            "description": "Buys kidswear for exactly one child, who grows over the history",
            "demographics": {"age_range": [25, 45], "gender": "Female", "has_children": True,
                             "lifestyle": "parent",
                             "children": {"count": [1, 1], "age_at_start": [1, 12]}},
            "department_preferences": {"Kids Clothing": 0.6, "Kids Accessories": 0.2, "Ladies Clothing": 0.2},
            "spending_profile": {"avg_order_value": [40, 80], "frequency_per_month": [2.0, 3.0]},
        },
        "seasonal_shopper": {
            "weight": 0.25,
            "description": "Buys homeware in March and shops twice as often in June; never stops shopping",
            "demographics": {"age_range": [30, 70], "gender": {"Female": 0.5, "Male": 0.5},
                             "has_children": False, "lifestyle": "seasonal"},
            "department_preferences": {"Home": 0.2, "Ladies Clothing": 0.4, "Accessories": 0.4},
            "spending_profile": {"avg_order_value": [40, 80], "frequency_per_month": [2.0, 3.0],
                                 "dropout_probability": 0.0},
        },
    },
    "scenarios": {
        "march_home": {"description": "Home three times as likely in March", "personas": ["seasonal_shopper"],
                       "start": "03-01", "end": "03-31", "department_boost": {"Home": 3.0}},
        "june_visits": {"description": "Twice the visits in June", "personas": ["seasonal_shopper"],
                        "start": "06-01", "end": "06-30", "visit_multiplier": 2.0},
    },
}


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> Run:
    doc = config_document(2000)
    gen = doc["generate_data"]
    # A flat calendar, so that visit counts show the scenario and nothing else.
    gen.update(month_weights=[1.0] * 12, weekday_weights=[1.0] * 7, closed_days=[])
    gen["non_merchandise"]["data_quality_rate"] = 0.0
    gen["identity"]["enabled"] = False
    # Missions turn lines into classes outside a customer's own (tests/test_replenishment_missions.py).
    gen["missions"]["probability"] = 0.0
    return generate(load(tmp_path_factory.mktemp("custom"), doc, personas=CUSTOM_PERSONAS))


@pytest.fixture(scope="module")
def switched_off(tmp_path_factory) -> Run:
    doc = config_document(300, "2024-01-01", "2024-12-31")
    doc["generate_data"]["channel"]["enabled"] = False
    doc["generate_data"]["identity"]["enabled"] = False
    return generate(load(tmp_path_factory.mktemp("off"), doc))


# --- the column contract -----------------------------------------------------------------------

def test_chunks_follow_the_column_contract(shipped):
    """generate() yields dictionary-encoded tables that cast to the contract; customers fit theirs."""
    assert len(shipped.chunks) == 3  # 2,500 customers in chunks of 1,000
    for customers, table in shipped.chunks:
        assert table.schema.equals(generator.DICTIONARY_TRANSACTION_SCHEMA)
        assert table.cast(tables.TRANSACTION_SCHEMA).schema.equals(tables.TRANSACTION_SCHEMA)
        assert tuple(customers.columns) == tables.CUSTOMER_COLUMNS
        arrow = pa.Table.from_pandas(customers, schema=tables.CUSTOMER_SCHEMA, preserve_index=False)
        assert arrow.schema.equals(tables.CUSTOMER_SCHEMA)
    tx = shipped.tx
    assert tuple(tx.columns) == tables.TRANSACTION_COLUMNS
    for column in ("department", "class", "sku", "channel", "size"):
        assert not isinstance(tx[column].dtype, pd.CategoricalDtype), column
    assert str(tx["original_order_id"].dtype) == "Int64"
    assert shipped.customers["customer_id"].tolist() == list(range(1, 2501))
    for column in ("customer_id", "order_id", "order_date", "department", "class", "quantity",
                   "unit_price", "line_amount", "is_return"):
        assert tx[column].notna().all(), f"required column {column} has nulls"


def test_products_follow_the_contract_and_cover_every_sellable_class(shipped):
    hierarchy, catalog_cfg = shipped.config.hierarchy, shipped.config.generate_data.catalog
    products = shipped.plan.catalog.products
    assert tuple(products.columns) == tables.PRODUCT_COLUMNS
    pa.Table.from_pandas(products, schema=tables.PRODUCT_SCHEMA, preserve_index=False)
    assert products["sku"].is_unique
    expected = {(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes}
    assert set(zip(products["department"], products["class"])) == expected
    assert (products["base_price"] > 0).all()

    by_class = products.groupby(["department", "class"])
    # The size scale of a class comes from the first matching size rule, and an item comes in
    # every size of its scale; scale none means no size.
    scale = by_class["size_scale"].first()
    assert scale.to_dict() == {(d, c): size_scale_of(d, c, catalog_cfg) for d, c in scale.index}
    assert (products["size"].isna() == (products["size_scale"] == "none")).all()
    sizes = scale_size_names(catalog_cfg)
    per_item = products.groupby("item_id").agg(scale=("size_scale", "first"), skus=("sku", "size"))
    assert (per_item["skus"] == per_item["scale"].map(lambda s: len(sizes[s]))).all()
    # Every class has items of all three tiers, and premium items cost more than value ones.
    assert (by_class["brand_tier"].nunique() == len(BRAND_TIERS)).all()
    tier_price = products.groupby(["department", "class", "brand_tier"])["base_price"].median().unstack()
    assert (tier_price["premium"] / tier_price["value"]).median() > 1.8
    brands = {t: set(catalog_cfg.brand_tiers[t].brands) for t in BRAND_TIERS}
    assert all(b in brands[t] for b, t in zip(products["brand"], products["brand_tier"]))


def test_transaction_skus_are_catalog_skus_with_their_attributes(shipped):
    """Every SKU sold is in products with the same attributes; only data-quality noise moves its class."""
    sold = shipped.tx["sku"].notna().to_numpy()
    tx, catalog = shipped.tx[sold], shipped.catalog[sold]
    assert catalog["item_id"].notna().all(), "a SKU sold is not in products"
    for column in ("brand", "brand_tier", "style", "color"):
        assert (tx[column] == catalog[column]).all(), column
    assert (tx["size"].fillna("-") == catalog["size"].fillna("-")).all()
    moved = ((tx["department"] != catalog["department"]) | (tx["class"] != catalog["class"])).to_numpy()
    assert (moved == shipped.data_quality[sold]).all(), \
        "a SKU's department or class differs from the catalog outside data-quality noise"


def test_line_amounts_discounts_and_signs(shipped):
    tx = shipped.tx
    np.testing.assert_allclose(tx["line_amount"], tx["quantity"] * tx["unit_price"], atol=0.005 + 1e-9)
    purchases, returns = tx[~tx["is_return"]], tx[tx["is_return"]]
    assert len(returns) > 1000
    assert (purchases["quantity"] > 0).all() and (purchases["line_amount"] > 0).all()
    assert (purchases["discount_amount"] >= 0).all()
    assert (returns["quantity"] < 0).all() and (returns["line_amount"] < 0).all()
    assert (returns["discount_amount"] <= 0).all()
    assert (tx["unit_price"] > 0).all()
    # discount_amount = quantity x (regular price - unit price): the regular price it implies sits
    # around the SKU's base price (lognormal spread 0.08).
    sold = (~tx["is_return"] & tx["sku"].notna()).to_numpy()
    goods = tx[sold]
    regular = goods["unit_price"] + goods["discount_amount"] / goods["quantity"]
    ratio = regular.to_numpy() / shipped.catalog.loc[sold, "base_price"].to_numpy()
    assert 0.98 < np.median(ratio) < 1.02
    assert ((ratio > 0.6) & (ratio < 1.6)).all()
    till = shipped.kind.isin(TILL_KINDS).to_numpy()
    assert (tx.loc[till, "discount_amount"] == 0).all()


def test_returns_link_to_an_earlier_purchase_of_the_same_customer_and_sku(shipped):
    tx = shipped.tx
    purchases, returns = tx[~tx["is_return"]], tx[tx["is_return"]]
    assert purchases["original_order_id"].isna().all() and returns["original_order_id"].notna().all()
    # Each return line matches a purchase line of its original order: same SKU and price paid.
    bought = (purchases.groupby(["order_id", "sku", "unit_price"])
              .agg(customer=("customer_id", "first"), date=("order_date", "first"), quantity=("quantity", "sum")))
    returned = (returns.assign(order_id=returns["original_order_id"].astype("int64"))
                .groupby(["order_id", "sku", "unit_price"])
                .agg(customer=("customer_id", "first"), date=("order_date", "first"), quantity=("quantity", "sum")))
    original = bought.reindex(returned.index)
    assert original["customer"].notna().all(), "a return line names an order without that SKU at that price"
    assert (original["customer"] == returned["customer"]).all()
    assert (returned["date"] > original["date"]).all(), "a return is dated on or before its purchase"
    assert (-returned["quantity"] <= original["quantity"]).all(), "more units returned than bought"
    assert (returns["order_date"] <= shipped.end).all()
    # One return transaction returns items of one purchase.
    assert (returns.groupby("order_id")["original_order_id"].nunique() == 1).all()


def test_an_order_id_is_one_transaction_of_one_customer(shipped):
    tx = shipped.tx
    per_id = tx.groupby("order_id")[["customer_id", "order_date", "is_return"]].nunique()
    assert (per_id == 1).all().all()
    assert tx["order_id"].is_monotonic_increasing
    # Till lines (bags, gift cards, ...) never make a purchase on their own.
    purchase_ids = set(tx.loc[~tx["is_return"], "order_id"].unique())
    assert set(shipped.goods["order_id"].unique()) == purchase_ids


def test_dates_lie_in_the_history_and_customers_buy_from_signup(shipped):
    tx, customers = shipped.tx, shipped.customers.set_index("customer_id")
    assert tx["order_date"].between(shipped.start, shipped.end).all()
    assert (tx["order_date"] >= tx["customer_id"].map(customers["signup_date"])).all()
    purchases = tx[~tx["is_return"]]
    first = purchases.groupby("customer_id")["order_date"].min()
    last = purchases.groupby("customer_id")["order_date"].max()
    assert first.index.tolist() == customers.index.tolist(), "a customer has no purchase"
    newcomer = customers["signup_date"] >= shipped.start
    assert (first[newcomer] == customers.loc[newcomer, "signup_date"]).all()
    # dropout_date is the last purchase of customers who stopped, and null for the others.
    dropped = customers["dropout_date"].notna()
    assert (customers.loc[dropped, "dropout_date"] == last[dropped]).all()
    assert 0.2 < dropped.mean() < 0.95


def test_customers_follow_their_persona(shipped):
    personas = shipped.config.personas
    regions = set(shipped.config.generate_data.regions)
    for name, group in shipped.customers.groupby("persona"):
        demo = personas[name].demographics
        assert group["age"].between(*demo.age_range).all(), name
        assert set(group["gender"].unique()) <= {g for g, share in demo.gender.items() if share > 0}, name
        assert (group["has_children"] == demo.has_children).all(), name
        assert (group["lifestyle"] == demo.lifestyle).all(), name
    assert set(shipped.customers["region"].unique()) == regions


# --- non-merchandise lines -----------------------------------------------------------------------

def test_only_known_departments_and_never_goods_not_for_resale(shipped):
    hierarchy = shipped.config.hierarchy
    tx = shipped.tx
    departments = set(tx["department"].unique())
    assert departments <= set(hierarchy.departments)
    assert "not_for_resale" not in set(shipped.kind.unique())
    assert "Goods Not For Resale" not in departments
    for dept, cls in tx[["department", "class"]].drop_duplicates().itertuples(index=False):
        department = hierarchy.departments[dept]
        assert cls in department.classes or cls in department.data_quality_classes, (dept, cls)


def test_bag_levy_and_charity_are_store_lines_at_configured_values(shipped):
    nm = shipped.config.generate_data.non_merchandise
    tx, kind = shipped.tx, shipped.kind
    store_orders = tx.loc[~tx["is_return"] & (tx["channel"] == "store"), "order_id"].nunique()
    for name, probability in (("bag_levy", nm.bag_levy_probability), ("charity", nm.charity_probability)):
        lines = tx[kind == name]
        assert len(lines) > 0, name
        assert (lines["channel"] == "store").all(), f"{name} on an online order"
        assert (~lines["is_return"]).all() and (lines["quantity"] == 1).all() and (lines["line_amount"] > 0).all()
        assert lines["order_id"].is_unique, f"two {name} lines in one order"
        rate = len(lines) / store_orders
        assert rate == pytest.approx(probability, rel=0.2), name
    assert (tx.loc[kind == "bag_levy", "unit_price"] == nm.bag_levy_price).all()
    assert set(tx.loc[kind == "charity", "unit_price"].unique()) <= set(nm.charity_values)


def test_gift_cards_and_concessions_are_rare_lines_at_configured_values(shipped):
    nm = shipped.config.generate_data.non_merchandise
    hierarchy = shipped.config.hierarchy
    tx, kind = shipped.tx, shipped.kind
    orders = tx[~tx["is_return"]].drop_duplicates("order_id")
    december = orders["order_date"].dt.month == 12

    gift = tx[kind == "gift_card"]
    assert set(gift["unit_price"].unique()) <= set(nm.gift_card_values)
    gift_december = gift["order_date"].dt.month == 12
    rate_other = (~gift_december).sum() / (~december).sum()
    rate_december = gift_december.sum() / december.sum()
    assert rate_other == pytest.approx(nm.gift_card_probability, rel=0.3)
    assert rate_december > 2.5 * rate_other  # configured: 5 times as likely in December

    concession = tx[kind == "concession"]
    low, high = nm.concession_price_range
    assert concession["unit_price"].between(low, high).all()
    assert (concession["channel"] == "store").all()
    assert set(concession["class"].unique()) <= set(hierarchy.departments[concession["department"].iloc[0]].classes)
    store_orders = (orders["channel"] == "store").sum()
    assert len(concession) / store_orders == pytest.approx(nm.concession_probability, rel=0.3)


def test_till_lines_are_never_returned_and_carry_no_product(shipped):
    tx, kind = shipped.tx, shipped.kind
    till = kind.isin(TILL_KINDS)
    assert set(kind[till].unique()) == set(TILL_KINDS)
    assert not (till & tx["is_return"]).any()
    for column in ("sku", "brand", "brand_tier", "style", "color", "size"):
        assert tx.loc[till, column].isna().all(), column
        assert tx.loc[~till, column].notna().all() or column == "size", column


def test_data_quality_noise_comes_at_the_configured_rate(shipped, custom):
    rate = shipped.config.generate_data.non_merchandise.data_quality_rate
    goods = ~shipped.kind.isin(TILL_KINDS).to_numpy() & ~shipped.tx["is_return"].to_numpy()
    noise = shipped.data_quality & goods
    assert noise.sum() / goods.sum() == pytest.approx(rate, rel=0.3)
    # Both forms appear: a data-quality class in the product's department, and a Dummy department.
    kind = shipped.kind.to_numpy()
    assert (noise & (kind == "merchandise")).any() and (noise & (kind == "data_quality")).any()
    assert custom.config.generate_data.non_merchandise.data_quality_rate == 0
    assert not custom.data_quality.any()


# --- sizes ---------------------------------------------------------------------------------------

def test_each_customer_keeps_one_size_per_adult_scale(shipped):
    sold = shipped.tx["sku"].notna().to_numpy()
    tx = shipped.tx[sold]
    scale = shipped.catalog.loc[sold, "size_scale"].to_numpy()
    adult = np.isin(scale, ADULT_SCALES)
    sizes = tx[adult].assign(scale=scale[adult]).groupby(["customer_id", "scale"])["size"]
    assert sizes.size().sum() > 10000
    assert (sizes.nunique() == 1).all()
    assert tx.loc[scale == "none", "size"].isna().all()
    assert tx.loc[scale != "none", "size"].notna().all()


def test_one_childs_kids_sizes_only_grow(custom):
    catalog_cfg = custom.config.generate_data.catalog
    order = {scale: {size: i for i, size in enumerate(scale_size_names(catalog_cfg)[scale])}
             for scale in ("kids", "kids_footwear")}
    goods = custom.goods
    goods = goods[goods["persona"] == "one_child_parent"]
    scale = custom.catalog.loc[goods.index, "size_scale"].to_numpy()
    grew = 0
    for name, bands in order.items():
        lines = goods[scale == name].sort_values(["customer_id", "order_date", "order_id"])
        assert len(lines) > 1000, name
        band = lines["size"].map(bands)
        step = band.groupby(lines["customer_id"]).diff().dropna()
        assert (step >= 0).all(), f"a child's {name} size went down"
        grew += (band.groupby(lines["customer_id"]).agg(lambda b: b.iloc[-1] > b.iloc[0])).sum()
    assert grew > 100, "children do not grow out of their sizes over two years"


# --- personas ------------------------------------------------------------------------------------

def test_persona_mix_follows_the_weights(shipped):
    names = list(shipped.config.personas)
    observed = shipped.customers["persona"].value_counts().reindex(names, fill_value=0).to_numpy()
    weights = np.array([shipped.config.personas[p].weight for p in names])
    assert chisquare(observed, weights / weights.sum() * observed.sum()).pvalue > 0.001


def test_department_shares_follow_preferences_outside_scenarios(shipped):
    """Personas whose scenarios leave the department mix alone buy in their configured shares."""
    config = shipped.config
    moved = {p for s in config.scenarios.values() if s.department_boost or s.class_focus for p in s.personas}
    steady = [p for p in config.personas if p not in moved]
    assert len(steady) >= 3
    goods = shipped.goods
    goods = goods[shipped.kind[goods.index] == "merchandise"]
    shares = goods.groupby("persona")["department"].value_counts(normalize=True)
    for name in steady:
        # Customers' own mixes are Dirichlet draws around the persona's: the pooled share's error grows
        # with their spread, weighted by their squared line counts (as for brand tiers below).
        lines = goods[goods["persona"] == name].groupby("customer_id").size().to_numpy(float)
        weight = (lines**2).sum() / lines.sum() ** 2
        concentration = config.generate_data.customer_variation.department_concentration
        for dept, share in config.personas[name].department_preferences.items():
            error = np.sqrt(share * (1 - share) * (weight / (concentration + 1) + 1 / lines.sum()))
            assert shares[name].get(dept, 0.0) == pytest.approx(share, abs=4.5 * error), (name, dept)
        assert set(shares[name].index) <= set(config.personas[name].department_preferences), name


def test_class_level_persona_buys_its_classes_and_explores_the_rest(custom):
    hierarchy = custom.config.hierarchy
    persona = CUSTOM_PERSONAS["personas"]["denim_and_jumpers"]
    listed = persona["class_preferences"]["Ladies Clothing"]
    exploration = custom.config.generate_data.exploration_share
    all_classes = hierarchy.departments["Ladies Clothing"].classes
    goods = custom.goods
    lines = goods[(goods["persona"] == "denim_and_jumpers") & (goods["department"] == "Ladies Clothing")]
    in_listed = lines["class"].isin(listed).mean()
    # Exploration draws from the whole department, listed classes included.
    expected = (1 - exploration) + exploration * len(listed) / len(all_classes)
    assert exploration == 0.2
    assert in_listed == pytest.approx(expected, abs=0.015)
    assert lines["class"].nunique() > 0.8 * len(all_classes)


def test_department_level_persona_picks_its_own_classes_within_the_configured_count(custom):
    """Without exploration each customer buys from their own 2-3 Home and 2-4 Mens Clothing classes.

    (The test_customers_of_one_persona_differ... tests of the report cover how they weight them.)"""
    goods = custom.goods
    goods = goods[goods["persona"] == "home_and_menswear"]
    departments = custom.config.hierarchy.departments
    for dept, (low, high) in (("Home", (2, 3)), ("Mens Clothing", custom.config.generate_data.classes_per_department)):
        lines = goods[goods["department"] == dept]
        per_customer = lines.groupby("customer_id")["class"].agg(["nunique", "size", frozenset])
        assert (per_customer["nunique"] <= high).all(), dept
        busy = per_customer[per_customer["size"] >= 20]
        # Each customer weights their own classes (customer_variation.class_concentration), so a class
        # they seldom choose may not show in 20 lines; nearly all still buy from at least `low`.
        assert len(busy) > 100 and (busy["nunique"] >= low).mean() > 0.9, dept
        # The classes are each customer's own: many different sets, together covering the department.
        assert per_customer["frozenset"].nunique() > 0.5 * len(per_customer), dept
        assert lines["class"].nunique() > 0.8 * len(departments[dept].classes), dept


def test_brand_tier_shares_follow_the_affinity(shipped):
    config = shipped.config
    goods = shipped.goods
    shares = goods.groupby("persona")["brand_tier"].value_counts(normalize=True)
    concentration = config.generate_data.customer_variation.brand_tier_concentration
    for name, persona in config.personas.items():
        affinity = persona.brand_tier_affinity or config.generate_data.brand_tier_affinity
        # Each customer's tier mix is a Dirichlet draw around the persona's: the pooled share varies
        # with the customers' spread, weighted by their squared line counts.
        lines = goods[goods["persona"] == name].groupby("customer_id").size().to_numpy(float)
        weight = (lines**2).sum() / lines.sum() ** 2
        for tier in BRAND_TIERS:
            p = affinity[tier]
            error = np.sqrt(p * (1 - p) * (weight / (concentration + 1) + 1 / lines.sum()))
            assert shares[name].get(tier, 0.0) == pytest.approx(p, abs=4.5 * error), (name, tier)
            assert 4.5 * error < 0.15  # still a test: a persona's tiers are 0.1 to 0.85 apart


def test_style_affinity_shows_in_what_is_bought(shipped):
    goods = shipped.goods
    ladies = goods[goods["department"] == "Ladies Clothing"]
    style = ladies.groupby("persona")["style"].value_counts(normalize=True)
    # teenage_girl: trend 3.0, formal 0.1; professional_woman: formal 3.0, trend 0.6.
    assert style["teenage_girl"]["trend"] > style["professional_woman"]["trend"] + 0.15
    assert style["professional_woman"]["formal"] > style["teenage_girl"]["formal"] + 0.2


def test_personas_and_scenarios_defined_in_config_alone_are_generated(custom):
    config = custom.config
    assert set(custom.customers["persona"].unique()) == set(CUSTOM_PERSONAS["personas"])
    assert list(config.scenarios) == ["march_home", "june_visits"]
    goods = custom.goods
    for name in ("denim_and_jumpers", "home_and_menswear", "one_child_parent"):
        shares = goods[goods["persona"] == name]["department"].value_counts(normalize=True)
        for dept, share in config.personas[name].department_preferences.items():
            assert shares.get(dept, 0.0) == pytest.approx(share, abs=0.03), (name, dept)
    men = custom.customers[custom.customers["persona"] == "home_and_menswear"]
    assert (men["gender"] == "Male").all() and men["age"].between(30, 60).all()


# --- scenarios -----------------------------------------------------------------------------------

def test_department_boost_raises_the_share_inside_its_window_only(custom):
    goods = custom.goods
    goods = goods[goods["persona"] == "seasonal_shopper"]
    home = goods["department"] == "Home"
    month = goods["order_date"].dt.month
    base = CUSTOM_PERSONAS["personas"]["seasonal_shopper"]["department_preferences"]["Home"]
    boosted = 3 * base / (3 * base + 1 - base)
    assert home[month == 3].mean() == pytest.approx(boosted, abs=0.03)
    assert home[month != 3].mean() == pytest.approx(base, abs=0.01)
    for m in (2, 4, 9):
        assert home[month == m].mean() == pytest.approx(base, abs=0.03), m


def test_visit_multiplier_raises_visits_inside_its_window(custom):
    """June visits per day are twice those of May and July (no dropout, flat calendar)."""
    tx = custom.tx.assign(persona=custom.persona)
    orders = tx[~tx["is_return"] & (tx["persona"] == "seasonal_shopper")].drop_duplicates("order_id")
    for year in (2023, 2024):
        dates = orders["order_date"][orders["order_date"].dt.year == year]
        per_day = {m: (dates.dt.month == m).sum() / pd.Period(f"{year}-{m:02d}").days_in_month for m in (5, 6, 7)}
        assert per_day[6] / ((per_day[5] + per_day[7]) / 2) == pytest.approx(2.0, abs=0.3), year
        # Customers join over the window and this persona never drops out: in 2023 about a tenth more
        # of them are active in July than in May (40% at the start, 60% joining over 24 months).
        assert per_day[7] / per_day[5] == pytest.approx(1.0, abs=0.3), year
    other = tx[~tx["is_return"] & (tx["persona"] == "denim_and_jumpers")].drop_duplicates("order_id")
    june = (other["order_date"].dt.month == 6).sum() / 30
    may_july = (other["order_date"].dt.month.isin([5, 7])).sum() / 62
    assert june / may_july == pytest.approx(1.0, abs=0.2), "a scenario changed a persona it is not attached to"


def test_january_sales_discount_inside_their_window(shipped):
    config = shipped.config
    goods = shipped.goods
    goods = goods[goods["sku"].notna()]
    key = month_day(goods["order_date"])
    january = (key >= 1226) | (key <= 131)
    summer = (key >= 625) & (key <= 715)
    discounted = (goods["discount_amount"] > 0).to_numpy()
    promo = config.generate_data.promotion_share
    sale = config.scenarios["january_sales"].discount_share
    assert discounted[january].mean() == pytest.approx(1 - (1 - promo) * (1 - sale), abs=0.03)
    assert discounted[~january & ~summer].mean() == pytest.approx(promo, abs=0.01)
    low, high = config.scenarios["january_sales"].discount_depth
    lines = goods[january & discounted]
    depth = lines["discount_amount"] / (lines["discount_amount"] + lines["line_amount"])
    assert depth.between(0, high + 0.01).all() and depth.median() > low


def test_class_focus_of_back_to_school(shipped):
    """Inside 07-20..09-07, 40% of woman_young_family's Kids Clothing lines go to SCHOOLWEAR on top."""
    focus = shipped.config.scenarios["back_to_school"].class_focus["Kids Clothing"]
    goods = shipped.goods
    kids = goods[(goods["persona"] == "woman_young_family") & (goods["department"] == "Kids Clothing")]
    key = month_day(kids["order_date"])
    inside = (key >= 720) & (key <= 907)
    school = kids["class"].isin(focus.classes).to_numpy()
    usual = school[~inside].mean()
    assert school[inside].mean() == pytest.approx(focus.share + (1 - focus.share) * usual, abs=0.05)
    assert school[inside].mean() > 2 * usual


def test_style_boost_of_teen_trend_season(shipped):
    goods = shipped.goods
    teen = goods[goods["persona"] == "teenage_girl"]
    key = month_day(teen["order_date"])
    inside = (key >= 415) & (key <= 831)
    trend = (teen["style"] == "trend").to_numpy()
    # The season also boosts departments whose items are less often trend, and customers differ in their
    # style mix: so the trend share is compared within each class (where the catalog's trend items are
    # the same inside and out), averaged over the classes with 30 lines on each side.
    shares = pd.DataFrame({"class": teen["class"].to_numpy(), "inside": inside, "trend": trend})
    per_class = shares.groupby(["class", "inside"])["trend"].agg(["mean", "size"]).unstack("inside")
    both = per_class[(per_class["size"] >= 30).all(axis=1)]
    # Weighted by the lines inside; the difference must stand 3 standard errors above zero.
    weight = both["size"][True] / both["size"][True].sum()
    difference = both["mean"][True] - both["mean"][False]
    p = both["mean"][False]
    error = np.sqrt((weight**2 * p * (1 - p) * (1 / both["size"][True] + 1 / both["size"][False])).sum())
    assert (weight * difference).sum() > max(0.02, 3 * error)


# --- realistic distributions ---------------------------------------------------------------------

def test_customers_join_over_the_window(shipped):
    customers = shipped.customers
    newcomers = customers[customers["signup_date"] >= shipped.start]
    share = 1 - shipped.config.generate_data.start_customer_share
    assert len(newcomers) / len(customers) == pytest.approx(share, abs=0.04)
    quarters = newcomers["signup_date"].dt.to_period("Q").value_counts()
    assert len(quarters) == 8 and quarters.min() > 0.5 * len(newcomers) / 8
    existing = customers[customers["signup_date"] < shipped.start]
    assert existing["signup_date"].min() > shipped.start - pd.Timedelta(days=3 * 366)


def test_dropout_spreads_recency(shipped):
    purchases = shipped.tx[~shipped.tx["is_return"]]
    recency = (shipped.end - purchases.groupby("customer_id")["order_date"].max()).dt.days
    assert 0.3 < (recency > 90).mean() < 0.9
    assert (recency <= 30).mean() > 0.1
    assert (recency > 365).mean() > 0.05


def test_baskets_are_over_dispersed_and_never_empty(shipped):
    goods = shipped.goods
    per_order = goods.groupby("order_id").size()
    assert per_order.min() >= 1
    assert per_order.var() > 2 * per_order.mean()
    assert (per_order == 1).mean() > 0.1


def test_quantity_is_mostly_one(shipped):
    q = shipped.config.generate_data.quantity_probabilities
    quantity = shipped.goods["quantity"]
    assert (quantity == 1).mean() == pytest.approx(q[0], abs=0.01)
    assert quantity.max() <= len(q)


def test_apparel_is_returned_more_often_than_home(shipped):
    tx = shipped.tx[shipped.kind == "merchandise"]
    rate = tx[tx["is_return"]].groupby("department").size() / tx[~tx["is_return"]].groupby("department").size()
    for dept in APPAREL:
        assert rate[dept] > 2 * rate["Home"], dept
    assert rate["Home"] == pytest.approx(shipped.config.generate_data.return_rate, rel=0.5)


def test_online_share_follows_the_config(shipped):
    config = shipped.config
    tx = shipped.tx.assign(persona=shipped.persona)
    orders = tx[~tx["is_return"]].drop_duplicates("order_id")
    assert set(orders["channel"].unique()) == {"store", "online"}
    online = (orders["channel"] == "online").groupby(orders["persona"]).mean()
    for name, persona in config.personas.items():
        expected = config.generate_data.channel.online_share if persona.online_share is None else persona.online_share
        assert online[name] == pytest.approx(expected, abs=0.06), name


def test_channel_and_identity_are_null_when_switched_off(switched_off):
    assert switched_off.tx["channel"].isna().all()
    assert (switched_off.kind == "bag_levy").any(), "every order is a store order without a channel"
    for column in tables.IDENTITY_COLUMNS:
        assert switched_off.customers[column].isna().all(), column


def test_identity_fields_are_plausible(shipped):
    customers = shipped.customers
    for column in tables.IDENTITY_COLUMNS:
        assert customers[column].notna().all() and (customers[column].str.len() > 0).all(), column
    email = customers["email"]
    assert email.str.count("@").eq(1).all() and email.is_unique
    assert email.str.match(r"^[a-z.'-]+\d+@[a-z0-9.-]+\.[a-z.]+$").mean() > 0.95
    assert customers["phone"].str.fullmatch(r"07\d{9}").all()
    assert customers["first_name"].nunique() > 50 and customers["last_name"].nunique() > 50
    # Email local parts are built from the customer's own name.
    local = email.str.split("@").str[0]
    first = customers["first_name"].str.lower().str.replace(" ", "", regex=False)
    assert all(l.startswith(f) for l, f in zip(local, first))


# --- determinism ---------------------------------------------------------------------------------

def test_same_seed_gives_identical_tables_and_another_seed_other_ones(switched_off):
    again = generate(switched_off.config)
    pd.testing.assert_frame_equal(again.customers, switched_off.customers)
    pd.testing.assert_frame_equal(again.tx, switched_off.tx)
    other = generate(switched_off.config, seed=switched_off.config.seed + 1)
    assert not other.customers["persona"].equals(switched_off.customers["persona"])
    assert len(other.tx) != len(switched_off.tx) or not other.tx["line_amount"].equals(switched_off.tx["line_amount"])


def test_chunk_size_does_not_change_the_data(shipped):
    """Chunks of 3,000 customers (one chunk) give the tables that chunks of 1,000 (three) gave."""
    plan = dataclasses.replace(shipped.plan, cfg=dataclasses.replace(shipped.plan.cfg, chunk_size=3000))
    chunks = list(generator.generate(plan, shipped.config.seed))
    assert len(chunks) == 1
    customers, table = chunks[0]
    pd.testing.assert_frame_equal(customers, shipped.customers)
    three = pa.concat_tables([t.cast(tables.TRANSACTION_SCHEMA) for _, t in shipped.chunks])
    assert table.cast(tables.TRANSACTION_SCHEMA).equals(three)


# --- worker processes (core/generate_data/workers.py) ---------------------------------------------

def test_spill_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"{workers.SPILL_PREFIX}{gone.pid}-abc123"
    live = tmp_path / f"{workers.SPILL_PREFIX}{os.getpid()}-def456"
    unnamed = tmp_path / f"{workers.SPILL_PREFIX}ghi789"
    for folder in (orphan, live, unnamed):
        folder.mkdir()
        (folder / "block-0.arrow").write_bytes(b"x" * 10)
    assert workers.remove_orphaned_spills(tmp_path) == [], "changed in the last 10 minutes: maybe another container's"
    old = orphan.stat().st_mtime - 3600
    for folder in (orphan, live, unnamed):
        os.utime(folder, (old, old))
    assert workers.remove_orphaned_spills(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and unnamed.exists()


@pytest.mark.skipif(os.name != "posix", reason="the POSIX liveness check; Windows asks OpenProcess (next test)")
def test_a_process_is_alive_until_it_has_ended():
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert processes.process_alive(os.getpid())
        assert processes.process_alive(running.pid)
    finally:
        running.kill()
        running.wait()
    assert not processes.process_alive(running.pid)


class ApiFunction:
    """A foreign function's stand-in: callable, and ``restype``/``argtypes`` can be set on it."""

    def __init__(self, call):
        self.call, self.restype, self.argtypes = call, None, None

    def __call__(self, *args):
        return self.call(*args)


class FakeKernel32:
    """kernel32 as ``_windows_process_alive`` calls it: OpenProcess, GetExitCodeProcess, CloseHandle."""

    def __init__(self, processes: dict[int, int], denied: set[int] = frozenset()):
        self.processes, self.denied = processes, denied  # pid -> exit code (259 = still active)
        self.open_handles: set[int] = set()
        self.last_error = 0
        self.OpenProcess = ApiFunction(self.open)
        self.GetExitCodeProcess = ApiFunction(self.exit_code)
        self.CloseHandle = ApiFunction(self.close)

    def open(self, access: int, inherit: bool, pid: int) -> int:
        assert access == 0x1000, "PROCESS_QUERY_LIMITED_INFORMATION: all a liveness check needs"
        if pid in self.denied:
            self.last_error = 5  # ERROR_ACCESS_DENIED
            return 0
        if pid not in self.processes:
            self.last_error = 87  # ERROR_INVALID_PARAMETER: no such process
            return 0
        self.open_handles.add(pid + 1000)
        return pid + 1000

    def exit_code(self, handle: int, code) -> int:
        code._obj.value = self.processes[handle - 1000]
        return 1

    def close(self, handle: int) -> int:
        self.open_handles.remove(handle)
        return 1


def test_on_windows_liveness_comes_from_the_exit_code_and_every_handle_is_closed(monkeypatch):
    """The Windows branch, run here against a fake kernel32 (os.kill(pid, 0) would send CTRL_C_EVENT there)."""
    kernel32 = FakeKernel32({10: 259, 11: 0}, denied={12})
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error: kernel32, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: kernel32.last_error, raising=False)
    assert processes._windows_process_alive(10), "exit code STILL_ACTIVE: running"
    assert not processes._windows_process_alive(11), "exit code 0: ended, its handle still held by someone"
    assert processes._windows_process_alive(12), "access denied: it exists, as another user's process"
    assert not processes._windows_process_alive(13), "cannot be opened: no such process"
    assert kernel32.open_handles == set()
    # A HANDLE is pointer-sized: with the default int result, 64-bit handles would be truncated.
    assert kernel32.OpenProcess.restype is ctypes.wintypes.HANDLE


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a running process; None once it has ended or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return None if fields[0] in ("Z", "X") else int(fields[19])


def child_processes(pid: int) -> dict[int, int]:
    """Children of ``pid`` (Linux): pid -> start time, so that a reused pid is not mistaken for one."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            started = process_start_time(int(stat.parent.name))
            if started is not None:
                children[int(stat.parent.name)] = started
    return children


def survivors(processes: dict[int, int], seconds: float = 10.0) -> list[int]:
    """Those of ``processes`` (pid -> start time) still running after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        running = [pid for pid, started in processes.items() if process_start_time(pid) == started]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


POOL_SCRIPT = """
import sys, time
import pyarrow as pa
from core.generate_data import workers

def draw(index):
    if index:
        time.sleep(600)  # busy, as a worker drawing a large block is
    return None, pa.table({"index": [index]}), None

if __name__ == "__main__":
    start_method, watch = sys.argv[1:]
    if watch == "polling":  # the path of platforms without a parent-death signal
        workers._request_parent_death_signal = lambda: False
    blocks = workers.draw_in_workers(draw, n_blocks=3, workers=2, blocks_per_chunk=1, start_method=start_method)
    next(blocks)
    print("ready", flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
@pytest.mark.parametrize("start_method, watch", [("fork", "signal"), ("spawn", "signal"), ("fork", "polling")])
def test_workers_die_when_their_parent_is_killed(tmp_path, start_method, watch):
    """kill -9 of the process that made the pool: its busy workers end within seconds, not sleep on."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, str(script), start_method, watch], stdout=subprocess.PIPE,
                              text=True, env=env)
    pool: dict[int, int] = {}
    try:
        assert parent.stdout.readline().strip() == "ready"
        pool = child_processes(parent.pid)
        assert len(pool) >= 2, pool
        parent.kill()
        parent.wait(timeout=30)
        assert survivors(pool) == [], f"workers outlived their parent ({start_method}, {watch})"
    finally:
        parent.kill()
        for pid in survivors(pool, seconds=0):  # a failed run must not leave them behind either
            # (spawn's resource tracker ends by itself once the workers are gone, removing its semaphores)
            with contextlib.suppress(OSError):
                if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def test_a_worker_without_a_parent_death_signal_exits_when_its_parent_ends():
    """The polling watch alone (macOS, Windows): it returns only by ending the process, once the parent is gone."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = subprocess.Popen([sys.executable, "-c",
                                "import os, sys; from core.generate_data import workers; "
                                "workers._exit_when_parent_gone(int(sys.argv[1]), os.getppid(), interval=0.05)",
                                str(stand_in.pid)], cwd=paths.REPO_ROOT)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            watcher.wait(timeout=1.0)  # the stand-in parent runs: keep watching
        stand_in.kill()
        stand_in.wait()
        assert watcher.wait(timeout=10) == 1
    finally:
        stand_in.kill()
        watcher.kill()


def parquet_sha256(chunks: list[tuple[pd.DataFrame, pa.Table]]) -> tuple[str, str]:
    """SHA-256 of the customers and of the transactions, each written to Parquet as stage 01 writes them."""
    customers = pa.Table.from_pandas(pd.concat([c for c, _ in chunks], ignore_index=True),
                                     schema=tables.CUSTOMER_SCHEMA, preserve_index=False)
    transactions = pa.concat_tables([t for _, t in chunks])

    def digest(table: pa.Table, **options) -> str:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()

    return digest(customers), digest(transactions, **generator.TRANSACTION_PARQUET_OPTIONS)


def test_spawned_workers_give_the_tables_forked_ones_give(tmp_path, monkeypatch):
    """Windows has no fork: workers started by spawn, handing blocks back through shared memory or (as on
    Windows) the pipe, give the Parquet bytes that forked workers and one process give."""
    config = load(tmp_path, config_document(2000))
    plan = generator.build_plan(config.personas, config.scenarios, config.hierarchy, config.data,
                                config.generate_data, config.seed)
    one_process = parquet_sha256(list(generator.generate(plan, config.seed)))
    forked = (parquet_sha256(list(generator.generate(plan, config.seed, workers=2, start_method="fork")))
              if "fork" in multiprocessing.get_all_start_methods() else one_process)  # none on Windows
    spawned = parquet_sha256(list(generator.generate(plan, config.seed, workers=2, start_method="spawn")))
    monkeypatch.setattr(workers, "spill_folder", lambda: None)  # what it returns on Windows
    through_pipe = parquet_sha256(list(generator.generate(plan, config.seed, workers=2, start_method="spawn")))
    assert forked == one_process
    assert spawned == one_process
    assert through_pipe == one_process


# --- short histories ------------------------------------------------------------------------------

@pytest.mark.parametrize("start, end", [("2024-12-30", "2024-12-31"), ("2024-12-24", "2024-12-31"),
                                        ("2024-12-01", "2024-12-31")], ids=["two days", "a week", "a month"])
def test_a_short_history_is_generated_inside_its_window(tmp_path, start, end):
    """Windows that miss most scenarios (they crashed the generation report) give complete tables."""
    run = generate(load(tmp_path, config_document(300, start, end)))
    assert len(run.customers) == 300 and run.customers["customer_id"].is_unique
    assert run.tx["order_date"].between(run.start, run.end).all()
    purchases = run.tx[~run.tx["is_return"]]
    assert purchases["customer_id"].nunique() == 300, "every customer visits at least once"
    returns = run.tx[run.tx["is_return"]]
    purchase_dates = purchases.groupby("order_id")["order_date"].first()
    assert (returns["order_date"] > returns["original_order_id"].map(purchase_dates)).all()
