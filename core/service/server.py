"""Start-up: load the run, then serve HTTP (uvicorn) or MCP over stdio; and ``add-key``.

Called by ``python -m core.pipeline serve`` and ``add-key``, which pass in
the pipeline's stages and the score command's input checks (this package
sits beside :mod:`core.pipeline`, not under it).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from pathlib import Path
from typing import Sequence

from core.framework.errors import PipelineError
from core.framework.stage import Stage
from core.service.access import Service
from core.service.answers import LineCheck
from core.service.keys import add_key, parse_scopes
from core.service.run import load_scoring_chain, load_served_run

log = logging.getLogger(__name__)


def keys_path(config) -> Path:
    """``service.keys_file``, resolved against the config file's folder."""
    return Path(config.path).parent / config.service.keys_file


def build_service(stages: Sequence[Stage], config, artifacts_dir: Path, check_lines: LineCheck) -> Service:
    """The run of ``artifacts_dir`` loaded and verified, with its keys and audit log (raises PipelineError)."""
    run = load_served_run(stages, config, artifacts_dir)
    service = Service(run, config.service, keys_path(config), Path(artifacts_dir) / config.service.audit_log,
                      check_lines, lambda: load_scoring_chain(run, config))
    service.scorer.start()
    return service


def serve(stages: Sequence[Stage], config, artifacts_dir: Path, check_lines: LineCheck, *, host: str | None = None,
          port: int | None = None, mcp_stdio: bool = False) -> int:
    """Serve the finished run until stopped (Ctrl-C): the HTTP API with MCP at /mcp, or MCP over stdio.

    Parameters
    ----------
    host, port : optional
        Override ``service.host`` and ``service.port``.
    mcp_stdio : bool
        Speak MCP on stdin/stdout instead (for a desktop agent that starts
        this as a subprocess); the caller is trusted as the local user.
    """
    import anyio

    from core.service.mcp_server import build_mcp

    clock = time.perf_counter()
    host, port = host or config.service.host, config.service.port if port is None else port
    if not 1 <= port <= 65535:
        raise PipelineError(f"--port {port}: give a port from 1 to 65535")
    if not mcp_stdio:
        check_port_free(host, port)
    service = build_service(stages, config, artifacts_dir, check_lines)
    mcp = build_mcp(service, stdio=mcp_stdio)
    run = service.run
    if not service.keys.names and not mcp_stdio:
        log.warning("no API keys in %s: only /health will answer; create one with `run.bat add-key NAME --scopes "
                    "segments,customers` (`./run.sh add-key ...`)", service.keys.path)
    summary = (f"run {run.run_id} ({len(run.customers):,} customers, {len(run.segments)} segments, "
               f"{run.metadata['segmentation']}), loaded in {run.load_seconds:.1f} s")
    if mcp_stdio:
        log.info("MCP over stdio: %s; ready %.1f s after start", summary, time.perf_counter() - clock)
        try:
            anyio.run(mcp.run_stdio_async)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a stop, not a failure (no stage was running)
            pass
        finally:
            service.close()
        return 0
    import uvicorn

    from core.service.api import create_app

    if not _is_loopback(host):
        log.warning("listening on %s: other machines can reach this service; keys travel in clear text unless "
                    "TLS is put in front of it", host)
    http, loop = fast_implementations()
    server = uvicorn.Server(uvicorn.Config(create_app(service, mcp), host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                                           http=http, loop=loop))
    log.info("serving %s on http://%s:%s (API; MCP at /mcp; HTTP %s, loop %s); ready %.1f s after start; Ctrl-C "
             "stops", summary, host, port, http, loop, time.perf_counter() - clock)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C or SIGTERM, then hands the signal back
        pass
    log.info("stopped serving run %s", run.run_id)
    return 0


def fast_implementations() -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop: httptools and uvloop where installed, else h11 and asyncio.

    Together they take the server's CPU per lookup from 0.21 to 0.12 ms (benchmarks/RESULTS.md). uvloop
    has no Windows build: there the standard asyncio loop serves (the requirements install it only off
    Windows).
    """
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def check_port_free(host: str, port: int) -> None:
    """Stop with the port and the fix named when ``host:port`` cannot be bound (in use, or not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PipelineError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); another program may use "
                                f"the port: give another with --port, or service.port in the config") from None


def add_key_command(config, name: str, scopes_text: str) -> str:
    """``add-key NAME --scopes ...``: create the key, store its hash, return the key (printed once)."""
    return add_key(keys_path(config), name, parse_scopes(scopes_text))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
