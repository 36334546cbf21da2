"""The pipeline: the five stages in order, and the command line that runs, inspects and scores them.

Usage (from the repository root)::

    python -m core.pipeline [run] [--from STAGE | --only STAGE] [--force]
    python -m core.pipeline status
    python -m core.pipeline show STAGE [--rows N]
    python -m core.pipeline score INPUT [--output FILE] [--analysis-date YYYY-MM-DD]
    python -m core.pipeline serve [--host 127.0.0.1] [--port 8000] [--mcp-stdio]
    python -m core.pipeline add-key NAME --scopes segments,customers

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

from core.cluster.stage import STAGE as CLUSTER
from core.config import PipelineConfig, load_config
from core.framework import artifacts, cli, lock, paths, runner
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
        command = " ".join([f"{stage.name}.py", *(sys.argv[1:] if argv is None else argv)])
        with lock.folder_lock(args.artifacts, command):  # one run per artifacts folder
            run_pipeline(config, args.artifacts, only=stage.name, force=args.force)
        return 0

    return cli.guarded(action)


# ---------------------------------------------------------------------------
# Scoring new customers


def score_file(config: PipelineConfig, artifacts_dir: Path, source: Path, output: Path | None = None,
               analysis_date: str | None = None) -> Path:
    """Score the customers of a transaction log or features file with a finished run's models.

    Reads ``source`` (``.parquet`` or ``.csv``), refuses a malformed one
    (:func:`read_scoring_input`, :func:`check_scoring_input`: one line
    naming the file, the column, the row and what is expected), calls
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
    frame = read_scoring_input(source)  # an unreadable or empty file stops before any model is loaded
    # Imported here: scoring loads scikit-learn and TensorFlow, which run, status and show never need.
    from core import scoring

    saved = scoring.load_saved_run(artifacts_dir, config)
    frame = check_scoring_input(frame, scoring.input_kind(frame, saved.transformer, str(source)),
                                list(saved.transformer.columns), source)
    scored = scoring.score_customers(frame, saved, analysis_date=day, source=str(source),
                                     id_kind=scoring.trained_id_kind(artifacts_dir, config.ingest.customer_id.kind),
                                     max_id_length=config.ingest.customer_id.max_length)
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


def read_scoring_input(source: Path) -> pd.DataFrame:
    """The rows of a file handed to ``score``: a readable ``.csv`` or ``.parquet`` file with at least one row.

    Raises
    ------
    PipelineError
        In one line naming the file and what is wrong with it (empty, a
        header only, not CSV or Parquet, not UTF-8).
    """
    what = "give order lines (the columns of transactions.parquet) or customer features, with a header row"
    try:
        if source.suffix.lower() == ".parquet":
            frame = pd.read_parquet(source)
        else:
            # Ids as text, so 00123 keeps its zeros (core/domain/customer_ids.py reads them).
            frame = pd.read_csv(source, dtype={"customer_id": str})
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{source}: the file is empty; {what}") from None
    except pd.errors.ParserError as exc:
        raise PipelineError(f"{source}: not a readable CSV file ({_first_line(exc)}); {what}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{source}: not UTF-8 text; save it as UTF-8 CSV") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: a damaged Parquet file
        kind = "Parquet" if source.suffix.lower() == ".parquet" else "CSV"
        raise PipelineError(f"{source}: not a readable {kind} file ({_first_line(exc)}); {what}") from None
    if len(frame) == 0:
        raise PipelineError(f"{source}: no rows{' (a header only)' if len(frame.columns) else ''}; give at least "
                            f"one order line or customer")
    return frame


