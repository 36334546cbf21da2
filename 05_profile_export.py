"""Stage 05: name and describe each segment and export the profiles.

Reads ``enriched_department.parquet`` from stage 02 and ``assignments.parquet``
from stage 04 and writes to ``artifacts/05_profile_export/``:
``segment_profiles.json`` and ``segment_profiles.yaml`` (same content) and
``cluster_insights.csv``. Run ``python 05_profile_export.py --help``.
"""

from __future__ import annotations

import sys

import yaml

from core import paths, profiling
from core.pipeline import PipelineError, Stage, StageContext, stage_main

STAGE = Stage(
    name=paths.PROFILE_EXPORT,
    inputs={paths.PREPARE_FEATURES: (paths.ENRICHED_DEPARTMENT,), paths.CLUSTER: (paths.ASSIGNMENTS,)},
    description="Profile, name and describe the primary segments; export JSON, YAML and CSV.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    cfg = ctx.config.profile_export
    customers = ctx.read_parquet(paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT)
    assignments = ctx.read_parquet(paths.CLUSTER, paths.ASSIGNMENTS, columns=["customer_id", "segment"])
    merged = customers.merge(assignments, on="customer_id", how="inner", validate="one_to_one")
    if len(merged) != len(customers) or len(merged) != len(assignments):
        raise PipelineError(f"{paths.ASSIGNMENTS} and {paths.ENRICHED_DEPARTMENT} list different customers; "
                            f"rerun from stage {paths.CLUSTER}")
    profiles = profiling.profile_segments(merged, merged["segment"], ctx.config.hierarchy, cfg.top_departments,
                                          cfg.value_quantiles, cfg.lapsed_after_days, cfg.currency)
    primary = ctx.config.cluster.primary
    export = {
        "metadata": {
            "method": primary.method,
            "space": primary.space,
            "customers": len(merged),
            "segments": len(profiles),
            "data_period": {"first_order": str(merged["first_order_date"].min().date()),
                            "last_order": str(merged["last_order_date"].max().date())},
        },
        "segments": profiles,
    }
    ctx.write_json(paths.SEGMENT_PROFILES_JSON, export)
    ctx.write_text(paths.SEGMENT_PROFILES_YAML, yaml.safe_dump(export, sort_keys=False, allow_unicode=True,
                                                               width=100))
    ctx.write_csv(paths.CLUSTER_INSIGHTS, profiling.insights_table(profiles))
    ctx.details = {"segments": {p["segment_id"]: p["name"] for p in profiles}}
    ctx.summary = f"{len(profiles)} segments profiled for {len(merged):,} customers ({primary.method}/{primary.space})"


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
