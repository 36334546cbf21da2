"""Segments over time: the trained chain applied at a series of snapshot dates (issue 16).

At each snapshot date every customer with an order line in the window of
``window_days`` days ending on that date is segmented again, from that
window's lines alone, by the models this run trained: stage 02's feature
model (``feature-scaler.pkl``: features, eligibility, class mix, scaling),
stage 03's autoencoder and stage 04's primary clusterer. Nothing is refitted,
so segment ids mean the same thing at every date and a customer whose
shopping changed moves to the segment that shopping now looks like.

The chain is the one the score command runs (:mod:`core.scoring`): order
lines to features through
:meth:`~core.prepare_features.prepare.FeatureModel.customer_features` (the
function stage 02 built its own customers' features with), features to the
model matrix, the matrix to each clustering space (:func:`model_spaces`,
which scoring calls too), then the clusterer's ``assign``.

:func:`snapshot_dates` says when, :func:`window_lines` reads a window,
:func:`segment_history` segments every window and :func:`transitions`
counts the moves between consecutive snapshots. Stage 04 reads a log
written by customer once for every window instead (:func:`block_windows`,
a block of customers at a time, in a thread while its models are fitted:
:class:`WindowsInBackground`), then :func:`history_of_windows`; the
history is the same. Plain functions; stage 04 (:mod:`core.cluster.stage`)
reads and writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from core.cluster.settings import COUNTS_SPACE, SnapshotsConfig
from core.domain.columns import ID_COLUMN
from core.domain.hierarchy import Hierarchy
from core.prepare_features.aggregate import REQUIRED_LINE_COLUMNS
from core.prepare_features.prepare import FeatureModel

log = logging.getLogger(__name__)

#: Columns of ``segment_history.parquet``.
HISTORY_COLUMNS = [ID_COLUMN, "snapshot_date", "segment", "segment_strength", "excluded_reason"]
#: Columns of ``transitions.csv``.
TRANSITION_COLUMNS = ["from_date", "to_date", "from_segment", "to_segment", "customers"]

# pandas period-end frequencies of ``cluster.snapshots.every``.
_PERIOD_ENDS = {"month": "ME", "quarter": "QE", "half_year": "6ME", "year": "YE"}
# Line columns the features can use besides the required ones (absent ones are simply not read).
_OPTIONAL_LINE_COLUMNS = ("discount_amount", "size", "channel", "brand_tier", "style")


def snapshot_dates(cfg: SnapshotsConfig, history_start: dt.date, history_end: dt.date) -> list[pd.Timestamp]:
    """The snapshot dates of ``cfg`` in a history from ``history_start`` to ``history_end`` (inclusive).

    Parameters
    ----------
    cfg : SnapshotsConfig
        Config ``cluster.snapshots``, already checked against this history
        (:func:`core.cluster.settings.check_snapshots`).
    history_start, history_end : date

    Returns
    -------
    list of Timestamp
        Ascending. The configured ``dates``, or the last day of every
        ``every`` period from the end of the warm-up to the history's end.
        When the history is too short for more than one such date, the one
        date is the history's last day (the caller says so).
    """
    if cfg.dates:
        return sorted(pd.Timestamp(d) for d in cfg.dates)
    first = pd.Timestamp(history_start) + pd.Timedelta(days=cfg.warmup_days)
    last = pd.Timestamp(history_end)
    # Anchored on the calendar: quarters end in March, June, September and December, whatever the start.
    ends = [d for d in pd.date_range(first.to_period("M").to_timestamp(), last, freq=_PERIOD_ENDS[cfg.every])
            if first <= d <= last]
    if cfg.every == "half_year":
        ends = [d for d in ends if d.month in (6, 12)]
    return ends if len(ends) > 1 else [last]


def window_lines(source, day: pd.Timestamp, window_days: int, columns: Iterable[str] | None = None):
    """The order lines of the ``window_days`` days ending on ``day`` (inclusive), as an Arrow table.

    Parameters
    ----------
    source : path of a Parquet file, pyarrow.Table or DataFrame
        ``transactions.parquet`` (scanned with a filter, never loaded whole).
    day : Timestamp
    window_days : int
    columns : iterable of str, optional
        Default: the columns features are built from that ``source`` has.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    if isinstance(source, pd.DataFrame):
        source = pa.Table.from_pandas(source, preserve_index=False)
    start = pd.Timestamp(day).normalize() - pd.Timedelta(days=window_days - 1)
    stop = pd.Timestamp(day).normalize() + pd.Timedelta(days=1)
    if isinstance(source, (str, Path)):
        return _window_of_file(Path(source), start, stop, columns)
    data = ds.dataset(source)
    names = data.schema.names
    wanted = [c for c in (columns or (*REQUIRED_LINE_COLUMNS, *_OPTIONAL_LINE_COLUMNS)) if c in names]
    unit = data.schema.field("order_date").type
    when = ds.field("order_date")
    return data.to_table(columns=wanted, filter=(when >= pa.scalar(start, unit)) & (when < pa.scalar(stop, unit)))


