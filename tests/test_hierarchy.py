"""Unit tests for the product hierarchy: the table parser, the YAML builder and its validation."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from core.framework import paths
from core.domain.hierarchy import parse_hierarchy, slug
from core.framework.schema import ConfigError

TABLE = paths.REPO_ROOT / "docs" / "product_hierarchy_table.md"
HIERARCHY_YML = paths.REPO_ROOT / "config" / "hierarchy.yml"


def _load_build_hierarchy_script():
    """Import scripts/build_hierarchy.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "build_hierarchy", paths.REPO_ROOT / "scripts" / "build_hierarchy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bh = _load_build_hierarchy_script()


def table(*rows: tuple[str, str]) -> str:
    """A tiny markdown hierarchy table: header, separator, then one row per (department, cell)."""
    lines = ["# Tiny hierarchy", "", "| # | Department Name | Department Class Name |", "|---|---|---|"]
    lines += [f"| {n} | {dept} | {cell} |" for n, (dept, cell) in enumerate(rows, start=1)]
    return "\n".join(lines) + "\n"


FIRST_ROW_LINE = 5  # line number of the first row written by table()


# --- the shipped table ---------------------------------------------------------------------------

def test_shipped_table_has_21_departments_and_394_classes():
    """docs/product_hierarchy_table.md parses to 21 departments holding 394 classes."""
    departments = bh.parse_hierarchy_table(TABLE.read_text(encoding="utf-8"), str(TABLE))

    assert len(departments) == 21
    assert sum(len(classes) for classes in departments.values()) == 394


def test_built_hierarchy_matches_shipped_yaml():
    """config/hierarchy.yml is exactly what build_hierarchy makes of the table (no drift)."""
    built = bh.build_hierarchy(bh.parse_hierarchy_table(TABLE.read_text(encoding="utf-8"), str(TABLE)))
    shipped = yaml.safe_load(HIERARCHY_YML.read_text(encoding="utf-8"))

    assert built == shipped
    # dict equality ignores order; the YAML keeps the table's department order too.
    assert list(built["departments"]) == list(shipped["departments"])


def test_built_hierarchy_passes_validation():
    """The builder's output is a valid hierarchy: 14 merchandise departments, 394 classes."""
    built = bh.build_hierarchy(bh.parse_hierarchy_table(TABLE.read_text(encoding="utf-8"), str(TABLE)))
    hierarchy = parse_hierarchy(built, "built")

    assert len(hierarchy.merchandise_departments) == 14
    assert hierarchy.n_classes() == 394


def test_shipped_in_store_charity_keeps_its_only_class():
    """In-Store Charity's single (placeholder) class stays sellable, so the department is usable."""
    built = bh.build_hierarchy(bh.parse_hierarchy_table(TABLE.read_text(encoding="utf-8"), str(TABLE)))

    assert built["departments"]["In-Store Charity"] == {
        "kind": "charity", "classes": ["UNASSIGNED D33"], "data_quality_classes": []}


# --- build_hierarchy on tiny inputs --------------------------------------------------------------

def test_department_of_only_placeholders_keeps_them_as_classes():
    """A department whose every class is a placeholder keeps them as sellable classes."""
    built = bh.build_hierarchy([("In-Store Charity", "UNASSIGNED D33")])

    assert built == {"departments": {"In-Store Charity": {
        "kind": "charity", "classes": ["UNASSIGNED D33"], "data_quality_classes": []}}}


def test_data_quality_classes_are_split_out_of_merchandise():
    """DUMMY, UNASSIGNED Dn, UNASSIGNED and Unknown move to data_quality_classes; order is kept."""
    rows = [("Home", "Cushions"), ("Home", "DUMMY"), ("Home", "UNASSIGNED D11"),
            ("Home", "Candles"), ("Home", "Unknown"), ("Home", "UNASSIGNED"),
            ("Home", "Unknown Pleasures")]

    home = bh.build_hierarchy(rows)["departments"]["Home"]

    assert home == {"kind": "merchandise",
                    "classes": ["Cushions", "Candles", "Unknown Pleasures"],
                    "data_quality_classes": ["DUMMY", "UNASSIGNED D11", "Unknown", "UNASSIGNED"]}


def test_department_kinds_come_from_the_known_list():
    """Named non-merchandise departments get their kind; any other department is merchandise."""
    built = bh.build_hierarchy([("Gift Cards", "Gift Cards"), ("Bag Levy", "Paper Bags"),
                                ("Garden", "Pots")])

    kinds = {name: d["kind"] for name, d in built["departments"].items()}
    assert kinds == {"Gift Cards": "gift_card", "Bag Levy": "bag_levy", "Garden": "merchandise"}


def test_build_hierarchy_rejects_duplicate_pairs():
    """The same (department, class) pair twice is an error, naming both."""
    with pytest.raises(bh.HierarchyTableError, match="duplicate class 'Pots' in department 'Garden'"):
        bh.build_hierarchy([("Garden", "Pots"), ("Garden", "Pots")])


