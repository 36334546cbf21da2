"""Customer personas: who the synthetic customers are and how they shop.

A persona is the generator's ground truth. It decides demographics,
department and class preferences and the spending profile of the customers
drawn from it; it is kept in ``customers.parquet`` for evaluation and
description and never becomes a clustering feature.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.generate_data.settings import BRAND_TIERS, parse_month_day
from core.domain.hierarchy import Hierarchy
from core.framework.schema import Problems, Range, build, check_sums_to_one, read_yaml, spec, suggest


@dataclasses.dataclass(frozen=True)
class Children:
    """The children a customer buys kids' sizes for (their own, or grandchildren)."""

    count: Range = spec(minimum=1, help="[min, max] children per customer")
    age_at_start: Range = spec(help="[min, max] age in years on history_start; they grow over the window")


@dataclasses.dataclass(frozen=True)
class Demographics:
    """Profile fields drawn for each customer of a persona."""

    age_range: Range = spec(help="[min, max] age in years")
    gender: dict[str, float] = spec(help="Female | Male, or a mapping of gender to share summing to 1")
    has_children: bool = spec(help="true or false")
    lifestyle: str = spec(help="a short phrase")
    children: Children | None = spec(None, help="children bought for; without it, kids' sizes are drawn "
                                                "for one child aged 0-14")


@dataclasses.dataclass(frozen=True)
class SpendingProfile:
    """How much and how often a persona's customers buy."""

    avg_order_value: Range = spec(help="[min, max] of a customer's average order value")
    frequency_per_month: Range = spec(help="[min, max] orders per month while active")
    dropout_probability: float | None = spec(None, minimum=0.0, maximum=1.0,
                                             help="mean chance of stopping after a purchase; null = "
                                                  "generate_data.dropout_probability")


@dataclasses.dataclass(frozen=True)
class LifeEvent:
    """A customer of this persona becomes another one (a life event), from that day on."""

    to: str = spec(help="the persona they become")
    yearly_rate: float = spec(minimum=0.0, maximum=1.0,
                              help="chance per year of the event (a constant hazard from the customer's "
                                   "first visit; several events of a persona compete, at most one happens)")
    age_range: Range | None = spec(None, minimum=0.0,
                                   help="[min, max] age on history_start of the customers it can happen to; "
                                        "null = all")


@dataclasses.dataclass(frozen=True)
class Persona:
    """One persona as configured in ``personas.yml``."""

    weight: float = spec(minimum=0.0, maximum=1.0, help="share of customers; all weights sum to 1")
    description: str = spec(help="a sentence describing the persona")
    demographics: Demographics = spec()
    department_preferences: dict[str, float] = spec(minimum=0.0, help="share of order lines per department")
    spending_profile: SpendingProfile = spec()
    class_preferences: dict[str, tuple[str, ...]] = spec({}, help="preferred classes per department "
                                                                    "(class level); other departments are "
                                                                    "department level")
    classes_per_department: dict[str, Range] = spec({}, minimum=1,
                                                    help="[min, max] classes each customer picks in a "
                                                         "department-level department; default "
                                                         "generate_data.classes_per_department")
    exploration_share: float | None = spec(None, minimum=0.0, maximum=1.0,
                                           help="share of lines outside the usual classes; null = "
                                                "generate_data.exploration_share")
    brand_tier_affinity: dict[str, float] = spec({}, minimum=0.0,
                                                 help="share of lines per brand tier, summing to 1; "
                                                      "empty = generate_data.brand_tier_affinity")
    style_affinity: dict[str, float] = spec({}, minimum=0.0,
                                            help="weight per style; empty = generate_data.style_affinity")
    online_share: float | None = spec(None, minimum=0.0, maximum=1.0,
                                      help="mean share of orders online; null = generate_data.channel.online_share")
    household_members: tuple[str, ...] = spec((), help="personas this persona's household customers also shop "
                                                       "for (generate_data.households)")
    life_events: tuple[LifeEvent, ...] = spec((), help="personas its customers may become, with a yearly rate")


@dataclasses.dataclass(frozen=True)
class ClassFocus:
    """Within a scenario, a share of a department's lines goes to named classes."""

    share: float = spec(minimum=0.0, maximum=1.0, help="share of the department's lines")
    classes: tuple[str, ...] = spec(help="sellable classes of the department")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Time-bounded behaviour of some personas, every year between ``start`` and ``end``."""

    description: str = spec(help="a sentence")
    personas: tuple[str, ...] = spec(help="personas it applies to")
    start: str = spec(help="first day, MM-DD")
    end: str = spec(help="last day, MM-DD (before start: the window runs over New Year)")
    visit_multiplier: float = spec(1.0, minimum=0.0, help="visit rate multiplier inside the window")
    basket_multiplier: float = spec(1.0, exclusive_minimum=0.0, help="mean lines per order multiplier")
    department_boost: dict[str, float] = spec({}, minimum=0.0,
                                              help="multiplies a department's share of lines (then "
                                                   "shares are renormalised)")
    class_focus: dict[str, ClassFocus] = spec({}, help="per department, a share of lines to named classes")
    style_boost: dict[str, float] = spec({}, minimum=0.0, help="multiplies a style's weight")
    discount_share: float = spec(0.0, minimum=0.0, maximum=1.0, help="share of lines discounted (a sale)")
    discount_depth: Range = spec((0.0, 0.0), maximum=1.0, help="[min, max] sale discount")

    def days(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((start month, day), (end month, day))``."""
        return parse_month_day(self.start), parse_month_day(self.end)


