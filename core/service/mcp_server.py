"""The MCP server (the official ``mcp`` SDK): tools, segment profiles as resources, and a briefing prompt.

Tools: ``list_segments``, ``get_segment`` (scope ``segments``),
``get_customer``, ``score_customer`` (scope ``customers``). Resources:
``segments://all`` and ``segments://{segment_id}`` for each segment of the
agent export. Prompt: ``treat_customer``, which briefs an agent to treat a
customer by their segment's strategy.

Over HTTP (``/mcp`` on the API's port) every request needs a key, like the
API, and each method is checked against the key's scopes before it runs;
over stdio the caller is the local user who started the process, trusted
with every scope (:data:`core.service.keys.LOCAL_USER`).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.shared.exceptions import MCPError
from starlette.responses import JSONResponse

from core.service.access import Service
from core.service.answers import ServiceError, get_segment, list_segments
from core.service.keys import LOCAL_USER, ApiKey

# The scope each MCP method needs (tools by name); methods not listed (initialize, ping, listings of tools
# and prompts) need only a valid key.
_TOOL_SCOPES = {"list_segments": "segments", "get_segment": "segments", "get_customer": "customers",
                "score_customer": "customers"}
_METHOD_SCOPES = {"resources/list": "segments", "resources/read": "segments", "resources/templates/list": "segments",
                  "prompts/get": "customers"}
# JSON-RPC "invalid request" code used for a refusal; the message carries 403 and the fix.
_REFUSED = -32600


def caller(request: Any, stdio: bool) -> ApiKey:
    """The key an MCP request came with: the HTTP request's checked key, or the local user over stdio.

    Trust is decided by how the server was started, never by a request lacking
    an HTTP request object: over HTTP, a message without one is refused.
    """
    if stdio:
        return LOCAL_USER
    key = getattr(request, "scope", {}).get("state", {}).get("api_key") if request is not None else None
    if key is None:  # only reachable if the endpoint were mounted without mcp_http_endpoint's key check
        raise MCPError(_REFUSED, "401: no valid key on this request")
    return key


def build_mcp(service: Service, *, stdio: bool = False) -> MCPServer:
    """The MCP server over ``service`` (its tools, resources and prompt).

    ``stdio``: served on stdin/stdout to the local user who started it (every scope); otherwise over HTTP,
    where every request carries a checked key.
    """
    run = service.run
    mcp = MCPServer("retail-segments", version=run.run_id,
                    instructions="Customer segments of one finished retail pipeline run. Look a customer up with "
                                 "get_customer and follow their segment's strategy (channel, offer, tone, timing); "
                                 "the treat_customer prompt gives the brief.")

    async def check_scope(ctx, call_next):
        scope = _TOOL_SCOPES.get((ctx.params or {}).get("name")) if ctx.method == "tools/call" \
            else _METHOD_SCOPES.get(ctx.method)
        if scope is not None and ctx.request_id is not None:
            try:
                Service.require(caller(ctx.request, stdio), scope)
            except ServiceError as exc:
                raise MCPError(_REFUSED, f"{exc.status}: {exc.message}") from None
        return await call_next(ctx)

    mcp.middleware.append(check_scope)

    def via(ctx: Context) -> str:
        return "mcp-stdio" if stdio else "mcp-http"

    # Named here: a Python name cannot shadow the answer functions imported above.
    @mcp.tool(name="list_segments")
    def list_segments_tool() -> dict:
        """The agent export: run metadata and every segment's profile and strategy (small segments suppressed)."""
        return list_segments(run)

    @mcp.tool(name="get_segment")
    def get_segment_tool(segment_id: int) -> dict:
        """One segment's profile and strategy, by its id (see list_segments)."""
        return _answer(lambda: get_segment(run, segment_id))

    @mcp.tool()
    def get_customer(customer_id: str, ctx: Context) -> dict:
        """A customer's segment, strength, runner-up, the segment's strategy, value and churn, next-best classes."""
        key = caller(ctx.request_context.request, stdio)
        return _answer(lambda: service.customer(key, via(ctx), customer_id))

    @mcp.tool()
    async def score_customer(lines: list[dict], ctx: Context, analysis_date: str | None = None) -> dict:
        """Score order lines (the columns of transactions.parquet) as the score command does; one row per customer."""
        key = caller(ctx.request_context.request, stdio)
        body = {"lines": lines, "analysis_date": analysis_date}
        return await anyio.to_thread.run_sync(lambda: _answer(lambda: service.score(key, via(ctx), body)))

    @mcp.resource("segments://all", name="all segments", mime_type="application/json",
                  description="the agent export: metadata and every segment")
    def all_segments() -> str:
        return json.dumps(list_segments(run), ensure_ascii=False)

    for segment_id, segment in run.segments.items():
        _add_segment_resource(mcp, segment_id, segment)

    @mcp.prompt(name="treat_customer", description="brief an agent to treat a customer by their segment's strategy")
    def treat_customer(customer_id: str, ctx: Context) -> str:
        key = caller(ctx.request_context.request, stdio)
        found = _answer(lambda: service.customer(key, via(ctx), customer_id), error=MCPError)
        return briefing(found, run.segment(found["segment"]["segment_id"]))

    return mcp


