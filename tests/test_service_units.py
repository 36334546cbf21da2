"""The segment service's parts on their own: keys, the audit log, the service config section."""

from __future__ import annotations

import json

import pytest

from conftest import small_config_document, write_config
from core.config import load_config
from core.framework.errors import PipelineError
from core.framework.schema import ConfigError
from core.service.audit import AuditLog
from core.service.keys import KeyStore, add_key, hash_key, parse_scopes


def test_a_key_is_stored_as_its_hash_only_and_authenticates_with_its_scopes(tmp_path):
    keys_file = tmp_path / "keys.json"
    key = add_key(keys_file, "crm-agent", parse_scopes("customers"))
    stored = keys_file.read_text(encoding="utf-8")
    assert key not in stored and hash_key(key) in stored
    store = KeyStore(keys_file)
    found = store.authenticate(f"Bearer {key}")
    assert found.name == "crm-agent" and found.allows("customers") and not found.allows("segments")
    for header in (None, "", key, f"Basic {key}", "Bearer ", f"Bearer {key}x"):
        assert store.authenticate(header) is None


def test_a_key_added_while_serving_is_accepted_without_restart(tmp_path):
    keys_file = tmp_path / "keys.json"
    store = KeyStore(keys_file)  # no file yet: no keys
    assert store.names == []
    key = add_key(keys_file, "late", parse_scopes("segments"))
    store.reload()
    assert store.authenticate(f"Bearer {key}").name == "late"


@pytest.mark.parametrize("scopes, message", [("", "empty"), ("segments,everything", "unknown scope everything")])
def test_scopes_must_be_known(scopes, message):
    with pytest.raises(PipelineError, match=message):
        parse_scopes(scopes)


def test_key_names_are_unique_and_plain(tmp_path):
    keys_file = tmp_path / "keys.json"
    add_key(keys_file, "crm", parse_scopes("segments"))
    with pytest.raises(PipelineError, match="already has a key named 'crm'"):
        add_key(keys_file, "crm", parse_scopes("segments"))
    with pytest.raises(PipelineError, match="key name"):
        add_key(keys_file, "two words", parse_scopes("segments"))


def test_a_malformed_keys_file_is_refused_naming_it(tmp_path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"name": "x", "sha256": "short", "scopes": ["segments"]}]}))
    with pytest.raises(PipelineError, match=r"keys.json: entry 1 needs"):
        KeyStore(keys_file)


def test_an_audit_line_cannot_be_forged_through_a_customer_id(tmp_path):
    audit = AuditLog(tmp_path / "audit.log")
    audit.record("crm", "http", "get_customer", "42\n2026-01-01T00:00:00Z  key=admin", "not found")
    audit.record("crm", "http", "get_customer", "C00042", "found segment 3")
    audit.close()
    lines = (tmp_path / "audit.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert 'customer="42\\n2026-01-01T00:00:00Z  key=admin"' in lines[0]
    assert lines[1].endswith("key=crm  via=http  action=get_customer  customer=C00042  result=\"found segment 3\"")


def test_audit_lines_reach_the_file_while_the_service_runs(tmp_path):
    import time

    audit = AuditLog(tmp_path / "audit.log", flush_seconds=0.05)
    try:
        audit.record("crm", "http", "get_customer", "7", "found segment 1")
        deadline = time.monotonic() + 5
        while "customer=7 " not in (tmp_path / "audit.log").read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, "the writer thread never wrote the line"
            time.sleep(0.02)
    finally:
        audit.close()


def test_whole_number_ids_are_found_only_as_written():
    import numpy as np

    from core.service.run import CustomerIndex

    index = CustomerIndex(np.array([30, 10, 20], np.int64))
    assert [index.find(t) for t in ("10", "20", "30")] == [1, 2, 0]
    assert [index.find(t) for t in ("010", "+10", "10.0", " 10", "1_0", "15", "99" * 20, "-5")] == [None] * 8
    assert index.find_many(np.array([20, 5, 30])).tolist() == [2, -1, 0]
    with pytest.raises(PipelineError, match="twice"):
        CustomerIndex(np.array([1, 2, 1], np.int64))


@pytest.mark.parametrize("key, value, message", [
    ("port", 0, "service.port"), ("port", 70000, "service.port"), ("host", "", "service.host"),
    ("host", "not a host!", "service.host"), ("keys_file", "", "service.keys_file"),
    ("max_score_lines", 0, "service.max_score_lines"), ("max_body_bytes", 10, "service.max_body_bytes"),
])
def test_bad_service_settings_are_refused_naming_the_key(tmp_path, key, value, message):
    document = small_config_document()
    document["service"][key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write_config(tmp_path, document))


def test_the_shipped_service_settings_bind_to_loopback():
    service = load_config().service
    assert service.host == "127.0.0.1"


def customers_table(ids):
    import pyarrow as pa

    n = len(ids)
    return pa.table({"customer_id": ids, "segment_id": [1] * n, "segment_name": ["Loyal Regulars"] * n,
                     "strength": [0.9] * n, "runner_up_segment_id": [2] * n,
                     "runner_up_segment_name": ["Steady Shoppers"] * n, "email": ["a@example.com"] * n,
                     "churn_risk": pa.array(["low", None][:n], pa.string())})


@pytest.mark.parametrize("ids, asked, other", [([42, 7], "42", "7"), (["C00042", "00123"], "C00042", "00123")])
def test_customers_are_found_by_the_text_of_their_id_whatever_the_column_type(ids, asked, other):
    import pyarrow as pa

    from core.service.run import customer_table

    picks = pa.table({"customer_id": [ids[1], ids[0], ids[0]], "rank": [1, 2, 1],
                      "class": ["Socks", "Knitwear", "Denim"]})
    table = customer_table(customers_table(ids), picks)
    row = table.row(asked)
    assert row["segment_name"] == "Loyal Regulars" and row["churn_risk"] == "low"
    assert table.row(other)["churn_risk"] is None
    assert [p["class"] for p in table.next_best(asked)] == ["Denim", "Knitwear"]
    assert [p["class"] for p in table.next_best(other)] == ["Socks"]
    assert table.row("42.0") is None and table.row("C42") is None


def test_identity_columns_are_dropped_when_the_run_is_loaded():
    from core.service.run import customer_table

    table = customer_table(customers_table([1, 2]))
    assert "email" not in table.row("1") and "segment_name" in table.row("1")


def test_mcp_trusts_the_local_user_only_when_started_on_stdio():
    from mcp.shared.exceptions import MCPError

    from core.service.keys import LOCAL_USER
    from core.service.mcp_server import caller

    assert caller(None, stdio=True) == LOCAL_USER
    with pytest.raises(MCPError, match="401"):
        caller(None, stdio=False)  # an HTTP message without its request is never the local user

    class Request:
        scope = {"state": {}}

    with pytest.raises(MCPError, match="401"):
        caller(Request(), stdio=False)
