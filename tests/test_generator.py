"""Contract and behaviour tests of the synthetic transaction generator (core/generator.py).

Data come from the shipped hierarchy and personas with the small test config
(300 customers over 2023, several chunks); the persona-mix tests use 3000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import chisquare

from conftest import small_config_document, write_config
from core import generator
from core.config import load_config


def generate_all(config, seed=None):
    """Concatenated (customers, transactions) of every chunk."""
    seed = config.seed if seed is None else seed
    catalog = generator.build_catalog(config.hierarchy, config.generate_data, seed)
    chunks = list(generator.generate(config.personas, config.hierarchy, config.data, config.generate_data, seed,
                                     catalog))
    customers = pd.concat([c for c, _ in chunks], ignore_index=True)
    transactions = pd.concat([t for _, t in chunks], ignore_index=True)
    return customers, transactions, catalog, len(chunks)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    config = load_config(write_config(tmp_path_factory.mktemp("config"), small_config_document()))
    customers, transactions, catalog, n_chunks = generate_all(config)
    return config, customers, transactions, catalog, n_chunks


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    doc = small_config_document()
    doc["data"]["n_customers"] = 3000
    doc["generate_data"]["chunk_size"] = 1000
    config = load_config(write_config(tmp_path_factory.mktemp("config"), doc))
    customers, transactions, _, _ = generate_all(config)
    return config, customers, transactions


# --- shape of the output -----------------------------------------------------------------------

def test_columns_and_one_row_per_customer(small):
    config, customers, transactions, _, n_chunks = small
    assert n_chunks == 3  # 300 customers, chunks of 120
    assert tuple(customers.columns) == generator.CUSTOMER_COLUMNS
    assert tuple(transactions.columns) == generator.TRANSACTION_COLUMNS
    assert customers["customer_id"].tolist() == list(range(1, config.data.n_customers + 1))


def test_arrow_schema_accepts_the_frame(small):
    _, _, transactions, _, _ = small
    table = pa.Table.from_pandas(transactions, schema=generator.TRANSACTION_SCHEMA, preserve_index=False)
    assert table.num_rows == len(transactions)
    assert table.schema.equals(generator.TRANSACTION_SCHEMA)
    returns = transactions["is_return"].to_numpy()
    assert table.column("original_order_id").null_count == int((~returns).sum())


# --- order lines are real transactions ---------------------------------------------------------

def test_line_amount_is_quantity_times_unit_price(small):
    _, _, tx, _, _ = small
    np.testing.assert_allclose(tx["line_amount"], np.round(tx["quantity"] * tx["unit_price"], 2), atol=1e-9)
    assert (tx["unit_price"] > 0).all()


def test_purchases_are_positive_and_returns_negative(small):
    _, _, tx, _, _ = small
    purchases, returns = tx[~tx["is_return"]], tx[tx["is_return"]]
    assert len(returns) > 0
    assert (purchases["quantity"] > 0).all() and (purchases["line_amount"] > 0).all()
    assert (returns["quantity"] < 0).all() and (returns["line_amount"] < 0).all()
    assert purchases["original_order_id"].isna().all()
    assert returns["original_order_id"].notna().all()


def test_every_return_points_to_an_earlier_purchase_of_the_same_customer(small):
    _, _, tx, _, _ = small
    orders = (tx[~tx["is_return"]].groupby("order_id")
              .agg(purchase_customer=("customer_id", "first"), purchase_date=("order_date", "first")))
    returns = tx[tx["is_return"]].astype({"original_order_id": np.int64})
    joined = returns.join(orders, on="original_order_id", how="left")

    assert joined["purchase_customer"].notna().all(), "a return names an order id that is no purchase"
    assert (joined["purchase_customer"] == joined["customer_id"]).all()
    assert (joined["purchase_date"] <= joined["order_date"]).all()


def test_returned_items_were_bought_in_the_original_order(small):
    _, _, tx, _, _ = small
    bought = tx[~tx["is_return"]].groupby(["order_id", "sku"])["quantity"].sum()
    returned = (tx[tx["is_return"]].astype({"original_order_id": np.int64})
                .groupby(["original_order_id", "sku"])["quantity"].sum().mul(-1))
    returned.index.names = ["order_id", "sku"]
    available = bought.reindex(returned.index)
    assert available.notna().all()
    assert (returned <= available).all()


def test_dates_within_signup_and_history(small):
    config, customers, tx, _, _ = small
    start, end = pd.Timestamp(config.data.history_start), pd.Timestamp(config.data.history_end)
    assert customers["signup_date"].between(start, end).all()
    signup = tx["customer_id"].map(customers.set_index("customer_id")["signup_date"])
    assert (tx["order_date"] >= signup).all()
    assert (tx["order_date"] <= end).all()
    assert (tx.loc[tx["is_return"], "order_date"] <= end).all()


def test_every_customer_has_a_purchase(small):
    _, customers, tx, _, _ = small
    buyers = set(tx.loc[~tx["is_return"], "customer_id"])
    assert buyers == set(customers["customer_id"])


def test_order_ids_identify_one_transaction_of_one_customer(small):
    """An order id is one (customer, date, purchase-or-return) transaction, never shared across customers."""
    _, _, tx, _, _ = small
    per_id = tx.groupby("order_id")[["customer_id", "order_date", "is_return"]].nunique()
    assert (per_id == 1).all().all()
    # Ids increase with customer, date and transaction, so customers own disjoint ranges.
    assert tx["order_id"].is_monotonic_increasing
    assert tx.groupby("customer_id")["order_date"].is_monotonic_increasing.all()
    ranges = tx.groupby("customer_id")["order_id"].agg(["min", "max"]).sort_index()
    assert (ranges["min"].to_numpy()[1:] > ranges["max"].to_numpy()[:-1]).all()


# --- lines follow the hierarchy and the catalog --------------------------------------------------

def test_departments_are_merchandise_and_classes_sellable(small):
    config, _, tx, _, _ = small
    hierarchy = config.hierarchy
    assert set(tx["department"]) <= set(hierarchy.merchandise_departments)
    for dept, classes in tx.groupby("department")["class"]:
        assert set(classes) <= set(hierarchy.departments[dept].classes), dept


def test_skus_exist_in_the_catalog_with_their_department_and_class(small):
    _, _, tx, catalog, _ = small
    products = catalog.products.set_index("sku")
    assert products.index.is_unique
    assert set(tx["sku"]) <= set(products.index)
    assert (tx["department"].to_numpy() == products.loc[tx["sku"], "department"].to_numpy()).all()
    assert (tx["class"].to_numpy() == products.loc[tx["sku"], "class"].to_numpy()).all()


def test_catalog_covers_every_sellable_merchandise_class(small):
    config, _, _, catalog, _ = small
    hierarchy = config.hierarchy
    expected = {(d, c) for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes}
    assert set(zip(catalog.classes["department"], catalog.classes["class"])) == expected
    low, high = config.generate_data.skus_per_class
    assert catalog.classes["n_skus"].between(low, high).all()
    assert len(catalog.products) == catalog.classes["n_skus"].sum()


# --- personas ----------------------------------------------------------------------------------

def test_persona_mix_follows_the_weights(large):
    config, customers, _ = large
    names = list(config.personas)
    observed = customers["persona"].value_counts().reindex(names, fill_value=0).to_numpy()
    weights = np.array([config.personas[p].weight for p in names])
    expected = weights / weights.sum() * len(customers)
    assert observed.sum() == 3000
    assert chisquare(observed, expected).pvalue > 0.001


def test_each_persona_buys_most_in_its_top_preferred_department(large):
    config, customers, tx = large
    persona = tx["customer_id"].map(customers.set_index("customer_id")["persona"])
    purchases = tx.assign(persona=persona)[~tx["is_return"]]
    shares = purchases.groupby("persona")["department"].value_counts(normalize=True)
    for name, p in config.personas.items():
        top = max(p.department_preferences, key=p.department_preferences.get)
        realised = shares.loc[name]
        assert realised.idxmax() == top, name
        assert realised[top] == pytest.approx(p.department_preferences[top], abs=0.03), name


def test_persona_demographics_follow_the_persona(large):
    config, customers, _ = large
    for name, group in customers.groupby("persona"):
        demo = config.personas[name].demographics
        low, high = demo.age_range
        assert group["age"].between(low, high).all(), name
        assert set(group["gender"]) <= set(demo.gender), name
        assert (group["has_children"] == demo.has_children).all(), name


# --- seeds -------------------------------------------------------------------------------------

def test_same_seed_gives_identical_frames(small_config_path, small):
    _, customers, tx, _, _ = small
    again_customers, again_tx, _, _ = generate_all(load_config(small_config_path))
    pd.testing.assert_frame_equal(again_customers, customers)
    pd.testing.assert_frame_equal(again_tx, tx)


def test_different_seed_gives_different_frames(small_config_path, small):
    config, customers, tx, _, _ = small
    other_customers, other_tx, _, _ = generate_all(load_config(small_config_path), seed=config.seed + 1)
    assert not other_customers["persona"].equals(customers["persona"])
    assert len(other_tx) != len(tx) or not other_tx["line_amount"].equals(tx["line_amount"])
