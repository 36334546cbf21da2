"""Stage 01 on a retailer's own data: core/ingest.py and the file path of 01_generate_data.py.

Files are written to ``tmp_path`` as a retailer would hand them over and go
through the real reader; stage-level tests run stage 01 (or all five stages)
through ``core.pipeline`` on a config written by ``conftest.write_config``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import small_config_document, write_config
from core.generate_data import ingest
from core.framework import paths
from core.config import load_config
from core.framework.errors import PipelineError
from core.domain.hierarchy import load_hierarchy
from core.pipeline import all_stages, pipeline_status, run_pipeline, run_stage
from core.framework.schema import ConfigError
from core.domain.tables import CUSTOMER_COLUMNS, PRODUCT_COLUMNS, TRANSACTION_COLUMNS

HIERARCHY = load_hierarchy(paths.DEFAULT_CONFIG.parent / "hierarchy.yml")
LATEST = dt.date(2024, 12, 31)
BASIC = {"customer_id": "customer_id", "order_date": "order_date", "line_amount": "line_amount"}


def ingest_text(tmp_path: Path, text: str | bytes, columns: dict[str, str] | None = None, *, name: str = "log.csv",
                block_bytes: int = 1 << 20, date_format: str | None = None, amount_is: str = "line",
                ids: ingest.IdSettings | None = None,
                **source) -> tuple[pd.DataFrame, pd.DataFrame, ingest.TransactionIngestor]:
    """Write ``text`` as a file, ingest it in blocks of ``block_bytes``; (accepted, rejected, ingestor)."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return ingest_file(path, columns or BASIC, block_bytes=block_bytes, date_format=date_format,
                       amount_is=amount_is, ids=ids, **source)


def ingest_file(path: Path, columns: dict[str, str], *, block_bytes: int = 1 << 20, batch_rows: int = 1000,
                date_format: str | None = None, amount_is: str = "line", ids: ingest.IdSettings | None = None,
                **source):
    fmt = "parquet" if path.suffix == ".parquet" else "csv"
    src = ingest.SourceFile(path=path, format=fmt, columns=columns, **source)
    ids = ids or ingest.IdSettings()
    lines = ingest.TransactionIngestor(src, HIERARCHY, LATEST, date_format, amount_is, ids)
    accepted, rejected = [], []
    for batch in ingest.read_batches(src, block_bytes=block_bytes, batch_rows=batch_rows):
        a, r = lines.add(batch)
        accepted.append(a)
        rejected.append(r)
    if not accepted:  # a header without rows gives no batch
        return pd.DataFrame(columns=TRANSACTION_COLUMNS), ingest.reject_schema(src).empty_table().to_pandas(), lines
    return pd.concat(accepted, ignore_index=True), pd.concat(rejected, ignore_index=True), lines


def reasons(rejected: pd.DataFrame) -> dict[int, str]:
    return dict(zip(rejected["source_row"], rejected["reason"]))


# --- every row accepted or rejected, with its reason ---------------------------


def test_each_rejection_reason_is_given_to_the_row_it_applies_to(tmp_path):
    text = ("cust,date,amount,qty,price,disc,ret,order\n"
            "C1,2024-01-01,10.00,1,10,0,0,500\n"             # 1 accepted
            ",,,,,,,\n"                                       # 2 empty row
            "C1,2024-01-01\n"                                 # 3 malformed row (too few fields)
            ",2024-01-01,10.00,1,10,0,0,501\n"                # 4 missing customer_id
            "C1234567890,2024-01-01,10.00,1,10,0,0,502\n"     # 5 customer_id too long (11 > 10)
            "C\x0117,2024-01-01,10.00,1,10,0,0,502\n"         # 6 invalid customer_id (a control character)
            "17,2024-01-01,10.00,1,10,0,0,502\n"              # 7 customer_id of another kind (a number)
            "C2,,10.00,1,10,0,0,503\n"                        # 8 missing order_date
            "C2,2024-02-30,10.00,1,10,0,0,504\n"              # 9 invalid order_date
            "C2,2025-01-01,10.00,1,10,0,0,505\n"              # 10 order_date in the future
            "C2,2024-01-02,,1,10,0,0,506\n"                   # 11 missing line_amount
            "C2,2024-01-02,ten,1,10,0,0,507\n"                # 12 invalid line_amount
            "C2,2024-01-02,10.00,1.5,10,0,0,508\n"            # 13 invalid quantity
            "C2,2024-01-02,10.00,1,£10,0,0,509\n"             # 14 invalid unit_price
            "C2,2024-01-02,10.00,1,10,some,0,510\n"           # 15 invalid discount_amount
            "C2,2024-01-02,10.00,1,10,0,maybe,511\n"          # 16 invalid is_return
            "C1,2024-01-01,10.00,1,10,0,0,500\n")             # 17 duplicate line
    columns = {"cust": "customer_id", "date": "order_date", "amount": "line_amount", "qty": "quantity",
               "price": "unit_price", "disc": "discount_amount", "ret": "is_return", "order": "order_id"}
    ids = ingest.IdSettings("text", decided=True, max_length=10)
    accepted, rejected, lines = ingest_text(tmp_path, text, columns, ids=ids)
    expected = dict(zip(range(2, 18), ingest.REJECT_REASONS[:-1]))
    assert reasons(rejected) == expected
    assert len(accepted) == 1 and lines.rows_in == 17 == lines.rows_accepted + lines.rows_rejected
    assert lines.details()["rejected_by_reason"] == {r: 1 for r in expected.values()}
    # The rejected rows keep the file's own text under the file's own column names.
    row = rejected.set_index("source_row").loc[12]
    assert (row["cust"], row["date"], row["amount"]) == ("C2", "2024-01-02", "ten")
    assert rejected.set_index("source_row").loc[3, ingest.ROW_TEXT] == "C1,2024-01-01"


