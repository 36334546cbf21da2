"""The finished run the service answers from: checked, verified, and held in memory.

:func:`load_served_run` refuses a run with a stage missing or stale (the
runner's own status), loads every file through the manifest's SHA-256
(:func:`core.framework.artifacts.load_output`), and reads the stage
manifests before and after loading: if a run finished in between, it loads
again, so one answer never mixes two runs. Once loaded, nothing is read
from disk again, except the scoring models, loaded once in the background
after start-up (:func:`load_scoring_chain`, which refuses them if another
run has finished meanwhile): a later run is picked up by restarting the
service (see README "Segment service").
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from core import scoring
from core.domain.columns import identifier_columns
from core.domain.tables import IDENTITY_COLUMNS
from core.framework import artifacts, paths, runner
from core.framework.errors import PipelineError
from core.framework.stage import Stage

log = logging.getLogger(__name__)

# Customer-level estimates from stage 02 that stage 05 appends to customers_with_segments.parquet.
VALUE_COLUMNS = ("p_alive", "expected_orders", "expected_revenue", "churn_risk")
# Columns of stage 05's tables whose names look like identifiers but are not about a person.
_NOT_IDENTIFIERS = {"customer_id", "segment_name", "runner_up_segment_name"}


class Coded:
    """A text column held as integer codes into its distinct values (-1 for null).

    A million customers' segment names as Python strings would take about
    60 MB each column, and five next-best classes per customer five times
    that; as codes they take 4 bytes a row.
    """

    def __init__(self, codes: np.ndarray, values: list):
        self.codes = codes
        self.values = values

    def __getitem__(self, at: int):
        code = self.codes[at]
        return None if code < 0 else self.values[code]

    def __len__(self) -> int:
        return len(self.codes)


@dataclasses.dataclass
class CustomerTable:
    """customers_with_segments.parquet as column arrays, found by the customer id's text.

    ``recommendations`` holds recommendations.parquet's columns sorted by
    customer and rank; a customer's rows are ``rec_start[row]`` up to
    ``rec_stop[row]`` (``row`` from ``row_of``).
    """

    columns: dict[str, np.ndarray | Coded]
    row_of: dict[str, int]
    recommendations: dict[str, np.ndarray | Coded] | None = None
    rec_start: np.ndarray | None = None
    rec_stop: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row_of)

    def row(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's columns as plain Python values, or None for an unknown id."""
        at = self.row_of.get(customer_id)
        if at is None:
            return None
        return {name: plain(values[at]) for name, values in self.columns.items()}

    def next_best(self, customer_id: str) -> list[dict[str, Any]] | None:
        """The customer's next-best classes in rank order; None when the run made none."""
        if self.recommendations is None:
            return None
        at = self.row_of.get(customer_id)
        if at is None:
            return []
        return [{name: plain(values[i]) for name, values in self.recommendations.items()}
                for i in range(int(self.rec_start[at]), int(self.rec_stop[at]))]


@dataclasses.dataclass
class ServedRun:
    """Everything the service answers from, loaded from one finished run."""

    artifacts_dir: Path
    run_id: str
    made_at: str
    metadata: dict[str, Any]
    segments: dict[int, dict[str, Any]]
    customers: CustomerTable
    fingerprint: str
    load_seconds: float

    def segment(self, segment_id: int) -> dict[str, Any] | None:
        """A segment of the agent export as it is (a suppressed one carries its size and reason only)."""
        return self.segments.get(segment_id)


def manifests_fingerprint(artifacts_dir: Path) -> str:
    """SHA-256 over every stage's manifest bytes: it changes when any stage finishes again."""
    digest = hashlib.sha256()
    for stage in paths.STAGE_NAMES:
        manifest = paths.stage_dir(artifacts_dir, stage) / paths.MANIFEST
        digest.update(stage.encode())
        digest.update(manifest.read_bytes() if manifest.exists() else b"-")
    return digest.hexdigest()


def check_run_is_current(stages: Sequence[Stage], config, artifacts_dir: Path) -> None:
    """Refuse a run with a stage missing or stale, naming each stage and why (the runner's status)."""
    problems = [s for s in runner.pipeline_status(stages, config, artifacts_dir) if not s.up_to_date]
    if problems:
        lines = "; ".join(f"{s.stage} is {s.state} ({', '.join(s.reasons[:2])})" for s in problems)
        raise PipelineError(f"the run in {artifacts_dir} cannot be served: {lines}. Finish it first "
                            f"(`run.bat` or `./run.sh`, with the same --config and --artifacts), then serve")


def load_served_run(stages: Sequence[Stage], config, artifacts_dir: Path, attempts: int = 3) -> ServedRun:
    """The finished run of ``artifacts_dir``, verified and in memory.

    Parameters
    ----------
    stages : sequence of Stage
        The pipeline's stages (``core.pipeline.STAGES``), for their status.
    config : core.config.PipelineConfig
    artifacts_dir : Path
    attempts : int
        Loads tried when a run keeps finishing during the load.

    Raises
    ------
    PipelineError
        When a stage is missing or stale, a file is not the one its manifest
        recorded, or runs kept finishing while loading.
    """
    artifacts_dir = Path(artifacts_dir)
    for _ in range(attempts):
        clock = time.perf_counter()
        before = manifests_fingerprint(artifacts_dir)
        check_run_is_current(stages, config, artifacts_dir)
        served = _load(config, artifacts_dir, before)
        if manifests_fingerprint(artifacts_dir) == before:
            served.load_seconds = time.perf_counter() - clock
            return served
        log.warning("a run finished in %s while it was being loaded; loading it again", artifacts_dir)
    raise PipelineError(f"runs kept finishing in {artifacts_dir} while the service loaded it ({attempts} tries); "
                        f"start the service when the pipeline is not running")


