"""What the service answers: one function per question, shared by the HTTP API and the MCP tools.

Each returns plain JSON-ready data, or raises :class:`ServiceError` with
the HTTP status and a message naming what is wrong and the fix. Nothing
here knows about HTTP or MCP.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from core.framework.errors import PipelineError
from core.service.run import VALUE_COLUMNS, ServedRun, plain

if TYPE_CHECKING:
    from core import scoring

log = logging.getLogger(__name__)

#: ``check_scoring_input`` of :mod:`core.pipeline` (the score command's own checks), handed in by ``serve``.
LineCheck = Callable[[pd.DataFrame, str, list, Path], pd.DataFrame]


class ServiceError(Exception):
    """A request the service refuses: ``status`` (400, 401, 403, 404, 413, 422, 503) and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def health(run: ServedRun, newer_run: bool, scoring_state: str) -> dict[str, Any]:
    """``ok``, the run served, whether a newer run has finished since start-up (restart to serve it), and
    whether scoring is ready (its models load in the background after start-up)."""
    return {"status": "ok", "run_id": run.run_id, "newer_run_finished": newer_run, "scoring": scoring_state}


def run_summary(run: ServedRun) -> dict[str, Any]:
    """The run served: id, data period, primary method and space, segments, when it was made."""
    meta = run.metadata
    return {"run_id": run.run_id, "data_period": meta["data_period"], "method": meta["method"],
            "space": meta["space"], "segmentation": meta["segmentation"], "customers": meta["customers"],
            "segments": [{"segment_id": s["segment_id"], "name": s["name"], "size": s["size"],
                          "suppressed": s["suppressed"]} for s in run.segments.values()],
            "made_at": run.made_at, "generated_at": meta["generated_at"]}


def list_segments(run: ServedRun) -> dict[str, Any]:
    """The agent export as it is: its metadata and every segment (suppressed ones with size and reason only)."""
    return {"metadata": run.metadata, "segments": list(run.segments.values())}


def get_segment(run: ServedRun, segment_id: str | int) -> dict[str, Any]:
    """One segment of the agent export; 400 for an id that is not a whole number, 404 for an unknown one."""
    try:
        number = int(str(segment_id).strip())
    except ValueError:
        raise ServiceError(400, f"segment id {str(segment_id)[:40]!r} is not a whole number; ids are listed by "
                                f"GET /segments") from None
    segment = run.segment(number)
    if segment is None:
        raise ServiceError(404, f"run {run.run_id} has no segment {number}; ids are listed by GET /segments")
    return segment


def check_customer_id(customer_id: Any, max_length: int) -> str:
    """The id as text, refusing one that is empty, too long or holds control characters (400)."""
    if isinstance(customer_id, bool) or not isinstance(customer_id, (str, int)):
        raise ServiceError(400, "customer id must be text or a whole number")
    text = str(customer_id)
    if not text or len(text) > max_length:
        raise ServiceError(400, f"customer id has {len(text)} characters; give 1 to {max_length} "
                                f"(service.max_customer_id_length)")
    if not text.isprintable():
        raise ServiceError(400, "customer id holds control or non-printable characters; give the id as written "
                                "in customers_with_segments.parquet")
    return text


def get_customer(run: ServedRun, customer_id: str) -> dict[str, Any] | None:
    """A customer's segment, strength, runner-up, the segment's strategy, value estimates and next-best classes.

    ``customer_id`` is matched against the run's ids as text (``42`` finds
    the integer id 42; ``00123`` finds the text id ``00123``). Returns None
    for an unknown id. A customer in a segment the agent export suppresses
    (too small to describe) gets the segment's id and name but no strategy,
    with the reason.
    """
    at = run.customers.find(customer_id)
    if at is None:
        return None
    head, segment_id, tail = customer_parts(run, customer_id, at)
    return {**head, **strategy_part(run, segment_id), **tail}


def customer_parts(run: ServedRun, customer_id: str, at: int) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Row ``at``'s answer around its segment's strategy: (the fields before it, the segment id, those after).

    Split so that :class:`CustomerAnswers` can put the strategy in as JSON
    rendered once per segment, not once per request.
    """
    row = run.customers.row_at(at)
    runner_up = row.get("runner_up_segment_id")
    values = {c: row[c] for c in VALUE_COLUMNS if c in row}
    head = {
        "customer_id": customer_id,
        "run_id": run.run_id,
        "segment": {"segment_id": row["segment_id"], "name": row["segment_name"], "strength": row["strength"]},
        "runner_up": (None if runner_up is None or runner_up == row["segment_id"]
                      else {"segment_id": runner_up, "name": row.get("runner_up_segment_name", "")}),
    }
    tail = {
        "reconstruction_error": row.get("reconstruction_error"),
        "customer_value": values or None,
        "next_best_classes": run.customers.next_best_at(at),
    }
    return head, row["segment_id"], tail


def strategy_part(run: ServedRun, segment_id: int) -> dict[str, Any]:
    """``strategy`` and ``strategy_note`` of a customer in ``segment_id`` (none, with the reason, if suppressed)."""
    segment = run.segment(segment_id)
    suppressed = segment is None or segment.get("suppressed", False)
    return {"strategy": None if suppressed else segment.get("strategy"),
            "strategy_note": ((segment or {}).get("reason") or "segment not described in the agent export")
            if suppressed else ""}


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def to_json(content: Any) -> bytes:
    """The service's JSON: UTF-8 text (names with £ or accents as they are), compact, refusing NaN."""
    return _ENCODER.encode(content).encode("utf-8")


