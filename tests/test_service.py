"""The segment service (issue 17) against a real run: a real server on a loopback port, real HTTP calls, and
real MCP client sessions from the SDK (over HTTP and over stdio).

One small run (300 customers) is made for the module; the server runs as ``python -m core.pipeline serve``
in a subprocess, exactly as a user starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import small_config_document, write_config
from core import pipeline, scoring
from core.config import load_config
from core.domain.tables import IDENTITY_COLUMNS
from core.framework import paths
from core.framework.errors import PipelineError
from core.service.run import load_served_run

MAX_LINES = 400
MAX_BODY = 150_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def new_key(config: Path, artifacts: Path, name: str, scopes: str) -> str:
    """``add-key`` through the command line's own entry point; the key is the last line it prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert pipeline.main(["add-key", name, "--scopes", scopes, "--config", str(config),
                              "--artifacts", str(artifacts)]) == 0
    return out.getvalue().strip().splitlines()[-1]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "PYTHONUTF8": "1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A finished run, two keys, and the service serving it on a free loopback port."""
    root = tmp_path_factory.mktemp("service")
    document = small_config_document()
    document["service"].update(max_score_lines=MAX_LINES, max_body_bytes=MAX_BODY, max_customer_id_length=16)
    config = write_config(root / "config", document)
    artifacts = root / "artifacts"
    pipeline.run_pipeline(load_config(config), artifacts)
    keys = {"full": new_key(config, artifacts, "crm-agent", "segments,customers"),
            "segments": new_key(config, artifacts, "dashboard", "segments")}
    port = free_port()
    log = open(root / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "core.pipeline", "serve", "--config", str(config),
                                "--artifacts", str(artifacts), "--port", str(port)],
                               cwd=paths.REPO_ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (root / "serve.log").read_text(encoding="utf-8")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the service did not start in 90 s"
            time.sleep(0.3)
        yield {"url": url, "keys": keys, "config": config, "artifacts": artifacts, "root": root}
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()
        log.close()


def get(served, path: str, key: str | None = "full", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {served['keys'][key]}"} if key else {}
    return httpx.get(served["url"] + path, headers=headers, timeout=30, **kwargs)


def stage_file(served, stage: str, file: str) -> Path:
    return paths.stage_dir(served["artifacts"], stage) / file


def export(served) -> dict:
    return json.loads(stage_file(served, paths.PROFILE_EXPORT, paths.SEGMENT_PROFILES_JSON).read_text("utf-8"))


def test_health_answers_without_a_key_and_names_the_run(served):
    answer = get(served, "/health", key=None)
    assert answer.status_code == 200
    assert answer.json()["run_id"] == export(served)["metadata"]["run_id"]


@pytest.mark.parametrize("path", ["/run", "/segments", "/segments/0", "/customers/1", "/openapi.json"])
def test_nothing_else_answers_without_a_valid_key(served, path):
    missing = httpx.get(served["url"] + path, timeout=10)
    wrong = httpx.get(served["url"] + path, headers={"Authorization": "Bearer seg_not-a-key"}, timeout=10)
    basic = httpx.get(served["url"] + path, headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=10)
    for answer in (missing, wrong, basic):
        assert answer.status_code == 401
        assert answer.json()["status"] == 401 and "key" in answer.json()["error"]


def test_a_key_without_the_customers_scope_gets_403_on_customer_routes(served):
    assert get(served, "/segments", key="segments").status_code == 200
    refused = get(served, "/customers/1", key="segments")
    assert refused.status_code == 403
    assert "customers" in refused.json()["error"]
    scored = httpx.post(served["url"] + "/score", json={"lines": []}, timeout=10,
                        headers={"Authorization": f"Bearer {served['keys']['segments']}"})
    assert scored.status_code == 403


def test_segments_are_the_agent_export_as_written(served):
    written = export(served)
    assert get(served, "/segments").json() == written
    for segment in written["segments"]:
        assert get(served, f"/segments/{segment['segment_id']}").json() == segment
    assert get(served, "/segments/999").status_code == 404
    assert get(served, "/segments/abc").status_code == 400
    run = get(served, "/run").json()
    assert run["run_id"] == written["metadata"]["run_id"]
    assert run["data_period"] == written["metadata"]["data_period"]
    assert [s["segment_id"] for s in run["segments"]] == [s["segment_id"] for s in written["segments"]]


def test_a_customer_gets_their_row_strategy_value_and_next_best_classes(served):
    table = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))
    picks = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.RECOMMENDATIONS))
    strategies = {s["segment_id"]: s.get("strategy") for s in export(served)["segments"]}
    for row in table.sample(5, random_state=0).itertuples():
        answer = get(served, f"/customers/{row.customer_id}")
        assert answer.status_code == 200
        body = answer.json()
        assert body["segment"] == {"segment_id": row.segment_id, "name": row.segment_name,
                                   "strength": pytest.approx(row.strength)}
        assert body["strategy"] == strategies[row.segment_id]
        assert body["customer_value"]["churn_risk"] == row.churn_risk
        assert body["customer_value"]["p_alive"] == pytest.approx(row.p_alive)
        own = picks[picks["customer_id"] == row.customer_id].sort_values("rank")
        assert [p["class"] for p in body["next_best_classes"]] == own["class"].tolist()


