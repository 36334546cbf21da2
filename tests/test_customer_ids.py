"""Customer ids as the retailer writes them (core/domain/customer_ids.py, stage 01's ingestion, every output).

Unit tests read ids of each kind; ingestion tests hand stage 01 files with
bad ids (written two ways, of two kinds, empty, too long); one end-to-end run
on a log of text ids checks that every output people join on carries the ids
exactly as the file wrote them, and that the score command does too.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_config
from core.config import load_config
from core.domain import customer_ids
from core.framework import paths
from core.framework.errors import PipelineError
from core.generate_data import ingest
from core.pipeline import run_pipeline, score_file
from test_ingest import file_document, ingest_text, real_shaped_log, run_stage_01

UUID = "550e8400-e29b-41d4-a716-446655440000"


def parsed(values, kind, decided=False, max_length=64):
    return customer_ids.parse_customer_ids(pd.Series(values, dtype=object), kind, max_length, decided)


# --- reading ids of each kind ----------------------------------------------------------------------


def test_text_ids_keep_letters_leading_zeros_and_uuids_and_lose_only_surrounding_spaces():
    ids = parsed(["C00001", " 00123 ", UUID, "123"], "text")
    assert ids.source.tolist() == ["C00001", "00123", UUID, "123"]
    assert ids.ok.all() and len(set(ids.keys)) == 4 and (ids.keys > 0).all()
    # The key is a function of the text alone: the same in any batch and any run.
    assert parsed(["00123"], "text").keys[0] == ids.keys[1]


def test_whole_numbers_written_as_decimals_are_the_number():
    ids = parsed(["13085.0", "13085", "7.000", "0"], "number")
    assert ids.source.tolist() == [13085, 13085, 7, 0] and ids.keys.tolist() == [13085, 13085, 7, 0]
    floats = customer_ids.parse_customer_ids(pd.Series([13085.0, 2.5, np.nan]), "number", 64)
    assert floats.keys[0] == 13085 and floats.invalid.tolist() == [False, True, False]
    assert floats.missing.tolist() == [False, False, True]


def test_the_kind_of_most_rows_wins_and_the_other_kind_is_flagged():
    shaped, missing = customer_ids.number_shaped(pd.Series(["12", "00123", "C1", "", "13085.0"]))
    # 00123 is text: a number would have lost its zeros.
    assert shaped.tolist() == [True, False, False, False, True] and missing.tolist() == [False] * 3 + [True, False]
    assert customer_ids.majority_kind(3, 2) == "number" and customer_ids.majority_kind(2, 2) == "text"
    ids = parsed(["C1", "12", "C2"], "text", decided=True)
    assert ids.other_kind.tolist() == [False, True, False] and not ids.invalid.any()
    ids = parsed(["12", "C1"], "number", decided=True)
    assert ids.other_kind.tolist() == [False, True]
    # Told the ids are numbers, a text id is invalid, not of another kind.
    assert parsed(["12", "C1"], "number").invalid.tolist() == [False, True]


def test_the_mapping_round_trips_keys_and_source_ids():
    registry = customer_ids.IdRegistry("text")
    ids = parsed(["C2", "00123", "C2", UUID], "text")
    registry.add(ids, ids.ok)
    mapping = registry.mapping()
    assert len(mapping) == 3 and mapping["customer_id"].is_monotonic_increasing
    frame = pd.DataFrame({"customer_id": ids.keys, "x": range(4)})
    back = customer_ids.with_source_ids(frame, mapping)
    assert back["customer_id"].tolist() == ["C2", "00123", "C2", UUID] and back["x"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(customer_ids.to_keys(back["customer_id"], mapping), ids.keys)
    with pytest.raises(ValueError, match="not in the customer id mapping"):
        customer_ids.with_source_ids(pd.DataFrame({"customer_id": [1]}), mapping)
    numbers = customer_ids.identity_mapping(np.array([5, 9]))
    assert customer_ids.mapping_kind(numbers) == "number"
    assert customer_ids.with_source_ids(pd.DataFrame({"customer_id": [9]}), numbers)["customer_id"].tolist() == [9]


# --- bad ids in a log ------------------------------------------------------------------------------


def test_ids_that_collide_after_trimming_are_one_customer_and_are_reported(tmp_path):
    text = "customer_id,order_date,line_amount\nC1,2024-01-01,3\n C1 ,2024-01-02,4\nC2,2024-01-02,5\n"
    config = write_config(tmp_path / "config", file_document(tmp_path, text))
    run_stage_01(config, tmp_path / "artifacts")
    folder = paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA)
    mapping = pd.read_parquet(folder / paths.CUSTOMER_IDS)
    assert sorted(mapping[customer_ids.SOURCE_ID]) == ["C1", "C2"]
    lines = pd.read_parquet(folder / paths.TRANSACTIONS)
    assert lines["customer_id"].nunique() == 2
    details = json.loads((folder / paths.MANIFEST).read_text(encoding="utf-8"))["details"]["customer_ids"]
    assert details["kind"] == "text" and details["ids_written_several_ways"] == 1
    assert details["examples_written_several_ways"] == [[" C1 ", "C1"]]


def test_mixed_id_kinds_reject_the_minority_with_its_reason_and_stop_when_it_is_large(tmp_path):
    rows = "".join(f"C{i:03d},2024-01-0{1 + i % 5},{i}\n" for i in range(40)) + "123,2024-01-02,5\n"
    text = "customer_id,order_date,line_amount\n" + rows
    config = write_config(tmp_path / "config", file_document(tmp_path, text))
    ctx = run_stage_01(config, tmp_path / "artifacts")
    assert "customer_id of another kind 1" in ctx.summary and "(text ids)" in ctx.summary
    rejects = pd.read_parquet(paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA) / paths.REJECTS)
    assert rejects[["source_row", "reason", "customer_id"]].values.tolist() == [
        [41, "customer_id of another kind", "123"]]
    assert ctx.details["customer_ids"]["rows_by_kind"] == {"number": 1, "text": 40}
    # Half and half: too many rejected, and the error says how to take both kinds.
    half = "customer_id,order_date,line_amount\n" + "".join(f"{i},2024-01-01,{i}\nC{i},2024-01-01,{i}\n"
                                                            for i in range(1, 6))
    config = write_config(tmp_path / "config", file_document(tmp_path, half))
    with pytest.raises(PipelineError, match=r"customer_id of another kind 5 .*set ingest\.customer_id\.kind: text"):
        run_stage_01(config, tmp_path / "artifacts")
    doc = file_document(tmp_path, half)
    doc["ingest"]["customer_id"]["kind"] = "text"
    ctx = run_stage_01(write_config(tmp_path / "config", doc), tmp_path / "artifacts")
    assert ctx.details["customers"] == 10 and ctx.details["transactions"]["rows_rejected"] == 0


def test_empty_and_overlong_ids_are_rejected_counted_and_kept(tmp_path):
    text = ("customer_id,order_date,line_amount\n" + "".join(f"{UUID[:-3]}{i:03d},2024-01-01,{i}\n" for i in range(30))
            + ",2024-01-02,5\n" + "x" * 65 + ",2024-01-02,6\n")
    doc = file_document(tmp_path, text, max_rejected_share=0.1)
    ctx = run_stage_01(write_config(tmp_path / "config", doc), tmp_path / "artifacts")
    details = ctx.details["transactions"]
    assert details["rejected_by_reason"] == {"missing customer_id": 1, "customer_id too long": 1}
    assert details["rows_in"] == 32 == details["rows_accepted"] + details["rows_rejected"]
    rejects = pd.read_parquet(paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA) / paths.REJECTS)
    assert rejects["source_row"].tolist() == [31, 32] and rejects["customer_id"].tolist() == ["", "x" * 65]
    # The limit is a setting: ids that long pass when it allows them.
    doc["ingest"]["customer_id"]["max_length"] = 65
    ctx = run_stage_01(write_config(tmp_path / "config", doc), tmp_path / "artifacts")
    assert ctx.details["transactions"]["rejected_by_reason"] == {"missing customer_id": 1}


def test_a_customer_file_reads_its_ids_as_the_log_does(tmp_path):
    doc = file_document(tmp_path, "customer_id,order_date,line_amount\n007,2024-01-01,3\n008,2024-01-02,4\n",
                        max_rejected_share=0.5)
    (tmp_path / "config" / "people.csv").write_text("id,years\n007,30\n009,41\n10,50\n", encoding="utf-8")
    doc["ingest"]["customers"].update(file="people.csv", columns={"id": "customer_id", "years": "age"})
    ctx = run_stage_01(write_config(tmp_path / "config", doc), tmp_path / "artifacts")
    folder = paths.stage_dir(tmp_path / "artifacts", paths.GENERATE_DATA)
    mapping = pd.read_parquet(folder / paths.CUSTOMER_IDS)
    assert sorted(mapping[customer_ids.SOURCE_ID]) == ["007", "008", "009"]
    assert ctx.details["customers_file"]["rejected_by_reason"] == {"customer_id of another kind": 1}


def test_the_ingestor_counts_every_row_whatever_the_id(tmp_path):
    text = "customer_id,order_date,line_amount\nC1,2024-01-01,3\n,2024-01-01,3\nC1\x02,2024-01-01,3\n7,2024-01-01,3\n"
    accepted, rejected, lines = ingest_text(tmp_path, text, ids=ingest.IdSettings("text", decided=True))
    assert lines.rows_in == 4 == len(accepted) + len(rejected)
    assert rejected["reason"].tolist() == ["missing customer_id", "invalid customer_id", "customer_id of another kind"]


# --- every output carries the source's ids -----------------------------------------------------------


def test_every_output_people_join_on_carries_the_ids_as_the_log_wrote_them(tmp_path):
    log = real_shaped_log(240, seed=11)
    # Loyalty-card ids: letters and zero padding, and padded with spaces as fixed-width exports are.
    log["Customer"] = log["Customer"].map(lambda c: f" L{c:07d}")
    written = {f"L{c:07d}" for c in range(1001, 1241)}
    doc = file_document(tmp_path, log.to_csv(index=False),
                        {"Customer": "customer_id", "Date": "order_date", "Total": "line_amount"},
                        date_format="%d/%m/%Y")
    doc["train_autoencoder"]["epochs"] = 3
    doc["cluster"].update(methods=["kmeans"], spaces=["raw", "latent"])
    config = write_config(tmp_path / "config", doc)
    run_pipeline(load_config(config), tmp_path / "artifacts")
    folder = lambda stage: paths.stage_dir(tmp_path / "artifacts", stage)  # noqa: E731
    segmented = pd.read_parquet(folder(paths.PROFILE_EXPORT) / paths.CUSTOMERS_WITH_SEGMENTS)
    excluded = pd.read_parquet(folder(paths.PREPARE_FEATURES) / paths.EXCLUDED_CUSTOMERS)
    value = pd.read_parquet(folder(paths.PREPARE_FEATURES) / paths.CUSTOMER_VALUE)
    assert set(segmented["customer_id"]) | set(excluded["customer_id"]) == written
    assert not set(segmented["customer_id"]) & set(excluded["customer_id"]) and len(excluded) > 0
    assert set(value["customer_id"]) <= written and len(value) == len(written)
    assert pd.api.types.is_string_dtype(segmented["customer_id"])
    # The keys inside the pipeline map back through stage 01's mapping.
    mapping = pd.read_parquet(folder(paths.GENERATE_DATA) / paths.CUSTOMER_IDS)
    basic = pd.read_parquet(folder(paths.PREPARE_FEATURES) / paths.BASIC)
    assert set(customer_ids.with_source_ids(basic, mapping)["customer_id"]) == set(segmented["customer_id"])
    # Scoring a log written the same way gives the same ids back, and the training customers their segments.
    lines = pd.read_parquet(folder(paths.GENERATE_DATA) / paths.TRANSACTIONS)
    lines = customer_ids.with_source_ids(lines, mapping)
    lines.to_csv(tmp_path / "new.csv", index=False)
    scored = pd.read_parquet(score_file(load_config(config), tmp_path / "artifacts", tmp_path / "new.csv"))
    assert set(scored["customer_id"]) == written
    mine = scored[scored["excluded_reason"] == ""].set_index("customer_id")["segment"]
    expected = segmented.set_index("customer_id")["segment_id"]
    assert (mine.loc[expected.index].to_numpy() == expected.to_numpy()).all()
    # This retailer's ids are text (stage 01 found so): a new customer numbered 12345 stays the text "12345".
    one = lines[lines["customer_id"] == expected.index[0]].assign(customer_id="12345")
    one.to_csv(tmp_path / "one.csv", index=False)
    scored = pd.read_parquet(score_file(load_config(config), tmp_path / "artifacts", tmp_path / "one.csv"))
    assert scored["customer_id"].tolist() == ["12345"] and scored["segment"].tolist() == [expected.iloc[0]]