def _load(config, artifacts_dir: Path, fingerprint: str) -> ServedRun:
    export = artifacts.load_output(artifacts_dir, paths.PROFILE_EXPORT, paths.SEGMENT_PROFILES_JSON, json.load)
    manifest = artifacts.read_manifest(paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)) or {}
    table = artifacts.load_output(artifacts_dir, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS, pq.read_table)
    recommendations = None
    if artifacts.recorded_output(manifest, paths.RECOMMENDATIONS) is not None:
        recommendations = artifacts.load_output(artifacts_dir, paths.PROFILE_EXPORT, paths.RECOMMENDATIONS,
                                                pq.read_table)
    metadata = export["metadata"]
    return ServedRun(artifacts_dir=artifacts_dir, run_id=metadata["run_id"],
                     made_at=manifest.get("started_at", metadata.get("generated_at", "")), metadata=metadata,
                     segments={int(s["segment_id"]): s for s in export["segments"]},
                     customers=customer_table(table, recommendations), fingerprint=fingerprint,
                     load_seconds=0.0)


def load_scoring_chain(run: ServedRun, config) -> scoring.ScoringChain:
    """The saved models of the run served (verified), refused if another run has finished since it was loaded.

    Loaded apart from the rest, after start-up: it imports TensorFlow when a
    segmentation uses the autoencoder's space, which takes seconds, and only
    scoring needs it.
    """
    chain = scoring.load_saved_run(run.artifacts_dir, config)
    if manifests_fingerprint(run.artifacts_dir) != run.fingerprint:
        raise PipelineError(f"a newer run finished in {run.artifacts_dir} after the service started, so the saved "
                            f"models are no longer those of run {run.run_id}; restart serve to serve the new run")
    return chain


def customer_table(table, recommendations=None) -> CustomerTable:
    """Column arrays and an index by the customer id's text, without identity columns.

    Parameters
    ----------
    table : pyarrow.Table
        customers_with_segments.parquet.
    recommendations : pyarrow.Table, optional
        recommendations.parquet (``customer_id``, ``rank``, ...), any order.
    """
    # Direct identifiers never leave the service: dropped here, whatever a future stage 05 adds (the
    # segment names match the identifier patterns' "*name*" but name segments, not people).
    dropped = set(IDENTITY_COLUMNS) | set(identifier_columns(table.column_names)) - _NOT_IDENTIFIERS
    columns = {name: _array(table.column(name)) for name in table.column_names if name not in dropped}
    ids = _id_text(columns.pop("customer_id"))
    row_of = dict(zip(ids, range(len(ids))))
    if len(row_of) != len(ids):
        raise PipelineError("customers_with_segments.parquet holds a customer id twice (as text); rerun stage 05")
    if recommendations is None:
        return CustomerTable(columns, row_of)
    recommendations = recommendations.sort_by([("customer_id", "ascending"), ("rank", "ascending")])
    raw = recommendations.column("customer_id").to_numpy()
    rec_columns = {name: _array(recommendations.column(name)) for name in recommendations.column_names
                   if name != "customer_id" and name not in dropped}
    # Rows of one customer are contiguous after the sort: keep where each customer's rows start and stop
    # (only the first row's id is turned into text: five times fewer strings at load).
    starts = np.flatnonzero(np.r_[True, raw[1:] != raw[:-1]]) if len(raw) else np.array([], np.int64)
    stops = np.r_[starts[1:], len(raw)].astype(np.int64)
    rows = np.fromiter((row_of.get(key, -1) for key in _id_text(raw[starts])), np.int64, len(starts))
    known = rows >= 0  # a recommended customer missing from the table is never asked for
    rec_start, rec_stop = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64)
    rec_start[rows[known]], rec_stop[rows[known]] = starts[known], stops[known]
    return CustomerTable(columns, row_of, rec_columns, rec_start, rec_stop)


def _array(column) -> np.ndarray | Coded:
    """A column as numpy (float nulls as NaN), text as :class:`Coded`, other columns as objects (None for null)."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    if pa.types.is_floating(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
        coded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        codes = coded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        return Coded(codes, coded.dictionary.to_pylist())
    # Whole numbers with nulls (a runner-up id may be missing), and anything else: Python objects.
    return np.asarray(column.to_pylist(), dtype=object)


def _id_text(values: np.ndarray | Coded) -> np.ndarray:
    """Customer ids as the text a caller sends: ``42`` for an integer id, the text itself for a text id."""
    if isinstance(values, Coded):
        return np.asarray([str(values[i]) for i in range(len(values))], dtype=object)
    return np.asarray([str(v) for v in values.tolist()], dtype=object)


def plain(value: Any) -> Any:
    """A numpy value as a JSON-ready Python value (NaN as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