# --- parse_hierarchy_table on tiny inputs --------------------------------------------------------

def test_table_rows_are_grouped_in_order_and_other_lines_ignored():
    """Rows are grouped by department in table order; headers and prose are skipped."""
    text = table(("Garden", "Garden:Pots"), ("Home", "Home:Candles"), ("Garden", "Garden:Seeds"))

    assert bh.parse_hierarchy_table(text, "tiny.md") == {"Garden": ["Pots", "Seeds"],
                                                        "Home": ["Candles"]}


def test_class_prefix_must_match_department():
    """A row whose class is prefixed with another department fails, naming the file and line."""
    text = table(("Home", "Home:Cushions"), ("Home", "Homeware:Candles"))

    with pytest.raises(bh.HierarchyTableError,
                       match=re.escape(f"tiny.md, line {FIRST_ROW_LINE + 1}: class 'Homeware:Candles'")
                       + ".*" + re.escape("prefix 'Home:'")):
        bh.parse_hierarchy_table(text, "tiny.md")


def test_duplicated_class_in_table_names_both_lines():
    """A class listed twice in its department fails, naming the repeat's line and the first one."""
    text = table(("Home", "Home:Candles"), ("Home", "Home:Cushions"), ("Home", "Home:Candles"))

    with pytest.raises(bh.HierarchyTableError, match=re.escape(
            f"tiny.md, line {FIRST_ROW_LINE + 2}: duplicate class 'Candles' in department 'Home' "
            f"(first seen on line {FIRST_ROW_LINE})")):
        bh.parse_hierarchy_table(text, "tiny.md")


def test_empty_class_name_is_rejected():
    """'Home:' with nothing after the prefix fails, naming the line."""
    with pytest.raises(bh.HierarchyTableError,
                       match=re.escape(f"tiny.md, line {FIRST_ROW_LINE}: empty class name")):
        bh.parse_hierarchy_table(table(("Home", "Home:")), "tiny.md")


def test_table_without_rows_is_rejected():
    """A file with no hierarchy rows fails rather than producing an empty hierarchy."""
    with pytest.raises(bh.HierarchyTableError, match=re.escape("tiny.md: no hierarchy rows")):
        bh.parse_hierarchy_table(table(), "tiny.md")


# --- parse_hierarchy (validation of hierarchy.yml) -----------------------------------------------

def test_parse_hierarchy_accepts_a_tiny_hierarchy():
    """A valid two-department mapping parses; kinds, classes and counts come through."""
    hierarchy = parse_hierarchy({"departments": {
        "Home": {"kind": "merchandise", "classes": ["Candles"], "data_quality_classes": ["DUMMY"]},
        "Gift Cards": {"kind": "gift_card", "classes": ["Gift Cards"]},
    }}, "tiny.yml")

    assert hierarchy.merchandise_departments == ["Home"]
    assert hierarchy.n_classes() == 3
    assert hierarchy.departments["Gift Cards"].data_quality_classes == ()


def test_parse_hierarchy_rejects_unknown_kind():
    """A kind outside DEPARTMENT_KINDS is rejected with the value and the allowed kinds."""
    data = {"departments": {"Home": {"kind": "furniture", "classes": ["Candles"]}}}

    with pytest.raises(ConfigError, match=re.escape(
            "tiny.yml: key 'departments.Home.kind': 'furniture' is not allowed; "
            "allowed values: merchandise, bag_levy, gift_card")):
        parse_hierarchy(data, "tiny.yml")


def test_parse_hierarchy_rejects_department_without_classes():
    """A department with an empty class list is rejected: it needs one sellable class."""
    data = {"departments": {"Home": {"kind": "merchandise", "classes": [],
                                     "data_quality_classes": ["DUMMY"]}}}

    with pytest.raises(ConfigError, match=re.escape(
            "tiny.yml: key 'departments.Home.classes': empty; a department needs at least one sellable class")):
        parse_hierarchy(data, "tiny.yml")


def test_parse_hierarchy_rejects_classes_clashing_as_column_names():
    """Two classes that slug to the same column name ('Hats' and 'HATS') are rejected."""
    data = {"departments": {"Home": {"kind": "merchandise", "classes": ["Hats", "HATS"]}}}

    with pytest.raises(ConfigError, match=re.escape(
            "tiny.yml: key 'departments.Home.classes': class 'HATS'") + ".*" + re.escape("'Hats'")):
        parse_hierarchy(data, "tiny.yml")


# --- slug ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("Health & Beauty", "health_beauty"),
    ("Uwear & Nwear", "uwear_nwear"),
    ("In-Store Charity", "in_store_charity"),
    ("UNASSIGNED D33", "unassigned_d33"),
    ("FASHION T-SHIRTS", "fashion_t_shirts"),
    ("  Kids  Clothing! ", "kids_clothing"),
])
def test_slug(name, expected):
    """slug lower-cases, turns every run of other characters into one '_' and trims the ends."""
    assert slug(name) == expected
