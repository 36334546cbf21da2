"""Stage 05's one-scan spend tables (core/profile_export/line_totals.py) against hand-worked values and the
pandas functions they replace in the stage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.profile_export.line_totals import spend_by_segment
from core.profile_export.profiling import attribute_spend_by_segment, monthly_spend_by_segment

LINES = pd.DataFrame({
    "customer_id": [1, 1, 1, 2, 2, 3, 1, 2],
    "order_date": pd.to_datetime(["2023-12-01", "2023-12-20", "2023-06-01", "2023-06-05", "2023-01-09",
                                  "2023-03-03", "2023-06-02", "2024-01-05"]),
    "sku": ["A", "B", "A", "C", "A", "A", "B", "A"],
    "line_amount": [60.0, 20.0, 20.0, 50.0, 50.0, 99.0, -20.0, 70.0],
    "is_return": [False, False, False, False, False, False, True, False],
    # The lines' own columns of the same name are not what the catalog says: the catalog counts.
    "brand_tier": ["x", "x", "x", "x", "x", "x", "x", "x"],
})
PRODUCTS = pd.DataFrame({"sku": ["A", "B"], "brand_tier": ["premium", "value"], "style": ["casual", None]})
SEGMENT_OF = pd.Series({1: 7, 2: 8})  # customer 3 is not segmented
LAST_DAY = pd.Timestamp("2023-12-31")  # the line of 2024-01-05 is after it


def test_spend_by_segment_sums_purchases_by_month_and_catalog_attribute(tmp_path):
    path = tmp_path / "transactions.parquet"
    LINES.to_parquet(path, index=False)
    monthly, mixes = spend_by_segment(path, PRODUCTS, SEGMENT_OF, LAST_DAY)
    # Segment 7 (customer 1): December 60 + 20, June 20 (the return of -20 is not a purchase).
    assert monthly.loc[7, 12] == 80.0 and monthly.loc[7, 6] == 20.0 and monthly.loc[7].sum() == 100.0
    # Segment 8 (customer 2): June 50 (SKU C, not in the catalog), January 50; 2024's line is out.
    assert monthly.loc[8, 6] == 50.0 and monthly.loc[8, 1] == 50.0 and monthly.loc[8].sum() == 100.0
    assert list(monthly.index) == [7, 8] and list(monthly.columns) == list(range(1, 13))
    assert sorted(mixes) == ["brand_tier", "style"]
    assert mixes["brand_tier"].loc[7].to_dict() == {"premium": 80.0, "value": 20.0}
    assert mixes["brand_tier"].loc[8].to_dict() == {"premium": 50.0, "value": 0.0}  # C has no tier
    assert mixes["style"].loc[7].to_dict() == {"casual": 80.0}


def test_spend_by_segment_gives_what_the_pandas_functions_give(tmp_path):
    path = tmp_path / "transactions.parquet"
    LINES.to_parquet(path, index=False)
    lines = LINES[LINES["order_date"].dt.normalize() <= LAST_DAY].drop(columns="brand_tier")
    monthly, mixes = spend_by_segment(path, PRODUCTS, SEGMENT_OF, LAST_DAY)
    pd.testing.assert_frame_equal(monthly, monthly_spend_by_segment(lines, SEGMENT_OF), check_names=False)
    expected = attribute_spend_by_segment(lines, PRODUCTS, SEGMENT_OF)
    assert sorted(mixes) == sorted(expected)
    for attribute, table in expected.items():
        pd.testing.assert_frame_equal(mixes[attribute], table, check_names=False)


def test_spend_by_segment_with_sparse_ids_missing_skus_and_many_batches(tmp_path, monkeypatch):
    """Customer keys far apart (the lookup by index, not by array), SKUs missing or unknown to the catalog,
    and lines split over several batches give what the pandas functions give."""
    from core.profile_export import line_totals

    rng = np.random.default_rng(4)
    n = 500
    lines = pd.DataFrame({
        "customer_id": rng.choice([10**12 + 1, 10**12 + 7, 3, 10**15], n),
        "order_date": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 500, n), unit="D"),
        "sku": pd.Series(rng.choice(["A", "B", "C", None], n), dtype="string"),
        "line_amount": rng.integers(-500, 5000, n) / 100.0,
        "is_return": rng.random(n) < 0.1,
    })
    path = tmp_path / "transactions.parquet"
    lines.to_parquet(path, index=False, row_group_size=64)
    monkeypatch.setattr(line_totals, "BATCH_ROWS", 50)
    segment_of = pd.Series({10**12 + 1: 4, 10**12 + 7: 9, 3: 4})  # 10**15 is not segmented
    monthly, mixes = spend_by_segment(path, PRODUCTS, segment_of, LAST_DAY)
    kept = lines[lines["order_date"] <= LAST_DAY]
    pd.testing.assert_frame_equal(monthly, monthly_spend_by_segment(kept, segment_of), check_names=False)
    expected = attribute_spend_by_segment(kept, PRODUCTS, segment_of)
    assert sorted(mixes) == sorted(expected)
    for attribute, table in expected.items():
        pd.testing.assert_frame_equal(mixes[attribute], table, check_names=False, check_column_type=False)


def test_spend_totals_over_batches_read_elsewhere_give_the_file_scan(tmp_path):
    """Stage 05 adds the batches of the next-best classes' read (more columns, SKU dictionary-encoded, every
    row group its own dictionary) to SpendTotals: the same tables as spend_by_segment's own read."""
    import pyarrow.parquet as pq

    from core.profile_export.line_totals import SpendTotals

    rng = np.random.default_rng(9)
    n = 400
    lines = pd.DataFrame({
        "customer_id": rng.choice([1, 2, 3], n),
        "order_date": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
        "department": "D", "class": "C",
        # Row groups with SKUs of their own: the dictionary changes from one batch to the next.
        "sku": pd.Series(np.where(np.arange(n) < 200, rng.choice(["A", "B"], n), rng.choice(["B", "C", None], n)),
                         dtype="string"),
        "line_amount": rng.integers(-500, 5000, n) / 100.0,
        "is_return": rng.random(n) < 0.1,
    })
    path = tmp_path / "transactions.parquet"
    lines.to_parquet(path, index=False, row_group_size=100)
    monthly, mixes = spend_by_segment(path, PRODUCTS, SEGMENT_OF, LAST_DAY)
    totals = SpendTotals(PRODUCTS, SEGMENT_OF, LAST_DAY)
    for batch in pq.ParquetFile(path, read_dictionary=["sku", "department"]).iter_batches(batch_size=60):
        totals.add(batch)
    got_monthly, got_mixes = totals.result()
    pd.testing.assert_frame_equal(got_monthly, monthly)
    assert sorted(got_mixes) == sorted(mixes)
    for attribute, table in mixes.items():
        pd.testing.assert_frame_equal(got_mixes[attribute], table)
