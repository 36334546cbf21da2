"""Stage 02: customer features, eligibility, the three datasets and the scaled model matrix.

Reads ``transactions.parquet`` and ``customers.parquet`` from stage 01 and
writes to ``artifacts/02_prepare_features/``: ``basic.parquet``,
``enriched_department.parquet``, ``enriched_class.parquet`` (written in
batches of customers), ``class_spend_long.parquet``, ``features.parquet``
(scaled model matrix), ``feature-scaler.pkl`` (the fitted
:class:`~core.prepare_features.prepare.FeatureModel`: feature settings,
eligibility rules, class-mix embedding and model-matrix transformer, to
score new customers),
``excluded_customers.parquet`` (customers not segmented, with the rule and
reason), and each customer's value and churn risk (config section
``customer_value``): ``customer_value.parquet`` (every customer with a
purchase, segmented or not), ``customer_value_model.json`` (the models'
parameters, for scoring) and ``customer_value_evaluation.json`` (the temporal
holdout check). Run ``python 02_prepare_features.py --help``.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import joblib
import pyarrow as pa
import pyarrow.parquet as pq

from core.domain.customer_ids import with_source_ids
from core.framework import paths
from core.framework.errors import PipelineError
from core.framework.progress import Progress, report as report_progress
from core.framework.stage import Stage, StageContext

if TYPE_CHECKING:
    from core.prepare_features.prepare import PreparedFeatures

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    # Imported when the stage runs: scikit-learn, SciPy and DuckDB cost a second that status and skips never need.
    from core.prepare_features.prepare import prepare_features_from_config

    customers = ctx.read_parquet(paths.GENERATE_DATA, paths.CUSTOMERS)
    # Shares of the stage's time, measured on 200,000 customers (27 M lines): features 50%, customer
    # value and writing 50%; they make the estimate of what is left.
    with Progress(f"{paths.PREPARE_FEATURES} (features, customer value and writing)", total=100, unit="%",
                  heartbeat=True) as progress:
        with progress.step(50, "features"):
            try:
                # The path, not a DataFrame: the engine scans the file, so memory does not grow with the lines.
                prepared = prepare_features_from_config(ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS),
                                                        customers, ctx.config.hierarchy, ctx.config.prepare_features,
                                                        ctx.config.data.source)
            except ValueError as exc:
                raise PipelineError(f"{exc}; see section prepare_features of {ctx.config.path} (analysis_date null "
                                    f"means the last date in the data)") from None
        # The two lists people act on carry the ids as the source wrote them; the rest keep the pipeline's keys.
        mapping = ctx.read_parquet(paths.GENERATE_DATA, paths.CUSTOMER_IDS)
        with progress.step(50, "customer value (the datasets are written meanwhile)"):
            value = _customer_value_while_writing(ctx, dataclasses.replace(
                prepared, excluded=with_source_ids(prepared.excluded, mapping)))
        if value.warning:
            log.warning("%s; section customer_value of %s", value.warning, ctx.config.path)
    ctx.write_parquet(paths.CUSTOMER_VALUE, with_source_ids(value.table, mapping))
    ctx.write_json(paths.CUSTOMER_VALUE_MODEL, value.model)
    ctx.write_json(paths.CUSTOMER_VALUE_EVALUATION, value.evaluation)
    # The manifest lists outputs in the order written; keep it the same whichever thread finished first.
    ctx.outputs = dict(sorted(ctx.outputs.items()))
    ctx.details = {**prepared.details, "customer_value": value.details}
    dropped = f", {len(prepared.details['dropped_features'])} feature group(s) dropped for lack of data" \
        if prepared.details["dropped_features"] else ""
    ctx.summary = (f"{len(prepared.basic):,} customers ({len(prepared.excluded):,} excluded), "
                   f"{len(prepared.feature_model.columns)} model features, "
                   f"{prepared.enriched_department.shape[1] + len(prepared.class_columns)} enriched columns{dropped}, "
                   + (f"customer value for {len(value.table):,} customers" if value.details["estimated"]
                      else "customer value not estimated"))


def _customer_value_while_writing(ctx: StageContext, prepared: PreparedFeatures):
    """Customer value for every customer with a purchase, while a second thread writes ``prepared``'s files.

    The writing is mostly Arrow encoding and customer value mostly one
    thread of model fitting after the engine's scan, so on two cores the two
    overlap (at a million customers they were 20 s and 38 s one after the
    other). Neither reads what the other makes: the outputs are the same.
    """
    from core.prepare_features.value_estimates import customer_value_from_config

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage02-write") as pool:
        written = pool.submit(write_outputs, prepared, ctx.write_with)
        try:
            # Every customer with a purchase, segmented or not: a lapsed customer is who retention needs.
            return customer_value_from_config(ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS),
                                              ctx.config.hierarchy, ctx.config.customer_value,
                                              prepared.analysis_date, prepared.basic["customer_id"].to_numpy(),
                                              ctx.config.prepare_features.engine_memory_mb)
        finally:
            written.result()  # a failed write fails the stage (after customer value ends)


def write_outputs(prepared: PreparedFeatures, write_with) -> None:
    """Write every output file through ``write_with(file, writer)`` (``StageContext.write_with``).

    The wide class table is most of the writing: Arrow encodes it in a second
    thread while this one writes the rest. The benchmark calls this too.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        wide = pool.submit(write_with, paths.ENRICHED_CLASS,
                           lambda tmp: _write_batches(tmp, prepared.enriched_class_batches()))
        tables = ((paths.BASIC, prepared.basic), (paths.ENRICHED_DEPARTMENT, prepared.enriched_department),
                  (paths.CLASS_SPEND_LONG, prepared.class_spend_long),
                  (paths.FEATURES, prepared.model_matrix), (paths.EXCLUDED_CUSTOMERS, prepared.excluded))
        for done, (file, frame) in enumerate(tables, start=1):
            write_with(file, lambda tmp, frame=frame: _write_batches(
                tmp, [pa.Table.from_pandas(frame, preserve_index=False)]))
            report_progress(0.5 * done / len(tables), file)
        wide.result()
        report_progress(0.95, paths.ENRICHED_CLASS)
    write_with(paths.FEATURE_SCALER, lambda tmp: joblib.dump(prepared.feature_model, tmp))


def _write_batches(path, tables) -> None:
    """One Parquet file from Arrow tables of the same columns: one row group per table.

    Dictionary encoding only for text columns: numbers gain little from it
    and trying it costs about half of the writing time. No min/max statistics
    for the class columns: nobody filters on them, and they cost a third of
    the wide table's writing.
    """
    writer = None
    try:
        for table in tables:
            if writer is None:
                text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                        or pa.types.is_dictionary(f.type)]
                stats = [n for n in table.schema.names if not n.startswith(("class_spend__", "class_units__"))]
                writer = pq.ParquetWriter(path, table.schema, use_dictionary=text or False, write_statistics=stats)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


STAGE = Stage(
    name=paths.PREPARE_FEATURES,
    inputs={paths.GENERATE_DATA: (paths.TRANSACTIONS, paths.CUSTOMERS, paths.CUSTOMER_IDS)},
    description="Build customer features, apply eligibility, write the three datasets and the model matrix.",
    # data: whether the configured seasons are this data's (data.source; FeatureSettings.from_config).
    sections=("data", "prepare_features", "customer_value", "hierarchy"),
    run=run,
)
