"""Stage 02: customer features, the three datasets and the scaled model matrix.

Reads ``transactions.parquet`` and ``customers.parquet`` from stage 01 and
writes to ``artifacts/02_prepare_features/``: ``basic.parquet``,
``enriched_department.parquet``, ``enriched_class.parquet``,
``features.parquet`` (scaled model matrix), ``feature-scaler.pkl`` (the
fitted column selection, log1p and RobustScaler, to score new customers) and
``excluded_customers.parquet`` (customers without features, with the reason).
Run ``python 02_prepare_features.py --help``.
"""

from __future__ import annotations

import sys

import pandas as pd

from core import features, paths
from core.pipeline import PipelineError, Stage, StageContext, stage_main

STAGE = Stage(
    name=paths.PREPARE_FEATURES,
    inputs={paths.GENERATE_DATA: (paths.TRANSACTIONS, paths.CUSTOMERS)},
    description="Build customer features, the basic and enriched datasets and the model matrix.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    cfg = ctx.config.prepare_features
    transactions = ctx.read_parquet(paths.GENERATE_DATA, paths.TRANSACTIONS)
    customers = ctx.read_parquet(paths.GENERATE_DATA, paths.CUSTOMERS)
    analysis_date = pd.Timestamp(cfg.analysis_date) if cfg.analysis_date else None
    try:
        prepared = features.prepare_features(transactions, customers, ctx.config.hierarchy,
                                             cfg.model_features, cfg.log1p_features, analysis_date)
    except ValueError as exc:
        raise PipelineError(f"{exc}; set prepare_features.analysis_date in {ctx.config.path} to a later "
                            f"date, or null for the last date in the data") from None
    ctx.write_parquet(paths.BASIC, prepared.basic)
    ctx.write_parquet(paths.ENRICHED_DEPARTMENT, prepared.enriched_department)
    ctx.write_parquet(paths.ENRICHED_CLASS, prepared.enriched_class)
    ctx.write_parquet(paths.FEATURES, prepared.model_matrix)
    ctx.write_joblib(paths.FEATURE_SCALER, prepared.transformer)
    ctx.write_parquet(paths.EXCLUDED_CUSTOMERS, prepared.excluded)
    n_customers = len(prepared.basic)
    ctx.details = {
        "analysis_date": prepared.analysis_date.date().isoformat(),
        "customers": n_customers,
        "excluded_customers": prepared.excluded["reason"].value_counts().sort_index().to_dict(),
        "lines_after_analysis_date": int((transactions["order_date"] > prepared.analysis_date).sum()),
        "model_matrix": {"columns": list(prepared.transformer.columns),
                         "log1p_columns": list(prepared.transformer.log1p_columns),
                         "scaler": "RobustScaler"},
    }
    ctx.summary = (f"{n_customers:,} customers ({len(prepared.excluded):,} excluded), "
                   f"{len(prepared.transformer.columns)} model features, "
                   f"{prepared.enriched_class.shape[1]} enriched columns")


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
