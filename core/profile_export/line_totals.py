"""Each segment's purchase spend by calendar month and by product attribute, in one pass over the order lines.

What :func:`~core.profile_export.profiling.monthly_spend_by_segment` and
:func:`~core.profile_export.profiling.attribute_spend_by_segment` compute on
a DataFrame of lines, computed batch by batch over ``transactions.parquet``
with Arrow and NumPy. The SKU is read dictionary-encoded, so each batch maps
its few thousand distinct SKUs to the catalog's attribute values once and
every line gets its value by an integer lookup: no string of the 135 M lines
is hashed or joined. That string join was most of the cost of the earlier
DuckDB query (``GROUPING SETS`` over the lines joined to the catalog): on a
million customers, 71-75 s against 17.5 s for the same scan without the SKU,
machine busy (docs/decisions.md). Money is summed in whole pence (rounded
half away from zero, as before), so the totals are exact integers whatever
the batching, and the tables are those the DuckDB query gave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

# Lines per batch: about 40 MB of NumPy work arrays per batch.
BATCH_ROWS = 1 << 20
ATTRIBUTES = ("brand_tier", "size", "style")
# Months 0-11 and a spare one for the lines left out (SpendTotals' cube).
SPARE_MONTHS = 13
# Dates further than this many days before the last day make the day table large: such a batch is summed the
# old way (a retailer's log never goes back this far; a wrong date might).
MAX_TABLE_DAYS = 200_000


def spend_by_segment(transactions: Path, products: pd.DataFrame, segment_of: pd.Series, last_day,
                     attributes: Iterable[str] = ATTRIBUTES) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Purchase spend per segment by month and by each product attribute, from a Parquet file of order lines.

    Parameters
    ----------
    transactions : Path
        ``transactions.parquet`` (``customer_id``, ``order_date``, ``sku``,
        ``line_amount``, ``is_return``).
    products : DataFrame
        ``sku`` and the attribute columns (those absent are skipped); the
        catalog's values count, not the lines' own columns of the same names.
    segment_of : Series
        Segment id per customer id; lines of other customers are left out.
    last_day : datetime-like
        Lines after this day are left out.
    attributes : iterable of str

    Returns
    -------
    (DataFrame, dict of str to DataFrame)
        Segments x months 1..12 (0 where nothing was bought; segments with
        a purchase), and per attribute present in ``products`` segments x
        values (segments and values with a purchase of a known value); both
        as the pandas functions give them (integer segment index, sorted
        columns).
    """
    import pyarrow.parquet as pq

    totals = SpendTotals(products, segment_of, last_day, attributes)
    source = pq.ParquetFile(transactions, read_dictionary=totals.dictionary_columns)
    for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=totals.columns):
        totals.add(batch)
    return totals.result()