def test_a_repeated_order_id_is_a_duplicate_when_each_row_is_a_whole_order(tmp_path):
    text = "c,d,a,o\n1,2024-01-01,10,7\n1,2024-01-02,12,7\n1,2024-01-03,-10,7\n"
    columns = {"c": "customer_id", "d": "order_date", "a": "line_amount", "o": "order_id"}
    _, rejected, _ = ingest_text(tmp_path, text, columns, amount_is="order")
    assert reasons(rejected) == {2: "duplicate order_id"}, "a return may carry its purchase's order id"
    accepted, rejected, _ = ingest_text(tmp_path, text, columns, amount_is="line")
    assert rejected.empty and len(accepted) == 3


def test_duplicate_lines_are_found_across_batches(tmp_path):
    rows = [f"{c},2024-01-{d:02d},{c + d}.50" for c in range(1, 40) for d in range(1, 20)]
    text = "customer_id,order_date,line_amount\n" + "\n".join(rows + rows[::7] + rows[:3]) + "\n"
    accepted, rejected, lines = ingest_text(tmp_path, text, block_bytes=2048)
    assert lines.rows_in == len(rows) + len(rows[::7]) + 3
    assert len(accepted) == len(rows), "the first occurrence is kept"
    assert set(rejected["reason"]) == {"duplicate line"}
    assert rejected["source_row"].min() > len(rows), "only the later copies are rejected"


def test_a_line_number_tells_identical_lines_of_one_order_apart(tmp_path):
    text = "c,d,a,o,n\n1,2024-01-01,2.50,9,1\n1,2024-01-01,2.50,9,2\n1,2024-01-01,2.50,9,2\n"
    columns = {"c": "customer_id", "d": "order_date", "a": "line_amount", "o": "order_id", "n": "line_number"}
    accepted, rejected, _ = ingest_text(tmp_path, text, columns)
    assert len(accepted) == 2 and reasons(rejected) == {3: "duplicate line"}
    assert "line_number" not in accepted.columns


def test_seen_keys_is_a_set(tmp_path):
    rng = np.random.default_rng(0)
    seen, reference = ingest.SeenKeys(), set()
    for size in rng.integers(1, 400, size=40):
        keys = rng.integers(0, 3000, size=size).astype(np.uint64)
        assert seen.contains(keys).tolist() == [int(k) in reference for k in keys]
        new = np.unique(keys[~seen.contains(keys)])
        seen.add(new)
        reference.update(int(k) for k in new)
    assert len(seen) == len(reference)


# --- malformed files: a clear error, never a traceback --------------------------


def test_a_missing_required_column_names_the_file_the_column_and_the_columns_found(tmp_path):
    with pytest.raises(PipelineError, match=r"log\.csv: column\(s\) 'order_date' \(our order_date\).*"
                                            r"'customer_id', 'date', 'line_amount'"):
        ingest_text(tmp_path, "customer_id,date,line_amount\n1,2024-01-01,3\n")


