"""Stage 01: generate synthetic retail transactions from personas.

Reads config (``data``, ``generate_data``, the hierarchy and personas) and
writes to ``artifacts/01_generate_data/``: ``transactions.parquet`` (one row
per order line, written chunk by chunk as Parquet row groups),
``customers.parquet`` (profile and ground-truth persona) and
``products.parquet`` (the catalog) and ``generation_report.json`` (the
realised data against its config; the stage fails when they disagree beyond
``generate_data.report_tolerances``). Columns: ``core/tables.py``. Run ``python 01_generate_data.py --help``.
"""

from __future__ import annotations

import sys

import logging

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import generator, paths, tables
from core.errors import PipelineError
from core.generation_report import GenerationReport, summary_lines
from core.pipeline import Stage, StageContext, stage_main

log = logging.getLogger(__name__)

STAGE = Stage(
    name=paths.GENERATE_DATA,
    inputs={},
    description="Generate synthetic order lines, customers and products from personas.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    cfg = ctx.config
    plan = generator.build_plan(cfg.personas, cfg.scenarios, cfg.hierarchy, cfg.data, cfg.generate_data,
                                cfg.seed)
    report = GenerationReport(plan)
    customer_chunks: list[pd.DataFrame] = []
    counts = {"lines": 0, "returns": 0}

    def write_transactions(tmp_path) -> None:
        # Dictionary-encoded strings are written without the Arrow schema, so the file reads
        # back as plain strings (tables.TRANSACTION_SCHEMA); the pandas metadata keeps Int64 ids.
        schema = generator.DICTIONARY_TRANSACTION_SCHEMA
        # Min/max statistics of the string columns cost half the writing time and no stage uses
        # them; ids and dates keep theirs for readers that filter on them.
        with pq.ParquetWriter(tmp_path, schema, store_schema=False,
                              write_statistics=["customer_id", "order_id", "order_date"]) as writer:
            for customers, lines in generator.generate(plan, cfg.seed, report=report,
                                                                  workers=cfg.generate_data.workers):
                writer.write_table(lines)
                customer_chunks.append(customers)
                counts["lines"] += lines.num_rows
                counts["returns"] += int(pc.sum(lines["is_return"]).as_py() or 0)
            writer.add_key_value_metadata({"pandas": schema.metadata[b"pandas"].decode("utf-8")})

    ctx.write_with(paths.TRANSACTIONS, write_transactions)
    customers = pd.concat(customer_chunks, ignore_index=True)
    ctx.write_with(paths.CUSTOMERS, lambda tmp: pq.write_table(
        pa.Table.from_pandas(customers, schema=tables.CUSTOMER_SCHEMA, preserve_index=False), tmp))
    ctx.write_with(paths.PRODUCTS, lambda tmp: pq.write_table(
        pa.Table.from_pandas(plan.catalog.products, schema=tables.PRODUCT_SCHEMA, preserve_index=False), tmp))
    checks = report.finish()
    ctx.write_json(paths.GENERATION_REPORT, checks)
    for line in summary_lines(checks):
        log.info("generation report: %s", line)
    if not checks["passed"]:
        raise PipelineError(
            f"the generated data contradicts its config ({len(checks['checks_failed'])} check(s) failed; "
            f"see {ctx.output_dir / paths.GENERATION_REPORT}):\n  - " + "\n  - ".join(checks["checks_failed"])
            + "\nFix: make the config consistent (e.g. an order value range the catalog's prices can "
              "reach), or loosen generate_data.report_tolerances.")
    ctx.details = {"customers": len(customers), "order_lines": counts["lines"],
                   "return_lines": counts["returns"], "products": len(plan.catalog.products),
                   "persona_counts": customers["persona"].value_counts().sort_index().to_dict(),
                   "generation_report_passed": checks["passed"]}
    ctx.summary = (f"{len(customers):,} customers, {counts['lines']:,} order lines "
                   f"({counts['returns']:,} returns), {len(plan.catalog.products):,} SKUs")


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
