"""Stage 01: the order lines every later stage reads, generated from personas or ingested from your own log.

What it reads and writes: ``core/generate_data/stage.py``. Run ``python 01_generate_data.py --help``;
this is the same as ``python -m core.pipeline run --only 01``.
"""

from __future__ import annotations

from core.framework.cli import exit_with
from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("01_generate_data", argv)


if __name__ == "__main__":
    exit_with(main())
