"""The product hierarchy: departments, their kind and their classes.

``config/hierarchy.yml`` is generated from the reference table by
``scripts/build_hierarchy.py``. A department's *kind* tells merchandise from the
lines a retailer's till also records (bag levy, gift cards, charity,
concessions, goods not for resale, dummy departments), so features can be
built on merchandise only.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from core.framework.schema import Problems, build, read_yaml, spec

DEPARTMENT_KINDS = ("merchandise", "bag_levy", "gift_card", "charity", "not_for_resale",
                    "concession", "data_quality")


@dataclasses.dataclass(frozen=True)
class Department:
    """One department of the hierarchy."""

    kind: str = spec(choices=DEPARTMENT_KINDS, help="what the department's lines are")
    classes: tuple[str, ...] = spec(help="sellable classes")
    data_quality_classes: tuple[str, ...] = spec((), help="DUMMY, UNASSIGNED and Unknown classes")


@dataclasses.dataclass(frozen=True)
class _HierarchyFile:
    departments: dict[str, Department]


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """Departments in file order, by name.

    Attributes
    ----------
    departments : dict of str to Department
    """

    departments: dict[str, Department]

    @property
    def merchandise_departments(self) -> list[str]:
        """Names of the departments whose lines are goods sold to customers."""
        return [name for name, d in self.departments.items() if d.kind == "merchandise"]

    def n_classes(self) -> int:
        """All classes, sellable and data-quality."""
        return sum(len(d.classes) + len(d.data_quality_classes) for d in self.departments.values())

    def to_dict(self) -> dict:
        """Plain mapping, as in the YAML file (used for config hashing)."""
        return {name: dataclasses.asdict(d) for name, d in self.departments.items()}


def slug(name: str) -> str:
    """Lower-case identifier for a department or class name: ``Health & Beauty`` -> ``health_beauty``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def parse_hierarchy(data: object, source: str) -> Hierarchy:
    """Validate the parsed YAML of a hierarchy file.

    Raises
    ------
    ConfigError
        Naming ``source`` and the key of every problem found.
    """
    problems = Problems(source)
    parsed = build(_HierarchyFile, data, problems)
    if parsed is not None:
        if not parsed.departments:
            problems.add("departments", "no departments; list at least one")
        dept_slugs: dict[str, str] = {}
        for name, dept in parsed.departments.items():
            key = f"departments.{name}"
            other = dept_slugs.setdefault(slug(name), name)
            if other != name:
                problems.add(key, f"its column name '{slug(name)}' clashes with department '{other}'")
            if not dept.classes:
                problems.add(f"{key}.classes", "empty; a department needs at least one sellable class")
            all_classes = list(dept.classes) + list(dept.data_quality_classes)
            class_slugs: dict[str, str] = {}
            for cls in all_classes:
                first = class_slugs.setdefault(slug(cls), cls)
                if first != cls or all_classes.count(cls) > 1:
                    problems.add(f"{key}.classes", f"class '{cls}' is listed twice or clashes with "
                                                   f"'{first}' once written as a column name")
    problems.raise_if_any()
    return Hierarchy(departments=parsed.departments)


def load_hierarchy(path: Path) -> Hierarchy:
    """Read and validate a hierarchy YAML file."""
    path = Path(path)
    data = read_yaml(path)
    return parse_hierarchy(data, str(path))


