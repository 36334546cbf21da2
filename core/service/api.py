"""The HTTP API (Starlette), with the MCP endpoint mounted at ``/mcp`` behind the same keys.

Routes: ``GET /health`` (no key), ``GET /openapi.json``, ``GET /run``,
``GET /segments``, ``GET /segments/{segment_id}`` (scope ``segments``),
``GET /customers/{customer_id}`` and ``POST /score`` (scope ``customers``).
Every error is a JSON body ``{"error": message, "status": code}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.service.access import Service
from core.service.answers import ServiceError, get_segment, list_segments, run_summary, to_json
from core.service.keys import ApiKey

log = logging.getLogger(__name__)


class _Json(JSONResponse):
    """JSON as UTF-8 text (names with £ or accents as they are), refusing NaN (never valid JSON)."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def _error(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _Json({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(service: Service, mcp=None) -> "HotRoutes":
    """The ASGI app: the API routes and, given an :class:`~mcp.server.mcpserver.MCPServer`, its endpoint at /mcp.

    The Starlette app answers every route; :class:`HotRoutes` in front of it
    answers the three that agents call most (a customer, the segments, the
    run) straight from ASGI, with the same checks and bodies.
    """
    app = create_starlette_app(service, mcp)
    return HotRoutes(app, service, app.state.rendered)


def create_starlette_app(service: Service, mcp=None) -> Starlette:
    """Every route as a Starlette app (``app.state.rendered``: the /run and /segments bodies, rendered once)."""

    def key_of(request: Request, scope: str | None) -> ApiKey:
        key = service.authenticate(request.headers.get("authorization"))
        if scope:
            service.require(key, scope)
        return key

    async def health(request: Request) -> Response:
        return _Json(service.health())

    async def openapi(request: Request) -> Response:
        key_of(request, None)
        return _Json(openapi_document(service))

    # The run's aggregates never change while it is served: rendered once, not per request (the agent
    # export is tens of kilobytes of JSON; rendering it took about 2 ms of CPU a request at 10,000 customers).
    rendered = {"run": to_json(run_summary(service.run)), "segments": to_json(list_segments(service.run))}

    async def run(request: Request) -> Response:
        key_of(request, "segments")
        return Response(rendered["run"], media_type="application/json")

    async def segments(request: Request) -> Response:
        key_of(request, "segments")
        return Response(rendered["segments"], media_type="application/json")

    async def segment(request: Request) -> Response:
        key_of(request, "segments")
        return _Json(get_segment(service.run, request.path_params["segment_id"]))

    async def customer(request: Request) -> Response:
        try:
            key = key_of(request, None)
        except ServiceError as exc:
            service.audit.record("-", "http", "get_customer", request.path_params["customer_id"][:80],
                                 f"refused {exc.status}")
            raise
        return Response(service.customer_json(key, "http", request.path_params["customer_id"]),
                        media_type="application/json")

    async def score(request: Request) -> Response:
        try:
            key = key_of(request, None)
        except ServiceError as exc:
            service.audit.record("-", "http", "score", "-", f"refused {exc.status}")
            raise
        body = await read_json_body(request, service.settings.max_body_bytes)
        # Scoring takes CPU for a while: off the event loop, so lookups keep being answered.
        return _Json(await anyio.to_thread.run_sync(service.score, key, "http", body))

    async def service_error(request: Request, exc: ServiceError) -> Response:
        return _error(exc.status, exc.message)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail or "error")

    async def unexpected(request: Request, exc: Exception) -> Response:
        # uvicorn logs the traceback (to pipeline.log too); the caller gets one line.
        return _error(500, f"unexpected {type(exc).__name__}; the service log has the details")

    routes = [Route("/health", health), Route("/openapi.json", openapi), Route("/run", run),
              Route("/segments", segments), Route("/segments/{segment_id}", segment),
              Route("/customers/{customer_id}", customer), Route("/score", score, methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with (mcp.session_manager.run() if mcp is not None else contextlib.nullcontext()):
            yield
        service.close()

    if mcp is not None:
        from core.service.mcp_server import mcp_http_endpoint

        routes.append(Route("/mcp", mcp_http_endpoint(mcp, service), methods=["GET", "POST", "DELETE"]))
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ServiceError: service_error, HTTPException: http_error,
                                        Exception: unexpected})
    app.state.rendered = rendered
    return app


_JSON_TYPE = (b"content-type", b"application/json")