def _window_of_file(path: Path, start: pd.Timestamp, stop: pd.Timestamp, columns: Iterable[str] | None):
    """:func:`window_lines` of a Parquet file, one row group at a time (the lines in file order).

    A scan of the whole file with a filter decoded many row groups ahead at
    once: for a window of 5.0 of 27.2 million lines (0.33 GB) the process
    peaked at 1.02 GiB, against 0.68 GiB one row group at a time, with 27%
    less CPU. Row groups whose statistics lie outside the window are
    skipped unread.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    # Text columns (department, class, size, ...) read as dictionaries: a third of the CPU time of
    # plain strings for the same window (1.1 s against 3.7 s for 2.7 million of 14.4 million lines).
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    file = pq.ParquetFile(path, read_dictionary=text)
    wanted = [c for c in (columns or (*REQUIRED_LINE_COLUMNS, *_OPTIONAL_LINE_COLUMNS)) if c in schema.names]
    unit = schema.field("order_date").type
    low, high = pa.scalar(start, unit), pa.scalar(stop, unit)
    date_column = schema.get_field_index("order_date")
    parts = []
    for group in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(group).column(date_column).statistics
        if stats is not None and stats.has_min_max and (pd.Timestamp(stats.max) < start
                                                        or pd.Timestamp(stats.min) >= stop):
            continue
        table = file.read_row_group(group, columns=wanted)
        when = table.column("order_date")
        parts.append(table.filter(pc.and_(pc.greater_equal(when, low), pc.less(when, high))))
        del table, when
    if not parts:
        return schema.empty_table().select(wanted)
    return pa.concat_tables(parts)


def model_spaces(matrix: np.ndarray, autoencoder, spaces: Iterable[str], counts=None) -> dict[str, np.ndarray]:
    """Model-matrix rows in each clustering space: ``raw`` (the matrix), ``latent`` (the autoencoder's) and
    ``counts`` (``counts``: the same customers' units per class, :func:`window_counts`).

    What stage 04's clusterers take, for the score command and the
    snapshots alike.

    Parameters
    ----------
    matrix : ndarray, shape (n, n_features)
        :meth:`FeatureModel.transform` of the customers' features.
    autoencoder : AutoencoderTransformer, SavedEncoder or None
        Needed when ``spaces`` holds ``latent``.
    spaces : iterable of {"raw", "latent", "counts"}
    counts : sparse matrix, optional
        Needed when ``spaces`` holds ``counts``.
    """
    found = {}
    for space in spaces:
        if space == COUNTS_SPACE:
            if counts is None:
                raise ValueError("the counts space needs each customer's units per class, from their order lines")
            found[space] = counts
        elif space == "raw":
            found[space] = matrix.astype(np.float64)
        elif autoencoder is None:
            raise ValueError("the latent space needs the trained autoencoder")
        else:
            found[space] = autoencoder.transform(matrix).astype(np.float64)
    return found


@dataclasses.dataclass(frozen=True)
class TrainedChain:
    """The fitted pieces that turn a window's order lines into the primary segmentation's segments.

    Attributes
    ----------
    feature_model : FeatureModel
        Stage 02's ``feature-scaler.pkl``.
    autoencoder : AutoencoderTransformer, SavedEncoder or None
        Stage 03's network; None when ``space`` is ``raw``.
    model : clusterer
        Stage 04's primary model (its segment ids already matched).
    space : {"raw", "latent"}
        The space ``model`` was fitted in.
    hierarchy : Hierarchy
        With the sellable classes stage 02 was trained with.
    """

    feature_model: FeatureModel
    autoencoder: Any
    model: Any
    space: str
    hierarchy: Hierarchy

    def segment_lines(self, lines, day: pd.Timestamp) -> pd.DataFrame:
        """Segment and strength of every customer in ``lines`` at ``day``, or why they are not segmented.

        Parameters
        ----------
        lines : pyarrow.Table, DataFrame or path
            One window's order lines.
        day : Timestamp
            The analysis date of the window's features.

        Returns
        -------
        DataFrame
            :data:`HISTORY_COLUMNS` but ``snapshot_date``: segmented customers
            (``excluded_reason`` empty) then the others (segment and
            strength missing; the reason is stage 02's eligibility rule, a colon
            and its reason).
        """
        return self.segment_features(self.feature_model.customer_features(lines, self.hierarchy, day))

    def segment_features(self, eligible, previous: pd.Series | None = None, switch_ratio: float = 1.0,
                         min_orders: int = 0, weak_switch_ratio: float | None = None) -> pd.DataFrame:
        """:meth:`segment_lines` from the window's features (stage 02's ``EligibleFeatures``).

        Parameters
        ----------
        eligible : EligibleFeatures
        previous : Series, optional
            Each customer's segment at the previous snapshot (index
            ``customer_id``), for the hysteresis.
        switch_ratio : float
            A customer of ``previous`` leaves that segment only when the
            best segment's membership is more than ``switch_ratio`` times
            the previous segment's (:func:`keep_previous`); 1 = no
            hysteresis. Needs a model with memberships (not k-means).
        min_orders, weak_switch_ratio : int, float
            A customer with fewer than ``min_orders`` orders in the window
            (the features' ``orders``) leaves their segment only past
            ``weak_switch_ratio`` (default ``switch_ratio``).
        """
        return self.segment_matrix(window_matrix(self.feature_model, eligible, counts=self.space == COUNTS_SPACE),
                                   previous, switch_ratio, min_orders, weak_switch_ratio)

    def segment_matrix(self, window: "WindowMatrix", previous: pd.Series | None = None, switch_ratio: float = 1.0,
                       min_orders: int = 0, weak_switch_ratio: float | None = None) -> pd.DataFrame:
        """:meth:`segment_features` from the window's model matrix (:func:`window_matrix`); same arguments."""
        segments = pd.array(np.zeros(0, np.int64), dtype="Int64")
        strength = np.zeros(0)
        if len(window.ids):
            sticky = switch_ratio > 1.0 and previous is not None and len(previous)
            X = (window.spaces[self.space] if window.spaces and self.space in window.spaces
                 else model_spaces(window.matrix, self.autoencoder, [self.space], window.counts)[self.space])
            found = self.model.assign(X, membership=bool(sticky))
            labels, strength = found.labels, found.strength
            if sticky and found.membership is not None:
                before = previous.reindex(window.ids).to_numpy(np.float64, na_value=np.nan)
                ratio = np.full(len(window.ids), float(switch_ratio))
                if min_orders and weak_switch_ratio is not None and window.orders is not None:
                    ratio[window.orders < min_orders] = weak_switch_ratio
                labels, strength = keep_previous(found, before, ratio)
            segments = pd.array(labels, dtype="Int64")
        excluded = window.excluded
        return pd.DataFrame({
            ID_COLUMN: np.concatenate([window.ids, excluded[ID_COLUMN].to_numpy(np.int64)]),
            "segment": pd.concat([pd.Series(segments), pd.Series(pd.array([pd.NA] * len(excluded), "Int64"))],
                                 ignore_index=True),
            "segment_strength": np.concatenate([strength, np.full(len(excluded), np.nan)]),
            "excluded_reason": np.concatenate([np.full(len(window.ids), "", dtype=object),
                                               (excluded["rule"] + ": " + excluded["reason"]).to_numpy(object)])})


@dataclasses.dataclass(frozen=True)
class WindowMatrix:
    """One window's customers as the primary model takes them: what :meth:`TrainedChain.segment_matrix` needs.

    Holds the model matrix only, not stage 02's wide features (a million
    customers' window is about 0.1 GB of matrix against 0.6 GB of features).

    Attributes
    ----------
    ids : ndarray of int64
        The eligible customers, in feature order.
    matrix : ndarray of float32, shape (len(ids), n_columns)
        :meth:`FeatureModel.transform` of their features.
    orders : ndarray of float64 or None
        Their ``orders`` feature (the minimum-evidence rule); None without it.
    excluded : DataFrame
        ``customer_id``, ``rule``, ``reason``: the window's other customers.
    spaces : dict of str to ndarray, optional
        :func:`model_spaces` of ``matrix``, when computed ahead (stage 04
        encodes the windows while the clusterers are fitted).
    counts : scipy.sparse matrix, optional
        Their units per sellable class in the window (:func:`window_counts`), beside the model matrix when
        the counts space may be the primary's; None otherwise.
    """

    ids: np.ndarray
    matrix: np.ndarray
    orders: np.ndarray | None
    excluded: pd.DataFrame
    spaces: dict[str, np.ndarray] | None = None
    counts: Any = None


def window_matrix(feature_model: FeatureModel, eligible, counts: bool = False) -> WindowMatrix:
    """The :class:`WindowMatrix` of stage 02's ``EligibleFeatures`` of one window (or one block of its customers);
    with ``counts``, their units per class too (:func:`window_counts`)."""
    features = eligible.features
    if not len(features):
        return WindowMatrix(ids=np.zeros(0, np.int64), matrix=np.zeros((0, len(feature_model.columns)), np.float32),
                            orders=None, excluded=eligible.excluded)
    orders = features["orders"].to_numpy(np.float64) if "orders" in features else None
    ids = features[ID_COLUMN].to_numpy(np.int64)
    return WindowMatrix(ids=ids, matrix=feature_model.transform(features), orders=orders, excluded=eligible.excluded,
                        counts=window_counts(feature_model, eligible, ids) if counts else None)


def window_counts(feature_model: FeatureModel, eligible, ids: np.ndarray):
    """Units per sellable class of the customers ``ids`` (rows in that order), from stage 02's ``class_long`` of
    their lines: the counts space, as stage 04 built it from ``class_spend_long.parquet``."""
    from core.cluster.count_mixture import count_columns, count_space, counts_matrix

    long = eligible.class_long
    n_classes = len(feature_model.sellable_classes)
    X = counts_matrix(ids, long[ID_COLUMN].to_numpy(), long["class_idx"].to_numpy(), long["units"].to_numpy(),
                      n_classes)
    return count_space(X, count_columns(feature_model.sellable_classes))


def _joined(parts: list[WindowMatrix], n_columns: int) -> WindowMatrix:
    """The window of several blocks of customers (each customer in one block), blocks in order."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return WindowMatrix(ids=np.zeros(0, np.int64), matrix=np.zeros((0, n_columns), np.float32), orders=None,
                            excluded=pd.DataFrame({ID_COLUMN: pd.Series(dtype=np.int64),
                                                   "rule": pd.Series(dtype=str), "reason": pd.Series(dtype=str)}))
    with_rows = [p for p in parts if len(p.ids)]
    orders = ([p.orders for p in with_rows] if with_rows and all(p.orders is not None for p in with_rows) else None)
    counts = None
    if with_rows and all(p.counts is not None for p in with_rows):
        import scipy.sparse as sp

        from core.cluster.count_mixture import count_space

        # As plain CSR matrices: a CountMatrix answers len(), so scipy's vstack (np.asarray of the blocks) would
        # take each one for a sequence of rows (minutes at a million customers, or an error).
        counts = count_space(sp.vstack([sp.csr_matrix(p.counts) for p in with_rows], format="csr"),
                             with_rows[0].counts.columns)
    return WindowMatrix(ids=np.concatenate([p.ids for p in parts]),
                        matrix=np.concatenate([p.matrix for p in parts]) if with_rows else parts[0].matrix,
                        orders=np.concatenate(orders) if orders else None,
                        excluded=pd.concat([p.excluded for p in parts], ignore_index=True), counts=counts)


def keep_previous(found, previous: np.ndarray, switch_ratio) -> tuple[np.ndarray, np.ndarray]:
    """Hysteresis: who stays in their previous segment although another now fits them a little better.

    A customer whose window moved them only slightly keeps their segment; one
    whose behaviour changed clearly (a new baby, a first job) moves. Kept:
    the previous segment's membership is at least ``1 / switch_ratio`` of
    the best one's.

    Parameters
    ----------
    found : Assignment
        With ``membership`` (columns in ``cluster_ids`` order).
    previous : ndarray of float, shape (n,)
        Each row's previous segment, NaN for none.
    switch_ratio : float or ndarray of float, shape (n,)
        At least 1; one per row for the minimum-evidence rule.

    Returns
    -------
    (labels, strength)
        The segments after the hysteresis; a kept row's strength is its
        membership of the kept segment (normalised to the row's total).
    """
    membership = found.membership / np.maximum(found.membership.sum(axis=1, keepdims=True), 1e-300)
    column = {int(c): i for i, c in enumerate(found.cluster_ids)}
    known = ~np.isnan(previous) & np.isin(previous, list(column))
    labels, strength = found.labels.copy(), found.strength.copy()
    rows = np.flatnonzero(known & (previous != labels))
    if len(rows):
        columns = np.array([column[int(p)] for p in previous[rows]])
        held = membership[rows, columns]
        keep = held * np.broadcast_to(np.asarray(switch_ratio, np.float64), previous.shape)[rows] \
            >= membership[rows].max(axis=1)
        labels[rows[keep]] = previous[rows[keep]].astype(np.int64)
        strength[rows[keep]] = held[keep]
    return labels, strength


@dataclasses.dataclass(frozen=True)
class SegmentHistory:
    """What :func:`segment_history` returns.

    Attributes
    ----------
    history : DataFrame
        :data:`HISTORY_COLUMNS`, sorted by snapshot date then customer.
    dates : list of Timestamp
    details : dict
        Per snapshot: customers active, segmented, excluded by reason, and seconds.
    """

    history: pd.DataFrame
    dates: list[pd.Timestamp]
    details: dict[str, Any]


# Windows whose lines are read and aggregated side by side. The engine and the Parquet reader use both
# cores only part of the time (NumPy steps between them run on one), so a second window in flight fills the
# gaps; more would only add memory (each window's lines are held while its features are built).
_WINDOWS_IN_FLIGHT = 2
#: Windows expected to hold more order lines than this are built one at a time: each window's lines and
#: aggregation are held until its features are built, and two windows of a million customers' log (about
#: 21 million lines each) in flight took the snapshots to a peak of 10.1 GiB, over issue 18's 8 GB.
SIDE_BY_SIDE_MAX_LINES = 5_000_000


def windows_in_flight(n_lines: int, history_days: int, window_days: int) -> int:
    """How many snapshot windows :func:`segment_history` builds side by side for a log of ``n_lines``.

    Two while the expected lines of a window (the log's lines times the
    window's share of its history) stay within :data:`SIDE_BY_SIDE_MAX_LINES`,
    else one: the second window only fills idle cores, and memory is the
    bound at scale.
    """
    expected = n_lines * min(1.0, window_days / max(history_days, 1))
    return _WINDOWS_IN_FLIGHT if expected <= SIDE_BY_SIDE_MAX_LINES else 1


def segment_history(lines_of: Callable[[pd.Timestamp], Any], chain: TrainedChain,
                    dates: list[pd.Timestamp], switch_ratio: float = 1.0, min_orders: int = 0,
                    weak_switch_ratio: float | None = None, in_flight: int = _WINDOWS_IN_FLIGHT) -> SegmentHistory:
    """Every snapshot's segments: ``chain`` applied to the lines ``lines_of(date)`` gives for each date.

    The windows' features are built up to ``in_flight`` at a time in
    threads (each window independent of the others, so the result does not
    depend on it); the network and the clusterer then run in this thread,
    in date order. Stage 04 reads a log split by customer once for every
    window instead (:func:`block_windows`, then :func:`history_of_windows`:
    the same history).

    Parameters
    ----------
    lines_of : callable
        ``lines_of(date)``: that snapshot's window of order lines (see
        :func:`window_lines`).
    chain : TrainedChain
    dates : list of Timestamp
        Ascending snapshot dates.
    switch_ratio : float
        Hysteresis against the previous snapshot's segments
        (:func:`keep_previous`); 1 = none.
    min_orders, weak_switch_ratio : int, float
        The minimum-evidence rule (:meth:`TrainedChain.segment_features`).
    in_flight : int
        Windows built side by side (:func:`windows_in_flight`); the result does not depend on it.

    Returns
    -------
    SegmentHistory
    """
    from concurrent.futures import ThreadPoolExecutor

    def features_at(day: pd.Timestamp) -> BuiltWindow:
        started = time.perf_counter()
        lines = lines_of(day)
        window = (window_matrix(chain.feature_model, chain.feature_model.customer_features(lines, chain.hierarchy, day),
                                counts=chain.space == COUNTS_SPACE) if len(lines) else None)
        return BuiltWindow(day=day, window=window, lines=len(lines), seconds=time.perf_counter() - started)

    in_flight = max(1, int(in_flight))
    built = []
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        pending = [pool.submit(features_at, day) for day in dates[:in_flight]]
        for i, day in enumerate(dates):
            built.append(pending.pop(0).result())
            if i + in_flight < len(dates):
                pending.append(pool.submit(features_at, dates[i + in_flight]))
            _release_arrow_memory()  # the window's lines: back to the system before the next window is read
    return history_of_windows(chain, built, switch_ratio, min_orders, weak_switch_ratio)


@dataclasses.dataclass(frozen=True)
class BuiltWindow:
    """One snapshot's window, built: its matrix (None when the window has no line), lines and seconds."""

    day: pd.Timestamp
    window: WindowMatrix | None
    lines: int
    seconds: float


def history_of_windows(chain: TrainedChain, built: list[BuiltWindow], switch_ratio: float = 1.0,
                       min_orders: int = 0, weak_switch_ratio: float | None = None) -> SegmentHistory:
    """The segment history of windows already built, in date order (arguments as :func:`segment_history`)."""
    frames, per_date, previous = [], {}, None
    for item in built:
        started = time.perf_counter()
        found = (_no_customers() if item.window is None
                 else chain.segment_matrix(item.window, previous, switch_ratio, min_orders, weak_switch_ratio))
        previous = found.dropna(subset=["segment"]).set_index(ID_COLUMN)["segment"]
        found.insert(1, "snapshot_date", np.full(len(found), item.day.to_datetime64()).astype("datetime64[us]"))
        frames.append(found.sort_values(ID_COLUMN, kind="stable"))
        per_date[str(item.day.date())] = _snapshot_details(found, item.lines,
                                                           item.seconds + time.perf_counter() - started)
        del found
    history = pd.concat(frames, ignore_index=True)[HISTORY_COLUMNS]
    history["excluded_reason"] = history["excluded_reason"].astype(str)
    return SegmentHistory(history=history, dates=[item.day for item in built], details={"snapshots": per_date})


#: Order lines of the log read per block of customers by :func:`block_windows` (each block's lines are
#: held while its windows are built: about 0.6 GB for 8 million lines with the text columns as dictionaries).
BLOCK_LINES = 8_000_000


def customer_blocks(path, block_lines: int = BLOCK_LINES) -> list[tuple[list[int], int | None, int | None]] | None:
    """Blocks of whole customers of a Parquet log, from its row groups' ``customer_id`` statistics.

    A block is a range of customer ids ``[low, high)`` (None: unbounded)
    and the row groups holding its lines; blocks are cut where every row
    group before the cut holds ids no larger than every row group after it
    (a customer whose lines straddle the cut goes to the later block), once
    a block holds ``block_lines`` lines.

    Returns
    -------
    list of (row groups, low, high), or None
        None when the log is not split by customer (a row group without
        statistics, or a block that would hold more than twice
        ``block_lines`` lines): the windows are then read one at a time.
    """
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = meta.schema.to_arrow_schema().get_field_index(ID_COLUMN)
    if column < 0 or meta.num_row_groups == 0:
        return None
    stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    if not all(s is not None and s.has_min_max for s in stats):
        return None
    low = np.array([s.min for s in stats], dtype=np.int64)
    high = np.array([s.max for s in stats], dtype=np.int64)
    rows = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], dtype=np.int64)
    prefix_max = np.maximum.accumulate(high)
    suffix_min = np.minimum.accumulate(low[::-1])[::-1]
    cuts, held = [], 0
    for j in range(1, len(rows)):
        held += rows[j - 1]
        if held >= block_lines and prefix_max[j - 1] <= suffix_min[j]:
            cuts.append(int(suffix_min[j]))
            held = 0
    bounds = [None, *cuts, None]
    blocks = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        groups = [i for i in range(len(rows))
                  if (start is None or high[i] >= start) and (stop is None or low[i] < stop)]
        if rows[groups].sum() > 2 * max(block_lines, 1) and len(groups) > 1:
            return None
        blocks.append((groups, start, stop))
    return blocks