def check_scoring_input(frame: pd.DataFrame, kind: str, feature_columns: list[str], source: Path) -> pd.DataFrame:
    """``frame`` checked value by value before scoring, with text columns of numbers made numbers.

    Order lines (``kind`` ``transactions``) need the required columns of
    ``transactions.parquet`` (``core.domain.tables``; ``unit_price`` is
    never read) filled, their numbers numeric and finite, whole where the
    table says so, dates that parse and a true/false return flag. A features
    file needs ``customer_id`` and every model feature (``feature_columns``),
    finite numbers for every customer.

    Raises
    ------
    PipelineError
        On the first bad value, in one line: the file, the column, the row
        (1 = the first row after the header) and what is expected.
    """
    import warnings

    import numpy as np
    import pyarrow as pa

    from core.domain.tables import TRANSACTION_TABLE

    if kind == "transactions":
        table = {c.name: c for c in TRANSACTION_TABLE if c.name in frame.columns}
        required = [name for name, c in table.items() if c.required and name != "unit_price"]
    else:
        table = {c.name: c for c in TRANSACTION_TABLE if c.name == "customer_id"}
        required = ["customer_id", *feature_columns]
    checked = frame  # copied only when a column of numbers written as text is converted
    for column in dict.fromkeys([*required, *table]):
        values = checked[column]
        arrow = table[column].type if column in table else pa.float64()

        def stop(position: int, problem: str) -> None:
            row = f"row {position + 1}{' after the header' if source.suffix.lower() == '.csv' else ''}"
            raise PipelineError(f"{source}: column {column}, {row}: {problem}")

        missing = np.flatnonzero(values.isna().to_numpy())
        if len(missing) and column in required:
            stop(missing[0], f"no value; every {'order line' if kind == 'transactions' else 'customer'} "
                             f"needs {column}")
        if column == "customer_id":
            continue  # ids may be text (C00001, 00123): core.scoring reads them as stage 01 does
        if pa.types.is_integer(arrow) or pa.types.is_floating(arrow):
            if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
                numbers = pd.to_numeric(values.astype("object"), errors="coerce")
                bad = np.flatnonzero((numbers.isna() & values.notna()).to_numpy())
                if len(bad) or pd.api.types.is_bool_dtype(values):
                    first = bad[0] if len(bad) else 0
                    stop(first, f"{values.iloc[first]!r} is not a number; expected "
                                f"{'a whole number' if pa.types.is_integer(arrow) else 'a number such as 12.50'}")
                checked = checked.copy() if checked is frame else checked
                checked[column] = values = numbers
            numbers = values.to_numpy(np.float64, na_value=np.nan)
            bad = np.flatnonzero(np.isinf(numbers))
            if len(bad):
                stop(bad[0], f"{numbers[bad[0]]} is not a finite number; expected a finite number")
            if pa.types.is_integer(arrow):
                bad = np.flatnonzero(~np.isnan(numbers) & (numbers != np.round(numbers)))
                if len(bad):
                    stop(bad[0], f"{numbers[bad[0]]} is not a whole number; expected an integer id or count")
        elif pa.types.is_timestamp(arrow) and not pd.api.types.is_datetime64_any_dtype(values):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "could not infer format": the bad value is named
                dates = pd.to_datetime(values.astype("object"), errors="coerce")
            bad = np.flatnonzero((dates.isna() & values.notna()).to_numpy())
            if len(bad):
                stop(bad[0], f"{values.iloc[bad[0]]!r} is not a date; expected YYYY-MM-DD (or YYYY-MM-DD hh:mm:ss) "
                             f"in every row")
        elif pa.types.is_boolean(arrow) and not pd.api.types.is_bool_dtype(values):
            text = values.astype("object").map(lambda v: str(v).strip().lower(), na_action="ignore")
            bad = np.flatnonzero((~text.isin(list(_TRUE_FALSE)) & values.notna()).to_numpy())
            if len(bad):
                stop(bad[0], f"{values.iloc[bad[0]]!r} is not true or false; expected one of "
                             f"{', '.join(_TRUE_FALSE)}")
    return checked


# The return flag's spellings core.scoring reads (a CSV gives text or 0/1).
_TRUE_FALSE = ("true", "false", "1", "0", "yes", "no")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ---------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """``python -m core.pipeline``: run, status, show, score, serve or add-key."""
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
    _add_service_commands(commands)
    args = parser.parse_args(argv)
    cli.configure_logging(args.artifacts, args.verbose)

    def action() -> int:
        cli.check_artifacts_dir(args.artifacts)
        if args.command in ("serve", "add-key"):
            return _service_command(args)
        if args.command == "show":
            print(show_stage(resolve_stage_name(args.stage), args.artifacts, args.rows))
            return 0
        config = load_config(args.config)
        # run and score write into the artifacts folder: one at a time (status and show only read).
        command = " ".join(argv)
        if args.command == "score":
            with lock.folder_lock(args.artifacts, command):
                score_file(config, args.artifacts, args.input, args.output, args.analysis_date)
            return 0
        if args.command == "status":
            print(format_status(pipeline_status(config, args.artifacts)))
            return 0
        start = resolve_stage_name(args.start) if args.start else None
        only = resolve_stage_name(args.only) if args.only else None
        with lock.folder_lock(args.artifacts, command):
            outcome = run_pipeline(config, args.artifacts, start=start, only=only, force=args.force)
        ran = [k for k, v in outcome.items() if v == "ran"]
        log.info("pipeline: %d stage(s) ran, %d up to date", len(ran), len(outcome) - len(ran))
        return 0

    return cli.guarded(action)


def _add_service_commands(commands) -> None:
    """``serve`` and ``add-key``: the segment service over the finished run (core.service, issue 17)."""
    serve_p = commands.add_parser("serve", help="serve the finished run: HTTP API and MCP (read-only)")
    cli.add_common_arguments(serve_p)
    serve_p.add_argument("--host", help="address to listen on (default: service.host, 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="port (default: service.port, 8000)")
    serve_p.add_argument("--mcp-stdio", action="store_true",
                         help="speak MCP on stdin/stdout, for a desktop agent that starts this as a subprocess")
    key_p = commands.add_parser("add-key", help="create an API key for serve; prints it once")
    cli.add_common_arguments(key_p)
    key_p.add_argument("name", help="who the key is for (named in the audit log)")
    key_p.add_argument("--scopes", required=True, help="segments (aggregates), customers (per-customer "
                                                       "lookups and scoring), or both: segments,customers")


def _service_command(args) -> int:
    """Run ``serve`` or ``add-key`` (imported here: the web and MCP libraries load only for these)."""
    from core.service import server

    config = load_config(args.config)
    if args.command == "add-key":
        key = server.add_key_command(config, args.name, args.scopes)
        print(f"key {args.name!r} ({args.scopes}), stored as a hash in {server.keys_path(config)}; it is shown "
              f"this once:\n{key}")
        return 0
    return server.serve(STAGES, config, args.artifacts, check_scoring_input, host=args.host, port=args.port,
                        mcp_stdio=args.mcp_stdio)


if __name__ == "__main__":
    cli.exit_with(main())