"""Stage 01: the order lines every later stage reads, generated or ingested.

With ``data.source: synthetic`` it generates transactions from personas
(config ``data``, ``generate_data``, the hierarchy and personas); with
``data.source: file`` it ingests a retailer's own log (config ``ingest``).
Either way it writes to ``artifacts/01_generate_data/`` the same tables
(core/tables.py): ``transactions.parquet`` (one row per order line, written
batch by batch as Parquet row groups), ``customers.parquet`` and
``products.parquet``. Ingestion also writes ``rejects.parquet`` (every input
row not accepted, with its row number and reason) and, with a customer
file, ``customer_rejects.parquet``. Run ``python 01_generate_data.py --help``.
"""

from __future__ import annotations

import datetime as dt
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import generator, ingest, paths
from core.pipeline import Stage, StageContext, stage_main
from core.tables import TRANSACTION_SCHEMA

STAGE = Stage(
    name=paths.GENERATE_DATA,
    inputs={},
    description="Generate synthetic order lines from personas, or ingest a retailer's own log.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    if ctx.config.data.source == "file":
        run_ingest(ctx)
    else:
        run_generate(ctx)


def run_generate(ctx: StageContext) -> None:
    """Synthetic order lines, customers and products from the personas."""
    cfg = ctx.config
    catalog = generator.build_catalog(cfg.hierarchy, cfg.generate_data, cfg.seed)
    customer_chunks: list[pd.DataFrame] = []
    counts = {"lines": 0, "returns": 0}

    def write_transactions(tmp_path) -> None:
        with pq.ParquetWriter(tmp_path, generator.TRANSACTION_SCHEMA) as writer:
            for customers, lines in generator.generate(cfg.personas, cfg.hierarchy, cfg.data,
                                                       cfg.generate_data, cfg.seed, catalog):
                writer.write_table(pa.Table.from_pandas(lines, schema=generator.TRANSACTION_SCHEMA,
                                                        preserve_index=False))
                customer_chunks.append(customers)
                counts["lines"] += len(lines)
                counts["returns"] += int(lines["is_return"].sum())

    ctx.write_with(paths.TRANSACTIONS, write_transactions)
    customers = pd.concat(customer_chunks, ignore_index=True)
    ctx.write_parquet(paths.CUSTOMERS, customers)
    ctx.write_parquet(paths.PRODUCTS, catalog.products)
    ctx.details = {"customers": len(customers), "order_lines": counts["lines"],
                   "return_lines": counts["returns"], "products": len(catalog.products),
                   "persona_counts": customers["persona"].value_counts().sort_index().to_dict()}
    ctx.summary = (f"{len(customers):,} customers, {counts['lines']:,} order lines "
                   f"({counts['returns']:,} returns), {len(catalog.products):,} SKUs")


def run_ingest(ctx: StageContext) -> None:
    """A retailer's transaction log (and customer file) turned into the stage 01 tables.

    Nothing but the rejects is written when a file has no rows or too many of
    them are rejected: the PipelineError says why and where the rejects are.
    """
    cfg = ctx.config
    files = ingest.source_files(cfg)
    profile, customer_details = None, None
    if "customers" in files:  # first: it is small, and a failure here leaves the log unread
        source = files["customers"]
        profile, rejected, customer_details = ingest.ingest_customers(ingest.read_batches(source), source,
                                                                      cfg.ingest.date_format)
        schema = ingest.reject_schema(source)
        ctx.write_with(paths.CUSTOMER_REJECTS, lambda tmp: pq.write_table(
            pa.Table.from_pandas(rejected, schema=schema, preserve_index=False), tmp))
        ingest.check_rejected_share(source, customer_details["rows_in"], customer_details["rejected_by_reason"],
                                    customer_details["first_rejected_example"], cfg.ingest.max_rejected_share,
                                    ctx.output_dir / paths.CUSTOMER_REJECTS)
    latest = cfg.ingest.latest_date or dt.date.today()
    lines = ingest.TransactionIngestor(files["transactions"], cfg.hierarchy, latest, cfg.ingest.date_format,
                                       cfg.ingest.transactions.amount_is)

    def write_transactions(tmp_transactions) -> None:
        def write_rejects(tmp_rejects) -> None:
            schema = ingest.reject_schema(files["transactions"])
            with (pq.ParquetWriter(tmp_transactions, TRANSACTION_SCHEMA) as accepted_out,
                  pq.ParquetWriter(tmp_rejects, schema) as rejected_out):
                for batch in ingest.read_batches(files["transactions"]):
                    accepted, rejected = lines.add(batch)
                    if len(accepted):
                        accepted_out.write_table(pa.Table.from_pandas(accepted, schema=TRANSACTION_SCHEMA,
                                                                      preserve_index=False))
                    if len(rejected):
                        rejected_out.write_table(pa.Table.from_pandas(rejected, schema=schema,
                                                                      preserve_index=False))

        ctx.write_with(paths.REJECTS, write_rejects)
        # Raising here discards the transactions being written; the rejects stay to be looked at.
        lines.check_rejected_share(cfg.ingest.max_rejected_share, ctx.output_dir / paths.REJECTS)

    ctx.write_with(paths.TRANSACTIONS, write_transactions)
    customers = ingest.build_customers(lines.customer_ids(), profile)
    products = lines.products()
    ctx.write_parquet(paths.CUSTOMERS, customers)
    ctx.write_parquet(paths.PRODUCTS, products)
    details = lines.details()
    ctx.details = {"source": "file", "transactions": details, "customers_file": customer_details,
                   "customers": len(customers), "order_lines": details["rows_accepted"],
                   "return_lines": details["return_lines"], "products": len(products)}
    rejected = ", ".join(f"{r} {c:,}" for r, c in details["rejected_by_reason"].items()) or "none"
    ctx.summary = (f"{details['rows_in']:,} rows in = {details['rows_accepted']:,} accepted + "
                   f"{details['rows_rejected']:,} rejected ({rejected}); {len(customers):,} customers, "
                   f"{details['return_lines']:,} return lines, {len(products):,} SKUs")


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
