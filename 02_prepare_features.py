"""Stage 02: customer features, eligibility, the three datasets and the scaled model matrix.

Reads ``transactions.parquet`` and ``customers.parquet`` from stage 01 and
writes to ``artifacts/02_prepare_features/``: ``basic.parquet``,
``enriched_department.parquet``, ``enriched_class.parquet`` (written in
batches of customers), ``class_spend_long.parquet``, ``features.parquet``
(scaled model matrix), ``feature-scaler.pkl`` (the fitted column selection,
log1p and RobustScaler, to score new customers) and
``excluded_customers.parquet`` (customers not segmented, with the rule and
reason). Run ``python 02_prepare_features.py --help``; the code is in ``core/prepare_features/``.
"""

from __future__ import annotations

import sys

from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("02_prepare_features", argv)


if __name__ == "__main__":
    sys.exit(main())