def test_every_customer_answer_over_http_is_the_answer_the_mcp_tool_builds(served):
    """The HTTP route renders each segment's strategy once and splices it in: the same JSON as get_customer."""
    from core.service.answers import CustomerAnswers, get_customer

    run = load_served_run(pipeline.STAGES, load_config(served["config"]), served["artifacts"])
    table = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))
    rendered = CustomerAnswers(run)
    for customer in table["customer_id"].astype(str):
        body, segment_id = rendered.render(customer, run.customers.find(customer))
        assert json.loads(body) == get_customer(run, customer)
        assert segment_id == json.loads(body)["segment"]["segment_id"]
    for customer in table["customer_id"].astype(str).iloc[:3]:
        assert get(served, f"/customers/{customer}").json() == get_customer(run, customer)


def test_routes_the_hot_path_leaves_to_starlette_still_answer(served):
    assert httpx.head(served["url"] + "/segments", timeout=10,
                      headers={"Authorization": f"Bearer {served['keys']['full']}"}).status_code == 200
    assert get(served, "/customers/").status_code == 404
    assert get(served, "/customers/1/more").status_code == 404
    assert get(served, "/segments", key=None).headers["www-authenticate"] == "Bearer"


def test_identity_fields_never_leave_the_service(served):
    people = pd.read_parquet(stage_file(served, paths.GENERATE_DATA, paths.CUSTOMERS))
    table = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))
    person = people[people["customer_id"] == table["customer_id"].iloc[0]].iloc[0]
    text = get(served, f"/customers/{person['customer_id']}").text + get(served, "/segments").text
    for column in IDENTITY_COLUMNS:
        if column in people.columns and isinstance(person[column], str) and len(person[column]) > 3:
            assert person[column] not in text, f"{column} leaked"
        assert f'"{column}":' not in text  # never a field ("email" is a strategy channel)


def test_unknown_and_malformed_customer_ids(served):
    assert get(served, "/customers/99999999").status_code == 404
    too_long = get(served, "/customers/" + "1" * 17)  # max_customer_id_length is 16 in this config
    assert too_long.status_code == 400 and "16" in too_long.json()["error"]
    control = get(served, "/customers/12%0A34")
    assert control.status_code == 400
    assert get(served, "/no-such-route").status_code == 404
    assert get(served, "/no-such-route").json()["status"] == 404


def order_lines(served, customers: list) -> pd.DataFrame:
    lines = pd.read_parquet(stage_file(served, paths.GENERATE_DATA, paths.TRANSACTIONS))
    return lines[lines["customer_id"].isin(customers)].reset_index(drop=True)


def as_json_lines(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.assign(order_date=frame["order_date"].dt.strftime("%Y-%m-%d")).to_json(orient="records"))


def post_score(served, body, key: str = "full", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {served['keys'][key]}", **kwargs.pop("headers", {})}
    return httpx.post(served["url"] + "/score", headers=headers, timeout=120,
                      **({"json": body} if body is not None else {}), **kwargs)


def test_score_returns_what_the_score_command_computes(served):
    table = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))
    customers = table["customer_id"].iloc[:3].tolist()
    lines = order_lines(served, customers)
    assert len(lines) <= MAX_LINES
    answer = post_score(served, {"lines": as_json_lines(lines)})
    assert answer.status_code == 200, answer.text
    rows = pd.DataFrame(answer.json()["customers"])
    config = load_config(served["config"])
    expected = scoring.score_customers(lines, scoring.load_saved_run(served["artifacts"], config))
    assert rows["customer_id"].tolist() == expected["customer_id"].tolist()
    assert rows["segment"].tolist() == expected["segment"].tolist()
    assert rows["segment_strength"].tolist() == pytest.approx(expected["segment_strength"].tolist())
    assert rows["p_alive"].tolist() == pytest.approx(expected["p_alive"].tolist())
    assert list(rows.columns) == list(expected.columns)