def block_windows(source, feature_model: FeatureModel, hierarchy: Hierarchy, dates: list[pd.Timestamp],
                  window_days: int, block_lines: int = BLOCK_LINES, cancel=None,
                  counts: bool = False) -> list[BuiltWindow] | None:
    """Every snapshot's :class:`WindowMatrix`, reading the log once, a block of customers at a time.

    The snapshot windows take nearly every line of the log between them, and
    its row groups each span the whole history (the log is written by
    customer), so reading each window from the file decoded the whole log
    once per snapshot. Here each block of customers (:func:`customer_blocks`)
    is read once and every window's features of its customers are built
    from it with stage 02's feature model. A customer's features depend on
    their own lines only (eligibility included, and the share columns are
    fixed to stage 02's), so the windows are those :func:`segment_history`
    builds, row for row.

    Parameters
    ----------
    source : path
        ``transactions.parquet``.
    feature_model : FeatureModel
    hierarchy : Hierarchy
    dates : list of Timestamp
    window_days : int
    block_lines : int
        Lines read per block.
    cancel : threading.Event, optional
        Set: stop after the window being built (returns None).
    counts : bool
        Also each window's units per class (:func:`window_counts`), for a primary in the counts space.

    Returns
    -------
    list of BuiltWindow, or None
        None when the log is not split by customer, or the feature model
        chooses its share columns from the data (an older model): then
        :func:`segment_history` reads window by window.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    blocks = customer_blocks(source, block_lines)
    if blocks is None or feature_model.settings.attribute_columns is None:
        return None
    schema = pq.read_schema(source)
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    file = pq.ParquetFile(source, read_dictionary=text)  # dictionaries: see _window_of_file
    wanted = [c for c in (*REQUIRED_LINE_COLUMNS, *_OPTIONAL_LINE_COLUMNS) if c in schema.names]
    unit = schema.field("order_date").type
    spans = [(pd.Timestamp(d).normalize() - pd.Timedelta(days=window_days - 1),
              pd.Timestamp(d).normalize() + pd.Timedelta(days=1)) for d in dates]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    parts: list[list[WindowMatrix]] = [[] for _ in dates]
    lines, seconds = [0] * len(dates), [0.0] * len(dates)
    for b, (groups, low, high) in enumerate(blocks):
        started = time.perf_counter()
        block = _block_lines(file, groups, wanted, low, high, pa.scalar(first, unit), pa.scalar(last, unit))
        when = block.column("order_date")
        read = time.perf_counter() - started
        for w, (day, (start, stop)) in enumerate(zip(dates, spans)):
            if cancel is not None and cancel.is_set():
                return None
            started = time.perf_counter()
            window = block.filter(pc.and_(pc.greater_equal(when, pa.scalar(start, unit)),
                                          pc.less(when, pa.scalar(stop, unit))))
            if len(window):
                parts[w].append(window_matrix(feature_model, feature_model.customer_features(window, hierarchy, day),
                                              counts=counts))
                lines[w] += len(window)
            del window
            seconds[w] += time.perf_counter() - started + read / len(dates)
        log.info("snapshot windows: block %d of %d of customers built (%s lines)", b + 1, len(blocks),
                 f"{len(block):,}")
        del block, when
        _release_arrow_memory()
    n_columns = len(feature_model.columns)
    return [BuiltWindow(day=day, window=_joined(parts[w], n_columns) if lines[w] else None, lines=lines[w],
                        seconds=seconds[w]) for w, day in enumerate(dates)]


def _block_lines(file, groups: list[int], columns: list[str], low: int | None, high: int | None, first, last):
    """The lines of row groups ``groups`` of customers ``[low, high)`` dated in ``[first, last)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for group in groups:
        table = file.read_row_group(group, columns=columns)
        when, who = table.column("order_date"), table.column(ID_COLUMN)
        keep = pc.and_(pc.greater_equal(when, first), pc.less(when, last))
        if low is not None:
            keep = pc.and_(keep, pc.greater_equal(who, pa.scalar(low, who.type)))
        if high is not None:
            keep = pc.and_(keep, pc.less(who, pa.scalar(high, who.type)))
        parts.append(table.filter(keep))
        del table, when, who, keep
    return pa.concat_tables(parts)


