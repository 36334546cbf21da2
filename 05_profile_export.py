"""Stage 05: named, explained segment profiles, agent exports and the HTML report.

What it reads and writes: ``core/profile_export/stage.py``. Run ``python 05_profile_export.py --help``;
this is the same as ``python -m core.pipeline run --only 05``.
"""

from __future__ import annotations

from core.framework.cli import exit_with
from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("05_profile_export", argv)


if __name__ == "__main__":
    exit_with(main())