def test_score_refuses_bad_bodies_with_json_errors(served):
    lines = as_json_lines(order_lines(served, [1, 2, 3, 4]))[:40]
    assert post_score(served, None, content=b"{not json").status_code == 400
    assert post_score(served, {"rows": lines}).status_code == 400
    assert post_score(served, {"lines": [lines[0]], "analysis_date": "yesterday"}).status_code == 400
    missing = post_score(served, {"lines": [{k: v for k, v in line.items() if k != "order_date"} for line in lines]})
    assert missing.status_code == 422 and "order_date" in missing.json()["error"]
    bad_value = post_score(served, {"lines": [{**lines[0], "quantity": "lots"}]})
    assert bad_value.status_code == 422 and "quantity" in bad_value.json()["error"]
    many = post_score(served, {"lines": [lines[0]] * (MAX_LINES + 1)})
    assert many.status_code == 413 and str(MAX_LINES) in many.json()["error"]
    huge = post_score(served, None, content=b'{"lines": [' + b'{"a": 1},' * (MAX_BODY // 9 + 100) + b'{"a": 1}]}',
                      headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["status"] == 413


def test_customer_requests_are_audited_with_key_name_id_and_result(served):
    get(served, "/customers/99999998")
    table = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))
    known = table["customer_id"].iloc[7]
    get(served, f"/customers/{known}")
    get(served, f"/customers/{known}", key="segments")
    httpx.get(f"{served['url']}/customers/{known}", timeout=10)
    log = audit_lines(served, lambda line: "refused 401" in line and f"customer={known} " in line)
    assert any("key=crm-agent" in line and "customer=99999998" in line and "not found" in line for line in log)
    assert any("key=crm-agent" in line and f"customer={known} " in line and "found segment" in line for line in log)
    assert any("key=dashboard" in line and f"customer={known} " in line and "refused 403" in line for line in log)
    assert any("key=- " in line and f"customer={known} " in line and "refused 401" in line for line in log)


