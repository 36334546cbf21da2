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
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from core.domain.columns import identifier_columns
from core.domain.tables import IDENTITY_COLUMNS
from core.framework import artifacts, paths, runner
from core.framework.errors import PipelineError
from core.framework.stage import Stage

if TYPE_CHECKING:
    from core import scoring

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
        self._with_null = [*values, None]  # code -1 picks the last: None

    def __getitem__(self, at: int):
        return self._with_null[self.codes.item(at)]

    def __len__(self) -> int:
        return len(self.codes)

    def slice(self, start: int, stop: int) -> list:
        """Rows ``start`` to ``stop`` as Python values."""
        with_null = self._with_null
        return [with_null[code] for code in self.codes[start:stop].tolist()]


def value_at(values: np.ndarray | Coded, at: int) -> Any:
    """Row ``at`` of a column as a JSON-ready Python value (NaN as None), without a numpy scalar on the way."""
    if isinstance(values, Coded):
        return values[at]
    if values.dtype.kind == "f":
        value = values.item(at)
        return None if value != value else value
    return plain(values[at]) if values.dtype.kind == "O" else values.item(at)


def values_between(values: np.ndarray | Coded, start: int, stop: int) -> list:
    """Rows ``start`` to ``stop`` of a column as JSON-ready Python values (NaN as None)."""
    if isinstance(values, Coded):
        return values.slice(start, stop)
    if values.dtype.kind == "O":
        return [plain(v) for v in values[start:stop]]
    part = values[start:stop].tolist()
    return [None if v != v else v for v in part] if values.dtype.kind == "f" else part


class CustomerIndex:
    """The row of a customer id's text: ``42`` finds the whole-number id 42, ``C00042`` the text id C00042.

    Whole-number ids are kept as one sorted int64 array (8 bytes a customer,
    a binary search a lookup, no Python object per customer: a million ids
    as a dict of strings would take over 100 MB and a second to build);
    text ids as a dict. Either way a text finds an id exactly when it is the
    id as text: ``042``, ``+42`` or ``42.0`` find nothing.
    """

    def __init__(self, ids: np.ndarray | Coded):
        self._row_of: dict[str, int] | None = None
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
            ids = ids.astype(np.int64, copy=False)
            ascending = bool(np.all(ids[1:] > ids[:-1]))
            self._order = None if ascending else np.argsort(ids, kind="stable")
            self._ids = ids if ascending else ids[self._order]
            twice = not ascending and bool(np.any(self._ids[1:] == self._ids[:-1]))
        else:
            texts = _id_text(ids)
            self._row_of = dict(zip(texts, range(len(texts))))
            self._ids, twice = texts, len(self._row_of) != len(texts)
        if twice:
            raise PipelineError("customers_with_segments.parquet holds a customer id twice (as text); rerun stage 05")

    def __len__(self) -> int:
        return len(self._ids)

    def find(self, text: str) -> int | None:
        """The row of the customer whose id is ``text``, or None."""
        if self._row_of is not None:
            return self._row_of.get(text)
        try:
            number = int(text)
        except ValueError:
            return None
        if not _INT64[0] <= number <= _INT64[1] or str(number) != text:
            return None
        at = int(np.searchsorted(self._ids, number))
        if at == len(self._ids) or self._ids[at] != number:
            return None
        return at if self._order is None else int(self._order[at])

    def find_many(self, values: np.ndarray | Coded) -> np.ndarray:
        """Rows of many ids as stored (another table's customer_id column); -1 where unknown."""
        if self._row_of is None and isinstance(values, np.ndarray) and values.dtype.kind in "iu" and len(self._ids):
            if self._order is None and np.array_equal(values, self._ids):  # every customer, in the table's order
                return np.arange(len(values), dtype=np.int64)
            at = np.minimum(np.searchsorted(self._ids, values), len(self._ids) - 1)
            rows = at if self._order is None else self._order[at]
            return np.where(self._ids[at] == values, rows, -1).astype(np.int64)
        return np.fromiter((-1 if (row := self.find(text)) is None else row for text in _id_text(values)),
                           np.int64, len(values))


_INT64 = (-(2 ** 63), 2 ** 63 - 1)


