"""Stage 01 from a retailer's own data: a transaction log (and a customer file) in, the stage 01 tables out.

The log is read in batches (:func:`read_batches`: CSV in pieces of whole
lines, each parsed by ``pyarrow.csv.read_csv``; Parquet by
``ParquetFile.iter_batches``), so a large file never has to fit in memory,
let alone twice. Each batch goes through :class:`TransactionIngestor`, which
accepts or rejects every row:

* an accepted row becomes one line of ``transactions.parquet`` with the
  columns of :data:`core.domain.tables.TRANSACTION_TABLE` (a column the file does
  not have is null, or derived: the order id from customer and date, the
  quantity 1, the unit price from amount and quantity);
* a rejected row keeps its text, its row number in the file and the first
  reason that applies (:data:`REJECT_REASONS`, checked in that order).

Returns are lines with a true return flag or a negative quantity or amount;
their quantity, amount and discount are made negative, as the generator
writes them. Department and class names are matched to the hierarchy
ignoring case and surrounding spaces; a name it does not know becomes
``Unknown`` (the line is kept) and is counted in the manifest.

Duplicate lines are found across batches without keeping the lines: each
accepted line is reduced to a 64-bit hash of its parsed values and the
hashes are kept in sorted runs (:class:`SeenKeys`, 8 bytes a line). Two
different lines with the same hash would be taken for duplicates; at 50
million lines the chance that this happens at all is below 1 in 10,000.

pandera checks what the ingestion writes (:func:`contract`):
each accepted batch must satisfy the table contract before it is written, so
a bug here stops the stage instead of reaching stage 02. Deciding which rows
to reject is plain vectorised code: see docs/decisions.md for why.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import functools
import io
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.domain import customer_ids
from core.domain.columns import UNKNOWN
from core.framework.errors import PipelineError
from core.domain.hierarchy import Hierarchy
from core.domain.tables import (CUSTOMER_COLUMNS, CUSTOMER_SCHEMA, CUSTOMER_TABLE, GROUND_TRUTH_COLUMNS, PRODUCT_COLUMNS,
                         PRODUCT_SCHEMA, PRODUCT_TABLE, TRANSACTION_COLUMNS, TRANSACTION_TABLE)

"""Department and class of a line whose department or class the hierarchy does not know, or that has none."""

LINE_NUMBER = "line_number"
"""Mapping target for a log's line number within an order: not stored, it only tells identical lines apart."""
TRANSACTION_TARGETS = TRANSACTION_COLUMNS + (LINE_NUMBER,)
"""Columns of ours a log's column can be mapped to (every transactions.parquet column, and the line number)."""
REQUIRED_TRANSACTION = ("customer_id", "order_date", "line_amount")
CUSTOMER_TARGETS = tuple(c for c in CUSTOMER_COLUMNS if c not in GROUND_TRUTH_COLUMNS)
"""Columns of ours a customer file's column can be mapped to (the generator's ground truth excluded)."""
REQUIRED_CUSTOMER = ("customer_id",)

REJECT_REASONS = (
    "empty row",
    "malformed row",
    "missing customer_id",
    "customer_id too long",
    "invalid customer_id",
    "customer_id of another kind",
    "missing order_date",
    "invalid order_date",
    "order_date in the future",
    "missing line_amount",
    "invalid line_amount",
    "invalid quantity",
    "invalid unit_price",
    "invalid discount_amount",
    "invalid is_return",
    "duplicate line",
    "duplicate order_id",
)
"""Why a transaction row is rejected, in the order they are checked (a row gets the first that applies)."""

_REASON_COLUMN = {r: r.split(" ")[1] for r in REJECT_REASONS if r.startswith(("missing", "invalid"))}
_REASON_COLUMN.update({"order_date in the future": "order_date", "duplicate order_id": "order_id",
                       "customer_id too long": "customer_id", "customer_id of another kind": "customer_id"})

CUSTOMER_REJECT_REASONS = ("empty row", "malformed row", "missing customer_id", "customer_id too long",
                           "invalid customer_id", "customer_id of another kind", "invalid age", "invalid has_children", "invalid signup_date", "duplicate customer_id")
"""Why a customer-file row is rejected, in the order they are checked."""

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "return", "r"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "sale", "s"})
"""Return-flag (and has_children) values, compared lower-case; an empty value is false."""

REJECT_META_COLUMNS = ("source_row", "reason")
ROW_TEXT = "row_text"
"""Rejects column holding the whole text of a CSV row that could not be split into its fields."""

CSV_BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 200_000

_MAX_INT32 = 2**31 - 1