def test_unparsable_dates_are_rejected_and_a_date_format_reads_them(tmp_path):
    text = "customer_id,order_date,line_amount\n1,31/01/2024,3\n2,01/02/2024,4\n3,2024-02-01,5\n"
    _, rejected, lines = ingest_text(tmp_path, text)
    assert set(rejected["reason"]) == {"invalid order_date"} and len(rejected) == 2
    assert lines.details()["first_rejected_example"]["invalid order_date"] == "row 1: order_date '31/01/2024'"
    accepted, rejected, _ = ingest_text(tmp_path, text, date_format="%d/%m/%Y")
    assert accepted["order_date"].tolist() == [pd.Timestamp("2024-01-31"), pd.Timestamp("2024-02-01")]
    assert reasons(rejected) == {3: "invalid order_date"}


def test_negative_amounts_are_returns_and_missing_amounts_are_rejected(tmp_path):
    text = "customer_id,order_date,line_amount\n1,2024-01-01,10\n1,2024-01-05,-4\n1,2024-01-06,\n"
    accepted, rejected, _ = ingest_text(tmp_path, text)
    assert accepted["is_return"].tolist() == [False, True]
    assert accepted["quantity"].tolist() == [1, -1] and accepted["line_amount"].tolist() == [10.0, -4.0]
    assert reasons(rejected) == {3: "missing line_amount"}


def test_unknown_departments_and_classes_are_kept_as_unknown_and_listed(tmp_path):
    text = ("c,d,a,dept,cls\n1,2024-01-01,5,ladies clothing ,youth\n1,2024-01-01,6,Garden,Hoses\n"
            "2,2024-01-01,7,Garden,Rakes\n2,2024-01-02,8,Home,Nonsense\n2,2024-01-03,9,,\n")
    columns = {"c": "customer_id", "d": "order_date", "a": "line_amount", "dept": "department", "cls": "class"}
    accepted, rejected, lines = ingest_text(tmp_path, text, columns)
    assert rejected.empty and len(accepted) == 5
    assert accepted["department"].tolist() == ["Ladies Clothing", "Unknown", "Unknown", "Home", "Unknown"]
    assert accepted["class"].tolist() == ["Youth", "Unknown", "Unknown", "Unknown", "Unknown"]
    details = lines.details()
    assert details["unknown_departments"] == {"(empty)": 1, "Garden": 2}
    assert details["unknown_classes"] == {"Home / Nonsense": 1}
    assert details["has_hierarchy"] is True


def test_a_log_without_departments_puts_every_line_in_unknown(tmp_path):
    accepted, _, lines = ingest_text(tmp_path, "customer_id,order_date,line_amount\n1,2024-01-01,3\n")
    assert accepted[["department", "class"]].values.tolist() == [["Unknown", "Unknown"]]
    assert lines.details()["has_hierarchy"] is False and lines.details()["unknown_departments"] == {}


def test_an_empty_file_and_a_header_only_file_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"log\.csv: the file is empty"):
        ingest_text(tmp_path, "")
    _, _, lines = ingest_text(tmp_path, "customer_id,order_date,line_amount\n")
    with pytest.raises(PipelineError, match=r"log\.csv: no data rows"):
        lines.check_rejected_share(0.05)


def test_a_wrong_delimiter_says_which_delimiter_the_file_uses(tmp_path):
    with pytest.raises(PipelineError, match=r"read as one column.*separated by ';': set ingest\.csv\.delimiter: ';'"):
        ingest_text(tmp_path, "customer_id;order_date;line_amount\n1;2024-01-01;3\n")
    accepted, _, _ = ingest_text(tmp_path, "customer_id;order_date;line_amount\n1;2024-01-01;3,5\n",
                                 delimiter=";", decimal=",")
    assert accepted["line_amount"].tolist() == [3.5]


def test_a_non_utf8_file_names_the_encoding_setting_and_reads_with_it(tmp_path):
    text = "customer_id,order_date,line_amount,department\n1,2024-01-01,3,Café\n".encode("cp1252")
    columns = dict(BASIC, department="department")
    with pytest.raises(PipelineError, match=r"log\.csv: not valid utf-8 text.*ingest\.csv\.encoding"):
        ingest_text(tmp_path, text, columns)
    accepted, _, lines = ingest_text(tmp_path, text, columns, encoding="cp1252")
    assert lines.details()["unknown_departments"] == {"Café": 1}
    header = "kundennr,datum,betrag\n".encode("utf-16")
    with pytest.raises(PipelineError, match=r"the header is not utf-8 text"):
        ingest_text(tmp_path, header, {"kundennr": "customer_id", "datum": "order_date", "betrag": "line_amount"})


