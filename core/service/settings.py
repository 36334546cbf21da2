"""The service's config section, ``service``: its typed form and its checks.

Read by ``python -m core.pipeline serve`` and ``add-key`` only; no stage
reads it, so changing it never makes a stage stale.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from core.framework.schema import Problems, spec


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """``serve``: where it listens, where keys and the audit log live, and the request limits."""

    host: str = spec(help="address to listen on; 127.0.0.1 (this machine only) unless other machines must "
                          "reach it (then put it behind TLS)")
    port: int = spec(minimum=1, maximum=65535, help="TCP port of the HTTP API and the MCP endpoint (/mcp)")
    keys_file: str = spec(help="JSON file of API keys (names, scopes, SHA-256 hashes; never the keys), relative "
                               "to this config file; written by add-key")
    audit_log: str = spec(help="text file every customer-level request is appended to (key name, time, customer "
                               "id, result), relative to the artifacts folder")
    max_score_lines: int = spec(minimum=1, help="order lines one POST /score (or score_customer call) may carry")
    max_body_bytes: int = spec(minimum=1024, help="largest request body accepted, in bytes (413 above it)")
    max_customer_id_length: int = spec(minimum=1, maximum=1024, help="longest customer id accepted in a path "
                                                                     "or tool call (400 above it)")


def check_service(service: ServiceConfig, problems: Problems) -> None:
    """Checks beyond single-value bounds: a host that is an address or a name, file names that are relative."""
    host = service.host.strip()
    if not host:
        problems.add("service.host", "empty; use 127.0.0.1 (this machine only) or an address of this machine")
    elif not _is_address(host) and not all(part.isalnum() or "-" in part for part in host.split(".")):
        problems.add("service.host", f"{service.host!r} is neither an IP address nor a host name; use 127.0.0.1")
    for key in ("keys_file", "audit_log"):
        value = getattr(service, key)
        if not value.strip():
            problems.add(f"service.{key}", "empty; give a file name such as "
                                           f"{'service_keys.json' if key == 'keys_file' else 'service_audit.log'}")
        elif Path(value).suffix == "" or value.endswith(("/", "\\")):
            problems.add(f"service.{key}", f"{value!r} names a folder, not a file; give a file name")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
