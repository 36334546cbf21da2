"""Interaction strategies: a rule table in ``config/strategies.yml`` matched against segment profiles.

Rules are tried in order and the first whose ``when`` conditions all hold
gives the segment its channel, offer, tone, timing and retention actions;
the last rule must have an empty ``when`` so every segment gets one. A rule
that can never be reached (after the catch-all, or with the same conditions
as an earlier rule) is a configuration error. Cross-sell categories come
from lift: popular departments the segment buys less of than the average
customer.

Rules match segments, not customers. A rule can ask for churn risk through
``high_churn_share_at_least`` (the share of the segment's customers whose
``churn_risk`` is ``high``), so a retention playbook reaches the segments
most of whose customers are probably gone; within any segment,
``customers_with_segments.parquet`` carries each customer's ``churn_risk``
to narrow a campaign to those who need it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from core.domain.hierarchy import Hierarchy
from core.framework.schema import Problems, build, read_yaml, spec, suggest

# Kind-of-shopper positions a segment can take (see core.profile_export.profiling.position_name). Lifecycle
# state is not a position: it is each customer's churn_risk (high_churn_share_at_least below).
POSITIONS = ("VIP Champions", "Big-Basket Spenders", "Loyal Regulars", "Steady Shoppers", "Promising Newcomers",
             "Occasional Bargain Hunters")
VALUE_TIERS = ("low", "mid", "high")


@dataclasses.dataclass(frozen=True)
class Conditions:
    """When a rule applies; every condition given must hold, none given matches everything."""

    position: tuple[str, ...] = spec((), choices=POSITIONS, help="the segment's position is one of these")
    value_tier: tuple[str, ...] = spec((), choices=VALUE_TIERS, help="the segment's value tier is one of these")
    top_department: tuple[str, ...] = spec((), help="the segment's first department by spend is one of these")
    lapsed_share_at_least: float | None = spec(None, minimum=0.0, maximum=1.0,
                                               help="share of the segment's customers who have lapsed")
    return_rate_at_least: float | None = spec(None, minimum=0.0, maximum=1.0,
                                              help="mean share of spend returned")
    high_churn_share_at_least: float | None = spec(None, minimum=0.0, maximum=1.0,
                                                   help="share of the segment's customers at high churn risk "
                                                        "(churn_risk high); never holds when customer value was "
                                                        "not estimated")

    def is_empty(self) -> bool:
        """True when the rule matches every segment."""
        return self == Conditions()


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of the strategy table."""

    id: str = spec(help="unique rule name, shown with the strategy")
    when: Conditions = spec(help="conditions on the segment profile")
    channel: tuple[str, ...] = spec(help="channels to reach the segment, best first")
    offer: str = spec(help="what to offer")
    tone: str = spec(help="how to speak to them")
    timing: str = spec(help="when and how often")
    retention_actions: tuple[str, ...] = spec((), help="actions to keep or win back customers")


@dataclasses.dataclass(frozen=True)
class CrossSell:
    """How cross-sell categories are picked from lift."""

    max_categories: int = spec(minimum=0, help="departments suggested per segment")
    min_lift: float = spec(minimum=0.0, help="...and at or above this lift: they already buy there a little "
                                             "(a department they never touch is not their kind of shop)")
    max_lift: float = spec(minimum=0.0, help="suggest departments the segment buys below this lift...")
    min_population_share: float = spec(minimum=0.0, maximum=1.0,
                                       help="only departments holding at least this share of all spend")


@dataclasses.dataclass(frozen=True)
class StrategyTable:
    """The validated contents of ``strategies.yml``."""

    cross_sell: CrossSell = spec()
    rules: tuple[Rule, ...] = spec()


def parse_strategies(data: object, source: str, hierarchy: Hierarchy) -> StrategyTable:
    """Validate the parsed YAML of a strategies file.

    Raises
    ------
    ConfigError
        Naming ``source`` and the key of every problem: unknown keys, bad
        values, departments not in the hierarchy, duplicate rule ids, a
        missing final catch-all rule, or a rule that can never be reached.
    """
    problems = Problems(source)
    table = build(StrategyTable, data, problems)
    if table is not None:
        merchandise = hierarchy.merchandise_departments
        seen: dict[str, int] = {}
        for i, rule in enumerate(table.rules):
            key = f"rules[{i}]"
            if rule.id in seen:
                problems.add(f"{key}.id", f"'{rule.id}' is also the id of rules[{seen[rule.id]}]; ids must be unique")
            seen.setdefault(rule.id, i)
            for dept in rule.when.top_department:
                if dept not in merchandise:
                    problems.add(f"{key}.when.top_department", f"'{dept}' is not a merchandise department"
                                                               f"{suggest(dept, merchandise)}")
            if not rule.channel:
                problems.add(f"{key}.channel", "empty; name at least one channel, e.g. [email]")
            impossible = _impossible(rule.when)
            if impossible:
                problems.add(f"{key}.when", f"rule '{rule.id}' can never be reached: {impossible}")
            for j, earlier in enumerate(table.rules[:i]):
                if covers(earlier.when, rule.when):
                    problems.add(key, f"rule '{rule.id}' can never be reached: rules[{j}] ('{earlier.id}') "
                                      f"matches every segment it would; move it earlier or change its conditions")
                    break
        if not table.rules or not table.rules[-1].when.is_empty():
            problems.add("rules", "the last rule must have an empty `when: {}` so every segment gets a strategy")
    problems.raise_if_any()
    return table


