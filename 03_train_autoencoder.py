"""Stage 03: a compact, deterministic latent representation of customers.

What it reads and writes: ``core/train_autoencoder/stage.py``. Run ``python 03_train_autoencoder.py --help``;
this is the same as ``python -m core.pipeline run --only 03``.
"""

from __future__ import annotations

from core.framework.cli import exit_with
from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("03_train_autoencoder", argv)


if __name__ == "__main__":
    exit_with(main())
