"""Basics bought again on a cycle and complementary classes of one shopping mission (issue 15, item 4).

Real data through the real code: the shipped config on 2,000 customers over 2023-2024, and the same
drawn from a plan without replenishment or missions but judged against the shipped config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import small_config_document, write_config
from core.config import load_config
from core.framework.schema import ConfigError
from core.generate_data import generator
from core.generate_data.report import GenerationReport


def shipped_config(tmp_path):
    doc = small_config_document()
    doc["data"].update(n_customers=2000, history_start="2023-01-01", history_end="2024-12-31")
    doc["generate_data"]["chunk_size"] = 1000
    doc["generate_data"]["identity"]["pool_size"] = 300
    return load_config(write_config(tmp_path, doc))


def judged(config, gen):
    """Data drawn with ``gen`` in place of the config's generate_data, judged against the config."""
    plan = generator.build_plan(config.personas, config.scenarios, config.hierarchy, config.data, gen, config.seed)
    report = GenerationReport(plan, config.personas, config.scenarios, config.generate_data)
    chunks = list(generator.generate(plan, config.seed, report=report))
    tx = pa.concat_tables([t.cast(generator.TRANSACTION_SCHEMA) for _, t in chunks]).to_pandas()
    return report.finish(), tx


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    config = shipped_config(tmp_path_factory.mktemp("shipped"))
    return (config, *judged(config, config.generate_data))


def test_due_basics_are_bought_and_come_back_more_regularly_than_other_usual_classes(shipped):
    config, report, tx = shipped
    row = report["replenishment"]
    assert row["passed"] and row["due_visits"] > 5000
    assert row["realised_share"] >= config.generate_data.replenishment.probability
    # Repeat purchases of a basic follow its cycle: their gaps vary less than those of other usual classes.
    assert row["median_interval_cv_basics"] < row["median_interval_cv_other_usual_classes"] - 0.1
    # In the tables: a customer's basics are bought again within their cycle's range far more often.
    basics = {(d, c) for d, b in config.generate_data.replenishment.basics.items() for c in b.classes}
    goods = tx[~tx["is_return"] & tx["sku"].notna()]
    is_basic = pd.Series(list(zip(goods["department"], goods["class"])), index=goods.index).isin(basics)
    days = goods.drop_duplicates(["customer_id", "class", "order_date"]).sort_values("order_date")
    repeat = days.groupby(["customer_id", "department", "class"])["order_date"].count()
    assert is_basic.mean() > 0.05 and (repeat >= 3).sum() > 1000


def test_orders_with_a_mission_anchor_hold_its_other_classes(shipped):
    config, report, tx = shipped
    missions = report["missions"]
    assert set(missions) == set(config.generate_data.missions.sets)
    busy = {name: row for name, row in missions.items() if row["of_them_with_a_line_in_its_departments"] >= 200}
    assert len(busy) >= 4
    for name, row in busy.items():
        assert row["passed"], name
        assert row["share_holding_a_companion"] >= config.generate_data.missions.probability, name
        assert abs(row["share_holding_a_companion"] - row["expected_share"]) <= row["tolerance"], name
        assert row["lift"] > 2, name
    # In the tables: suit orders (Mens Formalwear) hold a formal shirt or tie far more often than others.
    goods = tx[~tx["is_return"]]
    classes = goods.groupby("order_id")["class"].agg(set)
    suit = classes.map(lambda s: "Mens Formalwear" in s)
    shirt_or_tie = classes.map(lambda s: bool(s & {"FORMAL SHIRTS", "Ties"}))
    assert shirt_or_tie[suit].mean() > 3 * shirt_or_tie[~suit].mean()


def test_data_without_replenishment_or_missions_fails_the_config(tmp_path):
    """A plan that drops both behaviours, judged against the shipped config: both checks fail, named."""
    config = shipped_config(tmp_path)
    gen = config.generate_data
    off = dataclasses.replace(gen, replenishment=dataclasses.replace(gen.replenishment, probability=0.0),
                              missions=dataclasses.replace(gen.missions, probability=0.0))
    report, _ = judged(config, off)
    assert not report["replenishment"]["passed"]
    assert any(f.startswith("replenishment: ") for f in report["checks_failed"])
    failed = [name for name, row in report["missions"].items() if not row["passed"]]
    assert len(failed) >= 4
    assert any(f.startswith("mission suit: ") for f in report["checks_failed"])


@pytest.mark.parametrize("section, value, key, message", [
    ("replenishment", {"probability": 0.7, "basics": {"Ladies Hosiery": {"classes": ["Sheer Tight"],
                                                                          "cycle_days": [30, 60]}}},
     "generate_data.replenishment.basics.Ladies Hosiery.classes", "class 'Sheer Tight' is not a sellable class"),
    ("replenishment", {"probability": 0.7, "basics": {"Hosiery": {"classes": ["Sheer Tights"],
                                                                   "cycle_days": [30, 60]}}},
     "generate_data.replenishment.basics.Hosiery", "is not a merchandise department"),
    ("missions", {"probability": 0.5, "sets": {"suit": {"Mens Clothing": ["Mens Formalwear"]}}},
     "generate_data.missions.sets.suit", "needs an anchor class and at least one other"),
    ("missions", {"probability": 1.5, "sets": {}}, "generate_data.missions.probability", "1.5"),
], ids=["unknown class", "unknown department", "lonely anchor", "probability above 1"])
def test_bad_basics_and_missions_are_config_errors_naming_the_key(tmp_path, section, value, key, message):
    doc = small_config_document()
    doc["generate_data"][section] = value
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, doc))
    assert key in str(error.value) and message in str(error.value), str(error.value)


def test_replenishment_and_missions_leave_department_and_usual_class_shares_as_configured(shipped):
    """They change classes within departments only, so the mix checks (against personas.yml) still pass."""
    _, report, _ = shipped
    for section in ("department_share", "usual_class_share"):
        for name, rows in report[section].items():
            rows = rows["departments"] if section == "department_share" else rows
            assert all(r["passed"] for r in rows.values()), (section, name)
    assert np.isfinite(report["replenishment"]["median_interval_cv_basics"])
