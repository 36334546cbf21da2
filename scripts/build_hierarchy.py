"""Build config/hierarchy.yml from the product hierarchy reference table.

Usage:
    python scripts/build_hierarchy.py [--table PATH] [--output PATH]

The table (default: docs/product_hierarchy_table.md) is any markdown/text file
containing rows of the form

    | <n> | <Department> | <Department>:<Class> |

All other lines are ignored. Relative paths are resolved against the
repository root (the parent of this scripts/ directory).

Each department gets a ``kind`` (see DEPARTMENT_KINDS) and its classes are
split into sellable ``classes`` and ``data_quality_classes`` (placeholder
classes such as DUMMY, Unknown, UNASSIGNED D1), so that the generator can
keep placeholders out of synthetic purchases while the full hierarchy stays
available for validating real data.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLE = Path("docs/product_hierarchy_table.md")
DEFAULT_OUTPUT = Path("config/hierarchy.yml")

# Departments that are not ordinary merchandise. Anything not listed here is
# "merchandise"; only merchandise departments should drive customer behaviour.
DEPARTMENT_KINDS = {
    "Bag Levy": "bag_levy",
    "Gift Cards": "gift_card",
    "In-Store Charity": "charity",
    "Goods Not For Resale": "not_for_resale",
    "Concessions": "concession",
    "Dummy": "data_quality",
    "Dummy Dept for TBC order": "data_quality",
}
DEFAULT_KIND = "merchandise"

# Placeholder class names used by the source system for unmapped products.
DATA_QUALITY_CLASS_RE = re.compile(r"^(DUMMY|Dummy|Unknown|UNASSIGNED( D\d+)?)$")

# | 12 | Accessories | Accessories:Luggage |
_ROW_RE = re.compile(r"^\s*\|\s*(\d+)\s*\|([^|]*)\|([^|]*)\|\s*$")


class HierarchyTableError(ValueError):
    """The hierarchy table is malformed (message names file and line)."""


def parse_hierarchy_table(text: str, source: str) -> dict:
    """Parse table rows into ``{department: [class, ...]}`` in table order.

    ``source`` is only used in error messages. Raises HierarchyTableError if
    a row's class prefix does not match its department, if a class name is
    empty, if a (department, class) pair repeats, or if no rows are found.
    """
    departments: dict[str, list[str]] = {}
    first_seen: dict[tuple[str, str], int] = {}

    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _ROW_RE.match(line)
        if not match:
            continue
        department = match.group(2).strip()
        cell = match.group(3).strip()
        where = f"{source}, line {lineno}"

        prefix = f"{department}:"
        if not department or not cell.startswith(prefix):
            raise HierarchyTableError(
                f"{where}: class {cell!r} does not start with its department "
                f"prefix {prefix!r}"
            )
        class_name = cell[len(prefix):].strip()
        if not class_name:
            raise HierarchyTableError(f"{where}: empty class name in {cell!r}")

        key = (department, class_name)
        if key in first_seen:
            raise HierarchyTableError(
                f"{where}: duplicate class {class_name!r} in department "
                f"{department!r} (first seen on line {first_seen[key]})"
            )
        first_seen[key] = lineno
        departments.setdefault(department, []).append(class_name)

    if not departments:
        raise HierarchyTableError(
            f"{source}: no hierarchy rows of the form "
            "'| <n> | <Department> | <Department>:<Class> |' found"
        )
    return departments


def is_data_quality_class(name: str) -> bool:
    return DATA_QUALITY_CLASS_RE.match(name) is not None


def build_hierarchy(rows) -> dict:
    """Build the hierarchy.yml document.

    ``rows`` is either the mapping returned by parse_hierarchy_table or an
    iterable of ``(department, class)`` pairs. Department and class order is
    preserved.
    """
    if isinstance(rows, dict):
        pairs = [(dept, cls) for dept, classes in rows.items() for cls in classes]
    else:
        pairs = list(rows)

    grouped: dict[str, list[str]] = {}
    for department, class_name in pairs:
        classes = grouped.setdefault(department, [])
        if class_name in classes:
            raise HierarchyTableError(
                f"duplicate class {class_name!r} in department {department!r}"
            )
        classes.append(class_name)

    departments = {}
    for department, classes in grouped.items():
        sellable = [c for c in classes if not is_data_quality_class(c)]
        data_quality = [c for c in classes if is_data_quality_class(c)]
        # A department made only of placeholders (In-Store Charity, the Dummy
        # departments) would otherwise have nothing to map products to.
        if not sellable:
            sellable, data_quality = list(classes), []
        departments[department] = {
            "kind": DEPARTMENT_KINDS.get(department, DEFAULT_KIND),
            "classes": sellable,
            "data_quality_classes": data_quality,
        }
    return {"departments": departments}


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else REPO_ROOT / path


def _display(path: Path) -> str:
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def render_yaml(document: dict, table_path: Path) -> str:
    header = (
        f"# Generated by scripts/build_hierarchy.py from {_display(table_path)}.\n"
        "# Do not edit by hand: change the table and re-run the script.\n"
        "# kind: merchandise departments drive customer behaviour; the others\n"
        "# (bag levy, gift cards, charity, concessions, ...) do not.\n"
        "# data_quality_classes: source-system placeholders for unmapped products.\n"
    )
    body = yaml.safe_dump(
        document,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,
    )
    return header + body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help=f"hierarchy table (default: {DEFAULT_TABLE})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"YAML file to write (default: {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)

    table_path = _resolve(args.table)
    output_path = _resolve(args.output)

    try:
        text = table_path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read table {table_path}: {exc}", file=sys.stderr)
        return 1
    try:
        document = build_hierarchy(parse_hierarchy_table(text, str(table_path)))
    except HierarchyTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    output_path.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n" keeps the generated file byte-identical on Windows and Linux.
    output_path.write_text(
        render_yaml(document, table_path), encoding="utf-8", newline="\n"
    )

    departments = document["departments"]
    n_sellable = sum(len(d["classes"]) for d in departments.values())
    n_dq = sum(len(d["data_quality_classes"]) for d in departments.values())
    print(
        f"Wrote {_display(output_path)}: {len(departments)} departments, "
        f"{n_sellable + n_dq} classes ({n_sellable} sellable, "
        f"{n_dq} data-quality)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