# ---------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file to ingest and how to read it.

    Attributes
    ----------
    path : Path
    format : str
        ``csv`` or ``parquet``.
    columns : dict of str to str
        The file's column name -> ours.
    delimiter, decimal, encoding : str
        CSV settings (``delimiter`` may be the word ``tab``); ``decimal`` also applies to
        numbers stored as text in Parquet.
    role : str
        ``transactions`` or ``customers``: the config section, named in errors.
    """

    path: Path
    format: str
    columns: dict[str, str]
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    role: str = "transactions"

    @property
    def key(self) -> str:
        """The config section describing this file, for error messages."""
        return f"ingest.{self.role}"

    @property
    def separator(self) -> str:
        """The delimiter character."""
        return "\t" if self.delimiter == "tab" else self.delimiter


def source_files(config) -> dict[str, SourceFile]:
    """The files a ``PipelineConfig`` with ``data.source: file`` names, by role."""
    ingest = config.ingest
    out = {}
    for role, path in config.source_files.items():
        section = getattr(ingest, role)
        out[role] = SourceFile(path=path, format=section.format, columns=dict(section.columns),
                               delimiter=ingest.csv.delimiter, decimal=ingest.csv.decimal,
                               encoding=ingest.csv.encoding, role=role)
    return out


@dataclasses.dataclass
class RawBatch:
    """Rows as read: the mapped columns under our names, with their row numbers in the file.

    Attributes
    ----------
    rows : DataFrame
        One column per mapped column, named as ours; text for CSV, the stored type for Parquet.
    source_row : ndarray of int64
        1-based data row number of each row (the header is row 0).
    malformed : list of (int, str)
        CSV rows that could not be split into the header's fields: (row number, text).
    """

    rows: pd.DataFrame
    source_row: np.ndarray
    malformed: list[tuple[int, str]]


def read_batches(source: SourceFile, *, block_bytes: int = CSV_BLOCK_BYTES,
                 batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[RawBatch]:
    """Read the mapped columns of ``source`` in batches of bounded size.

    Raises
    ------
    PipelineError
        A missing, empty or unreadable file, a mapped column the file lacks
        (with a delimiter hint when the header looks split wrongly) or text
        that is not in the configured encoding, each naming the file and the fix.
    """
    if not Path(source.path).is_file():
        raise PipelineError(f"{source.path}: file not found; check {source.key}.file")
    if source.format == "parquet":
        yield from _parquet_batches(source, batch_rows)
    else:
        yield from _csv_batches(source, block_bytes)


def _missing_columns_error(source: SourceFile, found: list[str]) -> PipelineError:
    missing = [theirs for theirs in source.columns if theirs not in found]
    named = ", ".join(f"'{t}' (our {source.columns[t]})" for t in missing)
    shown = ", ".join(repr(c) for c in found[:20]) + (", ..." if len(found) > 20 else "")
    hint = ""
    if source.format == "csv" and len(found) == 1:
        others = [d for d in (";", ",", "\t", "|") if d != source.separator and d in found[0]]
        if others:
            word = "tab" if others[0] == "\t" else others[0]
            hint = (f"; the header was read as one column, so the fields are probably separated by "
                    f"{others[0]!r}: set ingest.csv.delimiter: '{word}'")
    return PipelineError(f"{source.path}: column(s) {named} named in {source.key}.columns are not in the "
                         f"file, whose columns are {shown}{hint}; otherwise map the file's own column names")


def _parquet_batches(source: SourceFile, batch_rows: int) -> Iterator[RawBatch]:
    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise PipelineError(f"{source.path}: not a readable Parquet file ({exc}); check {source.key}.format "
                            f"(csv or parquet) and that the file was copied completely") from None
    found = parquet.schema_arrow.names
    if any(theirs not in found for theirs in source.columns):
        raise _missing_columns_error(source, found)
    first = 1
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(source.columns)):
            rows = batch.to_pandas().rename(columns=source.columns)
            yield RawBatch(rows, np.arange(first, first + len(rows), dtype=np.int64), [])
            first += len(rows)
    except (pa.ArrowException, OSError) as exc:
        raise PipelineError(f"{source.path}: cannot read the Parquet data after row {first - 1:,} ({exc}); "
                            f"the file may be damaged: export it again") from None


def _csv_header(source: SourceFile) -> list[str]:
    """The header's field names as written, read with Python's csv module (pyarrow needs them to select columns)."""
    empty = PipelineError(f"{source.path}: the file is empty; {source.key}.file must name a CSV file with a "
                          f"header row and at least one data row")
    try:
        if _utf8(source.encoding):
            with open(source.path, "rb") as handle:
                line = handle.readline()
            text = line.decode("utf-8-sig")
        else:
            with open(source.path, encoding=source.encoding, newline="") as handle:
                text = handle.readline()
    except UnicodeError as exc:
        reason = getattr(exc, "reason", str(exc))
        raise PipelineError(f"{source.path}: the header is not {source.encoding} text ({reason}); set "
                            f"ingest.csv.encoding to the file's encoding (cp1252 or latin-1 for most Windows "
                            f"exports, utf-16 for Excel's Unicode text)") from None
    if not text.strip():
        raise empty
    return next(csv.reader(io.StringIO(text.rstrip("\r\n")), delimiter=source.separator))


def _utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _chunks(source: SourceFile, block_bytes: int) -> Iterator[bytes]:
    """The data lines after the header, as UTF-8 bytes in pieces of about ``block_bytes`` ending at a line end.

    Read here rather than by pyarrow's streaming reader, whose read-ahead was measured holding
    most of a 316 MiB file while the batches were being processed: this way one piece is in
    memory at a time. A file in another encoding is decoded by Python and re-encoded.
    """
    utf8 = _utf8(source.encoding)
    with open(source.path, "rb" if utf8 else "r", **({} if utf8 else {"encoding": source.encoding,
                                                                      "newline": ""})) as handle:
        handle.readline()  # the header, read by _csv_header
        newline = b"\n" if utf8 else "\n"
        rest = newline[:0]
        while True:
            data = handle.read(block_bytes)
            if not data:
                if rest:
                    yield rest if utf8 else rest.encode("utf-8")
                return
            data = rest + data
            cut = data.rfind(newline) + 1
            if cut == 0:  # a line longer than a block: read on
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut] if utf8 else data[:cut].encode("utf-8")


def _csv_batches(source: SourceFile, block_bytes: int) -> Iterator[RawBatch]:
    header = _csv_header(source)
    # Names are compared without surrounding spaces; pyarrow selects them as written.
    wanted = {theirs.strip(): theirs for theirs in source.columns}
    if any(name not in {h.strip() for h in header} for name in wanted):
        raise _missing_columns_error(source, [h.strip() for h in header])
    as_written = {h: wanted[h.strip()] for h in header if h.strip() in wanted}
    malformed: list[tuple[int, str]] = []

    def skip_malformed(row) -> str:
        # A row with too few or too many fields (an unquoted delimiter in a name, a truncated
        # line) is rejected with its text rather than stopping the whole file.
        malformed.append((int(row.number), row.text))  # 1-based line within the piece
        return "skip"

    read_options = pacsv.ReadOptions(column_names=header, block_size=max(2 * block_bytes, 1 << 16),
                                     use_threads=False)  # one thread: malformed rows come with their number
    parse_options = pacsv.ParseOptions(delimiter=source.separator, invalid_row_handler=skip_malformed,
                                       # an empty line is a row (rejected as empty), so rows are lines
                                       ignore_empty_lines=False)
    convert_options = pacsv.ConvertOptions(include_columns=list(as_written),
                                           column_types={h: pa.string() for h in as_written},
                                           strings_can_be_null=False, quoted_strings_can_be_null=False)
    first = 1
    try:
        for chunk in _chunks(source, block_bytes):
            malformed.clear()
            try:
                table = pacsv.read_csv(pa.py_buffer(chunk), read_options=read_options,
                                       parse_options=parse_options, convert_options=convert_options)
            except pa.ArrowInvalid as exc:
                raise _csv_error(source, exc, first) from None
            n_lines = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
            bad = [(first - 1 + number, text) for number, text in malformed]
            numbers = _row_numbers(first, table.num_rows, [number for number, _ in bad])
            # Lines and rows differ only if a quoted value holds a line break: then the numbers are approximate.
            first = max(first + n_lines, int(numbers[-1]) + 1 if len(numbers) else first)
            rows = table.to_pandas().rename(columns=as_written).rename(columns=source.columns)
            yield RawBatch(rows, numbers, bad)
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{source.path}: not valid {source.encoding} text (after data row {first - 1:,}: "
                            f"{exc.reason}); set ingest.csv.encoding to the file's encoding or save the file "
                            f"as UTF-8") from None


def _row_numbers(first: int, n: int, malformed: list[int]) -> np.ndarray:
    """Row numbers of ``n`` well-formed rows read after row ``first - 1``: the malformed rows' numbers are skipped."""
    skip = np.asarray(sorted(m for m in malformed if m >= first), dtype=np.int64)
    candidates = np.arange(first, first + n + len(skip), dtype=np.int64)
    return candidates[~np.isin(candidates, skip)][:n]