class SpendTotals:
    """:func:`spend_by_segment`'s sums, batch by batch over order lines read elsewhere.

    Stage 05 reads the order lines once for these and for the purchase history of its next-best classes
    (the two reads decoded the same columns twice: 5.4 CPU-s at a million customers against 3.1 for one read
    of both's columns); :attr:`columns` are the columns a batch must have (more are ignored), best read with
    :attr:`dictionary_columns` dictionary-encoded. Parameters as :func:`spend_by_segment`'s.
    """

    def __init__(self, products: pd.DataFrame, segment_of: pd.Series, last_day,
                 attributes: Iterable[str] = ATTRIBUTES):
        self.present = [a for a in attributes if a in products.columns]
        self.segment_ids, self.code_of = _segment_codes(segment_of)
        self.catalog = products.drop_duplicates("sku")
        self.sku_index = pd.Index(self.catalog["sku"].to_numpy())
        # Each catalog row's combination of attribute values (a few hundred at most in a retail catalog): lines
        # are counted per segment, month and combination, and every table is a sum over that small cube.
        self.combos = (self.catalog[self.present].groupby(self.present, dropna=False, sort=False).ngroup()
                       .to_numpy(np.int64) if self.present else np.zeros(len(self.catalog), np.int64))
        # The last combination: a SKU the catalog lacks.
        self.n_combos = int(self.combos.max()) + 2 if len(self.combos) else 1
        self.end = np.datetime64((pd.Timestamp(last_day).normalize() + pd.Timedelta(days=1)).to_datetime64(), "us")
        # One more segment (customers of none) and one more month (returns, lines after ``last_day``, no date):
        # every line gets a cell, those left out a spare one dropped at the end, so a batch is summed without
        # picking its kept lines out first (docs/decisions.md, "sixth round").
        self.cube = _Totals((len(self.segment_ids) + 1) * SPARE_MONTHS, self.n_combos)
        self.columns = ["customer_id", "order_date", "line_amount", "is_return"] + (["sku"] if self.present else [])
        self.dictionary_columns = ["sku"] if self.present else None
        self._skus = _SkuCombos(self.sku_index, self.combos, self.n_combos - 1)
        self._segment_base = _SegmentBase(segment_of, self.code_of, len(self.segment_ids),
                                          SPARE_MONTHS * self.n_combos)
        self._end_day = int(self.end.astype("datetime64[D]").astype(np.int64))
        self._months = _MonthOffsets(self._end_day, self.n_combos)

    def add(self, batch) -> None:
        """Add an Arrow record batch (or table) of order lines with :attr:`columns`."""
        days = _day_numbers(batch.column("order_date"), self._end_day)
        if days is None:  # a date thousands of years out: the lines picked out first, as they always were
            segment, month, cents, kept = _purchases(batch, self.code_of, self.end)
            combo = self._skus(batch.column("sku"))[kept] if self.present else 0
            self.cube.add((segment * SPARE_MONTHS + month) * self.n_combos + combo, cents)
            return
        # Each line's cell: its segment's block (the spare one for customers of none), its month's row in it (the
        # spare month for returns and lines after the last day), its attribute combination's column.
        cell = self._segment_base(batch.column("customer_id"))
        cell += self._months(days, _flags(batch.column("is_return")))
        if self.present:
            cell += self._skus(batch.column("sku"))
        self.cube.add(cell, _pence(batch.column("line_amount")))

    def result(self) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        """The tables of :func:`spend_by_segment` from the lines added so far."""
        n_segments, present, catalog = len(self.segment_ids), self.present, self.catalog
        # The spare segment and month hold the lines left out.
        cents = self.cube.cents.reshape(n_segments + 1, SPARE_MONTHS, self.n_combos)[:n_segments, :12]
        lines = self.cube.lines.reshape(n_segments + 1, SPARE_MONTHS, self.n_combos)[:n_segments, :12]
        monthly = _table(cents.sum(axis=2), lines.sum(axis=2), self.segment_ids,
                         pd.Index(range(1, 13), name="month"), keep_columns=True)
        mixes = {}
        if present:
            combo_values = catalog[present].iloc[np.unique(self.combos, return_index=True)[1]].reset_index(drop=True)
            for attribute in present:
                values = _sorted_values(catalog[attribute])
                # Value code of each combination; the catalog-less SKU and missing values count nowhere.
                code = np.append(pd.Index(values).get_indexer(combo_values[attribute].to_numpy()), -1)
                known = code >= 0
                mixes[attribute] = _table(_by_value(cents, code, known, len(values)),
                                          _by_value(lines, code, known, len(values)), self.segment_ids,
                                          pd.Index(values, name=attribute))
        return monthly, mixes


def _by_value(cube: np.ndarray, code: np.ndarray, known: np.ndarray, n_values: int) -> np.ndarray:
    """Segments x values: the cube (segments x months x combinations) summed over months and each value's
    combinations."""
    per_combo = cube.sum(axis=1)[:, known]
    out = np.zeros((cube.shape[0], n_values), dtype=cube.dtype)
    np.add.at(out.T, code[known], per_combo.T)
    return out


class _Totals:
    """Pence and line counts per (row, column) cell, summed batch by batch."""

    def __init__(self, rows: int, columns: int):
        self.cents = np.zeros(rows * columns)
        self.lines = np.zeros(rows * columns, dtype=np.int64)

    def add(self, cell: np.ndarray, cents: np.ndarray) -> None:
        # Whole pence as float64 sum exactly (far below 2**53), in any order.
        self.cents += np.bincount(cell, weights=cents, minlength=len(self.cents))
        self.lines += np.bincount(cell, minlength=len(self.lines))


