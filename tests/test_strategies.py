"""The strategy rule table: validation, first-match selection, every shipped rule reachable, cross-sell."""

from __future__ import annotations

import copy

import pytest
import yaml

from core.framework import paths
from core.domain.hierarchy import load_hierarchy
from core.framework.schema import ConfigError
from core.profile_export.strategies import POSITIONS, CrossSell, choose_rule, cross_sell, load_strategies, parse_strategies

CONFIG_DIR = paths.DEFAULT_CONFIG.parent
HIERARCHY = load_hierarchy(CONFIG_DIR / "hierarchy.yml")
SHIPPED = yaml.safe_load((CONFIG_DIR / "strategies.yml").read_text(encoding="utf-8"))


def segment(position="Steady Shoppers", value_tier="mid", top="Ladies Clothing", lapsed=0.0, returns=0.05,
            high_churn=0.2):
    """The profile fields the rules look at (``high_churn`` None: customer value not estimated)."""
    shares = None if high_churn is None else {"low": 1 - high_churn, "medium": 0.0, "high": high_churn}
    return {"position": position, "value_tier": value_tier, "lapsed_share": lapsed, "return_rate": returns,
            "top_departments": [{"department": top, "spend_share": 0.4, "lift": 1.5}],
            "customer_value": {"churn_risk_share": shares}}


def profile_reaching(rule) -> dict:
    """A profile meeting exactly what ``rule`` asks, neutral everywhere else."""
    when = rule.when
    # Low value unless asked: the retention rule for valuable segments comes before the one for everyone else.
    return segment(position=when.position[0] if when.position else "Steady Shoppers",
                   value_tier=when.value_tier[0] if when.value_tier else "low",
                   top=when.top_department[0] if when.top_department else "Ladies Clothing",
                   lapsed=when.lapsed_share_at_least if when.lapsed_share_at_least is not None else 0.0,
                   returns=when.return_rate_at_least if when.return_rate_at_least is not None else 0.05,
                   high_churn=when.high_churn_share_at_least if when.high_churn_share_at_least is not None else 0.2)


def test_every_shipped_rule_is_reachable():
    """For each rule there is a segment profile that gets exactly that rule."""
    table = load_strategies(CONFIG_DIR / "strategies.yml", HIERARCHY)
    reached = {choose_rule(table, profile_reaching(rule)).id for rule in table.rules}
    assert reached == {rule.id for rule in table.rules}


def test_every_position_gets_a_strategy():
    table = load_strategies(CONFIG_DIR / "strategies.yml", HIERARCHY)
    for position in POSITIONS:
        assert choose_rule(table, segment(position=position)).id


def test_first_matching_rule_wins():
    table = load_strategies(CONFIG_DIR / "strategies.yml", HIERARCHY)
    # Mostly gone, valuable and returning a lot: the win-back rule comes first.
    assert choose_rule(table, segment(value_tier="high", high_churn=0.8, returns=0.5)).id == "win_back_valuable"
    assert choose_rule(table, segment(value_tier="low", high_churn=0.8)).id == "reactivate_hibernating"
    assert choose_rule(table, segment(position="Loyal Regulars", returns=0.5)).id == "reduce_returns"
    assert choose_rule(table, segment(position="Steady Shoppers", top="Kids Clothing")).id == "family_back_to_school"
    assert choose_rule(table, segment(position="Steady Shoppers")).id == "standard_newsletter"


def test_rule_after_the_catch_all_is_unreachable():
    data = copy.deepcopy(SHIPPED)
    data["rules"].append({**data["rules"][0], "id": "too_late", "when": {"value_tier": ["high"]}})
    with pytest.raises(ConfigError, match=r"strategies.yml: key 'rules\[10\]': rule 'too_late' can never be "
                                          r"reached: rules\[9\] \('standard_newsletter'\) matches every segment"):
        parse_strategies(data, "strategies.yml", HIERARCHY)


def test_rule_with_the_same_conditions_as_an_earlier_one_is_unreachable():
    data = copy.deepcopy(SHIPPED)
    data["rules"].insert(1, {**data["rules"][0], "id": "copy_of_win_back"})
    with pytest.raises(ConfigError, match=r"rule 'copy_of_win_back' can never be reached: rules\[0\]"):
        parse_strategies(data, "strategies.yml", HIERARCHY)


