"""Life events in the generator (issue 16, item 1): customers who become another persona.

Real data through the real code: the shipped config on 3,000 customers over 2023-2024 with
life events ten times as frequent as shipped (so that a few hundred happen), run through stage
01 as a user would; plus config errors and a plan whose rates contradict the config.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import SHIPPED_CONFIG, small_config_document, write_config
from core.config import load_config
from core.framework import paths
from core.framework.schema import ConfigError
from core.generate_data import generator
from core.generate_data.report import GenerationReport
from core.pipeline import run_pipeline

BABY = ["Babywear", "Baby Basics", "Newborn Boy", "Newborn Girl", "Baby Boy", "Baby Girl"]
FAMILY = ["2-7 Boyswear", "2-7 Girlswear", "7+ Boyswear", "7+ Girlswear", "SCHOOLWEAR", "OUTERWEAR"]


def shipped_personas() -> dict:
    return yaml.safe_load((SHIPPED_CONFIG / "personas.yml").read_text(encoding="utf-8"))


def frequent_events(personas: dict) -> dict:
    """The shipped personas with every life event's rate raised (times 3, at most 0.9)."""
    personas = copy.deepcopy(personas)
    for persona in personas["personas"].values():
        for event in persona.get("life_events", []):
            event["yearly_rate"] = min(0.9, event["yearly_rate"] * 3)
    return personas


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    """Stage 01 on 3,000 customers with frequent events: (config, artifacts folder)."""
    folder = tmp_path_factory.mktemp("events")
    doc = small_config_document()
    doc["data"].update(n_customers=3000, history_start="2023-01-01", history_end="2024-12-31")
    doc["generate_data"]["identity"]["pool_size"] = 300
    config = load_config(write_config(folder / "config", doc, personas=frequent_events(shipped_personas())))
    artifacts = folder / "artifacts"
    assert run_pipeline(config, artifacts, only=paths.GENERATE_DATA) == {paths.GENERATE_DATA: "ran"}
    return config, paths.stage_dir(artifacts, paths.GENERATE_DATA)


