"""Next-best classes for every customer (issue 15): candidate scores, their blend, reasons and measurement.

What a customer is shown is a merchandise class (department and class of
the hierarchy): never bag levy, gift cards, charity, concessions, goods not
for resale, data-quality departments or the data-quality classes (DUMMY,
UNASSIGNED, Unknown) of a merchandise department, nor a name the hierarchy
does not know. A log without classes falls back to departments; a log with
neither gets no recommendations, and says why (:func:`choose_level`).

The model (:class:`NextBestClasses`) blends six scores, each scaled to
[0, 1] per customer, with weights that sum to 1:

- ``own``: the customer's own repeat behaviour, the lines they bought of the
  class weighted by ``0.5 ** (days ago / half-life)`` (frequent and recent
  count most). Classes the customer already bought stay candidates: repeat
  purchases are most of retail (59% of the classes a customer bought in the
  default data's evaluation window they had bought before), shown as
  ``buys again``.
- ``segment``: the share of the customer's segment who bought the class.
- ``cooccurrence``: item-kNN, the customer's own scores spread over the
  cosine similarity of the class-by-class co-purchase matrix (customers who
  bought both); the reason names the class of the customer's that
  contributed most (``often bought with <class>``).
- ``season``: the class's lines in the same calendar days, one year earlier,
  as the period the recommendations are for (``in season``).
- ``repeat``: replenishment, how due the class is on the customer's own
  interval between purchase days (:func:`replenishment_scores`, ``due again``).
- ``profile``: the customer's class mix smoothed toward their segment's (a
  Dirichlet prior worth :data:`PROFILE_PRIOR_LINES` lines), said as ``buys
  again`` for a class they bought, ``popular in segment`` for another.

Each recommendation's ``reason`` is the component contributing most to its
score (a tie goes to the first of :data:`COMPONENTS`). The weights are
chosen by :func:`choose_weights` on a split inside the fit period, never on
the period the evaluation scores (:func:`evaluate_history`): the blend with
the fewest components within one standard error of the best (``own`` is not
searched: the profile holds the customer's own lines). On the generated data
with within-persona variation, replenishment and missions that is mostly the
profile, with some repeat and co-occurrence or segment (recall@5 1.12 x the
best baseline on seeds 42 and 7; companions of recent orders, a replenishment
clock, the season and a logistic blend added at most 0.001: docs/decisions.md,
"Next-best category", third round).

Everything scores in batches of customers with sparse products and
``argpartition``: a million customers by 332 classes, fit and top 5 with
reasons, with the weight search, in 46 s of CPU (drawing the data included) and 3.1 GB on 2 shared cores
(benchmarks/bench_recommendations.py, section c).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import threading
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from core.domain.columns import ID_COLUMN, NOISE
from core.domain.hierarchy import Hierarchy
from core.profile_export.profiling import text_column

COMPONENTS = ("own", "segment", "cooccurrence", "season", "repeat", "profile")
# A profile score reads "buys again" for a class the customer bought, "popular in segment" for another.
REASONS = {"own": "buys again", "segment": "popular in segment", "cooccurrence": "often bought with {}",
           "season": "in season", "repeat": "due again", "profile": None}
# A class no component scores for this customer, ranked by how many customers bought it (a filler, rare).
FALLBACK_REASON = "popular overall"
# Global popularity breaks ties (and fills) at a weight far below any component's smallest step.
TIE_BREAK = 1e-6
BASELINES = ("global_popularity", "segment_popularity", "own_top_classes")
CANDIDATES = {"own_repeat": {"own": 1.0}, "item_knn": {"cooccurrence": 1.0}, "season_popularity": {"season": 1.0},
              "replenishment": {"repeat": 1.0}, "own_mix_smoothed": {"profile": 1.0}}
# Used when the history is too short for a validation split inside the fit period: the blend that did
# best across both kinds of generated data on the evaluation window (recall@5 against the best model
# there: 0.178 against 0.189 without within-persona variation, 0.233 against 0.238 with it; own 0.1 +
# segment 0.9, the earlier default, scored 0.188 and 0.180).
DEFAULT_WEIGHTS = {"own": 0.0, "segment": 0.3, "cooccurrence": 0.0, "season": 0.0, "repeat": 0.0, "profile": 0.7}
# Blend weights are searched on a coarse grid (multiples of 0.2 summing to 1: 126 blends), then refined
# in steps of 0.1 (moving 0.1 from one component to another while recall improves); the full 0.1 grid of
# the searched components would be 1,001 blends, about a minute on 10,000 customers. Scored on at most
# VALIDATION_CUSTOMERS validation customers (a seeded sample: recall's standard error stays near 0.002).
COARSE_STEP = 0.2
WEIGHT_STEP = 0.1
# The components the weight search moves: ``own`` (recency-weighted own lines) is left at 0, the profile holds
# the customer's own lines; on the default data it was in no chosen blend since the profile came, and adding
# time-decayed own history to the profile scored 0.229 against 0.229 (benchmark section e). Five components
# make the coarse grid 126 blends instead of 252 (144 blends scored with the refinement on seed 42, against 275).
SEARCHED_COMPONENTS = ("segment", "cooccurrence", "season", "repeat", "profile")
REFINE_ROUNDS = 10
VALIDATION_CUSTOMERS = 10_000
# Customers the temporal holdout and the cross-sell comparison score at most (profile_export.recommendations.
# evaluation_customers, whose default this is): a seeded sample of the evaluable customers when there are more.
# Recall's standard error on 50,000 customers is about 0.001 (per-customer recall varies by about 0.2); at a
# million customers scoring all 314,042 evaluable ones took 22 s of the holdout and 21 s of the comparison.
EVALUATION_CUSTOMERS = 50_000
# Customers the validation and holdout fits are made from at most (profile_export.recommendations.
# evaluation_fit_customers, whose default this is): every one up to it, else a seeded sample (docs/decisions.md,
# "fourth round"). Its own random stream, so the sample is not the same draw as the scored samples'.
EVALUATION_FIT_CUSTOMERS = 250_000
EVALUATION_FIT_STREAM = 5
# Customers scored at a time. Each of a batch's dense arrays (customers x items, float32) is 13 MB at 10,000 x 332:
# the allocator reuses that memory from batch to batch and it stays in cache, where 66 MB arrays at 50,000 were
# fresh pages every time (page faults, a third of the CPU at a million customers). Components of 50,000 customers
# took 1.08 CPU-s in one batch, 0.43 in batches of 10,000 (0.64 at 5,000: the per-batch overhead); same values.
SCORE_BATCH = 10_000
# Customers blended and ranked at a time in the weight search, which blends the same components ~150 times:
# 2,000 x 332 float32 is 2.7 MB, in cache.
CACHE_ROWS = 2_000
# Entries (customer-item-period sums) per block of a purchase history read in customer order: consecutive batches'
# sums are joined up to this many, so building a cut takes a few dozen blocks instead of one per batch of lines
# (208 at a million customers, each a dozen NumPy calls waiting for the interpreter lock behind the profiles).
BLOCK_ENTRIES = 1 << 20
# Threads that score batches side by side (the final top k of every customer, the holdout, the cross-sell
# order): NumPy, SciPy and BLAS leave the interpreter lock in their long calls. Results are taken in batch order.
SCORE_THREADS = max(1, min(4, os.cpu_count() or 1))
HALF_LIFE_DAYS = 90.0
YEAR_DAYS = 365
# Day numbers (days since 1970-01-01, plus 1 so none is 0 in a sparse matrix) stay below DAY_SPAN until
# the year 2243; a first purchase day is stored as FIRST_BASE - day so a sparse maximum finds the earliest.
DAY_SPAN = 100_000
FIRST_BASE = DAY_SPAN
# The profile component's prior: the segment's class mix counts as this many purchase lines of the customer's
# (a Dirichlet prior). On the validation split of the default data with within-persona variation (fit to
# 2024-01-02, scored to 2024-07-02), 4 and 16 lines scored recall@5 0.2442 and 0.2443, 64 lines 0.2374.
PROFILE_PRIOR_LINES = 16.0
# A habit counts as lapsed once the customer is this many of their own intervals past the last purchase.
LAPSED_INTERVALS = 2.0


def in_order(function, items: list):
    """``function`` of each of ``items``, computed on up to :data:`SCORE_THREADS` threads, yielded in order.

    BLAS is held to one thread of its own meanwhile (each batch's products are small; two levels of threads
    on two cores only fight). Results do not depend on the threads: each item is computed alone, and the
    caller combines them in order. An exception in one is raised here.
    """
    workers = min(SCORE_THREADS, len(items))
    if workers <= 1:
        yield from map(function, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        yield from pool.map(function, items)


def day_number(days) -> np.ndarray:
    """Days since 1970-01-01, plus 1 (so no day is 0), of dates or Timestamps."""
    return np.asarray(pd.to_datetime(days), dtype="datetime64[D]").astype(np.int64) + 1
RECOMMENDATION_COLUMNS = ["customer_id", "rank", "department", "class", "score", "reason"]


# ---------------------------------------------------------------------------------------------
# What may be recommended


def recommendable_items(hierarchy: Hierarchy, level: str = "class") -> pd.DataFrame:
    """The merchandise classes (or departments) that may be recommended, in hierarchy order.

    Parameters
    ----------
    hierarchy : Hierarchy
    level : {"class", "department"}

    Returns
    -------
    DataFrame
        Columns ``department``, ``class`` (None at department level) and
        ``label`` (the class name, with its department in brackets when two
        departments share the name; the department at department level).
        Its row number is the item index every matrix here uses.
    """
    departments = hierarchy.merchandise_departments
    if level == "department":
        return pd.DataFrame({"department": departments, "class": [None] * len(departments), "label": departments})
    pairs = [(d, c) for d in departments for c in hierarchy.departments[d].classes]
    names = pd.Series([c for _, c in pairs])
    shared = names.duplicated(keep=False).to_numpy()
    labels = [f"{c} ({d})" if twice else c for (d, c), twice in zip(pairs, shared)]
    return pd.DataFrame({"department": [d for d, _ in pairs], "class": [c for _, c in pairs], "label": labels})


def item_codes(lines: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """Each line's item index in ``items``, or -1 (not merchandise, a data-quality or unknown class)."""
    if items["class"].isna().all():
        lookup = pd.Series(np.arange(len(items)), index=items["department"])
        return lines["department"].map(lookup).fillna(-1).to_numpy(np.int64)
    key = pd.MultiIndex.from_frame(items[["department", "class"]])
    return key.get_indexer(pd.MultiIndex.from_arrays([lines["department"], lines["class"]])).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Purchases, customer by item


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Merchandise purchases up to a date, customer by item.

    Attributes
    ----------
    counts : csr_matrix, shape (customers, items)
        Purchase lines (returns excluded).
    recency : csr_matrix, shape (customers, items)
        The same lines weighted by ``0.5 ** (days before the as-of date / half-life)``.
    spend : csr_matrix or None, shape (customers, items)
        Purchase value (None: not built, :meth:`PurchaseHistory.interactions`).
    season : ndarray, shape (items,)
        Lines of each item (all customers) in the same calendar days, one year
        before, as the period the recommendations are for.
    days, last, first : csr_matrix or None, shape (customers, items)
        Distinct days the customer bought the item, the last and the first
        of them (day numbers, :func:`day_number`; ``first`` stored as
        ``FIRST_BASE - day`` so every stored value is positive). Same
        sparsity as ``counts``. None: no timing (the ``repeat`` component is 0).
    as_of : int
        Day number of the date these purchases run up to.
    horizon_days : int
        Length of the period recommendations are for.
    """

    counts: sp.csr_matrix
    recency: sp.csr_matrix
    spend: sp.csr_matrix | None
    season: np.ndarray
    days: sp.csr_matrix | None = None
    last: sp.csr_matrix | None = None
    first: sp.csr_matrix | None = None
    as_of: int = 0
    horizon_days: int = 0
    # Set by PurchaseHistory: computes cooccurrence() from an earlier cut's (the bought sets only grow).
    counted: "Callable[[Interactions], np.ndarray] | None" = dataclasses.field(default=None, repr=False,
                                                                                compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape

    def cooccurrence(self) -> np.ndarray:
        """Items x items: customers who bought both (the diagonal: who bought each), ``bought.T @ bought``
        over every row, as whole numbers in float64."""
        return self.counted(self) if self.counted is not None else _cooccurrence(_binary(self.counts))


class PurchaseHistory:
    """Merchandise purchases of known customers, accumulated batch by batch and split at cut dates.

    The lines up to the analysis date fall into periods ``(-inf, cuts[0]]``,
    ``(cuts[0], cuts[1]]`` ... ``(cuts[-2], cuts[-1]]`` (``cuts[-1]`` is the
    analysis date; later lines are ignored). :meth:`interactions` sums the
    periods up to a cut, so a fit at that cut never holds a line after it;
    :meth:`bought` gives the items bought in one period, what an evaluation
    scores against.

    Each batch is reduced to one entry per (customer, item, period) with
    integer keys sorted by NumPy (:class:`_PeriodSums`); the batches' entries
    are kept as blocks (a log grouped by customer) or merged by key (another
    order), and a cut is combined from them block by block. No string of a
    line is hashed: department and class are read dictionary-encoded and
    looked up once per distinct value. Each cut's co-occurrence counts come
    from the earlier cut's (:meth:`Interactions.cooccurrence`).

    Parameters
    ----------
    customer_ids : array of int
        The customers, in the row order of every matrix.
    items : DataFrame
        :func:`recommendable_items`.
    cuts : sequence of Timestamp
        Ascending; the last is the analysis date.
    horizon_days : int
        Length of the period recommendations are for (the season looks at the
        same days one year before it).
    half_life_days : float
    """

    def __init__(self, customer_ids, items: pd.DataFrame, cuts, horizon_days: int,
                 half_life_days: float = HALF_LIFE_DAYS):
        self.customer_index = pd.Index(np.asarray(customer_ids))
        self.items = items
        self.cuts = [pd.Timestamp(c).normalize() for c in cuts]
        if self.cuts != sorted(self.cuts):
            raise ValueError(f"cuts must be ascending, got {[str(c.date()) for c in self.cuts]}")
        self.horizon_days = int(horizon_days)
        self.half_life_days = float(half_life_days)
        self._cut_days = np.array([int(day_number(c)[()]) for c in self.cuts], dtype=np.int64)
        self._row_of = _row_lookup(self.customer_index)
        self._item_of = _ItemLookup(items)
        self._sums = _PeriodSums(len(self.cuts))
        self._carry: tuple[int, tuple[np.ndarray, ...]] | None = None  # the last customer's row and lines
        self._weight_table = np.zeros(0)
        self._summing = _OneAfterAnother()
        self._flushing = threading.Lock()
        self._season = np.zeros((len(self.cuts), len(items)))
        self._cooccurrences = _Cooccurrences(self._cut_days)
        self.lines = 0

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.customer_index), len(self.items)

    def add(self, lines) -> None:
        """Add a batch of order lines (``customer_id``, ``order_date``, ``department``, ``class``,
        ``line_amount``, ``is_return``), a DataFrame or an Arrow table or record batch; returns, other
        customers and other items are skipped (a missing return flag counts as a return, a missing amount as 0)."""
        import pyarrow as pa

        if isinstance(lines, pd.DataFrame):
            lines = pa.Table.from_pandas(lines.assign(order_date=pd.to_datetime(lines["order_date"])),
                                         preserve_index=False)
        rows = self._row_of(_column(lines, ID_COLUMN))
        codes = self._item_of(lines.column("department"), lines.column("class"))
        day = _day_numbers(lines.column("order_date"))
        returned = _column(lines, "is_return", fill=True).astype(bool, copy=False)
        keep = (rows >= 0) & (codes >= 0) & ~returned & (day <= self._cut_days[-1])
        rows, codes, day = rows[keep], codes[keep], day[keep]
        amount = _column(lines, "line_amount", fill=0.0).astype(np.float64, copy=False)[keep]
        # Weighted from the analysis date: a fit at an earlier cut rescales (interactions()).
        weight = self._weights(self._cut_days[-1] - day)
        self._sum_lines(rows, rows * len(self.items) + codes, day, weight, amount)
        self._add_season(day, codes)
        self.lines += len(rows)

    def _add_season(self, day: np.ndarray, codes: np.ndarray) -> None:
        """Count each cut's season lines (the lines of the horizon's days one year before it, per item). The cuts'
        seasons do not overlap when the cuts lie a horizon apart or more (the evaluation's do): then the lines of
        any season are picked out once and counted in one pass, each in its season's row (a third of the passes
        of one pick per cut; the same whole numbers)."""
        starts = self._cut_days - YEAR_DAYS
        n_items = len(self.items)
        if len(starts) < 2 or (np.diff(starts) < self.horizon_days).any():
            for c, start in enumerate(starts):
                inside = (day > start) & (day <= start + self.horizon_days)
                self._season[c] += np.bincount(codes[inside], minlength=n_items)
            return
        first, last = int(starts[0]), int(starts[-1]) + self.horizon_days
        inside = (day > first) & (day <= last)
        # Each day of (first, last]: its season, or the spare row past the last one (between seasons).
        season_of = np.full(last - first, len(starts), dtype=np.int64)
        for c, start in enumerate(starts):
            season_of[start - first:start - first + self.horizon_days] = c
        counted = np.bincount(season_of[day[inside] - first - 1] * n_items + codes[inside],
                              minlength=(len(starts) + 1) * n_items)
        self._season += counted[:len(starts) * n_items].reshape(len(starts), n_items)

    def _weights(self, days_ago: np.ndarray) -> np.ndarray:
        """``0.5 ** (days ago / half-life)`` of each line, from a table of the days (the same values as computed
        line by line: NumPy's power gives each value the same result wherever it stands; a power per line was a
        tenth of the pass)."""
        if not len(days_ago):
            return np.zeros(0)
        if days_ago.min() < 0 or days_ago.max() >= DAY_SPAN:  # not a day of the history (a missing date)
            return 0.5 ** (days_ago.astype(np.float64) / self.half_life_days)
        if len(self._weight_table) <= days_ago.max():
            self._weight_table = 0.5 ** (np.arange(int(days_ago.max()) + 1).astype(np.float64) / self.half_life_days)
        return self._weight_table[days_ago]

    def _sum_lines(self, rows: np.ndarray, pair: np.ndarray, day: np.ndarray, weight: np.ndarray,
                   amount: np.ndarray) -> None:
        """Sum the lines into the periods, except the batch's last customer's, held back for the next batch.

        Distinct purchase days are counted within a batch; a customer whose lines run on into the next batch
        (the log is written customer by customer, batches end anywhere) would have a day split between two
        batches counted twice. Holding the last customer's lines back makes the counts exact, whatever the
        batch size, for any log whose lines are grouped by customer. When they are, the batch is summed as
        slices (the held customer's lines with their continuation, then the rest up to the new last customer),
        without copying it; otherwise the held lines are joined to the batch and the last customer's picked out.
        """
        if not len(rows):
            return
        lines = (pair, day, weight, amount)
        held_row, held = self._carry if self._carry is not None else (None, None)
        begin = _run_length(rows, held_row) if held is not None else 0
        if begin == len(rows):  # the whole batch is the held customer's
            self._carry = (held_row, tuple(np.concatenate(parts) for parts in zip(held, lines)))
            return
        last = rows[-1]
        end = len(rows) - _run_length(rows[::-1], last)
        if (held is not None and (rows[begin:] == held_row).any()) or (rows[begin:end] == last).any():
            # Not grouped by customer: the held lines joined to the batch, every line of the last customer held.
            if held is not None:
                lines = tuple(np.concatenate(parts) for parts in zip(held, lines))
                rows = np.concatenate([np.full(len(held[0]), held_row), rows])
            tail = rows == last
            self._carry = (last, tuple(values[tail] for values in lines))
            self._submit(tuple(values[~tail] for values in lines))
            return
        if held is not None:
            self._submit(tuple(np.concatenate([kept, values[:begin]]) for kept, values in zip(held, lines)))
        if end > begin:
            self._submit(tuple(values[begin:end] for values in lines))
        self._carry = (last, tuple(values[end:].copy() for values in lines))

    def _submit(self, lines: tuple[np.ndarray, ...]) -> None:
        """Sort and sum ``lines`` into the periods in a thread of its own while the next batch is read (a third
        of the pass's CPU), batch after batch in the order they came: the same sums."""
        self._summing.submit(lambda: self._sums.add(_batch_sums(*lines, self._cut_days)))

    def _flush(self) -> None:
        """Sum the lines held back (:meth:`_sum_lines`) and wait for every batch's sums: called once every batch
        has been added. Under a lock: stage 05 reads two cuts side by side in two threads, and two first calls
        at once would both wait for (and cancel) the same sums."""
        with self._flushing:
            if self._carry is not None:
                (_, carry), self._carry = self._carry, None
                self._submit(carry)
            self._summing.wait()
            # Every batch's sums in their blocks before any cut reads them (two cuts may be read side by side).
            self._sums._merge()

    def interactions(self, cut: int, spend: bool = True, rows: np.ndarray | None = None,
                     timing: bool = True) -> Interactions:
        """Purchases up to ``cuts[cut]`` (index), as of that date; ``spend`` None unless asked for, and ``days``,
        ``last`` and ``first`` None unless ``timing`` (only the ``repeat`` component and the co-occurrence counted
        from an earlier cut read them: stage 05's final cut leaves them out when its blend weights neither).

        ``rows`` (optional, ascending): only these customers, as rows 0, 1, ... of every matrix (an evaluation
        fit on a sample, :func:`evaluation_fit_rows`); their co-occurrence is counted on them alone, and the
        season stays every customer's lines (counted while the lines were read)."""
        self._flush()
        names = ["counts", "recency", *(["days", "last", "first"] if timing else []), *(["spend"] if spend else [])]
        shape, position = self._subset(rows)
        row_counts, columns, values = self._sums.upto(cut, names, shape, position)
        # Weighted from the analysis date (add()): rescaled to this cut's date; first days stored from FIRST_BASE.
        np.multiply(values["recency"], 2.0 ** ((self.cuts[-1] - self.cuts[cut]).days / self.half_life_days),
                    out=values["recency"])
        if timing:
            np.subtract(FIRST_BASE, values["first"], out=values["first"])
        matrix = _csr_of(row_counts, columns, shape)
        built = {name: matrix(values.pop(name)) for name in names}
        return Interactions(**{"spend": None, "days": None, "last": None, "first": None, **built},
                            season=self._season[cut].copy(),
                            as_of=int(self._cut_days[cut]), horizon_days=self.horizon_days,
                            counted=self._cooccurrences.counter(cut) if position is None else None)

    def bought(self, period: int, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """1 where a customer bought an item in period ``period`` (``(cuts[period-1], cuts[period]]``); ``rows``
        as in :meth:`interactions`."""
        self._flush()
        shape, position = self._subset(rows)
        inside = self._sums.period(period, shape[1], position)
        return _csr(inside["pair"], shape)(np.ones(len(inside["pair"])))

    def _subset(self, rows: np.ndarray | None) -> tuple[tuple[int, int], np.ndarray | None]:
        """The shape of the matrices of customers ``rows`` (None: all), and each customer's row among them."""
        if rows is None:
            return self.shape, None
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and ((np.diff(rows) <= 0).any() or rows[0] < 0 or rows[-1] >= self.shape[0]):
            raise ValueError("rows must be ascending, distinct row numbers of the history's customers")
        position = np.full(self.shape[0], -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        return (len(rows), self.shape[1]), position


class _Cooccurrences:
    """The co-occurrence counts of a history's cuts (:meth:`Interactions.cooccurrence`), each from the latest
    earlier cut's already counted: the bought sets only grow, so a cut's counts are the earlier counts plus
    what the pairs first bought since add (:func:`_added_cooccurrence`). Whole numbers in float64: the same
    values as the full product, in a fraction of its time (a window's new pairs are a few of each customer's).

    Holds no reference to the history (whose sums are dropped before the final fit), only the counts.
    """

    def __init__(self, cut_days: np.ndarray):
        self.cut_days = cut_days
        self.done: dict[int, np.ndarray] = {}

    def counter(self, cut: int) -> Callable[[Interactions], np.ndarray]:
        return lambda interactions: self.of(cut, interactions)

    def of(self, cut: int, interactions: Interactions) -> np.ndarray:
        """The counts of ``interactions``, the history's purchases up to ``cuts[cut]``."""
        if cut not in self.done:
            counts = interactions.counts
            bought = sp.csr_matrix(((counts.data > 0).astype(np.float64), counts.indices, counts.indptr),
                                   shape=counts.shape)
            earlier = max((c for c in self.done if c < cut), default=None)
            if earlier is None or interactions.first is None:
                co = _cooccurrence(bought)
            else:
                # ``first`` shares the index arrays of ``counts``: its entries are the same pairs, in the same order.
                new = (bought.data > 0) & (FIRST_BASE - interactions.first.data > self.cut_days[earlier])
                co = self.done[earlier] + _added_cooccurrence(bought, new)
            self.done[cut] = co
        return self.done[cut]


class _OneAfterAnother:
    """Runs tasks one after another, in the order given, in a thread of its own while the caller goes on
    (at most ``ahead`` tasks waiting, so the caller does not read far ahead); :meth:`wait` returns once all
    have run and raises the first error. Inline on a single core."""

    def __init__(self, ahead: int = 3):
        self.ahead, self._pool, self._pending = ahead, None, []

    def submit(self, task) -> None:
        if SCORE_THREADS <= 1:
            task()
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="purchase-history")
        self._pending.append(self._pool.submit(task))
        while len(self._pending) > self.ahead:
            self._pending.pop(0).result()

    def wait(self) -> None:
        try:
            while self._pending:
                self._pending.pop(0).result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


def _run_length(values: np.ndarray, value) -> int:
    """How many of ``values`` from the start equal ``value`` (looked at in growing slices: a customer's lines
    are a few hundred of a batch's millions)."""
    start, step = 0, 1024
    while start < len(values):
        other = np.flatnonzero(values[start:start + step] != value)
        if len(other):
            return start + int(other[0])
        start, step = start + step, step * 2
    return len(values)


def _column(table, name: str, fill=None) -> np.ndarray:
    """An Arrow column as NumPy, nulls replaced by ``fill`` (when given)."""
    import pyarrow.compute as pc

    column = table.column(name)
    if fill is not None and column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False) if hasattr(column, "to_numpy") else np.asarray(column)


def _day_numbers(column) -> np.ndarray:
    """:func:`day_number` of an Arrow timestamp or date column (the day a line's timestamp falls on)."""
    import pyarrow as pa

    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        # A zoned timestamp's day is its local day, as pandas' normalize() gives it.
        return day_number(pd.Series(column.to_pandas()).dt.tz_localize(None).dt.normalize())
    micros = column.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("datetime64[us]", copy=False)
    # The day a timestamp falls on, by integer floor division (what a conversion to datetime64[D] does; a null,
    # NaT, keeps the value that conversion gives it).
    days = np.floor_divide(micros.view(np.int64), 86_400_000_000)
    days += 1
    if column.null_count:
        days[np.isnat(micros)] = np.iinfo(np.int64).min + 1
    return days


def _row_lookup(index: pd.Index):
    """A function from customer ids to their row in ``index`` (-1: not a customer of it)."""
    keys = index.to_numpy()
    if (len(keys) and np.issubdtype(keys.dtype, np.integer) and index.is_unique and keys.min() >= 0
            and keys.max() < 4 * len(keys) + 1_000_000):
        # Dense keys (the pipeline's are 1..n): one array lookup per line instead of a hash lookup.
        dense = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
        dense[keys] = np.arange(len(keys))

        def row_of(ids: np.ndarray) -> np.ndarray:
            if not np.issubdtype(ids.dtype, np.integer):
                return index.get_indexer(ids).astype(np.int64)
            if not len(ids) or (ids.min() >= 0 and ids.max() < len(dense)):
                return dense[ids]  # every id in range (the pipeline's): one lookup, no masks
            inside = (ids >= 0) & (ids < len(dense))
            return np.where(inside, dense[np.where(inside, ids, 0)], -1)

        return row_of
    return lambda ids: index.get_indexer(ids).astype(np.int64)


class _ItemLookup:
    """Each line's item index in ``items`` (-1: not merchandise, a data-quality or unknown class), from the
    department and class columns, looked up once per distinct value of each (as :func:`item_codes` does)."""

    def __init__(self, items: pd.DataFrame):
        self.by_department = items["class"].isna().all()
        self.departments = pd.Index(pd.unique(items["department"]))
        self.classes = pd.Index(pd.unique(items["class"].dropna())) if not self.by_department else pd.Index([])
        table = np.full((len(self.departments) + 1, len(self.classes) + 1), -1, dtype=np.int64)
        d = self.departments.get_indexer(items["department"])
        if self.by_department:
            table[d, :] = np.arange(len(items))[:, None]
        else:
            table[d, self.classes.get_indexer(items["class"])] = np.arange(len(items))
        self.table = table  # last row and column: a value not in items (or missing)

    def __call__(self, departments, classes) -> np.ndarray:
        d_lookup, d = _codes(departments, self.departments)
        if self.by_department:
            return self.table[d_lookup, 0][d]
        c_lookup, c = _codes(classes, self.classes)
        # The item of each pair of the batch's dictionary entries (a few dozen by a few hundred), then one lookup
        # per line in that small table, by its flat position (half the time of a two-dimensional lookup).
        pairs = self.table[d_lookup[:, None], c_lookup[None, :]]
        wide = np.int64 if pairs.size > np.iinfo(np.int32).max else np.int32
        flat = d.astype(wide) * wide(pairs.shape[1])
        flat += c
        return np.take(pairs.ravel(), flat)


def _codes(column, known: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Of an Arrow string column: the position in ``known`` of each entry of its dictionary plus one for a
    null (``len(known)`` for a value not known, and for the null), and each value's entry (int32)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    found = known.get_indexer(column.dictionary.to_numpy(zero_copy_only=False))
    lookup = np.append(np.where(found >= 0, found, len(known)), len(known))
    indices = column.indices.fill_null(len(lookup) - 1) if column.null_count else column.indices
    return lookup, indices.to_numpy(zero_copy_only=False)


def _batch_sums(pair: np.ndarray, day: np.ndarray, weight: np.ndarray, amount: np.ndarray,
                cut_days: np.ndarray) -> dict[str, np.ndarray]:
    """One batch's lines summed per (customer-item pair, period): lines, recency weight, spend, distinct days,
    last and first day; keyed ``pair * periods + period``, ascending."""
    if not len(pair):
        return _empty_sums()
    sums = _batch_sums_in_date_order(pair, day, weight, amount, cut_days)
    return sums if sums is not None else _batch_sums_sorted_by_day(pair, day, weight, amount, cut_days)


def _batch_sums_sorted_by_day(pair: np.ndarray, day: np.ndarray, weight: np.ndarray, amount: np.ndarray,
                              cut_days: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_batch_sums` of any batch: its lines sorted by (pair, day) first."""
    # Stable: each entry adds its lines in the order they came.
    order = np.argsort(pair * DAY_SPAN + day, kind="stable")
    pair, day = pair[order], day[order]
    # The period: how many cuts lie before the day (searchsorted's "left" on three cuts, without its search).
    period = np.zeros(len(day), np.int64)
    for cut in cut_days:
        period += day > cut
    group = pair * len(cut_days) + period
    del period
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[start[1:], len(group)]
    # Distinct days: a group's first line always starts a day (the key changes), so counted from a running total.
    seen = np.cumsum(np.r_[True, (pair[1:] != pair[:-1]) | (day[1:] != day[:-1])], dtype=np.int32)
    return {"key": group[start], "counts": (ends - start).astype(np.int32),
            "recency": np.add.reduceat(weight[order], start), "spend": np.add.reduceat(amount[order], start),
            "days": seen[ends - 1] - seen[start] + 1, "last": day[ends - 1].astype(np.int32),
            "first": day[start].astype(np.int32)}


def _batch_sums_in_date_order(pair: np.ndarray, day: np.ndarray, weight: np.ndarray, amount: np.ndarray,
                              cut_days: np.ndarray) -> dict[str, np.ndarray] | None:
    """:func:`_batch_sums` of lines whose days run forward within each (pair, period), as a log written order by
    order does (stage 01's); None for other lines.

    Sorted by (pair, period) instead of (pair, day): stable, so each entry's lines stay in the order they came,
    which is then their day order, the order the (pair, day) sort gives: the same entries, summed in the same
    order, to the same values. The period of each line comes before the sort (a table of the batch's days), the
    sort key fits 32 bits within a batch and is sorted as two 16-bit halves (NumPy's radix sort), and no pair
    or period is gathered or computed after it: a sixth of the summing thread at a million customers.
    """
    period = _periods(day, cut_days)
    if period is None:
        return None
    group = pair * len(cut_days) + period
    del period
    order = _stable_order(group)
    group, day = group[order], day[order]
    changed = group[1:] != group[:-1]
    back = day[1:] < day[:-1]
    back &= ~changed
    if back.any():  # a day before the one above it within an entry: not in date order
        return None
    del back
    start = np.flatnonzero(np.r_[True, changed])
    ends = np.r_[start[1:], len(group)]
    # Distinct days: a new entry or a new day (within a pair, a new period is a new day).
    changed |= day[1:] != day[:-1]
    seen = np.cumsum(np.r_[True, changed], dtype=np.int32)
    return {"key": group[start], "counts": (ends - start).astype(np.int32),
            "recency": np.add.reduceat(weight[order], start), "spend": np.add.reduceat(amount[order], start),
            "days": seen[ends - 1] - seen[start] + 1, "last": day[ends - 1].astype(np.int32),
            "first": day[start].astype(np.int32)}


def _periods(day: np.ndarray, cut_days: np.ndarray) -> np.ndarray | None:
    """How many cuts lie before each day (``searchsorted(cut_days, day)``), from a table of the days between the
    batch's first and last; None when they lie more than :data:`DAY_SPAN` apart (a missing date)."""
    first, last = int(day.min()), int(day.max())
    if last - first >= DAY_SPAN:
        return None
    table = np.searchsorted(cut_days, np.arange(first, last + 1)).astype(np.int64)
    return table[day - first]


def _stable_order(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of int64 keys: by NumPy's radix sort on two 16-bit halves when the keys
    span less than 2**32 (least significant half first, then the other, each stable: the same order), else as is."""
    low = int(key.min())
    if int(key.max()) - low >= 1 << 32:
        return np.argsort(key, kind="stable")
    offset = key - low
    order = np.argsort((offset & 0xFFFF).astype(np.uint16), kind="stable")
    high = (offset >> 16).astype(np.uint16)
    return order[np.argsort(high[order], kind="stable")]


def _empty_sums() -> dict[str, np.ndarray]:
    """:func:`_batch_sums` of no lines: its arrays and their types (32-bit where a value is a count or a day)."""
    types = {"key": np.int64, "counts": np.int32, "recency": np.float64, "spend": np.float64, "days": np.int32,
             "last": np.int32, "first": np.int32}
    return {name: np.zeros(0, dtype) for name, dtype in types.items()}


# How each of _batch_sums' values combines across batches and periods.
_COMBINE = {"counts": np.add, "recency": np.add, "spend": np.add, "days": np.add, "last": np.maximum,
            "first": np.minimum}


def _combine(entries: dict[str, np.ndarray], group: np.ndarray) -> dict[str, np.ndarray]:
    """``entries`` (sorted by ``group``) combined per group (:data:`_COMBINE`)."""
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.zeros(0, np.int64)
    if len(start) == len(group):
        return entries
    return {name: entries[name][start] if name == "key" else _COMBINE[name].reduceat(entries[name], start)
            for name in entries}


class _PeriodSums:
    """The batches' :func:`_batch_sums`: one entry per (pair, period), ascending by key.

    Lines grouped by customer, as stage 01 writes them, give batches whose keys follow on from each other
    (the history holds each batch's last customer back for the next): they are kept as they came, one block per
    batch, and a cut is built block by block, side by side on the cores, each block's result copied once into
    the cut's arrays. Merging them into one sorted array first copied every entry a few times and built the cut
    from arrays of tens of millions of entries, far out of cache (7 s of the first cut at a million customers).
    Otherwise (a log in another order) the batches wait in a queue and are merged, sorted by key, once they
    hold as many entries as the merged ones (so each entry is merged a few times at most).
    """

    def __init__(self, periods: int):
        self.periods = periods
        self.blocks: list[dict[str, np.ndarray]] = []  # ascending and disjoint, one after another
        self.gathered: list[dict[str, np.ndarray]] = []  # the next block's batches (ordered)
        self.queue: list[dict[str, np.ndarray]] = []
        self.queued = 0
        self.ordered = True
        self._kept: tuple | None = None  # a sample's entries per block (_kept_of)

    def add(self, sums: dict[str, np.ndarray]) -> None:
        if not len(sums["key"]):
            return
        self._kept = None
        last = self.gathered[-1] if self.gathered else self.blocks[-1] if self.blocks else None
        if self.ordered and (last is None or sums["key"][0] > last["key"][-1]):
            self.gathered.append(sums)
            if sum(len(g["key"]) for g in self.gathered) >= BLOCK_ENTRIES:
                self._close_block()
            return
        if self.ordered:
            # Out of order: the blocks so far, one after another, are the first merged block.
            self._close_block()
            self.ordered = False
            self.blocks = [_concatenated(self.blocks)] if self.blocks else []
        self.queue.append(sums)
        self.queued += len(sums["key"])
        merged = len(self.blocks[0]["key"]) if self.blocks else 0
        if self.queued >= max(merged, 1_000_000):
            self._merge()

    def _close_block(self) -> None:
        """The batches gathered, one after another, as the next block."""
        if self.gathered:
            self.blocks.append(_concatenated(self.gathered) if len(self.gathered) > 1 else self.gathered[0])
            self.gathered = []

    def _merge(self) -> None:
        self._close_block()
        if not self.queue:
            return
        parts = [*self.blocks, *self.queue]
        self.queue, self.queued, self._kept = [], 0, None
        entries = _concatenated(parts)
        key = entries["key"]
        if len(key) and (np.diff(key) < 0).any():
            order = np.argsort(key, kind="stable")
            entries = {name: values[order] for name, values in entries.items()}
        self.blocks = [_combine(entries, entries["key"])]

    def upto(self, cut: int, names: list[str], shape: tuple[int, int], position: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Entries of the periods up to ``cut`` combined per customer-item pair, as the parts of a CSR matrix of
        ``shape``: each row's number of pairs, each pair's column (int32), and per name of ``names`` the
        combined values (:data:`_COMBINE`) as float64, in ascending pair order.

        ``position`` (optional): each customer's row in the result, -1 for a customer left out (ascending over
        the customers kept, so the pairs stay in order); ``shape[0]`` is then the number kept.

        Two passes over the blocks, side by side: the first finds each block's pairs, the second combines its
        values straight into its slice of arrays allocated once (no per-block result copied again, no
        temporary of a whole cut's size).
        """
        self._merge()
        periods, n_items = self.periods, shape[1]

        kept = self._kept_of(position, n_items) if position is not None else None

        def pairs_of(at: int) -> tuple[np.ndarray | None, np.ndarray]:
            """Block ``at``'s entries up to the cut (None: all of them) and where each pair's entries start."""
            block = self.blocks[at]
            if position is not None:
                # A sample's few entries by their positions: each value array is then gathered at those, not
                # compressed through the whole block's mask once per name (the evaluation's cuts of 250,000 of a
                # million customers); the same entries in the same order.
                inside = kept[at]
                if cut < periods - 1:
                    inside = inside[block["key"][inside] % periods <= cut]
            else:
                inside = block["key"] % periods <= cut if cut < periods - 1 else None
            pair = block["key"] // periods if inside is None else block["key"][inside] // periods
            return inside, np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, np.int64)

        found = list(in_order(pairs_of, list(range(len(self.blocks)))))
        ends = np.cumsum([len(start) for _, start in found], dtype=np.int64)
        total = int(ends[-1]) if len(ends) else 0
        columns = np.empty(total, np.int32)
        values = {name: np.empty(total) for name in names}

        def fill(at: int) -> tuple[int, np.ndarray]:
            """Combine block ``at`` into its slice; its first row and the pairs of each of its rows."""
            (inside, start), block = found[at], self.blocks[at]
            if not len(start):
                return 0, np.zeros(0, np.int64)
            slot = slice(int(ends[at]) - len(start), int(ends[at]))
            entries = (lambda name: block[name]) if inside is None else (lambda name: block[name][inside])
            pair = entries("key")[start] // periods
            rows = pair // n_items
            np.subtract(pair, rows * n_items, out=columns[slot], casting="unsafe")
            for name in names:
                _COMBINE[name].reduceat(entries(name), start, out=values[name][slot])
            if position is not None:
                rows = position[rows]
            return int(rows[0]), np.bincount(rows - rows[0])

        row_counts = np.zeros(shape[0], np.int64)
        for first, counts in in_order(fill, list(range(len(found)))):
            row_counts[first:first + len(counts)] += counts  # a customer's pairs may span two blocks
        return row_counts, columns, values

    def period(self, period: int, n_items: int = 0, position: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The pairs bought in one period (``pair``: the customer-item pair); with ``position`` (:meth:`upto`)
        only the customers kept, their rows renumbered (``n_items``: the items per customer)."""
        self._merge()
        if not self.blocks:
            return {"pair": _empty_sums()["key"]}
        kept = self._kept_of(position, n_items) if position is not None else None

        def one(at: int) -> dict[str, np.ndarray]:
            key = self.blocks[at]["key"]
            if kept is not None:
                key = key[kept[at]]  # the sample's entries only: every one of them kept
            pair = key[key % self.periods == period] // self.periods
            if position is not None:
                row = position[pair // n_items]
                pair = (row * n_items + pair % n_items)[row >= 0]
            return {"pair": pair}

        return _concatenated(list(in_order(one, list(range(len(self.blocks))))))

    def _kept_of(self, position: np.ndarray, n_items: int) -> list[np.ndarray]:
        """Per block, the entries of the customers ``position`` keeps (:meth:`upto`), ascending: found once per
        sample and kept while the blocks stay as they are (the evaluation cuts the same sample four times, and
        each cut looked through every entry of a million customers for the quarter it keeps)."""
        row_of_key = self.periods * n_items
        if self._kept is not None and self._kept[0] == row_of_key and np.array_equal(self._kept[1], position):
            return self._kept[2]
        kept = list(in_order(lambda block: np.flatnonzero(position[block["key"] // row_of_key] >= 0), self.blocks))
        self._kept = (row_of_key, position, kept)
        return kept


def _concatenated(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The parts' arrays one after another, name by name, each part's dropped once copied (the join holds one
    extra array, not a copy of everything)."""
    return {name: np.concatenate([p.pop(name) for p in parts]) for name in list(parts[0])}


def _csr(pair: np.ndarray, shape: tuple[int, int]):
    """A function from values to a customers x items matrix of ascending, distinct pair keys (``row * items +
    item``): the matrices of one key set share their index arrays (built once: a sixth of the memory and time)."""
    return _csr_of(np.bincount(pair // shape[1], minlength=shape[0]), (pair % shape[1]).astype(np.int32), shape)


def _csr_of(row_counts: np.ndarray, columns: np.ndarray, shape: tuple[int, int]):
    """:func:`_csr` of each row's number of pairs and the pairs' columns (int32), in ascending pair order."""
    indptr = np.r_[0, np.cumsum(row_counts)]
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        out = sp.csr_matrix((np.asarray(values, dtype=np.float64), columns, indptr), shape=shape, copy=False)
        # Sorted and without duplicates already: nothing may sort the shared index arrays in place.
        out.has_sorted_indices = True
        out.has_canonical_format = True
        return out

    return matrix


def choose_level(item_lines: Mapping[str, int]) -> tuple[str | None, str]:
    """The level to recommend at, from the purchase lines each level can use; and why.

    Parameters
    ----------
    item_lines : mapping
        ``{"class": lines of recommendable classes, "department": lines of
        merchandise departments}`` (purchases up to the analysis date).

    Returns
    -------
    (level, explanation)
        ``"class"`` when any line has a known merchandise class;
        ``"department"`` when lines have merchandise departments but no known
        class (a log without classes); None when neither (no recommendations).
    """
    if item_lines.get("class", 0) > 0:
        return "class", "merchandise classes of the hierarchy"
    if item_lines.get("department", 0) > 0:
        return "department", ("no purchase line has a merchandise class the hierarchy knows (a log without "
                              "classes): merchandise departments are recommended instead, column class is empty")
    return None, ("no purchase line has a merchandise department or class the hierarchy knows (a log without "
                  "departments and classes, or only the till's other lines): nothing to recommend")


# ---------------------------------------------------------------------------------------------
# The model


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = set(weights) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown blend component(s) {sorted(unknown)}; allowed: {', '.join(COMPONENTS)}")
    values = {c: float(weights.get(c, 0.0)) for c in COMPONENTS}
    if any(v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise ValueError(f"blend weights must be >= 0 and not all 0, got {values}")
    return values


def _row_max_scaled(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (0 where the maximum is not above 0); a plain division when every row's
    is (the same quotients, without the masked division's extra pass and buffer)."""
    top = matrix.max(axis=1, keepdims=True)
    positive = top > 0
    if positive.all():
        return matrix / top
    return np.divide(matrix, top, out=np.zeros_like(matrix), where=positive)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items of each row, best first; -1 where fewer than ``k`` items score above 0.

    Parameters
    ----------
    scores : ndarray, shape (rows, items)
    k : int

    Returns
    -------
    (items, scores) : ndarrays, shape (rows, min(k, items))
        Equal scores inside the top k are ordered by item index; at the k-th
        place ``argpartition`` picks among them (deterministically).
    """
    k = min(k, scores.shape[1])
    if k == 0:
        return np.empty((len(scores), 0), np.int64), np.empty((len(scores), 0))
    part = _top_positions(scores, k) if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(picked, order, axis=1)
    items = np.where(best > 0, items, -1)
    return items, np.where(best > 0, best, 0.0)


def _top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's ``k`` largest scores (in no particular order): the set
    ``np.argpartition(-scores, k - 1, axis=1)[:, :k]`` gives, in a fifth of its time.

    ``k`` arg-max passes pick the largest scores; a row whose next score equals the k-th (a tie at the
    k-th place, where the choice is argpartition's own) or that holds a NaN is taken from argpartition
    itself, run on those rows only (it treats each row on its own, so the rows come out as in one call).
    Other rows have one top-k set, which both find. 10,000 x 332 float32: 6 ms against 32 ms.
    """
    if not np.issubdtype(scores.dtype, np.floating):
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(len(scores))
    work = np.array(scores, copy=True)
    part = np.empty((len(scores), k), np.intp)
    for j in range(k):
        part[:, j] = work.argmax(axis=1)
        # The k-th value as the pass saw it (-inf if a row ran out of values and picked a column again).
        kth = work[rows, part[:, j]]
        work[rows, part[:, j]] = -np.inf
    again = (work.max(axis=1) == kth) | np.isnan(scores[rows[:, None], part]).any(axis=1)
    if again.any():
        part[again] = np.argpartition(-scores[again], k - 1, axis=1)[:, :k]
    return part


# What NextBestClasses.fit learns whatever the weights (fit's ``counted``).
_COUNTED = ("segments_", "segment_popularity_", "global_popularity_", "segment_mix_", "season_", "n_items_")


class NextBestClasses(BaseEstimator):
    """Blend of own repeat behaviour, segment popularity, item-kNN and season (see the module docstring).

    Parameters
    ----------
    weights : mapping of str to float, optional
        Weight of each of :data:`COMPONENTS` (missing = 0); scaled to sum to
        1. None: :data:`DEFAULT_WEIGHTS`.
    top_k : int
        Items recommended per customer.
    batch_size : int
        Customers scored at a time (memory: about 6 dense float32 arrays of
        ``batch_size x items``).

    Attributes
    ----------
    weights_ : dict of str to float
    segments_ : ndarray
        The segment labels seen in fit, sorted (noise, -1, is none: its
        customers and those of a label not seen in fit get global popularity).
    segment_popularity_ : ndarray, shape (segments, items)
        Share of each segment's customers who bought each item.
    global_popularity_ : ndarray, shape (items,)
        Share of all customers who bought each item.
    similarity_ : ndarray, shape (items, items), or None
        Cosine similarity of the items' customer sets, 0 on the diagonal
        (None: not computed, ``fit(similarity=False)`` with co-occurrence
        weighted 0).
    season_ : ndarray, shape (items,)
        Season lines scaled to a maximum of 1.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, top_k: int = 5, batch_size: int = SCORE_BATCH):
        self.weights = weights
        self.top_k = top_k
        self.batch_size = batch_size

    def fit(self, interactions: Interactions, segments, similarity: bool = True,
            counted: "NextBestClasses | None" = None) -> "NextBestClasses":
        """Learn popularity, similarity and season from ``interactions``; ``segments`` labels its rows.

        ``similarity`` False: ``similarity_`` is None unless the weights blend co-occurrence (a model that only
        recommends never reads it then: stage 05's final fit, where counting it over a million customers took
        2 CPU-s for nothing). The evaluations' models keep it: they score item-kNN whatever the blend.
        ``counted``: a model already fitted on the same ``interactions`` and ``segments`` (with any weights):
        its popularity, segment mixes and season are taken instead of counted again (stage 05 counts them
        beside the evaluation, before the weights are chosen; 2 s at a million customers)."""
        weights = _check_weights(DEFAULT_WEIGHTS if self.weights is None else self.weights)
        total = sum(weights.values())
        self.weights_ = {c: w / total for c, w in weights.items()}
        segments = np.asarray(segments)
        if len(segments) != interactions.shape[0]:
            raise ValueError(f"{len(segments)} segment labels for {interactions.shape[0]} customers")
        if counted is not None:
            check_is_fitted(counted, "segment_mix_")
            if counted.n_items_ != interactions.shape[1] or \
                    not np.array_equal(counted.segments_, np.unique(segments[segments != NOISE])):
                raise ValueError("counted was fitted on other items or segments")
            for name in _COUNTED:
                setattr(self, name, getattr(counted, name))
        else:
            self._count(interactions, segments)
        self.similarity_ = None
        if similarity or self.weights_.get("cooccurrence"):
            co = interactions.cooccurrence()
            norm = np.sqrt(np.diag(co))
            self.similarity_ = np.divide(co, np.outer(norm, norm), out=np.zeros_like(co),
                                         where=np.outer(norm, norm) > 0)
            np.fill_diagonal(self.similarity_, 0.0)
        return self

    def _count(self, interactions: Interactions, segments: np.ndarray) -> None:
        """Set the attributes of :data:`_COUNTED`: what fit learns whatever the weights."""
        bought = _bought(interactions.counts)
        # Noise (HDBSCAN without reassignment) is no segment: its customers get global popularity.
        member = np.flatnonzero(segments != NOISE)
        self.segments_, code = np.unique(segments[member], return_inverse=True)
        members = sp.csr_matrix((np.ones(len(code)), (code, member)), shape=(len(self.segments_), len(segments)))
        sizes = np.maximum(np.bincount(code, minlength=len(self.segments_)), 1)[:, None]
        self.segment_popularity_ = np.asarray((members @ bought).todense()) / sizes
        self.global_popularity_ = np.asarray(bought.mean(axis=0)).ravel()
        lines = np.vstack([np.asarray((members @ interactions.counts).todense()),
                           np.asarray(interactions.counts.sum(axis=0))])
        # Each segment's share of purchase lines per item (last row: everyone's), the profile's prior.
        self.segment_mix_ = np.divide(lines, lines.sum(axis=1, keepdims=True), out=np.zeros_like(lines),
                                      where=lines.sum(axis=1, keepdims=True) > 0)
        season = np.asarray(interactions.season, dtype=np.float64)
        self.season_ = season / season.max() if season.max() > 0 else np.zeros_like(season)
        self.n_items_ = interactions.shape[1]

    def _segment_rows(self, segments) -> np.ndarray:
        """Each label's row of segment_popularity_, or -1 for a label not seen in fit."""
        segments = np.asarray(segments)
        if not len(self.segments_):
            return np.full(len(segments), -1)
        where = np.minimum(np.searchsorted(self.segments_, segments), len(self.segments_) - 1)
        return np.where(self.segments_[where] == segments, where, -1)

    def components(self, interactions: Interactions, segments, rows: np.ndarray,
                   names: Iterable[str] = COMPONENTS) -> dict[str, np.ndarray]:
        """The component scores of customers ``rows``, each (len(rows), items) in [0, 1], float32: those of
        ``names`` (default: all of :data:`COMPONENTS`) and ``own`` (which the others and the reasons read)."""
        check_is_fitted(self, "similarity_")
        names = set(names)
        # Cast before densifying (the same float32 values, one dense pass fewer).
        own = _row_max_scaled(interactions.recency[rows].astype(np.float32).toarray())
        out = {"own": own}
        seg_rows = self._segment_rows(np.asarray(segments)[rows])
        if "segment" in names:
            popular = np.vstack([self.segment_popularity_, self.global_popularity_[None, :]]).astype(np.float32)
            out["segment"] = _row_max_scaled(popular)[seg_rows]   # -1 picks the global row: an unseen segment
        if "cooccurrence" in names:
            out["cooccurrence"] = _row_max_scaled(own @ self.similarity_.astype(np.float32))
        if "season" in names:
            out["season"] = np.broadcast_to(self.season_.astype(np.float32), own.shape)
        if "repeat" in names:
            out["repeat"] = replenishment_scores(interactions, rows)
        if "profile" in names:
            counts = interactions.counts[rows].astype(np.float32).toarray()
            # Per segment first, then each customer's row (the same float32 values, two passes fewer per batch).
            priors = np.float32(PROFILE_PRIOR_LINES) * self.segment_mix_.astype(np.float32)
            prior = priors[seg_rows]
            smoothed = counts.sum(axis=1, keepdims=True) + priors.sum(axis=1, keepdims=True)[seg_rows]
            counts += prior
            out["profile"] = _row_max_scaled(np.divide(counts, smoothed, out=counts))
        return {name: out[name] for name in COMPONENTS if name in out}

    def weighted(self) -> tuple[str, ...]:
        """The components the fitted weights blend (a weight of 0 adds nothing to a score or a reason)."""
        check_is_fitted(self, "similarity_")
        return tuple(c for c in COMPONENTS if self.weights_.get(c))

    def blend(self, components: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """The blended score (plus the global-popularity tie-break) of precomputed components."""
        check_is_fitted(self, "similarity_")
        weights = self.weights_ if weights is None else weights
        total = np.zeros(next(iter(components.values())).shape, np.float32)
        scaled = np.empty_like(total)  # one buffer for every weighted component (the weight search blends ~150 times)
        for name, weight in weights.items():
            if weight:
                total += np.multiply(np.float32(weight), components[name], out=scaled)
        top = self.global_popularity_.max()
        total += np.float32(TIE_BREAK) * (self.global_popularity_ / top if top > 0 else 0).astype(np.float32)
        return total

    def recommend(self, interactions: Interactions, segments, rows: np.ndarray | None = None,
                  departments: "DepartmentTotals | None" = None) -> "Recommended":
        """Top ``top_k`` items per customer, with scores and reasons, scored in batches.

        Parameters
        ----------
        interactions : Interactions
            The customers' purchases (their own history).
        segments : array
            Segment label of each row of ``interactions``.
        rows : array of int, optional
            The rows to recommend for; all by default.
        departments : DepartmentTotals, optional
            Also given each batch's blended scores: the segments' cross-sell
            order from the same pass (:func:`ranked_departments` would score
            every customer again).

        Returns
        -------
        Recommended
        """
        check_is_fitted(self, "similarity_")
        rows = np.arange(interactions.shape[0]) if rows is None else np.asarray(rows)
        batches = [rows[start:start + self.batch_size] for start in range(0, len(rows), self.batch_size)]
        parts = []
        for part, spread in in_order(lambda batch: self._recommend_batch(interactions, segments, batch, departments),
                                     batches):
            if departments is not None:
                departments.accumulate(part.rows, spread)  # in batch order: the same sums as one thread's
            parts.append(part)
        return Recommended.concat(parts, self.top_k)

    def _recommend_batch(self, interactions: Interactions, segments, batch: np.ndarray,
                         departments: "DepartmentTotals | None") -> tuple["Recommended", np.ndarray | None]:
        """:meth:`recommend` of one batch, and its customers' department scores for ``departments``."""
        # Only the weighted components: one weighted 0 adds exactly 0 to each score and contribution (the same
        # top k and reasons), and co-occurrence and the rhythm are a third of the pass when the blend has neither.
        comps = self.components(interactions, segments, batch, self.weighted())
        blended = self.blend(comps)
        spread = departments.per_customer(blended, interactions, batch) if departments is not None else None
        items, _ = top_k(blended, self.top_k)
        del blended
        scores, reason, because = self._reasons(comps, items)
        # A customer of no segment seen in fit was scored on everyone's popularity: say so.
        unseen = self._segment_rows(np.asarray(segments)[batch]) < 0
        reason[unseen[:, None] & (reason == COMPONENTS.index("segment"))] = -1
        return Recommended(rows=batch, items=items, scores=scores, reason=reason, because=because), spread

    def _reasons(self, comps: Mapping[str, np.ndarray],
                 items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each recommended item: its blended score (without the tie-break), the index in
        COMPONENTS of the largest weighted contribution (-1: none, the fallback), and for co-occurrence
        the customer's item that contributed most (-1 otherwise)."""
        safe = np.maximum(items, 0)
        # A component not computed has weight 0 (recommend()): its contribution is 0, as it would be computed.
        taken = {c: self.weights_[c] * np.take_along_axis(comps[c], safe, axis=1) for c in comps}
        contrib = np.stack([taken[c] if c in taken else np.zeros_like(taken["own"]) for c in COMPONENTS])
        scores = np.where(items >= 0, contrib.sum(axis=0), 0.0)
        reason = np.where(contrib.max(axis=0) > 0, contrib.argmax(axis=0), -1)
        reason[items < 0] = -1
        # The profile is the customer's own mix smoothed by the segment's: said as the part that explains it.
        profiled = reason == COMPONENTS.index("profile")
        mine = np.take_along_axis(comps["own"], safe, axis=1) > 0
        reason[profiled] = np.where(mine[profiled], COMPONENTS.index("own"), COMPONENTS.index("segment"))
        because = np.full(items.shape, -1, np.int64)
        knn = COMPONENTS.index("cooccurrence")
        r, c = np.nonzero(reason == knn)
        own = comps["own"]
        for start in range(0, len(r), 20_000):
            rr, cc = r[start:start + 20_000], c[start:start + 20_000]
            # contribution of each of the customer's items j to item i: own[j] * similarity[j, i]
            weight = own[rr] * self.similarity_[:, items[rr, cc]].T
            because[rr, cc] = weight.argmax(axis=1)
        return scores, reason, because


def replenishment_scores(interactions: Interactions, rows: np.ndarray) -> np.ndarray:
    """How due each customer is to buy each class again on their own rhythm, (len(rows), items) in [0, 1].

    For a class bought on ``n >= 2`` distinct days, the customer's own
    interval is ``(last - first) / (n - 1)`` days; with ``since`` days since
    the last purchase and a horizon of ``H`` days, the purchase falls due in
    the horizon in proportion ``min(1, (since + H) / interval)``, and a habit
    more than :data:`LAPSED_INTERVALS` intervals overdue fades,
    ``exp(-(since - 2 interval) / interval)``. A class bought on one day
    only has no rhythm: 0 (``own`` scores it).
    """
    shape = (len(rows), interactions.shape[1])
    if interactions.days is None:
        return np.zeros(shape, np.float32)
    days, last, first = (m[rows].tocsr() for m in (interactions.days, interactions.last, interactions.first))
    for matrix in (days, last, first):
        matrix.sum_duplicates()
    if not (np.array_equal(days.indptr, last.indptr) and np.array_equal(days.indices, last.indices)
            and np.array_equal(days.indices, first.indices)):
        raise ValueError("purchase days, first and last days must have the same customers and items")
    n, latest, earliest = days.data, last.data, FIRST_BASE - first.data
    interval = np.where(n >= 2, (latest - earliest) / np.maximum(n - 1, 1), np.inf)
    since = interactions.as_of - latest
    due = np.minimum(1.0, (since + interactions.horizon_days) / interval)
    lapsed = np.exp(-np.maximum(0.0, since - LAPSED_INTERVALS * interval) / np.where(n >= 2, interval, 1.0))
    value = np.where(n >= 2, due * lapsed, 0.0)
    return sp.csr_matrix((value.astype(np.float32), days.indices, days.indptr), shape=shape).toarray()


def _cooccurrence(bought: sp.csr_matrix, block: int = 10_000) -> np.ndarray:
    """Items x items: customers who bought both (the diagonal: who bought each), ``bought.T @ bought``.

    Summed over blocks of customers: one sparse product over a million customers took 3.4 s, blocks of
    10,000 1.0 s (each block's accumulator stays in cache). The counts are whole numbers, so the sum is
    exact in any order.
    """
    co = np.zeros((bought.shape[1], bought.shape[1]))

    def product(start: int) -> np.ndarray:
        part = bought[start:start + block]
        return (part.T @ part).toarray()

    # Blocks multiplied side by side (SciPy's products leave the interpreter lock), added in order.
    for counted in in_order(product, list(range(0, bought.shape[0], block))):
        co += counted
    return co


def _added_cooccurrence(bought: sp.csr_matrix, new: np.ndarray, block: int = 10_000) -> np.ndarray:
    """What the entries ``new`` (a mask of ``bought``'s stored entries) add to the co-occurrence counts:
    ``B.T @ B - (B - N).T @ (B - N) = N.T @ B + B.T @ N - N.T @ N`` with ``N`` those entries, summed over the
    customers with any (whole numbers: exact in any order)."""
    # Built apart (eliminate_zeros would edit the index arrays ``bought`` shares with the history's matrices).
    indptr = np.r_[0, np.cumsum(new, dtype=np.int64)][bought.indptr]
    added = sp.csr_matrix((np.ones(int(indptr[-1])), bought.indices[new], indptr.astype(bought.indptr.dtype)),
                          shape=bought.shape)
    rows = np.flatnonzero(np.diff(added.indptr))
    out = np.zeros((bought.shape[1], bought.shape[1]))

    def product(start: int) -> np.ndarray:
        part = rows[start:start + block]
        n, b = added[part], bought[part]
        crossed = (n.T @ b).toarray()
        return crossed + crossed.T - (n.T @ n).toarray()

    for counted in in_order(product, list(range(0, len(rows), block))):
        out += counted
    return out


def _bought(counts: sp.csr_matrix) -> sp.csr_matrix:
    """:func:`_binary` of a matrix of purchase counts: when every stored count is positive (a history's always
    are), ones on the same index arrays, without copying them or dropping zeros (1 CPU-s of a fit over a million
    customers); the same matrix."""
    if sp.isspmatrix_csr(counts) and counts.has_canonical_format and (not counts.nnz or counts.data.min() > 0):
        return sp.csr_matrix((np.ones(counts.nnz), counts.indices, counts.indptr), shape=counts.shape, copy=False)
    return _binary(counts)


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.tocsr(copy=True)
    out.data = (out.data > 0).astype(np.float64)
    out.eliminate_zeros()
    return out


@dataclasses.dataclass(frozen=True)
class Recommended:
    """Top-k items of some customers (row numbers of the interaction matrices).

    Attributes
    ----------
    rows : ndarray, shape (n,)
    items, because : ndarray of int, shape (n, k)
        The item recommended at each rank (-1: none) and, for a co-occurrence
        reason, the customer's item behind it (-1 otherwise).
    scores : ndarray, shape (n, k)
        The blended score, 0 to 1 (0 for a filler ranked by global popularity).
    reason : ndarray of int, shape (n, k)
        Index in :data:`COMPONENTS`, or -1 for :data:`FALLBACK_REASON`.
    """

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    reason: np.ndarray
    because: np.ndarray

    @staticmethod
    def concat(parts: list["Recommended"], k: int) -> "Recommended":
        if not parts:
            empty = np.empty((0, k), np.int64)
            return Recommended(np.empty(0, np.int64), empty, empty.astype(float), empty, empty)
        return Recommended(*(np.concatenate([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(Recommended)))


def reason_texts(recommended: Recommended, items: pd.DataFrame) -> np.ndarray:
    """The marketer's reason of each recommendation, (n, k) strings (None where no item)."""
    codes, texts = _reason_codes(recommended, items)
    return np.array(texts, dtype=object)[codes]


def reason_shares(recommended: Recommended, items: pd.DataFrame) -> dict[str, float]:
    """Share of the recommendations (items only) per reason kind, ``often bought with ...`` counted as one kind:
    what ``value_counts(normalize=True)`` of the table's reason column gives, in its order (largest first, ties
    as it leaves them: kinds in order of first appearance), counted per reason code instead of matched row by
    row (4.8 M rows at a million customers: 0.24 s on the stage's last stretch)."""
    codes, texts = _reason_codes(recommended, items)
    names = [None if t is None else re.sub(r"^often bought with .*", "often bought with ...", t) for t in texts]
    kinds = list(dict.fromkeys(n for n in names if n is not None))
    kind_of_code = np.array([-1 if n is None else kinds.index(n) for n in names], dtype=np.int64)
    flat = kind_of_code[codes[recommended.items >= 0]]  # the table's rows, in its order
    counts = np.bincount(flat[flat >= 0], minlength=len(kinds))
    present = [k for k in range(len(kinds)) if counts[k]]
    if not present:
        return {}
    # value_counts' order: by count, largest first, from the kinds in order of first appearance.
    present.sort(key=lambda k: int(np.argmax(flat == k)))
    ranked = pd.Series({kinds[k]: int(counts[k]) for k in present}).sort_values(ascending=False)
    return {str(r): round(float(v), 4) for r, v in (ranked / ranked.sum()).items()}


def _reason_codes(recommended: Recommended, items: pd.DataFrame) -> tuple[np.ndarray, list]:
    """Each recommendation's reason as a position in a list of texts, and that list: one text per component
    (None for the profile, always said as another), the fallback, None (no item), then ``often bought with
    <item>`` per item. Each text is made once, not once per recommendation (millions at a million customers)."""
    labels = items["label"].to_numpy(object)
    texts = [None if name in ("cooccurrence", "profile") else REASONS[name] for name in COMPONENTS]
    fallback, nothing, knn_base = len(texts), len(texts) + 1, len(texts) + 2
    texts += [FALLBACK_REASON, None] + [REASONS["cooccurrence"].format(label) for label in labels]
    reason = recommended.reason
    codes = np.where(reason >= 0, reason, nothing)
    knn = reason == COMPONENTS.index("cooccurrence")
    codes[knn] = knn_base + recommended.because[knn] % len(labels)  # -1 (never set for co-occurrence): the last
    codes[(reason == -1) & (recommended.items >= 0)] = fallback
    return codes, texts


def recommendation_table(recommended: Recommended, customer_ids, items: pd.DataFrame) -> pd.DataFrame:
    """``recommendations.parquet``: one row per customer and rank (1 = best), items only, never padding.

    Columns ``customer_id``, ``rank``, ``department``, ``class``, ``score``
    (the blend, 0 to 1), ``reason``.
    """
    k = recommended.items.shape[1]
    valid = recommended.items >= 0
    customer = np.repeat(np.asarray(customer_ids)[recommended.rows], k).reshape(-1, k)
    rank = np.tile(np.arange(1, k + 1), (len(recommended.rows), 1))
    item = recommended.items[valid]
    codes, texts = _reason_codes(recommended, items)
    return pd.DataFrame({
        "customer_id": customer[valid].astype(np.int64),
        "rank": rank[valid].astype(np.int16),
        "department": text_column(items["department"], item),
        "class": text_column(items["class"], item),
        "score": np.round(recommended.scores[valid].astype(np.float64), 6),
        "reason": text_column(texts, codes[valid]),
    }, columns=RECOMMENDATION_COLUMNS)


@dataclasses.dataclass(frozen=True)
class SavedRecommender:
    """Stage 05's fitted recommender as saved for ``score`` (``recommendation-model.pkl``).

    Attributes
    ----------
    model : NextBestClasses or None
        Fitted on every segmented customer's lines up to the analysis date;
        None when the log had nothing to recommend (``explanation`` says why).
    items : DataFrame
        :func:`recommendable_items` at ``level``.
    level : {"class", "department"} or None
    explanation : str
    analysis_date : str
        The day the model was fitted at (its season is the days after it).
    horizon_days : int
    """

    model: NextBestClasses | None
    items: pd.DataFrame
    level: str | None
    explanation: str
    analysis_date: str
    horizon_days: int

    def recommend_lines(self, lines: pd.DataFrame | None, customer_ids, segments,
                        day: pd.Timestamp | None) -> pd.DataFrame:
        """Top-k items (:func:`recommendation_table`) for customers not seen in fit, from their own lines.

        Parameters
        ----------
        lines : DataFrame or None
            Their order lines (the columns :meth:`PurchaseHistory.add` reads);
            None (a features file): segment popularity only.
        customer_ids, segments : arrays
            The customers and their segments (-1 or missing: no segment,
            everyone's popularity then).
        day : Timestamp or None
            Lines after it are ignored (default: the last line's day).
        """
        if self.model is None:
            return empty_recommendations()
        ids = np.asarray(customer_ids)
        segments = pd.Series(segments).fillna(NOISE).to_numpy(np.int64)
        cut = day if day is not None else (pd.to_datetime(lines["order_date"]).max() if lines is not None and len(lines)
                                           else pd.Timestamp(self.analysis_date))
        history = PurchaseHistory(ids, self.items, [cut], self.horizon_days)
        if lines is not None:
            history.add(lines)
        interactions = history.interactions(0)
        return recommendation_table(self.model.recommend(interactions, segments), ids, self.items)


def empty_recommendations() -> pd.DataFrame:
    """The recommendations table with no rows (its columns and types)."""
    return pd.DataFrame({"customer_id": pd.Series(dtype=np.int64), "rank": pd.Series(dtype=np.int16),
                         "department": pd.Series(dtype=object), "class": pd.Series(dtype=object),
                         "score": pd.Series(dtype=np.float64), "reason": pd.Series(dtype=object)})


# ---------------------------------------------------------------------------------------------
# Measurement


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, seen: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-customer recall@k, hit@k, NDCG@k and discovery of top-k lists.

    Parameters
    ----------
    recommended : ndarray of int, shape (n, k)
        Item per rank, best first; -1 for an empty rank.
    relevant : sparse matrix, shape (n, items)
        Non-zero where the customer bought the item in the evaluation period
        (every customer must have at least one).
    seen : sparse matrix, shape (n, items)
        Non-zero where the customer bought the item before it.

    Returns
    -------
    dict of str to ndarray, shape (n,)
        ``recall`` (hits / items bought), ``hit_rate`` (at least one hit),
        ``ndcg`` (binary gains, ``1 / log2(rank + 1)``, over the ideal
        ``min(k, items bought)`` hits), ``discovery`` (a hit on an item not
        bought before).
    """
    n, k = recommended.shape
    safe = np.maximum(recommended, 0)
    relevant = relevant.tocsr()
    rel_count = np.diff(relevant.indptr)
    if (rel_count == 0).any():
        raise ValueError("every evaluated customer needs at least one item bought in the evaluation period")
    hits = _lookup(relevant, safe) & (recommended >= 0)
    new = ~_lookup(seen.tocsr(), safe)
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(gains)])[np.minimum(rel_count, k)]
    return {"recall": hits.sum(axis=1) / rel_count, "hit_rate": hits.any(axis=1).astype(float),
            "ndcg": (hits * gains).sum(axis=1) / ideal, "discovery": (hits & new).any(axis=1).astype(float)}


def _lookup(matrix: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """``matrix[i, columns[i, j]] != 0`` for every i, j, without densifying ``matrix``."""
    rows = np.repeat(np.arange(columns.shape[0]), columns.shape[1])
    values = np.asarray(matrix[rows, columns.ravel()]).ravel()
    return (values != 0).reshape(columns.shape)


def summarise(per_customer: Iterable[tuple[dict[str, np.ndarray], np.ndarray]], n_items: int) -> dict:
    """Mean metrics over customers, plus ``coverage`` (distinct items recommended), from batches of
    (``ranking_metrics`` output, recommended items)."""
    sums: dict[str, float] = {}
    covered = np.zeros(n_items, bool)
    customers = 0
    for metrics, items in per_customer:
        for name, values in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        customers += len(items)
        covered[items[items >= 0]] = True
    out = {name: round(total / customers, 4) if customers else None for name, total in sums.items()}
    out["coverage"] = int(covered.sum())
    return out


def baseline_scores(name: str, model: NextBestClasses, interactions: Interactions, segments,
                    rows: np.ndarray) -> np.ndarray:
    """Scores of a baseline for customers ``rows`` (0 = not recommended).

    ``global_popularity``: share of all customers who bought the item;
    ``segment_popularity``: share of the customer's segment; ``own_top_classes``:
    the customer's own spend on the item (only items they bought).
    """
    if name == "global_popularity":
        return np.broadcast_to(model.global_popularity_, (len(rows), model.n_items_))
    if name == "segment_popularity":
        table = np.vstack([model.segment_popularity_, model.global_popularity_[None, :]])
        return table[model._segment_rows(np.asarray(segments)[rows])]
    if name == "own_top_classes":
        return np.maximum(interactions.spend[rows].toarray(), 0.0)
    raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")


def measure(model: NextBestClasses, interactions: Interactions, segments, rows: np.ndarray,
            relevant: sp.csr_matrix, k: int, models: Mapping[str, Mapping[str, float] | str] | None = None,
            batch_size: int = SCORE_BATCH) -> dict[str, dict]:
    """Metrics of the fitted blend and of other models on customers ``rows``.

    Parameters
    ----------
    model : NextBestClasses
        Fitted on ``interactions``.
    relevant : sparse matrix, shape (customers, items)
        What each customer bought in the evaluation period (all rows).
    models : mapping, optional
        Name -> blend weights, or the name of a baseline. Default: the model
        (``model``), the :data:`BASELINES` and the single-component
        :data:`CANDIDATES`.

    Returns
    -------
    dict of name to metrics (:func:`summarise`).
    """
    models = dict(models) if models is not None else {
        "model": model.weights_, **{b: b for b in BASELINES}, **CANDIDATES}
    collected: dict[str, list] = {name: [] for name in models}

    def batch_metrics(batch: np.ndarray) -> dict[str, tuple]:
        comps, out = None, {}
        for name, spec in models.items():
            if isinstance(spec, str):
                scores = baseline_scores(spec, model, interactions, segments, batch)
            else:
                comps = comps if comps is not None else model.components(interactions, segments, batch)
                scores = model.blend(comps, _check_weights(spec))
            items, _ = top_k(np.asarray(scores, dtype=np.float64), k)
            out[name] = (ranking_metrics(items, relevant[batch], interactions.counts[batch]), items)
        return out

    for measured in in_order(batch_metrics, [rows[start:start + batch_size]
                                             for start in range(0, len(rows), batch_size)]):
        for name, parts in collected.items():
            parts.append(measured[name])  # in batch order: the same sums as one thread's
    return {name: summarise(parts, model.n_items_) for name, parts in collected.items()}


def weight_grid(step: float = WEIGHT_STEP, components: tuple[str, ...] = COMPONENTS) -> list[dict[str, float]]:
    """Every blend of ``components`` in multiples of ``step`` summing to 1 (the others of
    :data:`COMPONENTS` at 0)."""
    units = int(round(1 / step))
    grid = []
    for combo in itertools.product(range(units + 1), repeat=len(components) - 1):
        if sum(combo) <= units:
            parts = dict(zip(components, (*combo, units - sum(combo))))
            grid.append({c: parts.get(c, 0) / units for c in COMPONENTS})
    return grid


def choose_weights(interactions: Interactions, segments, relevant: sp.csr_matrix, rows: np.ndarray, k: int,
                   seed: int, grid: list[dict[str, float]] | None = None,
                   max_customers: int = VALIDATION_CUSTOMERS) -> dict:
    """The blend weights chosen on a validation split: the simplest blend as good as the best.

    The blends tried are ``grid`` when given; by default the coarse grid
    (:data:`COARSE_STEP`) of :data:`SEARCHED_COMPONENTS` and then, from its best, moves of
    :data:`WEIGHT_STEP` from one component to another while recall@k
    improves (at most :data:`REFINE_ROUNDS`). Of every blend scored, the one
    chosen has the fewest components among those within one standard error
    of the best (the paired standard error of the per-customer recall
    differences), then the best recall among those. A blend that only beats
    a simpler one by noise would not beat it on the next period either: on
    the default data the best validation blend (0.1 own, 0.7 segment, 0.1
    co-occurrence, 0.1 season) was 0.0002 above segment popularity alone on
    validation and 0.005 below it on the evaluation window (docs/decisions.md).

    Parameters
    ----------
    interactions : Interactions
        Purchases up to the validation cut (the fit).
    relevant : sparse matrix
        What each customer bought after it (the validation period, itself
        before the evaluation's cut).
    rows : array of int
        The validation customers (bought in both); a seeded sample of at most
        ``max_customers`` is used.

    Returns
    -------
    dict
        ``weights``, ``recall`` (of the chosen blend), ``best_recall`` and
        ``best_weights`` (the best scored), ``standard_error``, ``customers``
        (scored) and ``grid`` (blends scored).
    """
    rows = np.asarray(rows)
    if len(rows) > max_customers:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_customers, replace=False))
    model = NextBestClasses(weights=DEFAULT_WEIGHTS, top_k=k).fit(interactions, segments)
    comps = model.components(interactions, segments, rows)
    relevant_rows = relevant[rows].tocsr()
    # Recall alone, from a dense copy of what was bought: ranking_metrics' recall of top_k's lists (the same
    # top-k set, hits only where the score is above 0), without ordering the lists or sparse lookups.
    wanted, bought = relevant_rows.toarray() != 0, np.diff(relevant_rows.indptr)
    if (bought == 0).any():
        raise ValueError("every evaluated customer needs at least one item bought in the evaluation period")
    scored: dict[tuple[int, ...], np.ndarray] = {}

    def hits(weights: dict[str, float], chunk: slice) -> np.ndarray:
        blended = model.blend({name: values[chunk] for name, values in comps.items()}, weights)
        part = (_top_positions(blended, k) if k < blended.shape[1] else
                np.tile(np.arange(blended.shape[1]), (len(blended), 1)))
        at = np.arange(len(blended))[:, None], part
        return (wanted[chunk][at] & (blended[at] > 0)).sum(axis=1)

    def recall(units: tuple[int, ...]) -> np.ndarray:
        weights = {c: u * WEIGHT_STEP for c, u in zip(COMPONENTS, units)}
        # A few thousand customers at a time: the blend and its top k stay in the processor's cache.
        return np.concatenate([hits(weights, slice(start, start + CACHE_ROWS))
                               for start in range(0, len(rows), CACHE_ROWS)]) / bought

    def score(units: tuple[int, ...]) -> float:
        if units not in scored:
            scored[units] = recall(units)
        return float(scored[units].mean())

    def prefetch(blends: list[tuple[int, ...]]) -> None:
        """Score the blends not scored yet side by side, kept in the order ``score`` would have met them (the
        choice below reads them in that order)."""
        missing = list(dict.fromkeys(b for b in blends if b not in scored))
        scored.update(zip(missing, in_order(recall, missing)))

    prefetch([tuple(int(round(weights.get(c, 0.0) / WEIGHT_STEP)) for c in COMPONENTS)
              for weights in (grid if grid is not None else weight_grid(COARSE_STEP, SEARCHED_COMPONENTS))])
    if grid is None:
        _refine(score, max(scored, key=score), prefetch)
    blends = list(scored)
    means = np.array([score(b) for b in blends])
    best = int(means.argmax())
    error = np.array([(scored[blends[best]] - scored[b]).std() / np.sqrt(len(rows)) for b in blends])
    close = np.flatnonzero(means >= means[best] - error)
    size = np.array([sum(u > 0 for u in blends[i]) for i in close])
    simplest = close[size == size.min()]
    chosen = int(simplest[means[simplest].argmax()])
    as_weights = lambda units: {c: round(u * WEIGHT_STEP, 1) for c, u in zip(COMPONENTS, units)}  # noqa: E731
    return {"weights": as_weights(blends[chosen]), "recall": round(float(means[chosen]), 4),
            "best_weights": as_weights(blends[best]), "best_recall": round(float(means[best]), 4),
            "standard_error": round(float(error[chosen]), 4), "customers": int(len(rows)), "grid": len(blends)}


def _refine(score, start: tuple[int, ...], prefetch=None) -> tuple[int, ...]:
    """Hill-climb from ``start``: move one step of weight between two of :data:`SEARCHED_COMPONENTS` while
    recall improves (``prefetch``, if given, scores each round's moves beforehand, side by side)."""
    current = start
    searched = [COMPONENTS.index(c) for c in SEARCHED_COMPONENTS]
    for _ in range(REFINE_ROUNDS):
        moves = [tuple(u + (1 if i == to else -1 if i == frm else 0) for i, u in enumerate(current))
                 for frm in searched for to in searched if frm != to and current[frm] > 0]
        if prefetch is not None:
            prefetch(moves)
        best = max(moves, key=score, default=current)
        if score(best) <= score(current):
            break
        current = best
    return current


def evaluable_rows(fit: Interactions, relevant: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Customers who bought in the period scored: with a purchase before it (``evaluated``) or not (``new``)."""
    bought_after = np.diff(relevant.tocsr().indptr) > 0
    bought_before = np.diff(fit.counts.tocsr().indptr) > 0
    return {"evaluated": np.flatnonzero(bought_after & bought_before),
            "new": np.flatnonzero(bought_after & ~bought_before)}


def sample_rows(rows: np.ndarray, max_customers: int, seed: int) -> np.ndarray:
    """``rows`` when there are at most ``max_customers``; else a seeded sample of that many, ascending."""
    rows = np.asarray(rows)
    if len(rows) <= max_customers:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, max_customers, replace=False))


def evaluation_fit_rows(customers: int, max_customers: int, seed: int) -> np.ndarray | None:
    """The customers the validation and holdout fits are made from: None (every one) when there are at most
    ``max_customers``, else a seeded sample of that many rows, ascending (drawn with its own stream of ``seed``,
    apart from the scored samples'). The final fit always uses every customer."""
    if customers <= max_customers:
        return None
    return np.sort(np.random.default_rng([seed, EVALUATION_FIT_STREAM]).choice(customers, max_customers,
                                                                                replace=False))


@dataclasses.dataclass(frozen=True)
class Holdout:
    """The temporal holdout: purchases up to the evaluation cut, what was bought after it, who is scored.

    Attributes
    ----------
    fit : Interactions
        Purchases up to the evaluation cut.
    relevant : csr_matrix
        1 where a customer bought an item after it.
    evaluable, new : ndarray of int
        Rows of the customers who bought before and after the cut, and of
        those who only bought after it (not evaluated).
    scored : ndarray of int
        The evaluable customers scored: all of them, or a seeded sample of
        ``max_customers`` (:func:`sample_rows`).
    max_customers : int
    """

    fit: Interactions
    relevant: sp.csr_matrix
    evaluable: np.ndarray
    new: np.ndarray
    scored: np.ndarray
    max_customers: int
    _models: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def fitted(self, weights: Mapping[str, float], k: int, segments) -> "NextBestClasses":
        """The model with ``weights`` fitted on ``fit`` (once: the holdout and the cross-sell comparison share
        it, a fit at a million customers takes seconds)."""
        key = (tuple(sorted(weights.items())), k)
        if key not in self._models:
            self._models[key] = NextBestClasses(weights=weights, top_k=k).fit(self.fit, segments)
        return self._models[key]

    @classmethod
    def of(cls, history: "PurchaseHistory", seed: int, max_customers: int = EVALUATION_CUSTOMERS,
           rows: np.ndarray | None = None) -> "Holdout":
        """The holdout of a history cut at ``[validation cut, evaluation cut, analysis date]``; ``rows``: only
        these customers (:meth:`PurchaseHistory.interactions`), whose row numbers every result then uses."""
        fit, relevant = history.interactions(1, rows=rows), history.bought(2, rows=rows)
        groups = evaluable_rows(fit, relevant)
        return cls(fit=fit, relevant=relevant, evaluable=groups["evaluated"], new=groups["new"],
                   scored=sample_rows(groups["evaluated"], max_customers, seed), max_customers=int(max_customers))

    def customers(self) -> dict:
        """The evaluation document's ``customers``: scored, evaluable, new in the window, and how many at most."""
        return {"evaluated": int(len(self.scored)), "evaluable": int(len(self.evaluable)),
                "new_in_window_not_evaluated": int(len(self.new)), "evaluated_at_most": self.max_customers}


def evaluate_history(history: PurchaseHistory, segments, k: int, seed: int, holdout: Holdout | None = None,
                     rows: np.ndarray | None = None) -> dict:
    """Choose the blend weights on a validation split, then measure the blend and the baselines.

    ``history`` is cut at ``[validation cut, evaluation cut, analysis date]``,
    each cut one window before the next. Weights: fit on the lines up to the
    validation cut, scored on the classes bought up to the evaluation cut.
    Evaluation: the model with those weights, and the baselines, fitted on the
    lines up to the evaluation cut (popularity, similarity, season and segment
    popularity included: none sees a later line) and scored on the classes each
    customer bought after it. Customers scored: those who bought before and
    after the cut (all of them, or the seeded sample ``holdout.scored``);
    those who only bought after it (new customers) are counted apart.

    Parameters
    ----------
    holdout : Holdout, optional
        :meth:`Holdout.of` the history (default: with :data:`EVALUATION_CUSTOMERS`).
    rows : array of int, optional
        Fit and score only these customers (:func:`evaluation_fit_rows`); ``segments`` then labels them
        (one label per row), and so does ``holdout`` (made with the same rows).

    Returns
    -------
    dict
        ``weights``, ``weights_chosen_on``, ``customers`` (:meth:`Holdout.customers`),
        ``models`` (the blend under ``model``, the :data:`BASELINES`, the
        single-component :data:`CANDIDATES`), ``best_baseline``,
        ``lift_over_best_baseline``; ``models`` is empty, with an
        ``explanation``, when no customer bought both before and after the
        evaluation cut.
    """
    validation_fit, validation_relevant = history.interactions(0, rows=rows), history.bought(1, rows=rows)
    validation_rows = evaluable_rows(validation_fit, validation_relevant)["evaluated"]
    if len(validation_rows):
        chosen = choose_weights(validation_fit, segments, validation_relevant, validation_rows, k, seed)
        weights = chosen.pop("weights")
        chosen["how"] = ("the blend with the fewest components within one standard error of the grid's best "
                         "recall@k on the validation split")
    else:
        weights = dict(DEFAULT_WEIGHTS)
        chosen = {"how": "default weights (measured on the default data): no customer bought both before and "
                         "after the validation cut, the history is shorter than two evaluation windows"}
    chosen.update(fit_to=str(history.cuts[0].date()), scored_to=str(history.cuts[1].date()))
    del validation_fit, validation_relevant
    holdout = holdout if holdout is not None else Holdout.of(history, seed, rows=rows)
    result = {"weights": weights, "weights_chosen_on": chosen, "customers": holdout.customers(),
              "models": {}, "best_baseline": None, "lift_over_best_baseline": None, "explanation": None}
    if not len(holdout.scored):
        result["explanation"] = ("no customer bought merchandise both before and after the evaluation cut: "
                                 "nothing to evaluate (history shorter than the evaluation window?)")
        return result
    model = holdout.fitted(weights, k, segments)
    result["models"] = measure(model, holdout.fit, segments, holdout.scored, holdout.relevant, k)
    best = max(BASELINES, key=lambda b: result["models"][b]["recall"])
    result["best_baseline"] = best
    base = result["models"][best]["recall"]
    result["lift_over_best_baseline"] = round(result["models"]["model"]["recall"] / base, 3) if base else None
    return result


# ---------------------------------------------------------------------------------------------
# Segment cross-sell lists from the model


def department_matrix(items: pd.DataFrame) -> tuple[sp.csr_matrix, list[str]]:
    """Items x departments, 1 where the item is in the department; and the departments in column order."""
    codes, departments = pd.factorize(items["department"])
    matrix = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)),
                           shape=(len(codes), len(departments)))
    return matrix, list(departments)


def ranked_departments(model: NextBestClasses, interactions: Interactions, segments, items: pd.DataFrame,
                       batch_size: int = SCORE_BATCH, rows: np.ndarray | None = None) -> dict[int, list[str]]:
    """Each segment's departments ranked by the model's blended score on the classes its customers have not
    bought yet (summed over the segment's customers, or over ``rows`` of them): the model's cross-sell order,
    best first.

    Departments no customer of the segment scores above 0 are left out.
    """
    check_is_fitted(model, "similarity_")
    rows = np.arange(interactions.shape[0]) if rows is None else np.asarray(rows)
    totals = DepartmentTotals(segments, items)
    batches = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    spreads = in_order(lambda batch: totals.per_customer(
        model.blend(model.components(interactions, segments, batch, model.weighted())), interactions, batch),
        batches)
    for batch, spread in zip(batches, spreads):
        totals.accumulate(batch, spread)
    return totals.ranked()


class DepartmentTotals:
    """Per segment, the blended scores of the classes its customers have not bought, summed per department
    (what :func:`ranked_departments` ranks), added batch by batch."""

    def __init__(self, segments, items: pd.DataFrame):
        to_department, self.departments = department_matrix(items)
        self.to_department = to_department.toarray()
        self.segments = np.asarray(segments)
        self.labels, self.code = np.unique(self.segments, return_inverse=True)
        self.totals = np.zeros((len(self.labels), len(self.departments)))

    def add(self, blended: np.ndarray, interactions: Interactions, batch: np.ndarray) -> None:
        """Add the blended scores (``model.blend``) of the customers ``batch``."""
        self.accumulate(batch, self.per_customer(blended, interactions, batch))

    def per_customer(self, blended: np.ndarray, interactions: Interactions, batch: np.ndarray) -> np.ndarray:
        """Customers ``batch`` x departments: their blended scores of classes not bought, summed per department
        (what :meth:`add` adds; computed apart so batches scored side by side can be added in order)."""
        score = np.array(blended, dtype=np.float64)
        bought = interactions.counts[batch].tocsr()
        row = np.repeat(np.arange(len(batch)), np.diff(bought.indptr))
        score[row[bought.data > 0], bought.indices[bought.data > 0]] = 0.0  # the classes bought, not densified
        return score @ self.to_department

    def accumulate(self, batch: np.ndarray, spread: np.ndarray) -> None:
        """Add :meth:`per_customer` of the customers ``batch`` to their segments' totals."""
        np.add.at(self.totals, self.code[batch], spread)

    def ranked(self) -> dict[int, list[str]]:
        return {int(label): [self.departments[d] for d in np.argsort(-self.totals[i], kind="stable")
                             if self.totals[i, d] > 0] for i, label in enumerate(self.labels)}


def cross_sell_hits(lists: Mapping[int, list[str]], segments, rows: np.ndarray, seen: sp.csr_matrix,
                    relevant: sp.csr_matrix, items: pd.DataFrame) -> np.ndarray:
    """1 for each customer of ``rows`` who bought, in the period scored, a department of their segment's
    cross-sell list they had not bought before; else 0 (an empty list never hits)."""
    to_department, departments = department_matrix(items)
    column = {d: i for i, d in enumerate(departments)}
    seen_dept = (seen[rows] @ to_department).toarray() > 0
    new_dept = ((relevant[rows] @ to_department).toarray() > 0) & ~seen_dept
    listed = np.zeros_like(new_dept)
    labels = np.asarray(segments)[rows]
    for label, names in lists.items():
        at = labels == label
        listed[np.ix_(at, [column[d] for d in names if d in column])] = True
    return (new_dept & listed).any(axis=1).astype(float)