def test_a_utf16_tab_separated_export_reads_with_its_encoding_and_delimiter(tmp_path):
    text = "Kunde\tDatum\tBetrag\n7\t2024-01-01\t2,50\n8\t2024-01-02\t-1,00\n".encode("utf-16")
    columns = {"Kunde": "customer_id", "Datum": "order_date", "Betrag": "line_amount"}
    accepted, rejected, _ = ingest_text(tmp_path, text, columns, encoding="utf-16", delimiter="tab", decimal=",")
    assert rejected.empty and accepted["line_amount"].tolist() == [2.5, -1.0]


def test_an_unreadable_parquet_file_is_a_clear_error(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(PipelineError, match=r"log\.parquet: not a readable Parquet file.*ingest\.transactions\.format"):
        ingest_file(path, BASIC)


def test_parquet_with_typed_columns_is_read_in_batches(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame({"cid": np.arange(1, 26, dtype=np.int64),
                          "ts": pd.date_range("2024-01-01 09:30", periods=25, freq="D", tz="Europe/London"),
                          "value": np.linspace(-2, 22, 25), "n": np.r_[np.arange(1, 25), np.nan]})
    frame.to_parquet(path, index=False)
    columns = {"cid": "customer_id", "ts": "order_date", "value": "line_amount", "n": "quantity"}
    accepted, rejected, lines = ingest_file(path, columns, batch_rows=4)
    assert lines.rows_in == 25 and rejected.empty
    assert accepted["order_date"].iloc[0] == pd.Timestamp("2024-01-01 09:30"), "wall-clock time kept"
    assert accepted["quantity"].iloc[-1] == 1, "a missing quantity counts one unit"
    assert accepted.loc[0, "is_return"] and accepted.loc[0, "quantity"] == -1


# --- mapping, order ids, returns, products ---------------------------------------


def test_columns_are_mapped_from_the_files_names_and_numbers_use_the_decimal_mark(tmp_path):
    text = ("Kunde;Datum;Betrag;Menge;Abteilung;Artikel;Marke\n"
            "42;31.12.2024 18:05;1.234,50;3;Home;H-1;Acme\n")
    columns = {"Kunde": "customer_id", "Datum": "order_date", "Betrag": "line_amount", "Menge": "quantity",
               "Abteilung": "department", "Artikel": "sku", "Marke": "brand"}
    accepted, rejected, lines = ingest_text(tmp_path, text, columns, delimiter=";", decimal=",",
                                            date_format="%d.%m.%Y %H:%M")
    assert rejected.empty
    row = accepted.iloc[0]
    assert (row["customer_id"], row["order_date"], row["line_amount"]) == (42, pd.Timestamp("2024-12-31 18:05"),
                                                                           1234.5)
    assert row["quantity"] == 3 and row["unit_price"] == pytest.approx(411.5)
    assert (row["department"], row["sku"], row["brand"]) == ("Home", "H-1", "Acme")
    assert pd.isna(row["channel"]) and pd.isna(row["original_order_id"])
    assert list(accepted.columns) == list(TRANSACTION_COLUMNS)


def test_order_ids_are_derived_from_customer_and_date_when_absent(tmp_path):
    text = ("customer_id,order_date,line_amount\n1,2024-01-01,3\n1,2024-01-01,4\n1,2024-01-02,5\n"
            "2,2024-01-01,6\n1,2024-01-01,-3\n")
    accepted, _, lines = ingest_text(tmp_path, text)
    ids = accepted["order_id"].tolist()
    assert ids[0] == ids[1], "one customer's lines on one day are one order"
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4, "another day, customer or a return is another transaction"
    assert min(ids) >= 0 and lines.details()["derived_order_ids"] == 5
    again, _, _ = ingest_text(tmp_path, text, block_bytes=64)
    assert again["order_id"].tolist() == ids, "the same in any batch"


def test_text_order_ids_become_stable_integers(tmp_path):
    text = "c,d,a,o\n1,2024-01-01,3,INV-9\n1,2024-01-01,4,INV-9\n1,2024-01-01,5,0017\n"
    accepted, _, _ = ingest_text(tmp_path, text, {"c": "customer_id", "d": "order_date", "a": "line_amount",
                                                  "o": "order_id"})
    assert accepted["order_id"].iloc[0] == accepted["order_id"].iloc[1] != 17
    assert accepted["order_id"].iloc[2] == 17


def test_returns_by_flag_and_by_negative_quantity(tmp_path):
    text = ("c,d,a,q,flag,orig\n1,2024-01-01,20,2,N,\n1,2024-01-05,20,2,Y,900\n1,2024-01-06,10,-1,,901\n"
            "1,2024-01-07,10,1,,902\n")
    columns = {"c": "customer_id", "d": "order_date", "a": "line_amount", "q": "quantity", "flag": "is_return",
               "orig": "original_order_id"}
    accepted, rejected, lines = ingest_text(tmp_path, text, columns)
    assert rejected.empty
    assert accepted["is_return"].tolist() == [False, True, True, False]
    assert accepted["quantity"].tolist() == [2, -2, -1, 1]
    assert accepted["line_amount"].tolist() == [20.0, -20.0, -10.0, 10.0]
    assert accepted["unit_price"].tolist() == [10.0, 10.0, 10.0, 10.0]
    assert accepted["original_order_id"].tolist()[1:3] == [900, 901]
    assert pd.isna(accepted["original_order_id"].iloc[3]), "a purchase names no original order"
    assert lines.details()["return_lines"] == 2


def test_products_list_each_sku_with_its_highest_purchase_price(tmp_path):
    text = ("c,d,a,q,s,dept,tier\n1,2024-01-01,10,1,A,Home,premium\n2,2024-01-02,24,2,A,Home,\n"
            "2,2024-01-03,-13,-1,A,Home,\n3,2024-01-03,5,1,B,Garden,\n")
    columns = {"c": "customer_id", "d": "order_date", "a": "line_amount", "q": "quantity", "s": "sku",
               "dept": "department", "tier": "brand_tier"}
    _, _, lines = ingest_text(tmp_path, text, columns, block_bytes=48)
    products = lines.products()
    assert list(products.columns) == list(PRODUCT_COLUMNS)
    assert products["sku"].tolist() == ["A", "B"]
    assert products["base_price"].tolist() == [12.0, 5.0], "the return's price is not a shelf price"
    assert products["brand_tier"].tolist()[0] == "premium" and pd.isna(products["brand_tier"].iloc[1]), \
        "an attribute the log does not give stays null"
    assert products["size_scale"].isna().all()
    assert products["department"].tolist() == ["Home", "Unknown"]
    _, _, no_sku = ingest_text(tmp_path, "customer_id,order_date,line_amount\n1,2024-01-01,3\n")
    assert no_sku.products().empty and list(no_sku.products().columns) == list(PRODUCT_COLUMNS)


def test_the_contract_guard_refuses_a_table_that_breaks_the_rules(tmp_path):
    accepted, _, _ = ingest_text(tmp_path, "customer_id,order_date,line_amount\n1,2024-01-01,3\n1,2024-01-02,-3\n")
    assert ingest.check_contract(accepted, "transactions") is not None
    broken = accepted.assign(quantity=accepted["quantity"].abs())
    with pytest.raises(AssertionError, match="breaks its contract.*returns have negative quantities"):
        ingest.check_contract(broken, "transactions")
    with pytest.raises(AssertionError, match="breaks its contract"):
        ingest.check_contract(accepted.drop(columns="channel"), "transactions")


# --- property: rows in = accepted + rejected ----------------------------------------

CELLS = {
    "customer_id": ["1", "2", " 3 ", "", "x7", "4.0", "-5"],
    "order_date": ["2024-01-01", "2024-03-05 10:30:00", "", "2024-02-30", "yesterday", "2031-01-01"],
    "line_amount": ["10", "-5.5", "0", "", "abc", "1,234.50", "nan"],
    "quantity": ["1", "2", "-1", "0", "1.5", "", "x"],
    "is_return": ["0", "1", "", "Y", "perhaps"],
    "department": ["Home", "home", "Garden", "", "Kids Clothing"],
}


@st.composite
def messy_logs(draw) -> list[list[str]]:
    pool = draw(st.lists(st.tuples(*[st.sampled_from(v) for v in CELLS.values()]), min_size=1, max_size=12))
    # Drawing rows from a small pool repeats some of them: duplicates arise naturally.
    return [list(row) for row in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=60))]