# The value tier each position implies (core.profile_export.profiling.position_name).
POSITION_TIERS = {"VIP Champions": {"high"}, "Big-Basket Spenders": {"high"}, "Loyal Regulars": {"mid"},
                  "Steady Shoppers": {"mid"}, "Promising Newcomers": {"low"}, "Occasional Bargain Hunters": {"low"}}


def covers(earlier: Conditions, later: Conditions) -> bool:
    """Whether every segment ``later`` matches is matched by ``earlier`` (so ``later`` never fires after it)."""
    for name in ("position", "value_tier", "top_department"):
        first, second = getattr(earlier, name), getattr(later, name)
        if first and (not second or not set(second) <= set(first)):
            return False
    for name in ("lapsed_share_at_least", "return_rate_at_least", "high_churn_share_at_least"):
        first, second = getattr(earlier, name), getattr(later, name)
        if first is not None and (second is None or second < first):
            return False
    return True


def _impossible(when: Conditions) -> str:
    """Why no segment can meet ``when`` ('' when some can)."""
    positions = set(when.position) or set(POSITIONS)
    tiers = set(when.value_tier) or set(VALUE_TIERS)
    if not any(POSITION_TIERS[p] & tiers for p in positions):
        return (f"no position among {sorted(positions)} has a value tier among {sorted(tiers)} "
                f"(VIP Champions and Big-Basket Spenders are high, Loyal Regulars and Steady Shoppers mid, "
                f"the others low)")
    return ""


def load_strategies(path: Path, hierarchy: Hierarchy) -> StrategyTable:
    """Read and validate a strategies YAML file."""
    path = Path(path)
    return parse_strategies(read_yaml(path), str(path), hierarchy)


def matches(conditions: Conditions, profile: dict[str, Any]) -> bool:
    """Whether a segment profile meets every condition given."""
    top = profile["top_departments"][0]["department"] if profile.get("top_departments") else None
    return ((not conditions.position or profile["position"] in conditions.position)
            and (not conditions.value_tier or profile["value_tier"] in conditions.value_tier)
            and (not conditions.top_department or top in conditions.top_department)
            and (conditions.lapsed_share_at_least is None
                 or profile["lapsed_share"] >= conditions.lapsed_share_at_least)
            and (conditions.return_rate_at_least is None
                 or profile["return_rate"] >= conditions.return_rate_at_least)
            and (conditions.high_churn_share_at_least is None
                 or (_high_churn_share(profile) is not None
                     and _high_churn_share(profile) >= conditions.high_churn_share_at_least)))


def _high_churn_share(profile: dict[str, Any]) -> float | None:
    """The share of a profile's customers at high churn risk; None when customer value was not estimated."""
    shares = (profile.get("customer_value") or {}).get("churn_risk_share")
    return None if shares is None else shares["high"]


def choose_rule(table: StrategyTable, profile: dict[str, Any]) -> Rule:
    """The first rule whose conditions the profile meets (the catch-all at worst)."""
    return next(rule for rule in table.rules if matches(rule.when, profile))


def cross_sell(department_lift: dict[str, float], population_share: dict[str, float],
               exclude: list[str], cfg: CrossSell) -> list[str]:
    """Popular departments the segment buys a little but less than average, most popular first.

    Parameters
    ----------
    department_lift : dict
        The segment's lift per department (its spend share over the population's).
    population_share : dict
        Each department's share of all customers' spend.
    exclude : list of str
        Departments not to suggest (the segment's own top departments).
    """
    candidates = [d for d, share in population_share.items()
                  if share >= cfg.min_population_share and cfg.min_lift <= department_lift.get(d, 0.0) < cfg.max_lift
                  and d not in exclude]
    candidates.sort(key=lambda d: (-population_share[d], d))
    return candidates[:cfg.max_categories]


def strategy_for(table: StrategyTable, profile: dict[str, Any], department_lift: dict[str, float],
                 population_share: dict[str, float], catch_all: bool = False) -> dict[str, Any]:
    """The strategy block of a segment's export (``catch_all``: the last rule, for customers in no segment)."""
    rule = table.rules[-1] if catch_all else choose_rule(table, profile)
    top = [t["department"] for t in profile.get("top_departments", [])]
    return {
        "rule": rule.id,
        "channel": list(rule.channel),
        "offer": rule.offer,
        "tone": rule.tone,
        "timing": rule.timing,
        "cross_sell": cross_sell(department_lift, population_share, top, table.cross_sell),
        "retention_actions": list(rule.retention_actions),
    }
