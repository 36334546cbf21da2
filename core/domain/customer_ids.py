"""Customer ids as the retailer writes them, and the integer keys the pipeline joins on.

Inside the pipeline every table keys customers by an int64 ``customer_id``
(DuckDB joins, NumPy sorts and Parquet files stay compact). A retailer's ids
come in two kinds:

* **number**: whole numbers, written ``13085`` or, as spreadsheet exports
  do, ``13085.0``. The key is the number itself, so transactions.parquet
  shows the retailer's own ids; outputs carry them as int64.
* **text**: anything else (``C00001``, ``00123`` with its leading zeros, a
  UUID). The key is a stable 63-bit hash of the text (the same text gives
  the same key in every run and batch, so stage 04 can follow customers
  between runs); outputs carry the text exactly as written, without the
  spaces around it.

Stage 01 writes the mapping, ``customer_ids.parquet``: ``customer_id`` (the
key) and ``source_customer_id`` (int64 for number ids, text for text ids).
The outputs people and other systems join on (``customers_with_segments``,
``recommendations``, ``customer_value``, ``excluded_customers`` and the
score command's output) carry ``source_customer_id`` under the name
``customer_id`` (:func:`with_source_ids`).

``ingest.customer_id.kind`` says which kind a file holds; ``auto`` (the
default) takes the kind of most of its rows (:func:`majority_kind`) and
rejects the rows of the other kind, counted and kept with their reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ID_KINDS = ("auto", "number", "text")
"""Values of ``ingest.customer_id.kind``."""

SOURCE_ID = "source_customer_id"
"""The mapping's column holding the id as the source wrote it."""

MAX_NUMBER_DIGITS = 18
"""Longer digit strings do not fit an int64 safely: they are text ids."""

# A whole number as a spreadsheet writes it: no sign, no leading zero, an optional fraction of zeros.
_NUMBER_SHAPED = r"^(0|[1-9]\d{0,17})(\.0+)?$"
# With kind: number the retailer has said ids are numbers: leading zeros are then just padding.
_NUMBER_GIVEN = r"^\d{1,18}(\.0+)?$"
_CONTROL = r"[\x00-\x1f\x7f]"