def _write_csv(path: Path, rows: list[list[str]], extra: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(CELLS))
    writer.writerows(rows)
    path.write_text(buffer.getvalue() + "".join(f"{line}\n" for line in extra), encoding="utf-8")


# Each batch has a fixed cost (pandas, the pandera contract): few examples, few batches, to keep the suite fast.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=messy_logs(), extra=st.lists(st.sampled_from(["1,2024-01-01", "", "1,2,3,4,5,6,7,8"]), max_size=3),
       block_bytes=st.sampled_from([512, 1 << 20]))
def test_rows_in_equal_rows_accepted_plus_rows_rejected(rows, extra, block_bytes):
    """Whatever the mess, each row ends in exactly one of the two tables, and batching changes nothing."""
    columns = {c: c for c in CELLS}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        _write_csv(path, rows, extra)
        accepted, rejected, lines = ingest_file(path, columns, block_bytes=block_bytes)
        whole, whole_rejected, _ = ingest_file(path, columns)
    n_rows = len(rows) + len(extra)
    assert lines.rows_in == n_rows == len(accepted) + len(rejected)
    assert lines.rows_accepted == len(accepted) and lines.rows_rejected == len(rejected)
    assert sum(lines.details()["rejected_by_reason"].values()) == len(rejected)
    assert rejected["source_row"].is_unique and rejected["source_row"].between(1, n_rows).all()
    assert set(rejected["reason"]) <= set(ingest.REJECT_REASONS)
    pd.testing.assert_frame_equal(accepted, whole)
    pd.testing.assert_frame_equal(rejected, whole_rejected)