def _table(cents: np.ndarray, lines: np.ndarray, segment_ids: np.ndarray, columns: pd.Index,
           keep_columns: bool = False) -> pd.DataFrame:
    """Segments (and columns, unless ``keep_columns``) with at least one line, in pounds."""
    rows = lines.sum(axis=1) > 0
    cols = np.ones(lines.shape[1], bool) if keep_columns else lines.sum(axis=0) > 0
    pounds = cents[np.ix_(rows, cols)] / 100.0
    return pd.DataFrame(pounds, index=pd.Index(segment_ids[rows], name="segment"), columns=columns[cols])


def _segment_codes(segment_of: pd.Series):
    """Sorted segment ids, and a function from customer keys to their segment's position (-1: unsegmented)."""
    keys = segment_of.index.to_numpy(np.int64)
    segment_ids, codes = np.unique(segment_of.to_numpy(np.int64), return_inverse=True)
    if len(keys) and keys.min() >= 0 and keys.max() < 4 * len(keys) + 1_000_000:
        # Dense keys (the pipeline's are 1..n): one array lookup per line.
        dense = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
        dense[keys] = codes

        def code_of(lines: np.ndarray) -> np.ndarray:
            if not len(lines) or (lines.min() >= 0 and lines.max() < len(dense)):
                return dense[lines]
            inside = (lines >= 0) & (lines < len(dense))
            return np.where(inside, dense[np.where(inside, lines, 0)], -1)
    else:
        index = pd.Index(keys)

        def code_of(lines: np.ndarray) -> np.ndarray:
            found = index.get_indexer(lines)
            return np.where(found >= 0, codes[found], -1)
    return segment_ids.astype(np.int64), code_of


class _SegmentBase:
    """Each line's first cell of its segment's block in the cube (the spare segment's for a customer of none),
    from the customer ids: one lookup per line in a table of the customer keys when they are dense."""

    def __init__(self, segment_of: pd.Series, code_of, n_segments: int, block: int):
        self.code_of, self.spare, self.block = code_of, n_segments * block, block
        keys = segment_of.index.to_numpy(np.int64)
        self.dense = None
        if len(keys) and keys.min() >= 0 and keys.max() < 4 * len(keys) + 1_000_000:
            self.dense = np.full(int(keys.max()) + 1, self.spare, dtype=np.int64)
            self.dense[keys] = code_of(keys) * block

    def __call__(self, column) -> np.ndarray:
        ids = column.to_numpy(zero_copy_only=False)
        ids = ids if ids.dtype == np.int64 else ids.astype(np.int64)
        if self.dense is not None and len(ids) and ids.min() >= 0 and ids.max() < len(self.dense):
            return self.dense[ids]
        segment = self.code_of(ids)
        return np.where(segment >= 0, segment * self.block, self.spare)


class _MonthOffsets:
    """Each line's row offset in its segment's block: its calendar month's (0-11) times the combinations, or the
    spare month's for a return or a line on or after the end day; from a table of the days, kept between batches."""

    def __init__(self, end_day: int, n_combos: int):
        self.end_day, self.n_combos = end_day, n_combos
        self.first, self.table = end_day, np.full(1, 12 * n_combos, dtype=np.int64)

    def __call__(self, days: np.ndarray, returned: np.ndarray) -> np.ndarray:
        if len(days):
            first = int(days.min())
            if first < self.first:
                months = np.arange(first, self.end_day).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
                self.table = np.append(months % 12 * self.n_combos, 12 * self.n_combos)
                self.first = first
        offsets = self.table[days - self.first]
        offsets[returned] = 12 * self.n_combos
        return offsets


def _day_numbers(column, end_day: int) -> np.ndarray | None:
    """Days since 1970-01-01 of each line's timestamp (the day a conversion to datetime64[D] gives), ``end_day``
    for a line on or after it and for one without a date; None when a date lies more than
    :data:`MAX_TABLE_DAYS` before it."""
    import pyarrow as pa

    micros = column.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    days = np.floor_divide(micros.view(np.int64), 86_400_000_000)
    if column.null_count:
        days[np.isnat(micros)] = end_day
    np.minimum(days, end_day, out=days)
    if len(days) and end_day - int(days.min()) > MAX_TABLE_DAYS:
        return None
    return days


