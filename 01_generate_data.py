"""Stage 01: generate synthetic retail transactions from personas.

Reads config (``data``, ``generate_data``, the hierarchy and personas) and
writes to ``artifacts/01_generate_data/``: ``transactions.parquet`` (one row
per order line, written chunk by chunk as Parquet row groups),
``customers.parquet`` (profile and ground-truth persona) and
``products.parquet`` (the catalog). Run ``python 01_generate_data.py --help``.
"""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import generator, paths
from core.pipeline import Stage, StageContext, stage_main

STAGE = Stage(
    name=paths.GENERATE_DATA,
    inputs={},
    description="Generate synthetic order lines, customers and products from personas.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
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


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