def _add_segment_resource(mcp: MCPServer, segment_id: int, segment: dict) -> None:
    text = json.dumps(segment, ensure_ascii=False)
    mcp.resource(f"segments://{segment_id}", name=f"segment {segment_id}: {segment['name']}",
                 mime_type="application/json",
                 description="suppressed: too small to describe" if segment.get("suppressed")
                 else segment.get("description", "")[:200])(lambda: text)


def _answer(ask, error=ToolError):
    """Run ``ask``; a refusal becomes the MCP error the model reads (status and message)."""
    try:
        return ask()
    except ServiceError as exc:
        if error is MCPError:
            raise MCPError(_REFUSED, f"{exc.status}: {exc.message}") from None
        raise ToolError(f"{exc.status}: {exc.message}") from None


def briefing(customer: dict, segment: dict | None) -> str:
    """The text of the treat_customer prompt: who the customer is by segment, and how to treat them."""
    seg = customer["segment"]
    lines = [f"You are serving customer {customer['customer_id']}. They belong to segment {seg['segment_id']}, "
             f"\"{seg['name']}\" (membership strength {seg['strength']:.2f})."]
    if segment and not segment.get("suppressed"):
        lines.append(f"About the segment: {segment.get('description', '')}")
    strategy = customer.get("strategy")
    if strategy:
        lines.append(f"Treat them by the segment's strategy: channel {', '.join(strategy.get('channel', []))}; "
                     f"offer: {strategy.get('offer', '')}; tone: {strategy.get('tone', '')}; "
                     f"timing: {strategy.get('timing', '')}.")
        if strategy.get("cross_sell"):
            lines.append(f"Suggest, where it fits: {', '.join(strategy['cross_sell'])}.")
        if strategy.get("retention_actions"):
            lines.append(f"Retention: {'; '.join(strategy['retention_actions'])}.")
    else:
        lines.append(f"The segment has no strategy to follow ({customer.get('strategy_note')}); keep to the "
                     f"house's general tone.")
    value = customer.get("customer_value") or {}
    if value.get("churn_risk"):
        lines.append(f"Churn risk: {value['churn_risk']} (chance still active {value.get('p_alive') or 0:.0%}).")
    picks = customer.get("next_best_classes") or []
    if picks:
        lines.append("Next-best classes to mention: " + ", ".join(f"{p['class']} ({p['department']})"
                                                                  for p in picks[:3]) + ".")
    lines.append("Never ask for or repeat personal details; this brief holds none.")
    return "\n".join(lines)


def mcp_http_endpoint(mcp: MCPServer, service: Service) -> "KeyGuard":
    """The ASGI endpoint of MCP over streamable HTTP, refusing a request without a valid key (401)."""
    mcp.streamable_http_app(host=service.settings.host, max_request_body_size=service.settings.max_body_bytes)
    return KeyGuard(StreamableHTTPASGIApp(mcp.session_manager), service)


class KeyGuard:
    """ASGI wrapper: 401 without a valid key; otherwise the key rides in ``scope["state"]`` for the scope checks.

    A class, not a function: Starlette treats a plain function as a request handler, not an ASGI app.
    """

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            key = self.service.authenticate(headers.get("authorization"))
        except ServiceError as exc:
            response = JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)