class CustomerAnswers:
    """``GET /customers/{id}`` as JSON bytes: :func:`get_customer`'s answer, with each segment's strategy
    rendered once.

    A segment's strategy is most of a customer's answer (channel, offer,
    tone, timing: about a kilobyte of JSON); serialising it again for each
    request was the largest part of a lookup's CPU after HTTP parsing.
    """

    def __init__(self, run: ServedRun):
        self.run = run
        self._strategy: dict[int, bytes] = {}

    def render(self, customer_id: str, at: int) -> tuple[bytes, int]:
        """(the JSON body, the segment id) of row ``at``, asked for as ``customer_id``."""
        head, segment_id, tail = customer_parts(self.run, customer_id, at)
        strategy = self._strategy.get(segment_id)
        if strategy is None:  # first customer of this segment: render its part once (a few segments per run)
            strategy = self._strategy[segment_id] = to_json(strategy_part(self.run, segment_id))[1:-1]
        return to_json(head)[:-1] + b"," + strategy + b"," + to_json(tail)[1:], segment_id


class Scorer:
    """POST /score and the score_customer tool: order lines in, the score command's columns out.

    The saved models are loaded in a background thread (:meth:`start`), so
    lookups are served while they load; a score request waits for them. One
    scoring at a time (a lock): the models are shared, and two scorings at
    once on two cores would only slow the lookups.
    """

    def __init__(self, load_chain: Callable[[], scoring.ScoringChain], check_lines: LineCheck, max_lines: int,
                 wait_seconds: float = 120.0):
        self.load_chain = load_chain
        self.check_lines = check_lines
        self.max_lines = max_lines
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._chain: scoring.ScoringChain | None = None
        self._failure: str | None = None

    def start(self) -> None:
        """Load the models in a background thread."""
        threading.Thread(target=self._load, name="load-scoring-models", daemon=True).start()

    def _load(self) -> None:
        try:
            self._chain = self.load_chain()
        except Exception as exc:  # noqa: BLE001 - kept and reported by every score request (503)
            self._failure = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
            log.error("scoring is unavailable: %s", self._failure)
        finally:
            self._ready.set()

    @property
    def state(self) -> str:
        """``loading``, ``ready`` or ``unavailable: <why>``."""
        if not self._ready.is_set():
            return "loading"
        return "ready" if self._chain is not None else f"unavailable: {self._failure}"

    def chain(self) -> scoring.ScoringChain:
        """The loaded models; 503 while they are still loading after ``wait_seconds``, or when loading failed."""
        if not self._ready.wait(self.wait_seconds):
            raise ServiceError(503, "the scoring models are still loading; try again in a few seconds")
        if self._chain is None:
            raise ServiceError(503, f"scoring is unavailable: {self._failure}")
        return self._chain

    def score(self, body: Any) -> list[dict[str, Any]]:
        """Score ``{"lines": [...], "analysis_date": "YYYY-MM-DD" (optional)}``; one row per customer.

        Raises
        ------
        ServiceError
            400 for a body of the wrong shape, 413 above ``max_lines`` lines,
            422 for lines the score command would refuse (its message).
        """
        if not isinstance(body, dict) or not isinstance(body.get("lines"), list):
            raise ServiceError(400, 'give a JSON object {"lines": [order lines], "analysis_date": "YYYY-MM-DD" '
                                    '(optional)}, each line with the columns of transactions.parquet')
        lines, day = body["lines"], body.get("analysis_date")
        if not lines or not all(isinstance(line, dict) for line in lines):
            raise ServiceError(400, "lines must be a non-empty list of objects, one per order line")
        if len(lines) > self.max_lines:
            raise ServiceError(413, f"{len(lines):,} order lines; at most {self.max_lines:,} per request "
                                    f"(service.max_score_lines): split them, or score a file with the score command")
        analysis_date = None
        if day is not None:
            try:
                analysis_date = pd.Timestamp(dt.date.fromisoformat(str(day)))
            except ValueError:
                raise ServiceError(400, f"analysis_date {str(day)[:40]!r} is not a date; write YYYY-MM-DD") from None
        frame = pd.DataFrame.from_records(lines)
        chain = self.chain()
        from core import scoring  # loaded by then (the background load of the models imported it)
        try:
            if scoring.input_kind(frame, chain.transformer, "lines") != "transactions":
                raise ServiceError(422, "give order lines (the columns of transactions.parquet); features files "
                                        "are scored with the score command")
            frame = self.check_lines(frame, "transactions", list(chain.transformer.columns), Path("lines"))
            with self._lock:
                scored = scoring.score_customers(frame, chain, analysis_date=analysis_date, source="lines")
        except PipelineError as exc:
            raise ServiceError(422, str(exc)) from None
        return records(scored)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-ready dicts (missing values as None, numpy scalars as Python ones)."""
    columns = {name: frame[name].astype(object).to_numpy() for name in frame.columns}
    missing = {name: frame[name].isna().to_numpy() for name in frame.columns}
    return [{name: None if missing[name][i] else plain(values[i]) for name, values in columns.items()}
            for i in range(len(frame))]


def score_result(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(customer id, result) per scored row, for the audit log."""
    return [(str(row.get("customer_id")), f"segment {row['segment']}" if row.get("segment") is not None
             else f"excluded: {row.get('excluded_reason') or 'not segmented'}") for row in rows]


__all__ = ["ServiceError", "Scorer", "health", "run_summary", "list_segments", "get_segment", "check_customer_id",
           "get_customer", "customer_parts", "strategy_part", "to_json", "CustomerAnswers", "records", "score_result"]
