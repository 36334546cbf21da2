"""Customer personas: who the synthetic customers are and how they shop.

A persona is the generator's ground truth. It decides demographics,
department and class preferences and the spending profile of the customers
drawn from it; it is kept in ``customers.parquet`` for evaluation and
description and never becomes a clustering feature.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.hierarchy import Hierarchy
from core.schema import Problems, Range, build, check_sums_to_one, read_yaml, spec, suggest


@dataclasses.dataclass(frozen=True)
class Demographics:
    """Profile fields drawn for each customer of a persona."""

    age_range: Range = spec(help="[min, max] age in years")
    gender: dict[str, float] = spec(help="Female | Male, or a mapping of gender to share summing to 1")
    has_children: bool = spec(help="true or false")
    lifestyle: str = spec(help="a short phrase")


@dataclasses.dataclass(frozen=True)
class SpendingProfile:
    """How much and how often a persona's customers buy."""

    avg_order_value: Range = spec(help="[min, max] of a customer's average order value")
    frequency_per_month: Range = spec(help="[min, max] orders per month while active")


@dataclasses.dataclass(frozen=True)
class Persona:
    """One persona as configured in ``personas.yml``."""

    weight: float = spec(minimum=0.0, maximum=1.0, help="share of customers; all weights sum to 1")
    description: str = spec(help="a sentence describing the persona")
    demographics: Demographics = spec()
    department_preferences: dict[str, float] = spec(minimum=0.0, help="share of order lines per department")
    spending_profile: SpendingProfile = spec()
    class_preferences: dict[str, tuple[str, ...]] = spec({}, help="preferred classes per department")


@dataclasses.dataclass(frozen=True)
class _PersonasFile:
    personas: dict[str, Persona]


def parse_personas(data: object, source: str, hierarchy: Hierarchy) -> dict[str, Persona]:
    """Validate the parsed YAML of a personas file against ``hierarchy``.

    Checks, besides types and unknown keys: persona weights sum to 1, each
    persona's department preferences sum to 1 and name merchandise
    departments of the hierarchy, each preferred class belongs to its
    department, and ranges are ``[min, max]`` with non-negative ends.

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
    problems.raise_if_any()
    return dict(parsed.personas)


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


def load_personas(path: Path, hierarchy: Hierarchy) -> dict[str, Persona]:
    """Read and validate a personas YAML file."""
    path = Path(path)
    return parse_personas(read_yaml(path), str(path), hierarchy)
