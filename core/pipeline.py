"""The pipeline: the five stages in order, and the command line that runs, inspects and scores them.

Usage (from the repository root)::

    python -m core.pipeline [run] [--from STAGE | --only STAGE] [--force]
    python -m core.pipeline status
    python -m core.pipeline show STAGE [--rows N]
    python -m core.pipeline score INPUT [--output FILE] [--analysis-date YYYY-MM-DD]

Every command takes ``--config PATH`` and ``--artifacts DIR``. A stage is
named by its number (``2``, ``02``), its script name (``02_prepare_features``)
or its config section (``prepare_features``).

This module is the one place the stage order lives (:data:`STAGES`); the
runner itself (:mod:`core.framework.runner`) knows stages only by their
declarations. It sits above every stage package: it may import them all,
and none of them imports it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core import scoring
from core.cluster.stage import STAGE as CLUSTER
from core.config import PipelineConfig, load_config
from core.framework import artifacts, cli, paths, runner
from core.framework.errors import PipelineError
from core.framework.runner import StageStatus, format_status, show_stage
from core.framework.stage import Stage, StageContext
from core.generate_data.stage import STAGE as GENERATE_DATA
from core.prepare_features.stage import STAGE as PREPARE_FEATURES
from core.profile_export.stage import STAGE as PROFILE_EXPORT
from core.train_autoencoder.stage import STAGE as TRAIN_AUTOENCODER

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (GENERATE_DATA, PREPARE_FEATURES, TRAIN_AUTOENCODER, CLUSTER, PROFILE_EXPORT)
assert tuple(s.name for s in STAGES) == paths.STAGE_NAMES, "stage order differs from core.framework.paths"

__all__ = ["STAGES", "Stage", "StageContext", "StageStatus", "PipelineError", "all_stages", "stage_by_name",
           "resolve_stage_name", "pipeline_status", "run_pipeline", "run_stage", "show_stage", "format_status",
           "score_file", "stage_main", "main"]


def all_stages() -> list[Stage]:
    """Every stage in run order."""
    return list(STAGES)


def stage_by_name(name: str) -> Stage:
    """The stage called ``name`` (number, script name or config section)."""
    wanted = resolve_stage_name(name)
    return next(s for s in STAGES if s.name == wanted)


def resolve_stage_name(text: str) -> str:
    """Accept ``2``, ``02``, ``02_prepare_features`` or ``prepare_features``."""
    return runner.resolve_stage_name(text, paths.STAGE_NAMES)


def pipeline_status(config: PipelineConfig, artifacts_dir: Path) -> list[StageStatus]:
    """Status of every stage; a stage after a stale or missing one is stale too."""
    return runner.pipeline_status(STAGES, config, artifacts_dir)


def run_pipeline(config: PipelineConfig, artifacts_dir: Path, **which: Any) -> dict[str, str]:
    """Run the chain (see :func:`core.framework.runner.run_pipeline` for ``start``, ``only``, ``force``)."""
    return runner.run_pipeline(STAGES, config, artifacts_dir, **which)


def run_stage(stage: Stage, config: PipelineConfig, artifacts_dir: Path, code: str | None = None) -> StageContext:
    """Run one stage now and write its manifest (see :func:`core.framework.runner.run_stage`)."""
    return runner.run_stage(stage, config, artifacts_dir, code)


def stage_main(name: str, argv: list[str] | None = None) -> int:
    """Entry point of a numbered script: run that one stage (skipped if up to date)."""
    stage = stage_by_name(name)
    parser = argparse.ArgumentParser(prog=f"{stage.name}.py", description=stage.description)
    cli.add_common_arguments(parser)
    parser.add_argument("--force", action="store_true", help="rerun even if up to date")
    args = parser.parse_args(argv)
    cli.configure_logging(args.artifacts, args.verbose)

    def action() -> int:
        config = load_config(args.config)
        cli.check_artifacts_dir(args.artifacts)
        run_pipeline(config, args.artifacts, only=stage.name, force=args.force)
        return 0

    return cli.guarded(action)


# ---------------------------------------------------------------------------
# Scoring new customers


def score_file(config: PipelineConfig, artifacts_dir: Path, source: Path, output: Path | None = None,
               analysis_date: str | None = None) -> Path:
    """Score the customers of a transaction log or features file with a finished run's models.

    Reads ``source`` (``.parquet`` or ``.csv``), calls
    :func:`core.scoring.score_customers` and writes the result (``.parquet``
    or ``.csv``, by ``output``'s suffix; default
    ``<artifacts>/scores/<source name>.parquet``). Returns the output path.
    """
    source, artifacts_dir = Path(source), Path(artifacts_dir)
    if source.suffix.lower() not in (".parquet", ".csv"):
        raise PipelineError(f"{source}: give a .parquet or .csv file of order lines or customer features")
    if not source.is_file():
        raise PipelineError(f"{source} was not found")
    output = Path(output) if output else artifacts_dir / "scores" / f"{source.stem}.parquet"
    if output.suffix.lower() not in (".parquet", ".csv"):
        raise PipelineError(f"--output {output}: give a .parquet or .csv file name")
    day = None
    if analysis_date:
        try:
            day = pd.Timestamp(dt.date.fromisoformat(analysis_date))
        except ValueError:
            raise PipelineError(f"--analysis-date {analysis_date!r} is not a date; write YYYY-MM-DD") from None
    stale = [s for s in pipeline_status(config, artifacts_dir)[1:4] if s.state == "stale"]
    for status in stale:
        log.warning("%s is stale (%s); scoring uses its saved models as they are", status.stage,
                    "; ".join(status.reasons))
    frame = pd.read_parquet(source) if source.suffix.lower() == ".parquet" else pd.read_csv(source)
    saved = scoring.load_saved_run(artifacts_dir, config)
    scored = scoring.score_customers(frame, saved, analysis_date=day, source=str(source))
    if output.suffix.lower() == ".csv":
        artifacts.write_atomic(output, lambda tmp: scored.to_csv(tmp, index=False, encoding="utf-8",
                                                                 lineterminator="\n"))
    else:
        artifacts.write_atomic(output, lambda tmp: scored.to_parquet(tmp, index=False))
    excluded = int((scored["excluded_reason"] != "").sum())
    log.info("scored %s customers of %s with %s_%s (%s segments used)%s; written to %s",
             f"{len(scored) - excluded:,}", source.name, *saved.primary,
             scored["segment"].nunique(), f", {excluded:,} without features (see excluded_reason)" if excluded
             else "", output)
    return output


# ---------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """``python -m core.pipeline``: run, status, show or score."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(prog="python -m core.pipeline",
                                     description="Run and inspect the segmentation pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser("run", help="run stages that are stale or missing")
    cli.add_common_arguments(run_p)
    which = run_p.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
    which.add_argument("--only", metavar="STAGE", help="run only this stage")
    run_p.add_argument("--force", action="store_true", help="rerun even if up to date")
    status_p = commands.add_parser("status", help="show whether each stage is up to date, and why not")
    cli.add_common_arguments(status_p)
    show_p = commands.add_parser("show", help="show a stage's manifest and the head of its tables")
    cli.add_common_arguments(show_p)
    show_p.add_argument("stage", help="stage number or name")
    show_p.add_argument("--rows", type=int, default=5, help="rows shown per table (default 5)")
    score_p = commands.add_parser("score", help="score customers with the saved transforms and models")
    cli.add_common_arguments(score_p)
    score_p.add_argument("input", type=Path, help="order lines (like transactions.parquet) or customer features "
                                                  "(like enriched_department.parquet), .parquet or .csv")
    score_p.add_argument("--output", type=Path, help="result file, .parquet or .csv (default: "
                                                     "<artifacts>/scores/<input name>.parquet)")
    score_p.add_argument("--analysis-date", help="for order lines: the day features are measured at, "
                                                 "YYYY-MM-DD (default: the last order date in the input)")
    args = parser.parse_args(argv)
    cli.configure_logging(args.artifacts, args.verbose)

    def action() -> int:
        cli.check_artifacts_dir(args.artifacts)
        if args.command == "show":
            print(show_stage(resolve_stage_name(args.stage), args.artifacts, args.rows))
            return 0
        config = load_config(args.config)
        if args.command == "score":
            score_file(config, args.artifacts, args.input, args.output, args.analysis_date)
            return 0
        if args.command == "status":
            print(format_status(pipeline_status(config, args.artifacts)))
            return 0
        start = resolve_stage_name(args.start) if args.start else None
        only = resolve_stage_name(args.only) if args.only else None
        outcome = run_pipeline(config, args.artifacts, start=start, only=only, force=args.force)
        ran = [k for k, v in outcome.items() if v == "ran"]
        log.info("pipeline: %d stage(s) ran, %d up to date", len(ran), len(outcome) - len(ran))
        return 0

    return cli.guarded(action)


if __name__ == "__main__":
    sys.exit(main())