"""Stage 02: customer features, eligibility, the three datasets, the scaled model matrix and customer value.

What it reads and writes: ``core/prepare_features/stage.py``. Run ``python 02_prepare_features.py --help``;
this is the same as ``python -m core.pipeline run --only 02``.
"""

from __future__ import annotations

from core.framework.cli import exit_with
from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("02_prepare_features", argv)


if __name__ == "__main__":
    exit_with(main())
