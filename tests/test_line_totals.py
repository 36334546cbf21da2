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


def _batch_the_old_way(totals, batch):
    """SpendTotals.add as it was before the spare segment and month (helper s05d): the kept lines picked out
    first, one cell per (segment, month, combination); the same cube layout, so result() reads it."""
    from core.profile_export import line_totals

    segment, month, cents, kept = line_totals._purchases(batch, totals.code_of, totals.end)
    combo = totals._skus(batch.column("sku"))[kept]
    totals.cube.add((segment * line_totals.SPARE_MONTHS + month) * totals.n_combos + combo, cents)


def test_spend_totals_with_spare_cells_give_the_kept_lines_sums(tmp_path):
    """Every line summed into a cell, those left out (returns, customers of no segment, lines after the last day,
    lines without a date, amount or return flag) into spare ones: the same tables, to the bit, as picking the
    kept lines out first; amounts on the half pence round half away from zero on both signs."""
    import pyarrow as pa

    from core.profile_export.line_totals import SpendTotals

    rng = np.random.default_rng(11)
    n = 3000
    amounts = rng.integers(-100_000, 100_000, n) / 1000.0  # half pence included (x.xx5)
    amounts[:6] = [0.005, -0.005, 0.015, -0.015, 2.675, -0.0]
    lines = pd.DataFrame({
        "customer_id": rng.choice([1, 2, 3, 5, 10**6], n),
        "order_date": pd.Timestamp("2022-11-15") + pd.to_timedelta(rng.integers(0, 500 * 24, n), unit="h"),
        "sku": pd.Series(rng.choice(["A", "B", "C", None], n), dtype="string"),
        "line_amount": amounts,
        "is_return": rng.random(n) < 0.15,
    })
    table = pa.Table.from_pandas(lines, preserve_index=False)
    # Missing values where the file allows them.
    nulls = rng.random(n) < 0.03
    table = table.set_column(1, "order_date", pa.array(lines["order_date"].where(~nulls), pa.timestamp("us")))
    table = table.set_column(3, "line_amount", pa.array(lines["line_amount"].where(rng.random(n) > 0.03)))
    table = table.set_column(4, "is_return", pa.array(lines["is_return"].where(rng.random(n) > 0.03)))
    segment_of = pd.Series({1: 4, 2: 9, 3: 4, 5: 0})
    new, old = SpendTotals(PRODUCTS, segment_of, LAST_DAY), SpendTotals(PRODUCTS, segment_of, LAST_DAY)
    for start in range(0, n, 700):
        batch = table.slice(start, 700).combine_chunks().to_batches()[0]
        new.add(batch)
        _batch_the_old_way(old, batch)
    np.testing.assert_array_equal(new.cube.lines.reshape(-1, 13, new.n_combos)[:, :12][:3],
                                  old.cube.lines.reshape(-1, 13, old.n_combos)[:, :12][:3])
    (monthly, mixes), (want_monthly, want_mixes) = new.result(), old.result()
    pd.testing.assert_frame_equal(monthly, want_monthly)
    assert sorted(mixes) == sorted(want_mixes)
    for attribute, frame in want_mixes.items():
        pd.testing.assert_frame_equal(mixes[attribute], frame)
    assert monthly.to_numpy().sum() > 0


def test_spend_totals_with_a_date_far_in_the_past_fall_back_to_picking_lines_out(tmp_path):
    """A date thousands of years back would make the day table huge: that batch is summed the old way, with the
    same result."""
    from core.profile_export.line_totals import SpendTotals

    lines = LINES.drop(columns="brand_tier").assign(
        order_date=pd.to_datetime(["1023-12-01", *LINES["order_date"].astype(str)[1:]]).astype("datetime64[us]"))
    path = tmp_path / "transactions.parquet"
    lines.to_parquet(path, index=False)
    import pyarrow.parquet as pq

    totals = SpendTotals(PRODUCTS, SEGMENT_OF, LAST_DAY)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=3):
        totals.add(batch)
    monthly, _ = totals.result()
    kept = lines[lines["order_date"] <= LAST_DAY]
    pd.testing.assert_frame_equal(monthly, monthly_spend_by_segment(kept, SEGMENT_OF), check_names=False)
    assert monthly.loc[7, 12] == 80.0  # the line of the year 1023 counts in December as well: 60 + 20