@dataclasses.dataclass(frozen=True)
class ParsedIds:
    """A batch of customer ids parsed for one kind.

    Attributes
    ----------
    keys : ndarray of int64
        The pipeline's key per row; 0 where the row is rejected.
    source : ndarray of object
        The id as outputs carry it (int for number ids, str for text ids); None where rejected.
    raw : Series
        The values as read, before trimming (to find ids written several ways).
    missing, too_long, invalid, other_kind : ndarray of bool
        Why a row is rejected: no id; longer than ``max_length``; not an id of
        ``kind`` (a non-whole number, control characters, text when ids are
        numbers); or an id of the other kind when the kind was decided by the
        file's majority.
    """

    keys: np.ndarray
    source: np.ndarray
    raw: pd.Series
    missing: np.ndarray
    too_long: np.ndarray
    invalid: np.ndarray
    other_kind: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Rows with a usable id."""
        return ~(self.missing | self.too_long | self.invalid | self.other_kind)


def _stripped(values: pd.Series) -> pa.Array:
    """The values as stripped text in Arrow (null where empty)."""
    if values.dtype == object:
        arr = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                        for v in values.to_numpy(object)], type=pa.string())
    elif pd.api.types.is_string_dtype(values.dtype):
        arr = pa.array(values).cast(pa.string())  # Arrow-backed text: no Python objects
    else:
        arr = pa.array(values.astype("str").to_numpy(object, na_value=None), type=pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _matches(arr: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.match_substring_regex(arr, pattern).fill_null(False).to_numpy(zero_copy_only=False), bool)


def number_shaped(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which values are whole numbers (written without sign or leading zero), and which are missing.

    Numeric columns (a Parquet int or float column) count by value: a whole,
    non-negative number with at most :data:`MAX_NUMBER_DIGITS` digits.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        number = values.to_numpy(np.float64, na_value=np.nan)
        missing = np.isnan(number)
        whole = ~missing & np.isfinite(number) & (np.floor(number) == number) & (number >= 0) & (number < 1e18)
        return whole, missing
    arr = _stripped(values)
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    return _matches(arr, _NUMBER_SHAPED), missing


def majority_kind(number_rows: int, text_rows: int) -> str:
    """``number`` or ``text``: the kind most rows have (text on a tie: it keeps every character)."""
    return "number" if number_rows > text_rows else "text"


def text_keys(text: np.ndarray) -> np.ndarray:
    """Stable non-negative int64 keys of text ids: a 63-bit hash of each id's UTF-8 text.

    pandas' SipHash with its fixed key: the same text gives the same key on
    every machine, in every batch and every run.
    """
    if len(text) == 0:
        return np.zeros(0, np.int64)
    hashed = pd.util.hash_array(np.asarray(text, dtype=object), categorize=False)
    return (hashed >> np.uint64(1)).astype(np.int64)


def parse_customer_ids(values: pd.Series, kind: str, max_length: int, decided: bool = False) -> ParsedIds:
    """Parse a batch of customer ids as ``kind`` (``number`` or ``text``).

    Parameters
    ----------
    values : Series
        As read: text (CSV, a Parquet string column) or numbers (a Parquet int or float column).
    kind : {"number", "text"}
    max_length : int
        Longest id accepted, in characters (after trimming).
    decided : bool
        True when ``kind`` is the file's majority (``ingest.customer_id.kind: auto``): rows
        of the other kind are then ``other_kind``, not ``invalid``.
    """
    n = len(values)
    raw = values.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        whole, missing = number_shaped(values)
        number = np.where(whole, values.to_numpy(np.float64, na_value=np.nan), 0).astype(np.int64)
        invalid = ~missing & ~whole  # 1.5, -3, inf: no id of either kind
        # Numbers where text ids are expected: the text of their digits, or the other kind when decided.
        other = whole & (kind == "text") & decided
        ok = whole & ~other
        source = np.full(n, None, object)
        source[ok] = [int(v) if kind == "number" else str(int(v)) for v in number[ok]]
        keys = np.zeros(n, np.int64)
        keys[ok] = number[ok] if kind == "number" else text_keys(source[ok])
        return ParsedIds(keys, source, raw, missing, np.zeros(n, bool), invalid, other)
    arr = _stripped(values)
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    lengths = pc.utf8_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    too_long = ~missing & (lengths > max_length)
    text = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
    shaped = _matches(arr, _NUMBER_SHAPED)
    if kind == "number":
        ok_shape = _matches(arr, _NUMBER_GIVEN) if not decided else shaped
        bad = ~missing & ~too_long & ~ok_shape
        ok = ~missing & ~too_long & ok_shape
        digits = pc.replace_substring_regex(arr, r"\.0+$", "")
        kept = pc.if_else(pa.array(ok), digits, pa.scalar(None, pa.string()))
        keys = pc.cast(kept, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        source = np.full(n, None, object)
        source[ok] = [int(k) for k in keys[ok]]
        return ParsedIds(keys, source, raw, missing, too_long, bad & ~decided, bad & decided)
    control = _matches(arr, _CONTROL)
    other = ~missing & ~too_long & shaped if decided else np.zeros(n, bool)
    invalid = ~missing & ~too_long & control & ~other
    ok = ~missing & ~too_long & ~invalid & ~other
    keys = np.zeros(n, np.int64)
    # A batch repeats each customer's id on every line: hash each distinct id once.
    codes, distinct = pd.factorize(text[ok])
    keys[ok] = text_keys(np.asarray(distinct, dtype=object))[codes]
    source = np.where(ok, text, None).astype(object)
    return ParsedIds(keys, source, raw, missing, too_long, invalid, other)


class IdRegistry:
    """The distinct ids of the accepted rows: key, id as outputs carry it, and every spelling seen.

    Kept as (key, source, spelling) triples, deduplicated as they come, so
    memory follows the number of customers, not of lines.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._parts: list[pd.DataFrame] = []
        self._rows = 0
        self._compact_at = 200_000

    def add(self, parsed: ParsedIds, accepted: np.ndarray) -> None:
        """Record the ids of the ``accepted`` rows of a parsed batch."""
        if not accepted.any():
            return
        # One row per distinct spelling of the batch (its first line), not per line.
        rows = np.flatnonzero(accepted)
        _, first = np.unique(pd.factorize(parsed.raw.take(rows))[0], return_index=True)
        rows = rows[first]
        part = pd.DataFrame({"key": parsed.keys[rows], "source": parsed.source[rows],
                             "spelling": [str(v) for v in parsed.raw.take(rows)]})
        part = part.drop_duplicates(ignore_index=True)
        self._parts.append(part)
        self._rows += len(part)
        if self._rows > self._compact_at:
            self._compact()
            self._compact_at = max(self._compact_at, 2 * self._rows)

    def _compact(self) -> pd.DataFrame:
        whole = (pd.concat(self._parts, ignore_index=True).drop_duplicates(ignore_index=True) if self._parts
                 else pd.DataFrame({"key": np.zeros(0, np.int64), "source": [], "spelling": []}))
        self._parts, self._rows = [whole], len(whole)
        return whole

    def mapping(self) -> pd.DataFrame:
        """``customer_id`` (key) and ``source_customer_id`` per customer, sorted by key.

        Raises
        ------
        ValueError
            When two different text ids have the same key (a hash collision:
            about 1 in 10^7 for ten million customers), naming both.
        """
        whole = self._compact()
        pairs = whole[["key", "source"]].drop_duplicates(ignore_index=True)
        clash = pairs["key"].duplicated(keep=False)
        if clash.any():
            shown = pairs[clash].head(2)["source"].tolist()
            raise ValueError(f"customer ids {shown[0]!r} and {shown[1]!r} have the same 63-bit key; rename one of "
                             f"them in the source file")
        pairs = pairs.sort_values("key", ignore_index=True)
        return mapping_frame(pairs["key"].to_numpy(np.int64), pairs["source"].to_numpy(object), self.kind)

    def several_spellings(self, limit: int = 3) -> tuple[int, list[list[str]]]:
        """How many customers' ids were written several ways (``' C1'`` and ``'C1'``, ``7`` and ``7.0``).

        Such rows are one customer. Returns the count and up to ``limit`` examples (the spellings of one id).
        """
        whole = self._compact()
        counts = whole.groupby("key")["spelling"].nunique()
        several = counts[counts > 1]
        examples = [sorted(whole.loc[whole["key"] == key, "spelling"].tolist())[:4] for key in several.index[:limit]]
        return int(len(several)), examples