@dataclasses.dataclass
class CustomerTable:
    """customers_with_segments.parquet as column arrays, found by the customer id's text.

    ``recommendations`` holds recommendations.parquet's columns sorted by
    customer and rank; a customer's rows are ``rec_start[row]`` up to
    ``rec_stop[row]`` (``row`` from ``index.find``).
    """

    columns: dict[str, np.ndarray | Coded]
    index: CustomerIndex
    recommendations: dict[str, np.ndarray | Coded] | None = None
    rec_start: np.ndarray | None = None
    rec_stop: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def find(self, customer_id: str) -> int | None:
        """The row of ``customer_id`` (its text), or None for an unknown id."""
        return self.index.find(customer_id)

    def row(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's columns as plain Python values, or None for an unknown id."""
        at = self.index.find(customer_id)
        return None if at is None else self.row_at(at)

    def row_at(self, at: int) -> dict[str, Any]:
        """Row ``at``'s columns as plain Python values."""
        return {name: value_at(values, at) for name, values in self.columns.items()}

    def next_best(self, customer_id: str) -> list[dict[str, Any]] | None:
        """The customer's next-best classes in rank order; None when the run made none."""
        at = self.index.find(customer_id)
        if at is None:
            return None if self.recommendations is None else []
        return self.next_best_at(at)

    def next_best_at(self, at: int) -> list[dict[str, Any]] | None:
        """Row ``at``'s next-best classes in rank order; None when the run made none."""
        if self.recommendations is None:
            return None
        start, stop = self.rec_start.item(at), self.rec_stop.item(at)
        names = list(self.recommendations)
        columns = [values_between(values, start, stop) for values in self.recommendations.values()]
        return [dict(zip(names, row)) for row in zip(*columns)]


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
    table = artifacts.load_output(artifacts_dir, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS,
                                  read_table_coded)
    recommendations = None
    if artifacts.recorded_output(manifest, paths.RECOMMENDATIONS) is not None:
        recommendations = artifacts.load_output(artifacts_dir, paths.PROFILE_EXPORT, paths.RECOMMENDATIONS,
                                                read_table_coded)
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
    # Imported here, in the background load: scoring brings scikit-learn (seconds of start-up otherwise).
    from core import scoring

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
        recommendations.parquet (``customer_id``, ``rank``, ...), any order
        (sorted here unless already in customer and rank order, as stage 05 writes it).
    """
    # Direct identifiers never leave the service: dropped here, whatever a future stage 05 adds (the
    # segment names match the identifier patterns' "*name*" but name segments, not people).
    dropped = set(IDENTITY_COLUMNS) | set(identifier_columns(table.column_names)) - _NOT_IDENTIFIERS
    columns = {name: _array(table.column(name)) for name in table.column_names if name not in dropped}
    index = CustomerIndex(columns.pop("customer_id"))
    if recommendations is None:
        return CustomerTable(columns, index)
    if not _in_customer_and_rank_order(recommendations):
        recommendations = recommendations.sort_by([("customer_id", "ascending"), ("rank", "ascending")])
    raw = _array(recommendations.column("customer_id"))
    rec_columns = {name: _array(recommendations.column(name)) for name in recommendations.column_names
                   if name != "customer_id" and name not in dropped}
    # Rows of one customer are contiguous after the sort: keep where each customer's rows start and stop.
    keys = raw.codes if isinstance(raw, Coded) else raw
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.array([], np.int64)
    stops = np.r_[starts[1:], len(keys)].astype(np.int64)
    first = Coded(raw.codes[starts], raw.values) if isinstance(raw, Coded) else raw[starts]
    rows = index.find_many(first)
    known = rows >= 0  # a recommended customer missing from the table is never asked for
    rec_start, rec_stop = np.zeros(len(index), np.int64), np.zeros(len(index), np.int64)
    rec_start[rows[known]], rec_stop[rows[known]] = starts[known], stops[known]
    return CustomerTable(columns, index, rec_columns, rec_start, rec_stop)


def _in_customer_and_rank_order(recommendations) -> bool:
    """True when rows are sorted by whole-number customer id, then rank (no sort needed)."""
    ids, ranks = (_array(recommendations.column(name)) for name in ("customer_id", "rank"))
    if not all(isinstance(v, np.ndarray) and v.dtype.kind in "iu" for v in (ids, ranks)):
        return False
    same = ids[1:] == ids[:-1]
    return bool(np.all(ids[1:] >= ids[:-1]) and np.all(~same | (ranks[1:] > ranks[:-1])))


def read_table_coded(handle):
    """A Parquet table with its text columns read as dictionaries (codes, not a Python string a row)."""
    import pyarrow as pa

    schema = pq.read_schema(handle)
    handle.seek(0)
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return pq.read_table(handle, read_dictionary=text)


def _array(column) -> np.ndarray | Coded:
    """A column as numpy (float nulls as NaN), text and whole numbers with nulls as :class:`Coded`, other
    columns as objects (None for null)."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    if pa.types.is_floating(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
        return _coded(column if pa.types.is_dictionary(column.type) else column.dictionary_encode())
    if pa.types.is_integer(column.type):  # whole numbers with nulls (a runner-up id may be missing)
        return _coded(column.dictionary_encode())
    return np.asarray(column.to_pylist(), dtype=object)  # anything else: Python objects


def _coded(column) -> Coded:
    indices = column.indices
    if indices.null_count:
        indices = indices.fill_null(-1)
    return Coded(indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False), column.dictionary.to_pylist())


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