def test_missing_catch_all_is_an_error():
    data = copy.deepcopy(SHIPPED)
    data["rules"].pop()
    with pytest.raises(ConfigError, match=r"key 'rules': the last rule must have an empty `when: \{\}`"):
        parse_strategies(data, "strategies.yml", HIERARCHY)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["rules"][0]["when"].update(position=["VIP Champs"]), r"rules\[0\]\.when\.position\[0\].*'VIP Champs'"),
    (lambda d: d["rules"][0]["when"].update(top_department=["Garden"]), r"'Garden' is not a merchandise department"),
    # Lifecycle is no longer a position: a rule asks for churn risk instead.
    (lambda d: d["rules"][0]["when"].update(position=["At-Risk"]), r"position\[0\]'.*'At-Risk' is not allowed"),
    (lambda d: d["rules"][0]["when"].update(high_churn_share_at_least=1.5),
     r"high_churn_share_at_least'.*above the maximum 1.0"),
    (lambda d: d["rules"][0].update(chanel=["email"]), r"rules\[0\]\.chanel'.*did you mean 'channel'"),
    (lambda d: d["rules"][1].update(id="win_back_valuable"), r"'win_back_valuable' is also the id of rules\[0\]"),
    (lambda d: d["cross_sell"].update(max_lift=-1), r"cross_sell\.max_lift'.*below the minimum"),
])
def test_bad_strategy_table_names_the_key(change, message):
    data = copy.deepcopy(SHIPPED)
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_strategies(data, "strategies.yml", HIERARCHY)


def test_cross_sell_suggests_popular_under_bought_departments():
    cfg = CrossSell(max_categories=2, min_lift=0.15, max_lift=0.9, min_population_share=0.05)
    lift = {"Home": 0.5, "Kids Clothing": 0.2, "Xmas Shop": 0.1, "Ladies Clothing": 2.0}
    population = {"Home": 0.2, "Kids Clothing": 0.3, "Xmas Shop": 0.01, "Ladies Clothing": 0.49}
    # Xmas Shop is too niche, Ladies Clothing over-bought already: Kids Clothing then Home.
    assert cross_sell(lift, population, exclude=[], cfg=cfg) == ["Kids Clothing", "Home"]
    assert cross_sell(lift, population, exclude=["Kids Clothing"], cfg=cfg) == ["Home"]


@pytest.mark.parametrize("rule_when, reason", [
    ({"value_tier": ["high"], "high_churn_share_at_least": 0.8},
     r"rules\[0\] \('win_back_valuable'\) matches every segment"),
    ({"position": ["Occasional Bargain Hunters"], "value_tier": ["high"]},
     r"no position among \['Occasional Bargain Hunters'\] has a value tier"),
])
def test_rules_that_can_never_fire_are_refused(rule_when, reason):
    """Covered by an earlier rule, or asking for a profile the naming rules never produce."""
    data = copy.deepcopy(SHIPPED)
    data["rules"].insert(1, {"id": "never", "when": rule_when, "channel": ["email"], "offer": "o", "tone": "t",
                             "timing": "w"})
    with pytest.raises(ConfigError, match=r"(?s)rule 'never' can never be reached: .*" + reason):
        parse_strategies(data, "strategies.yml", HIERARCHY)


def test_a_rule_needs_a_channel():
    data = copy.deepcopy(SHIPPED)
    data["rules"][0]["channel"] = []
    with pytest.raises(ConfigError, match=r"key 'rules\[0\]\.channel': empty; name at least one channel"):
        parse_strategies(data, "strategies.yml", HIERARCHY)


def test_cross_sell_leaves_out_departments_the_segment_never_touches():
    cfg = CrossSell(max_categories=3, min_lift=0.3, max_lift=0.9, min_population_share=0.0)
    lift = {"Mens Clothing": 0.02, "Home": 0.6}
    assert cross_sell(lift, {"Mens Clothing": 0.4, "Home": 0.2}, exclude=[], cfg=cfg) == ["Home"]