def _csv_error(source: SourceFile, exc: Exception, row: int) -> PipelineError:
    text = str(exc)
    where = f" (in the block starting at data row {row:,})" if row > 1 else ""
    if "utf8" in text.lower() or "utf-8" in text.lower() or "decode" in text.lower() or "codec" in text.lower():
        return PipelineError(f"{source.path}: not valid {source.encoding} text{where}; set ingest.csv.encoding to "
                             f"the file's encoding (cp1252 or latin-1 for most Windows exports) or save the file "
                             f"as UTF-8")
    if "empty" in text.lower():
        return PipelineError(f"{source.path}: the file is empty; it needs a header row and at least one data row")
    return PipelineError(f"{source.path}: cannot be read as CSV{where} ({text}); check ingest.csv (delimiter "
                         f"{source.delimiter!r}, encoding {source.encoding}) and {source.key}.format")


# ---------------------------------------------------------------------------
# Customer ids (core.domain.customer_ids): their kind, decided once per file


@dataclasses.dataclass(frozen=True)
class IdSettings:
    """How the customer ids of a file are read.

    Attributes
    ----------
    kind : str
        ``number`` or ``text`` (:mod:`core.domain.customer_ids`).
    decided : bool
        True when ``kind`` was taken from most of the log's rows (``ingest.customer_id.kind: auto``):
        rows of the other kind are rejected as ``customer_id of another kind``.
    max_length : int
        Longest id accepted (``ingest.customer_id.max_length``).
    rows_by_kind : dict
        With ``decided``: the log's rows with a number id and with a text id.
    """

    kind: str = "number"
    decided: bool = False
    max_length: int = 64
    rows_by_kind: dict | None = None

    def parse(self, values: pd.Series) -> customer_ids.ParsedIds:
        """A batch's ids parsed as this kind."""
        return customer_ids.parse_customer_ids(values, self.kind, self.max_length, self.decided)

    def details(self) -> dict:
        """For the manifest."""
        out = {"kind": self.kind, "kind_from": "most rows of the log" if self.decided else "ingest.customer_id.kind",
               "max_length": self.max_length}
        return out | ({"rows_by_kind": self.rows_by_kind} if self.rows_by_kind is not None else {})


def id_settings(source: SourceFile, kind: str, max_length: int) -> IdSettings:
    """The id settings of a log: ``kind`` as configured, or (``auto``) the kind of most of its rows.

    ``auto`` reads the file's customer id column once before the log is ingested, so that
    every row, however early, is judged against the same kind.
    """
    if kind != "auto":
        return IdSettings(kind, False, max_length)
    theirs = next(t for t, ours in source.columns.items() if ours == "customer_id")
    only_ids = dataclasses.replace(source, columns={theirs: "customer_id"})
    numbers = texts = 0
    for raw in read_batches(only_ids):
        shaped, missing = customer_ids.number_shaped(raw.rows["customer_id"])
        numbers += int(shaped.sum())
        texts += int((~shaped & ~missing).sum())
    return IdSettings(customer_ids.majority_kind(numbers, texts), True, max_length,
                      {"number": numbers, "text": texts})


def flag_id_reasons(why: "_Reasons", parsed: customer_ids.ParsedIds) -> None:
    """The customer id's reject reasons, in the order of :data:`REJECT_REASONS`."""
    why.flag(parsed.missing, "missing customer_id")
    why.flag(parsed.too_long, "customer_id too long")
    why.flag(parsed.invalid, "invalid customer_id")
    why.flag(parsed.other_kind, "customer_id of another kind")


def id_details(settings: IdSettings, registry: customer_ids.IdRegistry, n_customers: int) -> dict:
    """The manifest's ``customer_ids``: the kind, why, and the ids written several ways."""
    several, examples = registry.several_spellings()
    return settings.details() | {"customers": n_customers, "ids_written_several_ways": several,
                                 "examples_written_several_ways": examples}


# ---------------------------------------------------------------------------
# Parsing: every parser returns (values, missing, invalid) with a value only where neither is true.


def _text(values: pd.Series) -> pd.Series:
    """Stripped text, NA where empty."""
    s = values.astype("str") if not pd.api.types.is_string_dtype(values.dtype) else values
    s = s.str.strip()
    return s.mask(s.isna() | (s == ""))


def _arrow_text(text: pd.Series) -> pa.Array:
    """The stripped text as an Arrow array (NA -> null): parsing runs in Arrow's compute kernels."""
    return pa.array(text.to_numpy(object, na_value=None), type=pa.string()) if text.dtype == object else pa.array(text)


def _cast_where(arr: pa.Array, ok: np.ndarray, to: pa.DataType) -> np.ndarray:
    """Cast the text of the rows in ``ok`` (already known to be valid) to ``to``; others become 0."""
    kept = pc.if_else(pa.array(ok), arr, pa.scalar(None, pa.string()))
    return pc.cast(kept, to).fill_null(0).to_numpy(zero_copy_only=False)