def _release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the system (its allocator keeps them for reuse otherwise)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _no_customers() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                         zip(HISTORY_COLUMNS, ("int64", "datetime64[us]", "Int64", "float64", "object"))
                         if c != "snapshot_date"})


def _snapshot_details(found: pd.DataFrame, n_lines: int, seconds: float) -> dict[str, Any]:
    """One snapshot's counts for the manifest (and its log line)."""
    reasons = found.loc[found["excluded_reason"] != "", "excluded_reason"]
    details = {"lines": int(n_lines), "active_customers": int(len(found)),
               "segmented": int((found["excluded_reason"] == "").sum()),
               "excluded": {str(k): int(v) for k, v in reasons.str.split(":", n=1).str[0].value_counts().items()},
               "seconds": round(seconds, 2)}
    log.info("snapshot %s: %s customers active, %s segmented (%.1f s)", found["snapshot_date"].iloc[0].date()
             if len(found) else "(none)", f"{len(found):,}", f"{details['segmented']:,}", seconds)
    return details


def transitions(history: pd.DataFrame) -> pd.DataFrame:
    """Customers by (segment at one snapshot, segment at the next), for every pair of consecutive snapshots.

    Only customers segmented at both dates count (a customer inactive or
    not segmented at either is in neither's column).

    Parameters
    ----------
    history : DataFrame
        ``segment_history.parquet``.

    Returns
    -------
    DataFrame
        :data:`TRANSITION_COLUMNS`, dates as ``YYYY-MM-DD``, sorted; pairs
        with no customer are left out.
    """
    segmented = history.loc[history["segment"].notna(), [ID_COLUMN, "snapshot_date", "segment"]]
    dates = sorted(history["snapshot_date"].unique())
    parts = []
    for before, after in zip(dates, dates[1:]):
        pair = (segmented[segmented["snapshot_date"] == before]
                .merge(segmented[segmented["snapshot_date"] == after], on=ID_COLUMN, suffixes=("_from", "_to")))
        counts = pair.groupby(["segment_from", "segment_to"]).size().rename("customers").reset_index()
        counts.insert(0, "to_date", str(pd.Timestamp(after).date()))
        counts.insert(0, "from_date", str(pd.Timestamp(before).date()))
        parts.append(counts.rename(columns={"segment_from": "from_segment", "segment_to": "to_segment"}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("from_segment", "to_segment", "customers")
                                          else "object") for c in TRANSITION_COLUMNS})
    table = pd.concat(parts, ignore_index=True)[TRANSITION_COLUMNS]
    return table.astype({"from_segment": "int64", "to_segment": "int64", "customers": "int64"})