@dataclasses.dataclass(frozen=True)
class _PersonasFile:
    personas: dict[str, Persona]
    scenarios: dict[str, Scenario] = spec({}, help="time-bounded behaviour attached to personas")


def parse_personas(data: object, source: str, hierarchy: Hierarchy) -> dict[str, Persona]:
    """Validate the parsed YAML of a personas file; return its personas (see :func:`parse_persona_file`)."""
    return parse_persona_file(data, source, hierarchy)[0]


def parse_persona_file(data: object, source: str,
                       hierarchy: Hierarchy) -> tuple[dict[str, Persona], dict[str, Scenario]]:
    """Validate the parsed YAML of a personas file against ``hierarchy``.

    Checks, besides types and unknown keys: persona weights sum to 1, each
    persona's department preferences sum to 1 and name merchandise
    departments of the hierarchy, each preferred class belongs to its
    department, ranges are ``[min, max]`` with non-negative ends, and each
    scenario names known personas, departments and classes and valid days.

    Raises
    ------
    ConfigError
        Naming ``source`` and the key of every problem found.
    """
    problems = Problems(source)
    parsed = build(_PersonasFile, _normalise_gender(data), problems)
    if parsed is not None:
        if not parsed.personas:
            problems.add("personas", "no personas; define at least one")
        check_sums_to_one({k: p.weight for k, p in parsed.personas.items()}, problems,
                          "personas.*.weight")
        for name, persona in parsed.personas.items():
            _check_persona(name, persona, hierarchy, problems)
            for member in persona.household_members:
                if member not in parsed.personas:
                    problems.add(f"personas.{name}.household_members",
                                 f"persona '{member}' is not defined{suggest(member, list(parsed.personas))}; "
                                 f"defined: {', '.join(parsed.personas)}")
                elif member == name:
                    problems.add(f"personas.{name}.household_members",
                                 f"'{name}' names itself; list the other personas of the household")
            _check_life_events(name, persona, list(parsed.personas), problems)
        for name, scenario in parsed.scenarios.items():
            _check_scenario(name, scenario, list(parsed.personas), hierarchy, problems)
    problems.raise_if_any()
    return dict(parsed.personas), dict(parsed.scenarios)


def _check_scenario(name: str, scenario: Scenario, personas: list[str], hierarchy: Hierarchy,
                    problems: Problems) -> None:
    key = f"scenarios.{name}"
    merchandise = hierarchy.merchandise_departments
    if not scenario.personas:
        problems.add(f"{key}.personas", "empty; name the personas the scenario applies to")
    for persona in scenario.personas:
        if persona not in personas:
            problems.add(f"{key}.personas", f"persona '{persona}' is not defined{suggest(persona, personas)}; "
                                            f"defined: {', '.join(personas)}")
    for field in ("start", "end"):
        if parse_month_day(getattr(scenario, field)) is None:
            problems.add(f"{key}.{field}", f"{getattr(scenario, field)!r} is not a day of the year; "
                                           f"write MM-DD, e.g. 11-15")
    for field in ("department_boost", "class_focus"):
        for dept in getattr(scenario, field):
            if dept not in merchandise:
                problems.add(f"{key}.{field}.{dept}", f"department '{dept}' is not a merchandise department"
                                                      f"{suggest(dept, merchandise)}; allowed: {', '.join(merchandise)}")
    for dept, focus in scenario.class_focus.items():
        if dept not in merchandise:
            continue
        sellable = list(hierarchy.departments[dept].classes)
        if not focus.classes:
            problems.add(f"{key}.class_focus.{dept}.classes", "empty; name at least one class")
        for cls in focus.classes:
            if cls not in sellable:
                problems.add(f"{key}.class_focus.{dept}.classes",
                             f"class '{cls}' is not a sellable class of '{dept}'{suggest(cls, sellable)}")
    low, high = scenario.discount_depth
    if scenario.discount_share > 0 and high <= 0:
        problems.add(f"{key}.discount_depth", "is [0, 0] while discount_share > 0; give the sale's "
                                              "[min, max] discount, e.g. [0.2, 0.5]")
    effects = (scenario.visit_multiplier != 1.0 or scenario.basket_multiplier != 1.0
               or scenario.department_boost or scenario.class_focus or scenario.style_boost
               or scenario.discount_share > 0)
    if not effects:
        problems.add(key, "changes nothing; set at least one of visit_multiplier, basket_multiplier, "
                          "department_boost, class_focus, style_boost, discount_share")


