"""Each segment's purchase spend by calendar month and by product attribute, in one scan of the order lines.

What :func:`~core.profile_export.profiling.monthly_spend_by_segment` and
:func:`~core.profile_export.profiling.attribute_spend_by_segment` compute on
a DataFrame of lines, computed by DuckDB over ``transactions.parquet``: one
multi-threaded pass (``GROUPING SETS``) instead of a pandas loop over batches
that looked up every line's segment and joined every line's SKU to the
catalog. At a million customers (135 M lines) that loop was most of stage
05's time. Money is summed in whole pence, so the totals are exact whatever
order the engine's threads add them in, and the same input gives the same
tables.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd


def spend_by_segment(transactions: Path, products: pd.DataFrame, segment_of: pd.Series, last_day,
                     attributes: Iterable[str] = ("brand_tier", "size", "style"),
                     engine_memory_mb: int = 2048) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Purchase spend per segment by month and by each product attribute, from a Parquet file of order lines.

    Parameters
    ----------
    transactions : Path
        ``transactions.parquet`` (``customer_id``, ``order_date``, ``sku``,
        ``line_amount``, ``is_return``).
    products : DataFrame
        ``sku`` and the attribute columns (those absent are skipped).
    segment_of : Series
        Segment id per customer id; lines of other customers are left out.
    last_day : datetime-like
        Lines after this day are left out.
    attributes : iterable of str
    engine_memory_mb : int
        DuckDB's memory limit; beyond it, it spills to a temporary folder.

    Returns
    -------
    (DataFrame, dict of str to DataFrame)
        Segments x months 1..12 (0 where nothing was bought), and per
        attribute present in ``products`` segments x values; both as the
        pandas functions give them (integer segment index, sorted columns).
    """
    import duckdb

    present = [a for a in attributes if a in products.columns]
    day = pd.Timestamp(last_day).date()
    path = str(transactions).replace("'", "''")
    segments = pd.DataFrame({"customer_id": segment_of.index.to_numpy(np.int64),
                             "segment": segment_of.to_numpy(np.int64)})
    sets = ", ".join(["(segment, month)", *[f"(segment, {a})" for a in present]])
    with tempfile.TemporaryDirectory(prefix="profile-spill-") as spill:
        con = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": spill,
                                     "memory_limit": f"{engine_memory_mb}MB"})
        try:
            con.register("segments", segments)
            con.register("products", products[["sku", *present]].drop_duplicates("sku"))
            # The catalog's attributes, not the lines' own columns of the same names (as the pandas functions).
            long = con.execute(f"""
                WITH bought AS (
                    SELECT s.segment, month(l.order_date) AS month, {''.join(f'p.{a}, ' for a in present)}
                           CAST(round(l.line_amount * 100) AS BIGINT) AS cents
                    FROM read_parquet('{path}') l
                    JOIN segments s USING (customer_id)
                    LEFT JOIN products p ON l.sku = p.sku
                    WHERE NOT l.is_return AND CAST(l.order_date AS DATE) <= DATE '{day}')
                SELECT segment, month, {''.join(f'{a}, ' for a in present)}GROUPING(month) = 0 AS by_month,
                       sum(cents) AS cents
                FROM bought GROUP BY GROUPING SETS ({sets})""").df()
        finally:
            con.close()
    long["spend"] = long["cents"].to_numpy(np.float64) / 100.0
    by_month = long[long["by_month"].to_numpy(bool)]
    monthly = (by_month.groupby(["segment", "month"])["spend"].sum().unstack("month")
               .reindex(columns=range(1, 13)).fillna(0.0).rename(index=int))
    monthly.columns.name = "month"
    mixes = {}
    for attribute in present:
        rows = long[long[attribute].notna() & ~long["by_month"].to_numpy(bool)]
        mixes[attribute] = (rows.groupby(["segment", attribute])["spend"].sum().unstack(attribute).fillna(0.0)
                            .rename(index=int))
    return monthly, mixes