def test_events_are_written_with_their_day_and_customers_keep_the_final_persona(stage_run):
    config, stage_dir = stage_run
    events = pd.read_parquet(stage_dir / paths.PERSONA_EVENTS)
    customers = pd.read_parquet(stage_dir / paths.CUSTOMERS).set_index("customer_id")
    assert list(events.columns) == ["customer_id", "event_date", "from_persona", "to_persona"]
    assert len(events) > 200 and events["customer_id"].is_unique
    assert events["event_date"].between(pd.Timestamp("2023-01-02"), pd.Timestamp("2024-12-31")).all()
    # customers.parquet holds the persona at the end of the history.
    assert (customers.loc[events["customer_id"], "persona"].to_numpy() == events["to_persona"].to_numpy()).all()
    allowed = {(name, e.to) for name, p in config.personas.items() for e in p.life_events}
    assert set(zip(events["from_persona"], events["to_persona"])) <= allowed
    # The event happens after the customer's first purchase.
    tx = pd.read_parquet(stage_dir / paths.TRANSACTIONS, columns=["customer_id", "order_date"])
    first = tx.groupby("customer_id")["order_date"].min()
    assert (events.set_index("customer_id")["event_date"] > first.loc[events["customer_id"]]).all()
    manifest = json.loads((stage_dir / paths.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["details"]["persona_events"] == len(events)
    outputs = {o["file"]: o for o in manifest["outputs"]}
    assert outputs[paths.PERSONA_EVENTS]["rows"] == len(events)


def test_the_report_checks_realised_event_rates_against_the_config(stage_run):
    config, stage_dir = stage_run
    report = json.loads((stage_dir / paths.GENERATION_REPORT).read_text(encoding="utf-8"))
    rows = report["life_events"]
    assert set(rows) == {f"{name} -> {e.to}" for name, p in config.personas.items() for e in p.life_events}
    for name, row in rows.items():
        assert row["passed"], name
        assert abs(row["events"] - row["expected_events"]) <= row["tolerance"], name
    # The baby grows into a young family at 0.75 a year here: plenty of events, at about that rate.
    family = rows["woman_with_baby -> woman_young_family"]
    assert family["events"] > 100 and family["realised_yearly_rate"] == pytest.approx(0.75, rel=0.2)


def test_after_the_event_the_customer_buys_as_the_new_persona(stage_run):
    """Mothers of babies who become a young family: baby classes before, school-age ones after."""
    _, stage_dir = stage_run
    events = pd.read_parquet(stage_dir / paths.PERSONA_EVENTS)
    family = events[events["to_persona"] == "woman_young_family"].set_index("customer_id")["event_date"]
    tx = pd.read_parquet(stage_dir / paths.TRANSACTIONS,
                         columns=["customer_id", "order_date", "department", "class", "is_return"])
    tx = tx[tx["customer_id"].isin(family.index) & ~tx["is_return"] & (tx["department"] == "Kids Clothing")]
    after = tx["order_date"] >= tx["customer_id"].map(family)
    before_baby = tx.loc[~after, "class"].isin(BABY).mean()
    after_baby = tx.loc[after, "class"].isin(BABY).mean()
    after_family = tx.loc[after, "class"].isin(FAMILY).mean()
    assert (~after).sum() > 500 and after.sum() > 500
    assert before_baby > 0.6 and after_baby < 0.15 and after_family > 0.6


def test_a_first_baby_brings_baby_sizes_from_the_event_day(stage_run):
    """Young women who have a first baby buy baby sizes only from the event on."""
    _, stage_dir = stage_run
    events = pd.read_parquet(stage_dir / paths.PERSONA_EVENTS)
    mothers = events[events["to_persona"] == "woman_with_baby"].set_index("customer_id")["event_date"]
    tx = pd.read_parquet(stage_dir / paths.TRANSACTIONS,
                         columns=["customer_id", "order_date", "size", "is_return"])
    tx = tx[tx["customer_id"].isin(mothers.index) & ~tx["is_return"]]
    baby = tx["size"].isin(["Baby 0-12m", "Infant 2-5"])
    after = tx["order_date"] >= tx["customer_id"].map(mothers)
    assert len(mothers) >= 20 and baby[after].mean() > 0.2
    assert baby[~after].mean() < 0.02


def test_a_plan_whose_rates_contradict_the_config_fails_the_report(tmp_path):
    """Data drawn with the baby-to-family rate at 0.9, judged against the shipped 0.25: named."""
    doc = small_config_document()
    doc["data"].update(n_customers=2000, history_start="2023-01-01", history_end="2024-12-31")
    doc["generate_data"]["chunk_size"] = 1000
    doc["generate_data"]["identity"]["pool_size"] = 300
    config = load_config(write_config(tmp_path, doc))
    baby = config.personas["woman_with_baby"]
    faster = (dataclasses.replace(baby.life_events[0], yearly_rate=0.9),)
    wrong = {**config.personas, "woman_with_baby": dataclasses.replace(baby, life_events=faster)}
    plan = generator.build_plan(wrong, config.scenarios, config.hierarchy, config.data, config.generate_data,
                                config.seed)
    report = GenerationReport(plan, config.personas, config.scenarios)
    for _ in generator.generate(plan, config.seed, report=report):
        pass
    result = report.finish()
    row = result["life_events"]["woman_with_baby -> woman_young_family"]
    assert not row["passed"] and row["configured_yearly_rate"] == 0.25
    assert any(f.startswith("life event woman_with_baby -> woman_young_family: ") for f in result["checks_failed"])


@pytest.mark.parametrize("event, key, message", [
    ({"to": "teenage_grl", "yearly_rate": 0.2}, "personas.teenage_girl.life_events[0].to",
     "persona 'teenage_grl' is not defined (did you mean 'teenage_girl'"),
    ({"to": "young_woman_fashion", "yearly_rate": 1.5}, "personas.teenage_girl.life_events[0].yearly_rate",
     "1.5"),
    ({"to": "young_woman_fashion", "yearly_rate": -0.1}, "personas.teenage_girl.life_events[0].yearly_rate",
     "-0.1"),
    ({"to": "teenage_girl", "yearly_rate": 0.1}, "personas.teenage_girl.life_events[0].to", "cannot become itself"),
], ids=["unknown persona", "rate above 1", "negative rate", "itself"])
def test_a_bad_life_event_is_a_config_error_naming_the_key(tmp_path, event, key, message):
    personas = shipped_personas()
    personas["personas"]["teenage_girl"]["life_events"] = [event]
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, small_config_document(), personas=personas))
    text = str(error.value)
    assert key in text and message in text, text