def audit_lines(served, last, seconds: float = 5.0) -> list[str]:
    """The audit log's lines once one satisfies ``last`` (lines are written by a thread every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = (served["artifacts"] / "service_audit.log").read_text(encoding="utf-8").splitlines()
        if any(last(line) for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_openapi_description_lists_every_route(served):
    document = get(served, "/openapi.json").json()
    assert set(document["paths"]) == {"/health", "/run", "/segments", "/segments/{segment_id}",
                                      "/customers/{customer_id}", "/score"}


async def mcp_session_calls(url: str, key: str, customer: str, lines: list[dict]) -> dict:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            return await _every_call(client, customer, lines)


async def _every_call(client, customer: str, lines: list[dict]) -> dict:
    tools = await client.list_tools()
    found = {"tools": sorted(t.name for t in tools.tools)}
    for name, arguments in (("list_segments", {}), ("get_segment", {"segment_id": 0}),
                            ("get_customer", {"customer_id": customer}), ("score_customer", {"lines": lines}),
                            ("get_customer", {"customer_id": "no-such-customer"})):
        result = await client.call_tool(name, arguments)
        found[f"{name}:{arguments.get('customer_id', '')}"] = (result.is_error, result.content[0].text)
    resources = await client.list_resources()
    found["resources"] = sorted(str(r.uri) for r in resources.resources)
    read = await client.read_resource("segments://0")
    found["segment 0"] = json.loads(read.contents[0].text)
    prompt = await client.get_prompt("treat_customer", {"customer_id": customer})
    found["prompt"] = prompt.messages[0].content.text
    return found


def check_mcp_answers(found: dict, served, customer: str) -> None:
    assert found["tools"] == ["get_customer", "get_segment", "list_segments", "score_customer"]
    written = export(served)
    assert json.loads(found["list_segments:"][1]) == written
    assert json.loads(found["get_segment:"][1]) == written["segments"][0]
    error, text = found[f"get_customer:{customer}"]
    assert not error and json.loads(text) == get(served, f"/customers/{customer}").json()
    error, text = found["score_customer:"]
    assert not error and json.loads(text)["customers"][0]["customer_id"] == int(customer)
    error, text = found["get_customer:no-such-customer"]
    assert error and "404" in text
    assert found["resources"] == sorted(["segments://all"] + [f"segments://{s['segment_id']}"
                                                              for s in written["segments"]])
    assert found["segment 0"] == written["segments"][0]
    segment = json.loads(found[f"get_customer:{customer}"][1])["segment"]
    assert segment["name"] in found["prompt"]


def test_an_mcp_client_session_over_http_calls_every_tool(served):
    customer = str(pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT,
                                              paths.CUSTOMERS_WITH_SEGMENTS))["customer_id"].iloc[3])
    lines = as_json_lines(order_lines(served, [int(customer)]))
    found = asyncio.run(mcp_session_calls(served["url"], served["keys"]["full"], customer, lines))
    check_mcp_answers(found, served, customer)
    assert httpx.post(served["url"] + "/mcp", json={}, timeout=10).status_code == 401


def test_mcp_over_http_checks_the_key_scope(served):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    async def calls():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {served['keys']['segments']}"}) as http:
            async with Client(streamable_http_client(f"{served['url']}/mcp", http_client=http)) as client:
                allowed = await client.call_tool("list_segments", {})
                with pytest.raises(MCPError, match="403"):
                    await client.call_tool("get_customer", {"customer_id": "1"})
                with pytest.raises(MCPError, match="403"):
                    await client.get_prompt("treat_customer", {"customer_id": "1"})
                return allowed

    assert not asyncio.run(calls()).is_error


def test_an_mcp_client_session_over_stdio_calls_every_tool(served):
    from mcp import Client, StdioServerParameters

    customer = str(pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT,
                                              paths.CUSTOMERS_WITH_SEGMENTS))["customer_id"].iloc[5])
    lines = as_json_lines(order_lines(served, [int(customer)]))
    params = StdioServerParameters(command=sys.executable, cwd=str(paths.REPO_ROOT), env=child_env(),
                                   args=["-m", "core.pipeline", "serve", "--mcp-stdio", "--config",
                                         str(served["config"]), "--artifacts", str(served["artifacts"])])

    async def session():
        async with Client(params, read_timeout_seconds=180) as client:
            return await _every_call(client, customer, lines)

    check_mcp_answers(asyncio.run(session()), served, customer)
    log = (served["artifacts"] / "service_audit.log").read_text(encoding="utf-8")
    assert f"key=local-stdio  via=mcp-stdio  action=get_customer  customer={customer} " in log


def test_start_up_refuses_a_stale_or_tampered_run(served, tmp_path):
    document = small_config_document()
    document["profile_export"]["top_classes"] = 2
    changed = load_config(write_config(tmp_path / "changed", document))
    with pytest.raises(PipelineError, match="05_profile_export is stale .*config section 'profile_export' changed"):
        load_served_run(pipeline.STAGES, changed, served["artifacts"])
    import shutil

    copy = tmp_path / "artifacts"
    shutil.copytree(served["artifacts"], copy)
    target = paths.stage_dir(copy, paths.PROFILE_EXPORT) / paths.CUSTOMERS_WITH_SEGMENTS
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(PipelineError, match="customers_with_segments.parquet was changed after the run"):
        load_served_run(pipeline.STAGES, load_config(served["config"]), copy)


def test_a_run_finishing_while_serving_is_reported_not_mixed_in(served):
    """The service keeps answering from the run it loaded; /health says a newer one finished."""
    manifest = stage_file(served, paths.PROFILE_EXPORT, paths.MANIFEST)
    before = get(served, "/health", key=None).json()
    original = manifest.read_bytes()
    try:
        manifest.write_bytes(original.replace(b'"summary"', b'"rerun": true, "summary"', 1))
        time.sleep(1.2)  # the service looks at the manifests at most once a second
        after = get(served, "/health", key=None).json()
        assert after["newer_run_finished"] is True and after["run_id"] == before["run_id"]
        known = pd.read_parquet(stage_file(served, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))["customer_id"]
        assert get(served, f"/customers/{known.iloc[0]}").json()["run_id"] == before["run_id"]
    finally:
        manifest.write_bytes(original)
