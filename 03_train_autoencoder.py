"""Stage 03: learn a compact, deterministic latent representation of customers.

Reads ``features.parquet`` (the scaled model matrix) from stage 02 and writes
to ``artifacts/03_train_autoencoder/``: ``autoencoder-model.keras``,
``encoder.keras`` (the trained encoder alone, to encode new customers),
``latent.parquet`` (customer_id, latent_0..latent_{k-1},
reconstruction_error), ``history.json`` and ``loss-plot.png``.
Run ``python 03_train_autoencoder.py --help``; the code is in ``core/train_autoencoder/``.
"""

from __future__ import annotations

import sys

from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("03_train_autoencoder", argv)


if __name__ == "__main__":
    sys.exit(main())