def history_range(path) -> tuple[dt.date, dt.date]:
    """First and last ``order_date`` of a Parquet log, from its row-group statistics where it has them."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = meta.schema.to_arrow_schema().get_field_index("order_date")
    stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    if stats and all(s is not None and s.has_min_max for s in stats):
        low, high = min(s.min for s in stats), max(s.max for s in stats)
    else:
        import pyarrow.compute as pc

        found = pc.min_max(pq.read_table(path, columns=["order_date"])["order_date"])
        low, high = found["min"].as_py(), found["max"].as_py()
    return pd.Timestamp(low).date(), pd.Timestamp(high).date()


# ---------------------------------------------------------------------------
# Stage 04's step: read, segment every snapshot, write


@dataclasses.dataclass(frozen=True)
class SnapshotPlan:
    """When stage 04 takes its snapshots, known before anything is fitted.

    Attributes
    ----------
    dates : list of Timestamp
        Empty when snapshots are disabled.
    history : (date, date) or None
        The log's first and last order day.
    note : str
        Why there is only one snapshot, or empty.
    """

    dates: list[pd.Timestamp]
    history: tuple[dt.date, dt.date] | None
    note: str = ""


def plan_snapshots(ctx) -> SnapshotPlan:
    """The snapshot dates of stage 04's config in the history its ``transactions.parquet`` holds.

    Called when stage 04 starts, so a setting the log cannot honour stops
    the stage before the clusterers are fitted.

    Raises
    ------
    ConfigError
        When the snapshot settings do not fit that history, naming the key.
    """
    from core.cluster.settings import check_snapshots
    from core.framework import paths
    from core.framework.schema import Problems

    cfg = ctx.config.cluster.snapshots
    if not cfg.enabled:
        return SnapshotPlan(dates=[], history=None)
    start, end = history_range(ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS))
    problems = Problems(str(ctx.config.path))
    check_snapshots(cfg, start, end, problems, f" {paths.TRANSACTIONS} holds")
    problems.raise_if_any()
    dates = snapshot_dates(cfg, start, end)
    note = ""
    if len(dates) == 1 and not cfg.dates:
        note = (f"the history ({start} to {end}) is too short for more than one snapshot every {cfg.every} after "
                f"a warm-up of {cfg.warmup_days} days: one snapshot on {dates[0].date()}, so no transition")
        log.warning("%s", note)
    return SnapshotPlan(dates=dates, history=(start, end), note=note)


class WindowsInBackground:
    """Every snapshot window of stage 04's plan built in a thread while the clusterers are fitted.

    The windows need stage 02's feature model only, not the primary model,
    so their features (most of the snapshots' time) are built while the
    fits run in their worker processes; :func:`write_snapshots` then
    segments them. Used as a context manager: leaving it on an error stops
    the thread after the window it is building.
    """

    def __init__(self, ctx, plan: SnapshotPlan):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from core.framework import paths

        self.source = ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS)
        self.feature_model = ctx.read_joblib(paths.PREPARE_FEATURES, paths.FEATURE_SCALER) if plan.dates else None
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-windows")
        self._future = None
        self.autoencoder = None
        if plan.dates:
            self._future = self._pool.submit(self._build, ctx, plan)

    def _build(self, ctx, plan: SnapshotPlan) -> list[BuiltWindow] | None:
        started = time.perf_counter()
        built = block_windows(self.source, self.feature_model, ctx.config.hierarchy, plan.dates,
                              ctx.config.cluster.snapshots.window_days, cancel=self._cancel,
                              counts=COUNTS_SPACE in ctx.config.cluster.spaces)
        if built is not None and "latent" in ctx.config.cluster.spaces and not self._cancel.is_set():
            # The latent space is a candidate for the primary: encoded here, while the fits still run, rather
            # than after them (a few seconds a window at a million customers, lost when the primary is raw).
            self.autoencoder = _autoencoder(ctx)
            built = [dataclasses.replace(b, window=dataclasses.replace(
                b.window, spaces=model_spaces(b.window.matrix, self.autoencoder, ["latent"])))
                if b.window is not None and len(b.window.ids) else b for b in built]
        if built is not None:
            log.info("snapshot windows built in %.1f s", time.perf_counter() - started)
        return built

    def result(self) -> list[BuiltWindow] | None:
        """The built windows (waiting for them), or None when the log must be read window by window."""
        return None if self._future is None else self._future.result()

    def __enter__(self) -> "WindowsInBackground":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self._cancel.set()
        self._pool.shutdown(wait=True)


def write_snapshots(ctx, plan: SnapshotPlan, model, space: str,
                    windows: WindowsInBackground | None = None) -> dict[str, Any]:
    """Segment every snapshot of ``plan`` with this run's primary ``model``, write both tables; return details.

    Parameters
    ----------
    ctx : core.framework.stage.StageContext
        Stage 04's context: reads ``transactions.parquet``, stage 02's
        ``feature-scaler.pkl`` and (latent space) stage 03's network, each
        verified as recorded; writes ``segment_history.parquet`` and
        ``transitions.csv`` (empty, with their columns, when
        ``cluster.snapshots.enabled`` is false).
    plan : SnapshotPlan
        :func:`plan_snapshots`.
    model : clusterer
        The primary model, segment ids matched.
    space : {"raw", "latent", "counts"}
    windows : WindowsInBackground, optional
        The windows, built while the models were fitted; without it (or
        when the log is not split by customer) they are built here.
    """
    from core.framework import paths

    cfg = ctx.config.cluster.snapshots
    source = ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS)
    if not plan.dates:
        history = _no_customers()
        history.insert(1, "snapshot_date", pd.Series(dtype="datetime64[us]"))
        ctx.write_parquet(paths.SEGMENT_HISTORY, history)
        ctx.write_csv(paths.TRANSITIONS, transitions(history))
        return {"enabled": False}
    start, end = plan.history
    dates, note = plan.dates, plan.note
    feature_model = (windows.feature_model if windows is not None
                     else ctx.read_joblib(paths.PREPARE_FEATURES, paths.FEATURE_SCALER))
    built = windows.result() if windows is not None else block_windows(source, feature_model, ctx.config.hierarchy,
                                                                       dates, cfg.window_days,
                                                                       counts=space == COUNTS_SPACE)
    autoencoder = None
    if space == "latent":
        autoencoder = windows.autoencoder if windows is not None and windows.autoencoder is not None \
            else _autoencoder(ctx)
    chain = TrainedChain(feature_model=feature_model, autoencoder=autoencoder, model=model, space=space,
                         hierarchy=ctx.config.hierarchy)
    if built is not None:
        reader = {"reader": "once, by block of customers", "windows_in_flight": None}
        found = history_of_windows(chain, built, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio)
    else:
        import pyarrow.parquet as pq

        in_flight = windows_in_flight(pq.ParquetFile(source).metadata.num_rows, (end - start).days + 1,
                                      cfg.window_days)
        reader = {"reader": "window by window", "windows_in_flight": in_flight}
        found = segment_history(lambda day: window_lines(source, day, cfg.window_days), chain, dates,
                                cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio, in_flight=in_flight)
    ctx.write_parquet(paths.SEGMENT_HISTORY, found.history)
    moves = transitions(found.history)
    ctx.write_csv(paths.TRANSITIONS, moves)
    kept = moves.loc[moves["from_segment"] == moves["to_segment"], "customers"].sum()
    return {"enabled": True, "history": [str(start), str(end)], "window_days": cfg.window_days,
            "switch_ratio": cfg.switch_ratio, "min_orders": cfg.min_orders,
            "weak_switch_ratio": cfg.weak_switch_ratio,
            "dates": [str(d.date()) for d in dates], "note": note, **reader,
            "kept_segment_share": round(float(kept / moves["customers"].sum()), 4) if len(moves) else None,
            **found.details}


def summary(details: dict[str, Any]) -> str:
    """The snapshots' part of stage 04's one-line summary (empty when disabled)."""
    if not details.get("enabled"):
        return ""
    kept = details.get("kept_segment_share")
    return (f"; {len(details['dates'])} snapshot(s) of {details['window_days']} days"
            + (f", {kept:.1%} of customers kept their segment from one to the next" if kept is not None else ""))


def _autoencoder(ctx):
    """Stage 03's encoder, loaded only after its bytes match the SHA-256 stage 03's manifest recorded.

    Read into NumPy when the network is a plain chain of dense layers (the shipped one:
    :mod:`core.train_autoencoder.saved_encoder`, the same latent values without TensorFlow's 3 CPU-s import),
    otherwise loaded through Keras. Either has the ``transform`` :func:`model_spaces` calls.
    """
    from core.framework import artifacts, paths
    from core.train_autoencoder.saved_encoder import load_saved_encoder

    record = next((r for r in ctx.inputs if r["stage"] == paths.TRAIN_AUTOENCODER
                   and r["file"] == paths.AUTOENCODER_MODEL), None)
    path, sha = ctx.input_path(paths.TRAIN_AUTOENCODER, paths.AUTOENCODER_MODEL), record["sha256"] if record else None
    encoder = artifacts.load_verified(path, sha, load_saved_encoder, stage=paths.TRAIN_AUTOENCODER)
    if encoder is not None:
        return encoder
    from core.train_autoencoder.autoencoder import AutoencoderTransformer

    return artifacts.load_verified(path, sha, AutoencoderTransformer.load, stage=paths.TRAIN_AUTOENCODER, as_file=True)


def against_events(history: pd.DataFrame, events: pd.DataFrame) -> dict[str, Any]:
    """How the snapshots follow known changes of who customers are (the generator's persona events).

    For evaluation only: nothing here reaches a model.

    Parameters
    ----------
    history : DataFrame
        ``segment_history.parquet``.
    events : DataFrame
        ``customer_id``, ``event_date`` (``persona_events.parquet``).

    Returns
    -------
    dict
        ``changed_after_event``: of the events with a snapshot on or before
        the event day and two snapshots after it (the customer segmented at
        the one before and at one at least of the two after), the share
        whose segment at one of the two after differs from the one before;
        ``kept_without_event``: of the pairs of consecutive snapshots at
        which a customer who never had an event is segmented at both, the
        share keeping their segment. Each with the count it is a share of.
    """
    dates = np.sort(history["snapshot_date"].unique())
    table = (history[history["segment"].notna()].pivot(index=ID_COLUMN, columns="snapshot_date", values="segment")
             .reindex(columns=dates))
    values = table.to_numpy(dtype=np.float64, na_value=np.nan)
    row_of = pd.Series(np.arange(len(table)), index=table.index)
    # Events: the snapshot on or before the day, and the two after it.
    known = events[events[ID_COLUMN].isin(table.index)]
    before = np.searchsorted(dates, known["event_date"].to_numpy(dates.dtype), side="right") - 1
    usable = (before >= 0) & (before + 2 < len(dates))
    rows = row_of.loc[known.loc[usable, ID_COLUMN]].to_numpy()
    before = before[usable]
    then = values[rows, before]
    after = np.stack([values[rows, before + 1], values[rows, before + 2]], axis=1)
    seen = ~np.isnan(then) & ~np.isnan(after).all(axis=1)
    changed = ((after != then[:, None]) & ~np.isnan(after)).any(axis=1)
    # Customers who never had an event, at each pair of consecutive snapshots.
    steady = values[~table.index.isin(events[ID_COLUMN])]
    now, nxt = steady[:, :-1], steady[:, 1:]
    both = ~np.isnan(now) & ~np.isnan(nxt)
    return {"snapshots": len(dates),
            "events": int(len(events)), "events_measured": int(seen.sum()),
            "changed_after_event": float(changed[seen].mean()) if seen.any() else float("nan"),
            "pairs_without_event": int(both.sum()),
            "kept_without_event": float((now == nxt)[both].mean()) if both.any() else float("nan")}