@settings(max_examples=15, deadline=None)
@given(rows=messy_logs())
def test_rows_in_equal_accepted_plus_rejected_for_parquet_text_columns(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.parquet"
        pd.DataFrame(rows, columns=list(CELLS)).to_parquet(path, index=False)
        accepted, rejected, lines = ingest_file(path, {c: c for c in CELLS}, batch_rows=25)
    assert lines.rows_in == len(rows) == len(accepted) + len(rejected)
    assert sorted(rejected["source_row"]) == sorted(set(rejected["source_row"]))


# --- config -------------------------------------------------------------------------


def file_document(tmp_path: Path, text: str, columns: dict[str, str] | None = None, **ingest_changes) -> dict:
    """The small config reading ``text`` as log.csv beside it."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "log.csv").write_text(text, encoding="utf-8")
    doc = small_config_document()
    doc["data"]["source"] = "file"
    doc["ingest"]["transactions"].update(file="log.csv", columns=columns or dict(BASIC))
    doc["ingest"]["latest_date"] = "2024-12-31"
    doc["ingest"].update(ingest_changes)
    # A log without departments gives 4 model features (no season is configured for it): the small config's
    # 4 latent dimensions would compress nothing, so 3, the shipped value.
    doc["train_autoencoder"]["latent_dim"] = 3
    return doc


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    doc = file_document(tmp_path, "x\n", {"cust": "customer", "when": "order_date", "cls": "class"})
    doc["ingest"]["customers"].update(file="people.csv", columns={"name": "first_name"})
    doc["ingest"]["csv"]["delimiter"] = ";;"
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path / "config", doc))
    text = str(error.value)
    assert "key 'ingest.transactions.columns.cust': 'customer' is not a column we know (did you mean " \
           "'customer_id'?)" in text
    assert "key 'ingest.transactions.columns': no column maps to customer_id, line_amount" in text
    assert "key 'ingest.transactions.columns.cls': class is mapped but department is not" in text
    assert "key 'ingest.customers.columns': no column maps to customer_id" in text
    assert "key 'ingest.customers.file': 'people.csv' names" in text and "which was not found" in text
    assert "key 'ingest.csv.delimiter': ';;' is not one character" in text


def test_a_file_source_needs_a_file_and_a_synthetic_one_ignores_the_mapping(tmp_path):
    doc = file_document(tmp_path, "x\n")
    doc["ingest"]["transactions"]["file"] = None
    with pytest.raises(ConfigError, match=r"key 'ingest\.transactions\.file': null, but data\.source is file"):
        load_config(write_config(tmp_path / "config", doc))
    doc["data"]["source"] = "synthetic"
    doc["ingest"]["transactions"]["columns"] = {}
    assert load_config(write_config(tmp_path / "config", doc)).source_files == {}


# --- stage 01 on a file ----------------------------------------------------------------


def run_stage_01(config_path: Path, artifacts: Path):
    return run_stage(all_stages()[0], load_config(config_path), artifacts)


def test_stage_01_writes_the_contract_tables_and_the_rejects(tmp_path):
    text = "customer_id,order_date,line_amount\n5,2024-01-01,3\n6,2024-01-02,4\n6,2024-01-02,4\n"
    config = write_config(tmp_path / "config", file_document(tmp_path, text, max_rejected_share=0.5))
    ctx = run_stage_01(config, tmp_path / "artifacts")
    folder = paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA)
    assert ctx.summary.startswith("3 rows in = 2 accepted + 1 rejected (duplicate line 1)")
    assert list(pd.read_parquet(folder / paths.TRANSACTIONS).columns) == list(TRANSACTION_COLUMNS)
    customers = pd.read_parquet(folder / paths.CUSTOMERS)
    assert list(customers.columns) == list(CUSTOMER_COLUMNS) and customers["customer_id"].tolist() == [5, 6]
    assert customers["persona"].isna().all()
    assert pd.read_parquet(folder / paths.PRODUCTS).empty
    assert pd.read_parquet(folder / paths.REJECTS)[["source_row", "reason"]].values.tolist() == [[3, "duplicate line"]]
    manifest = json.loads((folder / paths.MANIFEST).read_text(encoding="utf-8"))
    details = manifest["details"]["transactions"]
    assert details["rows_in"] == details["rows_accepted"] + details["rows_rejected"] == 3
    assert manifest["source_files"][0]["role"] == "transactions"


def test_too_many_rejected_rows_stop_the_stage_and_write_only_the_rejects(tmp_path):
    text = "customer_id,order_date,line_amount\n" + "".join(f"{i},2024-01-01,{i}\n" for i in range(1, 20)) + \
           "x,2024-01-01,1\n,2024-01-01,2\n"
    config = write_config(tmp_path / "config", file_document(tmp_path, text))
    with pytest.raises(PipelineError, match=r"log\.csv: 2 of 21 rows rejected \(9\.5%\), more than "
                                            r"ingest\.max_rejected_share \(5\.0%\): customer_id of another kind 1 "
                                            r"\(first: row 20: customer_id 'x'\).*rejects\.parquet.*"
                                            r"set ingest\.customer_id\.kind: text"):
        run_stage_01(config, tmp_path / "artifacts")
    folder = paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA)
    assert sorted(p.name for p in folder.iterdir()) == [paths.REJECTS]
    doc = file_document(tmp_path, text, max_rejected_share=0.1)
    run_stage_01(write_config(tmp_path / "config", doc), tmp_path / "artifacts")
    assert (folder / paths.MANIFEST).exists()


def test_a_customer_file_is_joined_and_its_bad_rows_rejected(tmp_path):
    doc = file_document(tmp_path, "customer_id,order_date,line_amount\n1,2024-01-01,3\n2,2024-01-02,4\n",
                        max_rejected_share=0.6)
    (tmp_path / "config" / "people.csv").write_text(
        "id,years,sex,kids,area,since\n1,34,Female,yes,Wales,2023-05-01\n3,51,Male,no,London,\n"
        "1,35,Female,yes,Wales,\n4,two hundred,Male,no,Kent,\n", encoding="utf-8")
    doc["ingest"]["customers"].update(file="people.csv", columns={
        "id": "customer_id", "years": "age", "sex": "gender", "kids": "has_children", "area": "region",
        "since": "signup_date"})
    config = write_config(tmp_path / "config", doc)
    ctx = run_stage_01(config, tmp_path / "artifacts")
    folder = paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA)
    customers = pd.read_parquet(folder / paths.CUSTOMERS).set_index("customer_id")
    assert customers.index.tolist() == [1, 2, 3], "customers of the lines and of the profile file"
    assert customers.loc[1, ["age", "gender", "has_children", "region"]].tolist() == [34, "Female", True, "Wales"]
    assert customers.loc[1, "signup_date"] == pd.Timestamp("2023-05-01")
    assert customers.loc[2, ["age", "gender"]].isna().all(), "no profile: null"
    assert str(customers["age"].dtype) == "Int16"
    rejects = pd.read_parquet(folder / paths.CUSTOMER_REJECTS)
    assert rejects[["source_row", "reason"]].values.tolist() == [[3, "duplicate customer_id"], [4, "invalid age"]]
    assert ctx.details["customers_file"]["rows_in"] == 4


def test_stage_01_is_stale_when_the_log_or_the_ingest_config_changes(tmp_path):
    doc = file_document(tmp_path, "customer_id,order_date,line_amount\n1,2024-01-01,3\n")
    config = write_config(tmp_path / "config", doc)
    run_stage_01(config, tmp_path / "artifacts")

    def stage_01_reasons():
        return pipeline_status(load_config(config), tmp_path / "artifacts")[0].reasons

    assert stage_01_reasons() == ()
    (tmp_path / "config" / "log.csv").write_text("customer_id,order_date,line_amount\n1,2024-01-01,4\n")
    assert any("transactions file" in r and "changed" in r for r in stage_01_reasons())
    run_stage_01(config, tmp_path / "artifacts")
    doc["ingest"]["csv"]["decimal"] = ","
    write_config(tmp_path / "config", doc)
    (tmp_path / "config" / "log.csv").write_text("customer_id,order_date,line_amount\n1,2024-01-01,4\n")
    assert "config section 'ingest' changed" in stage_01_reasons()


def real_shaped_log(n_customers: int, seed: int) -> pd.DataFrame:
    """A hand-rolled till export with only customer id, date and order value.

    Customers differ the way real ones do: a lognormal order rate and order
    value per customer, a first purchase anywhere in the year, some who stop
    buying, and an occasional refund of an earlier order.
    """
    rng = np.random.default_rng(seed)
    start, days = pd.Timestamp("2023-01-01"), 365
    rows = []
    for customer in range(1001, 1001 + n_customers):
        rate = rng.lognormal(np.log(1 / 30), 0.8)   # orders a day
        value = rng.lognormal(np.log(40), 0.5)      # typical order value
        first = rng.integers(0, days - 1)
        last = days if rng.random() < 0.7 else rng.integers(first + 1, days + 1)
        n = max(1, rng.poisson(rate * (last - first)))
        for day in np.sort(rng.integers(first, last, size=n)):
            amount = round(float(value * rng.lognormal(0, 0.3)), 2)
            rows.append((customer, start + pd.Timedelta(days=int(day)), amount))
            if rng.random() < 0.05 and day + 10 < days:
                rows.append((customer, start + pd.Timedelta(days=int(day) + 10), -amount))
    log = pd.DataFrame(rows, columns=["Customer", "Date", "Total"]).sort_values("Date", kind="stable")
    return log.assign(Date=log["Date"].dt.strftime("%d/%m/%Y"))


def test_all_five_stages_run_on_a_log_with_only_customer_date_and_amount(tmp_path):
    log = real_shaped_log(300, seed=7)
    text = log.to_csv(index=False)
    doc = file_document(tmp_path, text, {"Customer": "customer_id", "Date": "order_date", "Total": "line_amount"},
                        date_format="%d/%m/%Y")
    doc["ingest"]["transactions"]["amount_is"] = "order"
    # Fewer epochs and clusterers than the shared pipeline run: this test is about the data, not the models.
    doc["train_autoencoder"]["epochs"] = 5
    doc["cluster"].update(methods=["gmm", "kmeans"], spaces=["latent"])
    config = write_config(tmp_path / "config", doc)
    outcome = run_pipeline(load_config(config), tmp_path / "artifacts")
    assert set(outcome.values()) == {"ran"}
    manifest = json.loads((paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA) / paths.MANIFEST)
                          .read_text(encoding="utf-8"))["details"]
    assert manifest["transactions"]["rows_in"] == len(log) == manifest["transactions"]["rows_accepted"]
    assert manifest["transactions"]["has_hierarchy"] is False and manifest["customers"] == 300
    stage_02 = paths.stage_dir(tmp_path / "artifacts", paths.PREPARE_FEATURES)
    features = pd.read_parquet(stage_02 / paths.BASIC)
    excluded = pd.read_parquet(stage_02 / paths.EXCLUDED_CUSTOMERS)
    # Every customer is either described or excluded by an eligibility rule (e.g. tenure under 30 days).
    assert sorted(features["customer_id"].tolist() + excluded["customer_id"].tolist()) == list(range(1001, 1301))
    assert len(features) >= 200
    totals = log.groupby("Customer")["Total"].sum().round(2).loc[features["customer_id"]]
    assert np.allclose(features.set_index("customer_id")["net_revenue"].sort_index(), totals.sort_index())
    profiles = json.loads((paths.stage_dir(tmp_path / "artifacts", paths.PROFILE_EXPORT)
                           / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    assert profiles["metadata"]["customers"] == len(features) and profiles["metadata"]["segments"] >= 2
