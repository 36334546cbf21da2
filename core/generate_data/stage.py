"""Stage 01: the order lines every later stage reads, generated or ingested.

With ``data.source: synthetic`` it generates transactions from personas
(config ``data``, ``generate_data``, the hierarchy and personas); with
``data.source: file`` it ingests a retailer's own log (config ``ingest``).
Either way it writes to ``artifacts/01_generate_data/`` the same tables
(core/tables.py): ``transactions.parquet`` (one row per order line, written
batch by batch as Parquet row groups), ``customers.parquet`` and
``products.parquet``; generation also writes ``generation_report.json``
(the realised data against its config: the stage fails when they disagree
beyond ``generate_data.report_tolerances``) and ``persona_events.parquet`` (the
customers' life events, ground truth). Ingestion also writes ``rejects.parquet`` (every input
row not accepted, with its row number and reason) and, with a customer
file, ``customer_rejects.parquet``. Run ``python 01_generate_data.py --help``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.domain import customer_ids
from core.generate_data import ingest
from core.framework import paths
from core.domain import tables
from core.framework.errors import PipelineError
from core.domain.tables import TRANSACTION_SCHEMA
from core.framework.stage import Stage, StageContext

if TYPE_CHECKING:
    from core.generate_data import generator

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    if ctx.config.data.source == "file":
        run_ingest(ctx)
    else:
        run_generate(ctx)


def run_generate(ctx: StageContext) -> None:
    """Synthetic order lines, customers and products from the personas."""
    # Imported when the stage runs (SciPy's statistics load with the report); status and skips never need them.
    from core.generate_data import generator
    from core.generate_data.report import GenerationReport, summary_lines

    cfg = ctx.config
    plan = generator.build_plan(cfg.personas, cfg.scenarios, cfg.hierarchy, cfg.data, cfg.generate_data,
                                cfg.seed)
    # Judged against the config as loaded, not against what the plan made of it.
    report = GenerationReport(plan, cfg.personas, cfg.scenarios, cfg.generate_data)
    customer_chunks: list[pd.DataFrame] = []
    events: list[pd.DataFrame] = []
    counts = {"lines": 0, "returns": 0}

    def write_transactions(tmp_path) -> None:
        # Dictionary-encoded strings are written without the Arrow schema, so the file reads
        # back as plain strings (tables.TRANSACTION_SCHEMA); the pandas metadata keeps Int64 ids.
        schema = generator.DICTIONARY_TRANSACTION_SCHEMA
        with pq.ParquetWriter(tmp_path, schema, **generator.TRANSACTION_PARQUET_OPTIONS) as writer:
            for customers, lines in generator.generate(plan, cfg.seed, report=report,
                                                       workers=cfg.generate_data.workers, events=events):
                writer.write_table(lines)
                customer_chunks.append(customers)
                counts["lines"] += lines.num_rows
                counts["returns"] += int(pc.sum(lines["is_return"]).as_py() or 0)
                del lines  # written: free it now, not once the next chunk has been assembled
            writer.add_key_value_metadata({"pandas": schema.metadata[b"pandas"].decode("utf-8")})

    ctx.write_with(paths.TRANSACTIONS, write_transactions)
    customers = pd.concat(customer_chunks, ignore_index=True)
    ctx.write_with(paths.CUSTOMERS, lambda tmp: pq.write_table(
        pa.Table.from_pandas(customers, schema=tables.CUSTOMER_SCHEMA, preserve_index=False), tmp))
    persona_events = (pd.concat(events, ignore_index=True) if events
                      else pd.DataFrame({c.name: pd.Series(dtype=tables._pandas_dtype(c))
                                         for c in tables.PERSONA_EVENTS_TABLE}))
    ctx.write_with(paths.PERSONA_EVENTS, lambda tmp: pq.write_table(
        pa.Table.from_pandas(persona_events, schema=tables.PERSONA_EVENTS_SCHEMA, preserve_index=False), tmp))
    ctx.write_with(paths.PRODUCTS, lambda tmp: pq.write_table(
        pa.Table.from_pandas(plan.catalog.products, schema=tables.PRODUCT_SCHEMA, preserve_index=False), tmp))
    # Generated ids are whole numbers: their own keys, as a retailer's number ids are.
    ctx.write_parquet(paths.CUSTOMER_IDS, customer_ids.identity_mapping(customers["customer_id"].to_numpy()))
    checks = report.finish()
    ctx.write_json(paths.GENERATION_REPORT, checks)
    for line in summary_lines(checks):
        log.info("generation report: %s", line)
    if not checks["passed"]:
        raise PipelineError(
            f"the generated data contradicts its config ({len(checks['checks_failed'])} check(s) failed; "
            f"see {ctx.output_dir / paths.GENERATION_REPORT}):\n  - " + "\n  - ".join(checks["checks_failed"])
            + "\n" + report_fix_hint(plan))
    ctx.details = {"customers": len(customers), "order_lines": counts["lines"],
                   "return_lines": counts["returns"], "products": len(plan.catalog.products),
                   "persona_counts": customers["persona"].value_counts().sort_index().to_dict(),
                   "persona_events": len(persona_events),
                   "generation_report_passed": checks["passed"]}
    ctx.summary = (f"{len(customers):,} customers, {counts['lines']:,} order lines "
                   f"({counts['returns']:,} returns), {len(plan.catalog.products):,} SKUs")


def report_fix_hint(plan: generator.GenerationPlan) -> str:
    """What to do about a failed generation report: more data when there is too little to judge."""
    from core.generate_data.report import min_customers, smallest_persona  # see run_generate

    needed, n_customers = min_customers(plan), plan.data.n_customers
    if n_customers < needed:
        smallest, share = smallest_persona(plan)
        hint = (f"Fix: generate at least {needed:,} customers (data.n_customers is {n_customers:,}). The report "
                f"judges each persona on its own customers and needs "
                f"{plan.cfg.report_tolerances.min_group_size} of them (report_tolerances.min_group_size) in the "
                f"smallest persona, {smallest} ({share:.0%} of customers); with fewer, a few customers' habits "
                f"make a persona's shares and rates, and chance alone fails the checks. Or loosen "
                f"generate_data.report_tolerances.")
    else:
        hint = ("Fix: make the config consistent (e.g. an order value range the catalog's prices can reach), "
                "or loosen generate_data.report_tolerances.")
    if plan.n_days < 365:
        hint += (f" A history of {plan.n_days} days gives each customer few visits, so the checks rest on few "
                 f"lines and chance alone can fail them: more customers make them firmer.")
    return hint


def run_ingest(ctx: StageContext) -> None:
    """A retailer's transaction log (and customer file) turned into the stage 01 tables.

    Nothing but the rejects is written when a file has no rows or too many of
    them are rejected: the PipelineError says why and where the rejects are.
    """
    cfg = ctx.config
    files = ingest.source_files(cfg)
    ids = ingest.id_settings(files["transactions"], cfg.ingest.customer_id.kind, cfg.ingest.customer_id.max_length)
    registry = customer_ids.IdRegistry(ids.kind)
    profile, customer_details = None, None
    if "customers" in files:  # first: it is small, and a failure here leaves the log unread
        source = files["customers"]
        profile, rejected, customer_details = ingest.ingest_customers(ingest.read_batches(source), source,
                                                                      cfg.ingest.date_format, ids, registry)
        schema = ingest.reject_schema(source)
        ctx.write_with(paths.CUSTOMER_REJECTS, lambda tmp: pq.write_table(
            pa.Table.from_pandas(rejected, schema=schema, preserve_index=False), tmp))
        ingest.check_rejected_share(source, customer_details["rows_in"], customer_details["rejected_by_reason"],
                                    customer_details["first_rejected_example"], cfg.ingest.max_rejected_share,
                                    ctx.output_dir / paths.CUSTOMER_REJECTS)
    latest = cfg.ingest.latest_date or dt.date.today()
    lines = ingest.TransactionIngestor(files["transactions"], cfg.hierarchy, latest, cfg.ingest.date_format,
                                       cfg.ingest.transactions.amount_is, ids, registry)

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
    try:
        mapping = registry.mapping()
    except ValueError as exc:
        raise PipelineError(f"{files['transactions'].path}: {exc}") from None
    ctx.write_parquet(paths.CUSTOMERS, customers)
    ctx.write_parquet(paths.PRODUCTS, products)
    ctx.write_parquet(paths.CUSTOMER_IDS, mapping)
    details = lines.details()
    id_details = ingest.id_details(ids, registry, len(mapping))
    if id_details["ids_written_several_ways"]:
        log.warning("%s customer id(s) were written several ways and each read as one customer (e.g. %s); see "
                    "details.customer_ids in the manifest", f"{id_details['ids_written_several_ways']:,}",
                    " and ".join(repr(s) for s in id_details["examples_written_several_ways"][0]))
    ctx.details = {"source": "file", "customer_ids": id_details, "transactions": details,
                   "customers_file": customer_details,
                   "customers": len(customers), "order_lines": details["rows_accepted"],
                   "return_lines": details["return_lines"], "products": len(products)}
    rejected = ", ".join(f"{r} {c:,}" for r, c in details["rejected_by_reason"].items()) or "none"
    ctx.summary = (f"{details['rows_in']:,} rows in = {details['rows_accepted']:,} accepted + "
                   f"{details['rows_rejected']:,} rejected ({rejected}); {len(customers):,} customers "
                   f"({ids.kind} ids), "
                   f"{details['return_lines']:,} return lines, {len(products):,} SKUs")


STAGE = Stage(
    name=paths.GENERATE_DATA,
    inputs={},
    description="Generate synthetic order lines from personas, or ingest a retailer's own log.",
    # ingest: how a retailer's file is read; the file's content is an input of its own (reads_source_files).
    sections=("seed", "data", "generate_data", "ingest", "hierarchy", "personas"),
    run=run,
    reads_source_files=True,
)