def _check_life_events(name: str, persona: Persona, personas: list[str], problems: Problems) -> None:
    seen: set[str] = set()
    for i, event in enumerate(persona.life_events):
        key = f"personas.{name}.life_events[{i}]"
        if event.to not in personas:
            problems.add(f"{key}.to", f"persona '{event.to}' is not defined{suggest(event.to, personas)}; "
                                      f"defined: {', '.join(personas)}")
        elif event.to == name:
            problems.add(f"{key}.to", f"'{name}' cannot become itself; name another persona")
        if event.to in seen:
            problems.add(f"{key}.to", f"'{event.to}' is listed twice; give one rate per persona")
        seen.add(event.to)
        if event.age_range is not None and event.age_range[0] > event.age_range[1]:
            problems.add(f"{key}.age_range", f"{list(event.age_range)}: min is above max")
    total = sum(e.yearly_rate for e in persona.life_events)
    if total > 1:
        problems.add(f"personas.{name}.life_events", f"yearly rates sum to {total:g}; they compete for one "
                                                     f"event a customer, so keep their sum at most 1")


def _normalise_gender(data: object) -> object:
    """Accept ``gender: Female`` as shorthand for ``gender: {Female: 1.0}``."""
    if not isinstance(data, dict) or not isinstance(data.get("personas"), dict):
        return data
    personas = {}
    for name, persona in data["personas"].items():
        if isinstance(persona, dict) and isinstance(persona.get("demographics"), dict):
            demo = dict(persona["demographics"])
            if isinstance(demo.get("gender"), str):
                demo["gender"] = {demo["gender"]: 1.0}
            persona = {**persona, "demographics": demo}
        personas[name] = persona
    return {**data, "personas": personas}


def _check_persona(name: str, persona: Persona, hierarchy: Hierarchy, problems: Problems) -> None:
    key = f"personas.{name}"
    merchandise = hierarchy.merchandise_departments
    check_sums_to_one(persona.demographics.gender, problems, f"{key}.demographics.gender")
    check_sums_to_one(persona.department_preferences, problems, f"{key}.department_preferences")
    for dept in persona.department_preferences:
        if dept not in hierarchy.departments:
            problems.add(f"{key}.department_preferences.{dept}",
                         f"department '{dept}' is not in the hierarchy{suggest(dept, merchandise)}; "
                         f"allowed: {', '.join(merchandise)}")
        elif dept not in merchandise:
            problems.add(f"{key}.department_preferences.{dept}",
                         f"department '{dept}' is of kind '{hierarchy.departments[dept].kind}', "
                         f"not merchandise; customers do not choose it")
    for dept, classes in persona.class_preferences.items():
        ckey = f"{key}.class_preferences.{dept}"
        if dept not in persona.department_preferences:
            problems.add(ckey, f"department '{dept}' has class preferences but no share in "
                               f"department_preferences; add it there or remove these classes")
            continue
        if dept not in hierarchy.departments:
            continue  # already reported under department_preferences
        sellable = list(hierarchy.departments[dept].classes)
        if not classes:
            problems.add(ckey, "empty list; name at least one class or remove the department")
        for cls in classes:
            if cls not in sellable:
                problems.add(ckey, f"class '{cls}' is not a sellable class of '{dept}'"
                                   f"{suggest(cls, sellable)}; allowed: {', '.join(sellable)}")
    for dept in persona.classes_per_department:
        if dept not in persona.department_preferences:
            problems.add(f"{key}.classes_per_department.{dept}",
                         f"department '{dept}' has no share in department_preferences")
        elif dept in persona.class_preferences:
            problems.add(f"{key}.classes_per_department.{dept}",
                         f"department '{dept}' lists its classes in class_preferences; a department is "
                         f"either class level or department level, not both")
    if persona.brand_tier_affinity:
        unknown = sorted(set(persona.brand_tier_affinity) - set(BRAND_TIERS))
        if unknown:
            problems.add(f"{key}.brand_tier_affinity", f"unknown tier(s) {', '.join(unknown)}; "
                                                       f"allowed: {', '.join(BRAND_TIERS)}")
        check_sums_to_one(persona.brand_tier_affinity, problems, f"{key}.brand_tier_affinity")
    children = persona.demographics.children
    if children is not None and children.age_at_start[1] > 17:
        problems.add(f"{key}.demographics.children.age_at_start",
                     f"{list(children.age_at_start)}: children older than 17 do not wear kids' sizes")


def load_personas(path: Path, hierarchy: Hierarchy) -> dict[str, Persona]:
    """Read and validate a personas YAML file; return its personas."""
    return load_persona_file(path, hierarchy)[0]


def load_persona_file(path: Path, hierarchy: Hierarchy) -> tuple[dict[str, Persona], dict[str, Scenario]]:
    """Read and validate a personas YAML file; return its personas and scenarios."""
    path = Path(path)
    return parse_persona_file(read_yaml(path), str(path), hierarchy)