def _flags(column) -> np.ndarray:
    """A boolean Arrow column as NumPy, a missing value as True (a missing return flag counts as a return)."""
    import pyarrow.compute as pc

    return (pc.fill_null(column, True) if column.null_count else column).to_numpy(zero_copy_only=False)


def _pence(column) -> np.ndarray:
    """Amounts in whole pence, rounded half away from zero (a missing amount as 0): ``trunc(a * 100 +
    copysign(0.5, a))``, the same values as ``sign(a) * floor(|a| * 100 + 0.5)`` in four passes instead of six
    (IEEE multiplication and addition are symmetric in the sign)."""
    import pyarrow.compute as pc

    amount = (pc.fill_null(column, 0.0) if column.null_count else column).to_numpy(zero_copy_only=False)
    amount = amount if amount.dtype == np.float64 else amount.astype(np.float64)
    cents = amount * 100
    cents += np.copysign(0.5, amount)
    return np.trunc(cents, out=cents)


def _purchases(batch, code_of, end: np.datetime64):
    """Segment position, month (0-11) and pence of a batch's purchase lines of segmented customers up to ``end``,
    and the mask of those lines among the batch's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    segment = code_of(batch.column("customer_id").to_numpy(zero_copy_only=False).astype(np.int64))
    dates = batch.column("order_date").cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    returned, amount = batch.column("is_return"), batch.column("line_amount")
    returned = (pc.fill_null(returned, True) if returned.null_count else returned).to_numpy(zero_copy_only=False)
    kept = (segment >= 0) & ~returned & (dates < end)
    amount = (pc.fill_null(amount, 0.0) if amount.null_count else amount).to_numpy(zero_copy_only=False)[kept]
    # Half away from zero, as DuckDB's round() and the pence totals stage 02 keeps.
    cents = np.sign(amount) * np.floor(np.abs(amount) * 100 + 0.5)
    return segment[kept], _months(dates[kept]), cents, kept


def _months(dates: np.ndarray) -> np.ndarray:
    """Calendar month 0-11 of each timestamp, through a table of the days the batch spans (a calendar
    conversion per line was a fifth of the pass)."""
    if not len(dates):
        return np.zeros(0, np.int64)
    days = dates.astype("datetime64[us]").view(np.int64) // 86_400_000_000
    first, last = int(days.min()), int(days.max())
    calendar = np.arange(first, last + 1).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    return calendar[days - first]


class _SkuCombos:
    """The attribute combination of each line's SKU (``unknown``: not in the catalog or missing), looked up once
    per distinct SKU of a batch's dictionary, and once per dictionary: the batches of one row group share theirs
    (looking its 12,498 SKUs up again for each batch was a tenth of the pass at a million customers)."""

    def __init__(self, sku_index: pd.Index, combos: np.ndarray, unknown: int):
        self.sku_index, self.unknown = sku_index, unknown
        self.combos = np.append(combos, unknown)  # get_indexer's -1 (not in the catalog) picks ``unknown``
        self._dictionary, self._per_entry = None, None

    def __call__(self, sku) -> np.ndarray:
        import pyarrow as pa

        if not pa.types.is_dictionary(sku.type):
            return self.combos[self.sku_index.get_indexer(sku.to_numpy(zero_copy_only=False))]
        if self._dictionary is None or not sku.dictionary.equals(self._dictionary):
            self._per_entry = np.append(self.combos[self.sku_index.get_indexer(
                sku.dictionary.to_numpy(zero_copy_only=False))], self.unknown)
            self._dictionary = sku.dictionary
        indices = sku.indices.fill_null(len(self._per_entry) - 1) if sku.null_count else sku.indices
        return self._per_entry[indices.to_numpy(zero_copy_only=False).astype(np.int64)]


def _sorted_values(column: pd.Series) -> list:
    """The distinct non-null values of a catalog column, sorted (the order pandas' unstack gives)."""
    return sorted(column.dropna().unique().tolist())