def mapping_frame(keys: np.ndarray, source: np.ndarray, kind: str) -> pd.DataFrame:
    """The mapping table: ``customer_id`` (int64 key) and ``source_customer_id`` typed by ``kind``."""
    typed = (np.asarray(source, dtype=np.int64) if kind == "number"
             else pd.array(np.asarray(source, dtype=object), dtype="str"))
    return pd.DataFrame({"customer_id": np.asarray(keys, dtype=np.int64), SOURCE_ID: typed})


def identity_mapping(keys: np.ndarray) -> pd.DataFrame:
    """The mapping of generated data: whole-number ids that are their own key."""
    keys = np.asarray(keys, dtype=np.int64)
    return mapping_frame(keys, keys, "number")


def mapping_kind(mapping: pd.DataFrame) -> str:
    """``number`` or ``text``: the kind a mapping's source ids are."""
    return "number" if pd.api.types.is_integer_dtype(mapping[SOURCE_ID].dtype) else "text"


def with_source_ids(frame: pd.DataFrame, mapping: pd.DataFrame, column: str = "customer_id") -> pd.DataFrame:
    """``frame`` with its ``column`` of keys replaced by the ids as the source wrote them.

    Raises
    ------
    ValueError
        When a key is not in the mapping (the tables come from different runs of stage 01).
    """
    if mapping_kind(mapping) == "number" and (mapping["customer_id"].to_numpy()
                                              == mapping[SOURCE_ID].to_numpy()).all():
        return frame  # number ids are their own keys
    lookup = pd.Series(mapping[SOURCE_ID].array, index=mapping["customer_id"].to_numpy())
    keys = frame[column].to_numpy(np.int64)
    found = pd.Index(lookup.index).get_indexer(keys)
    if (found < 0).any():
        raise ValueError(f"{int((found < 0).sum()):,} customer key(s) of the table are not in the customer id "
                         f"mapping (e.g. {keys[found < 0][0]})")
    out = frame.copy()
    out[column] = pd.Series(lookup.array.take(found), index=frame.index)
    return out


def to_keys(source_ids: pd.Series, mapping: pd.DataFrame) -> np.ndarray:
    """The keys of ids as the source wrote them (the inverse of :func:`with_source_ids`).

    Raises
    ------
    ValueError
        When an id is not in the mapping.
    """
    lookup = pd.Index(mapping[SOURCE_ID].array)
    found = lookup.get_indexer(pd.Index(source_ids.array))
    if (found < 0).any():
        raise ValueError(f"{int((found < 0).sum()):,} customer id(s) are not in the customer id mapping "
                         f"(e.g. {source_ids.to_numpy()[found < 0][0]!r})")
    return mapping["customer_id"].to_numpy(np.int64)[found]