class HotRoutes:
    """ASGI in front of the Starlette app: ``GET /customers/{id}``, ``/segments`` and ``/run`` answered directly.

    Starlette's routing, request object and response classes cost about as
    much CPU as the answer itself; for the lookups an agent makes per
    conversation turn this answers from the ASGI scope: the same key and
    scope checks (:class:`~core.service.access.Service`), the same audit
    line, the same JSON bodies and errors. Anything else, including HEAD,
    a path these routes would not match, MCP and lifespan, goes to Starlette.
    """

    def __init__(self, app: Starlette, service: Service, rendered: dict[str, bytes]):
        self.app = app
        self.service = service
        self.rendered = rendered

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        if path.startswith("/customers/") and "/" not in path[11:] and len(path) > 11:
            answer = self._customer
        elif path in ("/segments", "/run"):
            answer = self._aggregate
        else:
            return await self.app(scope, receive, send)
        try:
            status, body, headers = 200, answer(scope, path), [_JSON_TYPE]
        except ServiceError as exc:
            status, body, headers = exc.status, to_json({"error": exc.message, "status": exc.status}), [_JSON_TYPE]
            if exc.status == 401:
                headers.append((b"www-authenticate", b"Bearer"))
        except Exception as exc:  # noqa: BLE001 - as Starlette's handler: logged here, one line to the caller
            log.exception("unexpected error answering %s", path)
            status, headers = 500, [_JSON_TYPE]
            body = to_json({"error": f"unexpected {type(exc).__name__}; the service log has the details",
                            "status": 500})
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _key(self, scope) -> ApiKey:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self.service.authenticate(value.decode("latin-1"))
        return self.service.authenticate(None)

    def _customer(self, scope, path: str) -> bytes:
        customer_id = path[11:]
        try:
            key = self._key(scope)
        except ServiceError as exc:
            self.service.audit.record("-", "http", "get_customer", customer_id[:80], f"refused {exc.status}")
            raise
        return self.service.customer_json(key, "http", customer_id)

    def _aggregate(self, scope, path: str) -> bytes:
        self.service.require(self._key(scope), "segments")
        return self.rendered[path[1:]]


async def read_json_body(request: Request, limit: int) -> Any:
    """The request body parsed as JSON; 413 above ``limit`` bytes (checked while reading), 400 if not JSON."""
    too_big = ServiceError(413, f"request body over {limit:,} bytes (service.max_body_bytes); send fewer lines")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServiceError(400, f"the body is not JSON ({exc}); send application/json") from None


def openapi_document(service: Service) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API (served at /openapi.json)."""
    limits = service.settings

    def answer(description: str, scope: str | None, *errors: int) -> dict[str, Any]:
        responses = {"200": {"description": description, "content": {"application/json": {}}}}
        for code in (401, 403) * bool(scope) + errors:
            responses[str(code)] = {"$ref": "#/components/responses/Error"}
        return {"responses": responses, **({"security": [{"bearer": []}]} if scope else {"security": []}),
                **({"x-scope": scope} if scope else {})}

    customer_id = {"name": "customer_id", "in": "path", "required": True,
                   "schema": {"type": "string", "maxLength": limits.max_customer_id_length},
                   "description": "the id as written in customers_with_segments.parquet (42, or C00042)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Retail segment service", "version": service.run.run_id,
                 "description": "Read-only answers from one finished pipeline run. Keys: add-key NAME --scopes "
                                "segments,customers; send Authorization: Bearer <key>."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}}}}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"summary": "ok and the run id (no key)", **answer("ok", None)}},
            "/run": {"get": {"summary": "the run served: id, data period, method, space, segments, when made",
                             **answer("the run", "segments")}},
            "/segments": {"get": {"summary": "the agent export (suppressed segments stay suppressed)",
                                  **answer("metadata and segments", "segments")}},
            "/segments/{segment_id}": {"get": {
                "summary": "one segment of the agent export",
                "parameters": [{"name": "segment_id", "in": "path", "required": True,
                                "schema": {"type": "integer"}}],
                **answer("the segment", "segments", 400, 404)}},
            "/customers/{customer_id}": {"get": {
                "summary": "segment, strength, runner-up, strategy, value and churn, next-best classes",
                "parameters": [customer_id], **answer("the customer", "customers", 400, 404)}},
            "/score": {"post": {
                "summary": "score order lines as the score command does",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["lines"],
                    "properties": {"lines": {"type": "array", "maxItems": limits.max_score_lines,
                                             "items": {"type": "object",
                                                       "description": "the columns of transactions.parquet"}},
                                   "analysis_date": {"type": "string", "format": "date"}}}}}},
                **answer("one row per customer, the score command's columns", "customers", 400, 413, 422)}},
        },
    }