def parse_integer(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Whole numbers (``123``, ``123.0``, ``+7``) as Int64; anything else is invalid."""
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype("str")
    if pd.api.types.is_integer_dtype(values.dtype):
        parsed = values.astype("Int64")
        return parsed, parsed.isna().to_numpy(), np.zeros(len(values), bool)
    if pd.api.types.is_float_dtype(values.dtype):
        number = values.to_numpy(np.float64, na_value=np.nan)
        missing = np.isnan(number)
        invalid = ~missing & ~(np.isfinite(number) & (np.floor(number) == number) & (np.abs(number) < 2**62))
        number = np.where(missing | invalid, 0, number).astype(np.int64)
        return pd.Series(pd.arrays.IntegerArray(number, missing | invalid), index=values.index), missing, invalid
    arr = _arrow_text(_text(values))
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    ok = pc.match_substring_regex(arr, r"^[+-]?\d{1,18}(\.0*)?$").fill_null(False).to_numpy(zero_copy_only=False)
    plain = pc.replace_substring_regex(pc.replace_substring_regex(arr, r"\.0*$", ""), r"^\+", "")
    number = _cast_where(plain, ok, pa.int64())
    return pd.Series(pd.arrays.IntegerArray(number.astype(np.int64), ~ok), index=values.index), missing, ~missing & ~ok


_NUMBER = {
    ".": r"^([+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d*)?|[+-]?\.\d+)$",
    ",": r"^([+-]?(\d+|\d{1,3}(\.\d{3})+)(,\d*)?|[+-]?,\d+)$",
}


def parse_decimal(values: pd.Series, decimal: str = ".") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numbers as float64 (NaN where missing or invalid).

    Text uses ``decimal`` as the decimal mark and may group thousands with the
    other mark in threes (``1,234.56`` or ``1.234,56``); anything else,
    including ``inf``, ``nan`` and ``1e5``, is invalid.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        number = values.to_numpy(np.float64, na_value=np.nan)
        missing = np.isnan(number)
        invalid = ~missing & ~np.isfinite(number)
        return np.where(invalid, np.nan, number), missing, invalid
    arr = _arrow_text(_text(values))
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    ok = pc.match_substring_regex(arr, _NUMBER[decimal]).fill_null(False).to_numpy(zero_copy_only=False)
    plain = pc.replace_substring(arr, "," if decimal == "." else ".", "")
    if decimal == ",":
        plain = pc.replace_substring(plain, ",", ".")
    number = np.where(ok, _cast_where(plain, ok, pa.float64()), np.nan)
    return number, missing, ~missing & ~ok


def parse_dates(values: pd.Series, date_format: str | None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Timestamps (``datetime64[us]``, wall-clock time: a time zone is dropped, not converted).

    Text is parsed with ``date_format`` (strptime), or as ISO 8601 when it is None.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_localize(None)
        parsed = parsed.astype("datetime64[us]")
        missing = parsed.isna().to_numpy()
        return parsed, missing, np.zeros(len(values), bool)
    if values.dtype == object and len(values) and values.dropna().map(lambda v: isinstance(v, dt.date)).all():
        parsed = pd.to_datetime(values).astype("datetime64[us]")  # Parquet date32 columns
        return parsed, parsed.isna().to_numpy(), np.zeros(len(values), bool)
    text = _text(values)
    missing = text.isna().to_numpy()
    try:
        parsed = pd.to_datetime(text, format=date_format or "ISO8601", errors="coerce")
    except (ValueError, TypeError):
        # Mixed UTC offsets: parse each value on its own rather than fail the batch.
        parsed = pd.Series([_one_date(v, date_format) for v in text], index=text.index)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[us]")
    invalid = ~missing & parsed.isna().to_numpy()
    return parsed, missing, invalid


def _one_date(value, date_format: str | None):
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return pd.NaT
    stamp = pd.to_datetime(value, format=date_format or "ISO8601", errors="coerce")
    return stamp.tz_localize(None) if stamp is not pd.NaT and stamp.tzinfo is not None else stamp


def parse_flag(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Booleans from ``true/false``, ``1/0``, ``yes/no``, ``y/n``, ``t/f``, ``return/sale``, ``r/s`` (any case)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        missing = values.isna().to_numpy()
        return values.fillna(False).to_numpy(bool), missing, np.zeros(len(values), bool)
    text = _text(values).str.lower()
    missing = text.isna().to_numpy()
    is_true = text.isin(TRUE_WORDS).to_numpy(bool)
    is_false = text.isin(FALSE_WORDS).to_numpy(bool)
    return is_true, missing, ~missing & ~is_true & ~is_false


def stable_id(*columns: pd.Series | np.ndarray) -> np.ndarray:
    """A non-negative int64 per row from a hash of ``columns``: the same values give the same id in any batch."""
    frame = pd.DataFrame({i: np.asarray(c) for i, c in enumerate(columns)})
    return (pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64) >> np.uint64(1)).astype(np.int64)


def parse_order_ids(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Order ids as Int64: whole numbers as they are, any other text as a stable 63-bit hash of it."""
    parsed, missing, invalid = parse_integer(values)
    if invalid.any():
        text = _text(values)[invalid].astype(object).to_numpy()
        parsed[invalid] = stable_id(text)
    return parsed, missing


# ---------------------------------------------------------------------------
# Duplicates across batches


class SeenKeys:
    """A set of 64-bit keys kept as sorted runs: 8 bytes a key, membership by binary search.

    A new run is merged with the previous ones while they are no larger, as
    in a binary counter, so there are at most log2(n) runs and each key is
    merged O(log n) times.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``keys`` were added before."""
        found = np.zeros(len(keys), bool)
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[pos] == keys
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add ``keys`` (assumed not yet present)."""
        if not len(keys):
            return
        run = np.sort(np.asarray(keys, dtype=np.uint64))
        while self._runs and len(self._runs[-1]) <= len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="stable")
        self._runs.append(run)


def _first_unseen(keys: np.ndarray, seen: SeenKeys) -> np.ndarray:
    """Mask of keys that are neither in ``seen`` nor repeat an earlier key of the same batch."""
    repeated = pd.Series(keys).duplicated(keep="first").to_numpy()
    return ~repeated & ~seen.contains(keys)


# ---------------------------------------------------------------------------
# The contract the accepted rows must meet (pandera)


@functools.cache
def contract(name: str):
    """The pandera schema a table written by ingestion must satisfy: ``transactions``, ``customers`` or ``products``.

    Built from :mod:`core.domain.tables` (required columns non-null, exactly its columns in order) plus the
    rules the ingestion promises: return lines have negative quantities and non-positive amounts,
    purchases non-negative amounts, unit prices are not negative, only returns name an original
    order, one row per customer and per SKU. Imported on first use: pandera takes about a second
    to import, which synthetic runs and ``status`` need not pay.
    """
    import pandera.pandas as pdx

    def schema(table, checks=(), unique=None):
        columns = {c.name: pdx.Column(nullable=not c.required) for c in table}
        return pdx.DataFrameSchema(columns, checks=list(checks), strict=True, ordered=True, unique=unique)

    if name == "transactions":
        return schema(TRANSACTION_TABLE, [
            pdx.Check(lambda f: (f["quantity"] < 0) == f["is_return"], name="returns have negative quantities"),
            pdx.Check(lambda f: (f["line_amount"] <= 0) | ~f["is_return"], name="return amounts are not positive"),
            pdx.Check(lambda f: (f["line_amount"] >= 0) | f["is_return"], name="purchase amounts are not negative"),
            pdx.Check(lambda f: f["unit_price"] >= 0, name="unit prices are not negative"),
            pdx.Check(lambda f: f["original_order_id"].isna() | f["is_return"],
                      name="only returns name an original order"),
        ])
    if name == "customers":
        return schema(CUSTOMER_TABLE, unique=["customer_id"])
    return schema(PRODUCT_TABLE, unique=["sku"])


def check_contract(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Validate ``frame`` against :func:`contract`; a failure is a bug in this module, reported as such."""
    from pandera.errors import SchemaErrors

    try:
        return contract(name).validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases[["column", "check", "failure_case"]].head(5).to_dict("records")
        raise AssertionError(f"ingestion produced a {name} table that breaks its contract: {cases}") from None


# ---------------------------------------------------------------------------
# Transactions


@dataclasses.dataclass
class _Reasons:
    """The first reason each row of a batch is rejected for (None = accepted)."""

    reason: np.ndarray

    @classmethod
    def none(cls, n: int) -> "_Reasons":
        return cls(np.full(n, None, dtype=object))

    def flag(self, mask: np.ndarray, reason: str) -> None:
        self.reason[np.asarray(mask, bool) & pd.isna(self.reason)] = reason

    @property
    def ok(self) -> np.ndarray:
        return pd.isna(self.reason)


def _reject_frame(raw: RawBatch, reasons: np.ndarray, mask: np.ndarray, theirs: dict[str, str],
                  with_row_text: bool) -> pd.DataFrame:
    """Rejected rows as text under the file's column names, with row number and reason."""
    inverse = {ours: t for t, ours in theirs.items()}
    mask = np.asarray(mask, bool)
    if not raw.malformed and not mask.any():
        names = ["source_row", "reason", *(_reject_column(inverse[o]) for o in raw.rows.columns),
                 *([ROW_TEXT] if with_row_text else [])]
        return pd.DataFrame({c: pd.Series([], dtype=np.int64 if c == "source_row" else object) for c in names})
    out = pd.DataFrame({"source_row": raw.source_row[mask], "reason": reasons[mask].astype(str)})
    for ours in raw.rows.columns:
        out[_reject_column(inverse[ours])] = raw.rows[ours][mask].astype("str").where(
            raw.rows[ours][mask].notna(), None).to_numpy(object)
    if with_row_text:
        out[ROW_TEXT] = None
    if raw.malformed:
        extra = pd.DataFrame({"source_row": [m[0] for m in raw.malformed], "reason": "malformed row"})
        if with_row_text:
            extra[ROW_TEXT] = [m[1] for m in raw.malformed]
        out = pd.concat([out, extra], ignore_index=True) if len(out) else extra.reindex(columns=out.columns)
    return out.astype({"source_row": np.int64}).sort_values("source_row", ignore_index=True)


def _reject_column(name: str) -> str:
    # Never clash with the columns the rejects table adds itself.
    return f"{name} (file)" if name in REJECT_META_COLUMNS + (ROW_TEXT,) else name


def reject_schema(source: SourceFile) -> pa.Schema:
    """Arrow schema of a rejects table for ``source``: row number, reason, then the file's columns as text."""
    fields = [pa.field("source_row", pa.int64()), pa.field("reason", pa.string())]
    fields += [pa.field(_reject_column(t), pa.string()) for t in source.columns]
    if source.format == "csv":
        fields.append(pa.field(ROW_TEXT, pa.string()))
    return pa.schema(fields)


class TransactionIngestor:
    """Accept or reject each row of a transaction log, batch by batch, and keep the totals.

    Parameters
    ----------
    source : SourceFile
        The log (its column mapping and decimal mark).
    hierarchy : Hierarchy
        Department and class names are matched against it.
    latest_date : date
        Rows dated after this day are rejected as in the future.
    date_format : str or None
        strptime format of text dates; None = ISO 8601.
    amount_is : str
        ``line`` or ``order`` (with ``order`` an order id may appear once per purchase and once per return).
    ids : IdSettings
        The kind of customer id (default: whole numbers).
    registry : IdRegistry, optional
        Collects every accepted customer id (shared with the customer file's ingestion).

    Use :meth:`add` on each :class:`RawBatch`, then :meth:`customer_ids`,
    :meth:`products` and :meth:`details`; :meth:`check_rejected_share` stops
    the stage when too many rows were rejected.
    """

    def __init__(self, source: SourceFile, hierarchy: Hierarchy, latest_date: dt.date,
                 date_format: str | None = None, amount_is: str = "line", ids: IdSettings = IdSettings(),
                 registry: customer_ids.IdRegistry | None = None) -> None:
        self.source = source
        self.ids = ids
        self.registry = registry if registry is not None else customer_ids.IdRegistry(ids.kind)
        self.mapped = set(source.columns.values())
        self.latest_date = pd.Timestamp(latest_date)
        self.date_format = date_format
        self.amount_is = amount_is
        self._departments = {name.strip().casefold(): name for name in hierarchy.departments}
        self._classes = {name: {c.strip().casefold(): c for c in (*d.classes, *d.data_quality_classes)}
                         for name, d in hierarchy.departments.items()}
        self._lines = SeenKeys()
        self._orders = SeenKeys()
        self._customers = np.zeros(0, dtype=np.int64)
        self._products: pd.DataFrame | None = None
        self.rows_in = 0
        self.rejected = collections.Counter()
        self.examples: dict[str, str] = {}
        self.unknown_departments = collections.Counter()
        self.unknown_classes = collections.Counter()
        self.return_lines = 0
        self.derived_order_ids = 0
        self.first_date: pd.Timestamp | None = None
        self.last_date: pd.Timestamp | None = None

    @property
    def rows_accepted(self) -> int:
        """Rows written to transactions.parquet so far."""
        return self.rows_in - self.rows_rejected

    @property
    def rows_rejected(self) -> int:
        """Rows written to rejects.parquet so far."""
        return sum(self.rejected.values())

    def add(self, raw: RawBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Accept or reject every row of ``raw``.

        Returns
        -------
        accepted : DataFrame
            Columns of :data:`core.domain.tables.TRANSACTION_COLUMNS`, checked against
            ``contract("transactions")``.
        rejected : DataFrame
            ``source_row``, ``reason`` and the rejected rows' values as text
            under the file's column names (see :func:`reject_schema`).
        """
        rows = raw.rows
        n = len(rows)
        why = _Reasons.none(n)
        texts = {c: _text(rows[c]) if not pd.api.types.is_numeric_dtype(rows[c].dtype)
                 and not pd.api.types.is_datetime64_any_dtype(rows[c].dtype) else rows[c] for c in rows.columns}
        why.flag(np.logical_and.reduce([texts[c].isna().to_numpy() for c in rows.columns]) if n else
                 np.zeros(0, bool), "empty row")

        parsed_ids = self.ids.parse(rows["customer_id"])
        flag_id_reasons(why, parsed_ids)
        when, missing, invalid = parse_dates(rows["order_date"], self.date_format)
        why.flag(missing, "missing order_date")
        why.flag(invalid, "invalid order_date")
        why.flag((when.dt.normalize() > self.latest_date).fillna(False).to_numpy(bool), "order_date in the future")
        amount, missing, invalid = parse_decimal(rows["line_amount"], self.source.decimal)
        why.flag(missing, "missing line_amount")
        why.flag(invalid, "invalid line_amount")

        quantity = np.ones(n)
        if "quantity" in self.mapped:
            q, missing, invalid = parse_decimal(rows["quantity"], self.source.decimal)
            bad = invalid | (~missing & ((q == 0) | (np.floor(np.nan_to_num(q)) != np.nan_to_num(q))
                                         | (np.abs(np.nan_to_num(q)) > _MAX_INT32)))
            why.flag(bad, "invalid quantity")
            quantity = np.where(missing | bad, 1.0, q)
        price = np.full(n, np.nan)
        if "unit_price" in self.mapped:
            price, _, invalid = parse_decimal(rows["unit_price"], self.source.decimal)
            why.flag(invalid, "invalid unit_price")
        discount = np.full(n, np.nan)
        if "discount_amount" in self.mapped:
            discount, _, invalid = parse_decimal(rows["discount_amount"], self.source.decimal)
            why.flag(invalid, "invalid discount_amount")
        flagged = np.zeros(n, bool)
        if "is_return" in self.mapped:
            flagged, _, invalid = parse_flag(rows["is_return"])
            why.flag(invalid, "invalid is_return")

        is_return = flagged | (np.nan_to_num(quantity) < 0) | (np.nan_to_num(amount) < 0)
        sign = np.where(is_return, -1.0, 1.0)
        lines = pd.DataFrame({
            "customer_id": parsed_ids.keys,
            "order_id": np.zeros(n, np.int64),
            "order_date": when.to_numpy("datetime64[us]"),
        })
        given_order = pd.Series(pd.NA, index=rows.index, dtype="Int64")
        if "order_id" in self.mapped:
            given_order, _ = parse_order_ids(rows["order_id"])
        derived = given_order.isna().to_numpy()
        if derived.any():
            # One order per customer, date (or timestamp) and direction: a return is its own transaction.
            given_order[derived] = stable_id(lines["customer_id"].to_numpy()[derived],
                                             lines["order_date"].to_numpy("datetime64[us]").astype(np.int64)[derived],
                                             is_return[derived])
        lines["order_id"] = given_order.fillna(0).to_numpy(np.int64)
        for name in ("channel", "sku", "brand", "brand_tier", "style", "color", "size"):
            lines[name] = texts[name].astype("str") if name in self.mapped else _null_text(n)
        department, cls, dept_text, class_text = self._hierarchy(texts, n)
        lines["department"] = department
        lines["class"] = cls
        lines["quantity"] = (sign * np.abs(quantity)).astype(np.int32)
        unit_price = np.where(np.isnan(price), np.abs(amount) / np.abs(quantity), np.abs(price))
        lines["unit_price"] = unit_price
        lines["discount_amount"] = sign * np.abs(discount)
        lines["line_amount"] = sign * np.abs(amount)
        lines["is_return"] = is_return
        original = pd.Series(pd.NA, index=rows.index, dtype="Int64")
        if "original_order_id" in self.mapped:
            original, _ = parse_order_ids(rows["original_order_id"])
            original[~is_return] = pd.NA
        lines["original_order_id"] = original.to_numpy()
        lines = lines[list(TRANSACTION_COLUMNS)]

        # Duplicates among the rows still accepted; the first occurrence in the file is kept.
        candidates = np.flatnonzero(why.ok)
        key_frame = lines.iloc[candidates].assign(_department=dept_text.iloc[candidates].to_numpy(),
                                                  _class=class_text.iloc[candidates].to_numpy())
        if LINE_NUMBER in self.mapped:
            # Two identical scans in one order are two lines when the log numbers its lines.
            key_frame[LINE_NUMBER] = texts[LINE_NUMBER].iloc[candidates].astype("str").to_numpy()
        keys = pd.util.hash_pandas_object(key_frame, index=False).to_numpy(np.uint64)
        fresh = _first_unseen(keys, self._lines)
        why.flag(np.isin(np.arange(n), candidates[~fresh]), "duplicate line")
        self._lines.add(keys[fresh])
        if self.amount_is == "order" and "order_id" in self.mapped:
            candidates = np.flatnonzero(why.ok & ~derived)
            keys = stable_id(lines["order_id"].to_numpy()[candidates], is_return[candidates]).astype(np.uint64)
            fresh = _first_unseen(keys, self._orders)
            why.flag(np.isin(np.arange(n), candidates[~fresh]), "duplicate order_id")
            self._orders.add(keys[fresh])

        keep = why.ok
        accepted = check_contract(lines.loc[keep].reset_index(drop=True), "transactions")
        self.registry.add(parsed_ids, keep)
        self._count(raw, why.reason, keep, accepted, dept_text[keep], class_text[keep], derived[keep], texts)
        rejected = _reject_frame(raw, why.reason, ~keep, self.source.columns, self.source.format == "csv")
        return accepted, rejected

    def _hierarchy(self, texts: dict[str, pd.Series], n: int) -> tuple[np.ndarray, np.ndarray, pd.Series, pd.Series]:
        """Canonical department and class names (Unknown when not in the hierarchy), and the file's own text.

        Names are looked up once per distinct (department, class) pair of the batch, not per line.
        """
        empty = _null_text(n)
        if "department" not in self.mapped:
            return np.full(n, UNKNOWN, object), np.full(n, UNKNOWN, object), empty, empty
        dept_text = texts["department"].reset_index(drop=True)
        class_text = texts["class"].reset_index(drop=True) if "class" in self.mapped else empty
        dept_codes, dept_names = pd.factorize(dept_text)
        class_codes, class_names = pd.factorize(class_text)
        pair = (dept_codes.astype(np.int64) + 1) * (len(class_names) + 1) + (class_codes + 1)
        pairs, inverse = np.unique(pair, return_inverse=True)
        canonical_dept = np.empty(len(pairs), object)
        canonical_class = np.empty(len(pairs), object)
        for i, code in enumerate(pairs):
            d, c = divmod(int(code), len(class_names) + 1)
            dept = self._departments.get(str(dept_names[d - 1]).casefold()) if d else None
            cls = self._classes[dept].get(str(class_names[c - 1]).casefold()) if dept and c else None
            canonical_dept[i] = dept or UNKNOWN
            canonical_class[i] = cls or UNKNOWN
        return canonical_dept[inverse], canonical_class[inverse], dept_text, class_text

    def _count(self, raw: RawBatch, reasons: np.ndarray, keep: np.ndarray, accepted: pd.DataFrame,
               dept_text: pd.Series, class_text: pd.Series, derived: np.ndarray,
               texts: dict[str, pd.Series]) -> None:
        self.rows_in += len(keep) + len(raw.malformed)
        for reason, count in collections.Counter(reasons[~keep]).items():
            self.rejected[reason] += count
        if raw.malformed:
            self.rejected["malformed row"] += len(raw.malformed)
            self.examples.setdefault("malformed row", raw.malformed[0][1])
        for reason in pd.unique(reasons[~keep]):
            if reason not in self.examples:
                first = int(np.flatnonzero(reasons == reason)[0])
                column = _REASON_COLUMN.get(reason, "")
                value = texts[column].iloc[first] if column in texts else None
                self.examples[reason] = f"row {raw.source_row[first]}" + (
                    f": {column} {value!r}" if value is not None and not pd.isna(value) else "")
        if accepted.empty:
            return
        self.return_lines += int(accepted["is_return"].sum())
        self.derived_order_ids += int(derived.sum())
        if "department" in self.mapped:
            unknown_dept = (accepted["department"] == UNKNOWN).to_numpy()
            names = dept_text.fillna("(empty)").to_numpy(object)[unknown_dept]
            self.unknown_departments.update(collections.Counter(names))
            unknown_class = (accepted["class"] == UNKNOWN).to_numpy() & ~unknown_dept
            if "class" in self.mapped:
                pairs = (accepted["department"].to_numpy(object)[unknown_class] + " / "
                         + class_text.fillna("(empty)").to_numpy(object)[unknown_class])
                self.unknown_classes.update(collections.Counter(pairs))
        first, last = accepted["order_date"].min(), accepted["order_date"].max()
        self.first_date = first if self.first_date is None else min(first, self.first_date)
        self.last_date = last if self.last_date is None else max(last, self.last_date)
        self._customers = np.union1d(self._customers, accepted["customer_id"].to_numpy(np.int64))
        if "sku" in self.mapped:
            self._add_products(accepted)

    def _add_products(self, lines: pd.DataFrame) -> None:
        with_sku = lines[lines["sku"].notna()]
        if with_sku.empty:
            return
        # A SKU's regular price is taken as the highest price paid for it on a purchase line.
        price = with_sku["unit_price"].where(~with_sku["is_return"])
        batch = (with_sku.assign(base_price=price.fillna(with_sku["unit_price"] * 0))
                 .groupby("sku", sort=False)
                 .agg(department=("department", "first"), **{"class": ("class", "first")},
                      brand=("brand", "first"), brand_tier=("brand_tier", "first"), style=("style", "first"),
                      color=("color", "first"), size=("size", "first"), base_price=("base_price", "max")))
        if self._products is None:
            self._products = batch
            return
        prices = pd.concat([self._products["base_price"], batch["base_price"]]).groupby(level=0).max()
        # The first line seen for a SKU names its attributes; later batches fill only what it lacked.
        self._products = self._products.combine_first(batch)
        self._products["base_price"] = prices

    def customer_ids(self) -> np.ndarray:
        """Sorted distinct customer ids of the accepted lines."""
        return self._customers

    def products(self) -> pd.DataFrame:
        """One row per SKU seen on an accepted line, columns of :data:`core.domain.tables.PRODUCT_COLUMNS`.

        ``item_id`` is the SKU itself; attributes the log does not give stay null, and
        ``base_price`` is the highest price paid.
        """
        if self._products is None:
            return _empty(PRODUCT_SCHEMA)
        out = self._products.reset_index()
        out["item_id"] = out["sku"]
        out["size_scale"] = None
        out = out[list(PRODUCT_COLUMNS)].sort_values("sku", ignore_index=True)
        return check_contract(_typed(out, PRODUCT_SCHEMA), "products")

    def details(self) -> dict:
        """Counts for the manifest: rows in = accepted + rejected, per reason, unknown names, dates."""
        return {
            "file": str(self.source.path),
            "format": self.source.format,
            "columns": {ours: theirs for theirs, ours in self.source.columns.items()},
            "amount_is": self.amount_is,
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "rows_rejected": self.rows_rejected,
            "rejected_share": round(self.rows_rejected / self.rows_in, 6) if self.rows_in else 0.0,
            "rejected_by_reason": {r: self.rejected[r] for r in REJECT_REASONS if self.rejected[r]},
            "first_rejected_example": {r: self.examples[r] for r in REJECT_REASONS if r in self.examples},
            "latest_date": self.latest_date.date().isoformat(),
            "has_hierarchy": "department" in self.mapped,
            "unknown_departments": dict(sorted(self.unknown_departments.items())),
            "unknown_classes": dict(sorted(self.unknown_classes.items())),
            "derived_order_ids": self.derived_order_ids,
            "return_lines": self.return_lines,
            "first_date": self.first_date.date().isoformat() if self.first_date is not None else None,
            "last_date": self.last_date.date().isoformat() if self.last_date is not None else None,
        }

    def check_rejected_share(self, max_share: float, rejects_path: Path | None = None) -> None:
        """Stop the stage when the file had no rows, or when more than ``max_share`` of them were rejected."""
        check_rejected_share(self.source, self.rows_in, self.rejected, self.examples, max_share, rejects_path)


def check_rejected_share(source: SourceFile, rows_in: int, rejected: dict[str, int], examples: dict[str, str],
                         max_share: float, rejects_path: Path | None) -> None:
    """Raise :class:`PipelineError` for a file without rows or with too large a rejected share."""
    if rows_in == 0:
        raise PipelineError(f"{source.path}: no data rows (only a header); {source.key}.file must name a file "
                            f"with at least one row")
    n_rejected = sum(rejected.values())
    share = n_rejected / rows_in
    if share <= max_share:
        return
    top = ", ".join(f"{reason} {count:,} (first: {examples.get(reason, '-')})"
                    for reason, count in sorted(rejected.items(), key=lambda rc: -rc[1])[:4])
    where = f"; every rejected row and its reason is in {rejects_path}" if rejects_path else ""
    raise PipelineError(
        f"{source.path}: {n_rejected:,} of {rows_in:,} rows rejected ({share:.1%}), more than "
        f"ingest.max_rejected_share ({max_share:.1%}): {top}{where}. Fix the file, or the column mapping "
        f"({source.key}.columns), ingest.date_format or ingest.csv settings{_id_hint(rejected)}; or raise "
        f"ingest.max_rejected_share if these rows may be left out")


def _id_hint(rejected: dict[str, int]) -> str:
    """What to change when customer ids were rejected for their kind or length."""
    hints = []
    if rejected.get("customer_id of another kind"):
        hints.append("; the customer_id column holds both whole numbers and text ids: if both are real ids, set "
                     "ingest.customer_id.kind: text to take every id as written (then 123 and 00123 are two "
                     "customers); if the numbers lost their leading zeros in a spreadsheet, export the column "
                     "as text")
    if rejected.get("customer_id too long"):
        hints.append("; raise ingest.customer_id.max_length if ids that long are real")
    return "".join(hints)


def _null_text(n: int) -> pd.Series:
    """``n`` missing text values (the dtype text columns read back as)."""
    return pd.Series(pa.nulls(n, pa.large_string()).to_pandas(), dtype="str")


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _typed(frame: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """``frame`` with the pandas dtypes the table's schema reads back as."""
    dtypes = _empty(schema).dtypes
    return frame.astype({c: dtypes[c] for c in frame.columns})


# ---------------------------------------------------------------------------
# Customers


_PROFILE_PARSERS = {"age": "integer", "has_children": "flag", "signup_date": "date"}


def ingest_customers(batches: Iterator[RawBatch], source: SourceFile, date_format: str | None,
                     ids: IdSettings = IdSettings(), registry: customer_ids.IdRegistry | None = None,
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Accept or reject each row of a customer profile file.

    Its ids are read as the log's (``ids``); ``registry`` collects the accepted ones.

    Returns
    -------
    profile : DataFrame
        One row per accepted customer: ``customer_id`` and the mapped profile columns, typed as in
        :data:`core.domain.tables.CUSTOMER_TABLE`.
    rejected : DataFrame
        As for transactions (:func:`reject_schema`).
    counts : dict
        ``rows_in``, ``rows_accepted``, ``rows_rejected``, ``rejected_by_reason``, ``examples``.
    """
    kept, rejects = [], []
    seen = SeenKeys()
    rejected = collections.Counter()
    examples: dict[str, str] = {}
    rows_in = 0
    dtypes = _empty(CUSTOMER_SCHEMA).dtypes
    for raw in batches:
        rows = raw.rows
        n = len(rows)
        why = _Reasons.none(n)
        why.flag(np.logical_and.reduce([_text(rows[c]).isna().to_numpy() for c in rows.columns]) if n
                 else np.zeros(0, bool), "empty row")
        parsed_ids = ids.parse(rows["customer_id"])
        flag_id_reasons(why, parsed_ids)
        profile = pd.DataFrame({"customer_id": parsed_ids.keys})
        for ours in rows.columns:
            if ours == "customer_id":
                continue
            kind = _PROFILE_PARSERS.get(ours, "text")
            if kind == "integer":
                value, _, invalid = parse_integer(rows[ours])
                invalid = invalid | ~(value.fillna(0).between(0, 130)).to_numpy(bool)
                value = value.mask(pd.Series(invalid, index=value.index))
            elif kind == "flag":
                flag, missing, invalid = parse_flag(rows[ours])
                value = pd.array(flag, dtype="boolean")
                value[missing | invalid] = pd.NA
            elif kind == "date":
                value, _, invalid = parse_dates(rows[ours], date_format)
            else:
                value, invalid = _text(rows[ours]), np.zeros(n, bool)
            why.flag(invalid, f"invalid {ours}")
            profile[ours] = np.asarray(value) if kind != "flag" else value
        candidates = np.flatnonzero(why.ok)
        keys = profile["customer_id"].to_numpy()[candidates].astype(np.uint64)
        fresh = _first_unseen(keys, seen)
        why.flag(np.isin(np.arange(n), candidates[~fresh]), "duplicate customer_id")
        seen.add(keys[fresh])
        keep = why.ok
        if registry is not None:
            registry.add(parsed_ids, keep)
        kept.append(profile.loc[keep])
        rejects.append(_reject_frame(raw, why.reason, ~keep, source.columns, source.format == "csv"))
        rows_in += n + len(raw.malformed)
        rejected.update(collections.Counter(why.reason[~keep]))
        rejected["malformed row"] += len(raw.malformed)
        for reason in pd.unique(why.reason[~keep]):
            examples.setdefault(reason, f"row {raw.source_row[int(np.flatnonzero(why.reason == reason)[0])]}")
    rejected = +rejected  # drop zero counts
    profile = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame({"customer_id": []})
    profile = profile.astype({c: dtypes[c] for c in profile.columns})
    rejected_rows = pd.concat(rejects, ignore_index=True) if rejects else _empty(reject_schema(source))
    counts = {"file": str(source.path), "format": source.format,
              "columns": {ours: theirs for theirs, ours in source.columns.items()},
              "rows_in": rows_in, "rows_accepted": rows_in - sum(rejected.values()),
              "rows_rejected": sum(rejected.values()),
              "rejected_by_reason": {r: rejected[r] for r in CUSTOMER_REJECT_REASONS if rejected[r]}
              | {r: c for r, c in rejected.items() if r not in CUSTOMER_REJECT_REASONS},
              "first_rejected_example": {r: examples[r] for r in CUSTOMER_REJECT_REASONS if r in examples}}
    return profile, rejected_rows, counts


def build_customers(customer_ids: np.ndarray, profile: pd.DataFrame | None) -> pd.DataFrame:
    """customers.parquet: every customer of the lines or the profile file, profile columns null where not given.

    ``persona`` and the generator's other ground truth are always null for a retailer's data.
    """
    ids = np.asarray(customer_ids, dtype=np.int64)
    if profile is not None:
        ids = np.union1d(ids, profile["customer_id"].to_numpy(np.int64))
    dtypes = _empty(CUSTOMER_SCHEMA).dtypes
    out = pd.DataFrame({c: ids if c == "customer_id" else pd.Series([None] * len(ids), dtype=dtypes[c])
                        for c in CUSTOMER_COLUMNS})
    if profile is not None and len(profile):
        joined = out[["customer_id"]].merge(profile, on="customer_id", how="left", validate="one_to_one")
        for column in profile.columns:
            if column != "customer_id":
                out[column] = joined[column].to_numpy()
    out = _typed(out, CUSTOMER_SCHEMA)
    return check_contract(out, "customers")


__all__ = ["IdSettings", "id_settings", "id_details", "SourceFile", "RawBatch", "read_batches", "source_files", "TransactionIngestor", "SeenKeys",
           "ingest_customers", "build_customers", "reject_schema", "check_rejected_share", "parse_integer",
           "parse_decimal", "parse_dates", "parse_flag", "REJECT_REASONS", "CUSTOMER_REJECT_REASONS",
           "contract", "check_contract", "UNKNOWN", "TRANSACTION_TARGETS", "CUSTOMER_TARGETS", "REQUIRED_TRANSACTION",
           "REQUIRED_CUSTOMER"]
