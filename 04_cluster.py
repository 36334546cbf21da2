"""Stage 04: cluster customers in the raw and latent spaces, evaluate, choose the primary.

What it reads and writes: ``core/cluster/stage.py``. Run ``python 04_cluster.py --help``;
this is the same as ``python -m core.pipeline run --only 04``.
"""

from __future__ import annotations

from core.framework.cli import exit_with
from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("04_cluster", argv)


if __name__ == "__main__":
    exit_with(main())
