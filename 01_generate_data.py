"""Stage 01: the order lines every later stage reads, generated or ingested.

With ``data.source: synthetic`` it generates transactions from personas
(config ``data``, ``generate_data``, the hierarchy and personas); with
``data.source: file`` it ingests a retailer's own log (config ``ingest``).
Either way it writes to ``artifacts/01_generate_data/`` the same tables
(core/tables.py): ``transactions.parquet`` (one row per order line, written
batch by batch as Parquet row groups), ``customers.parquet`` and
``products.parquet``; generation also writes ``generation_report.json``
(the realised data against its config: the stage fails when they disagree
beyond ``generate_data.report_tolerances``). Ingestion also writes ``rejects.parquet`` (every input
row not accepted, with its row number and reason) and, with a customer
file, ``customer_rejects.parquet``. Run ``python 01_generate_data.py --help``; the code is in ``core/generate_data/``.
"""

from __future__ import annotations

import sys

from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("01_generate_data", argv)


if __name__ == "__main__":
    sys.exit(main())
