"""The audit log: one line per customer-level request, for a person to read.

Each line: UTC time, the key's name, how it came (http, mcp-http,
mcp-stdio), what was asked, the customer id and the result, as
``name=value`` fields separated by two spaces. A value with spaces,
quotes or control characters is written as a JSON string, so a crafted
customer id cannot forge a line.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

from core.framework import artifacts


class AuditLog:
    """Appends lines to ``path`` (created with its folder if missing), one writer at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        artifacts.ensure_folder(self.path.parent)
        self._lock = threading.Lock()
        # Line-buffered and kept open: a line is on disk when the answer leaves, at no reopen cost.
        self._handle = open(self.path, "a", encoding="utf-8", buffering=1, newline="\n")

    def record(self, key: str, via: str, action: str, customer_id: str, result: str) -> None:
        """Append one line: time, key name, transport, action, customer id, result."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fields = {"key": key, "via": via, "action": action, "customer": customer_id, "result": result}
        line = now + "".join(f"  {name}={_value(value)}" for name, value in fields.items())
        with self._lock:
            self._handle.write(line + "\n")

    def close(self) -> None:
        """Close the file (the service is stopping)."""
        with self._lock:
            self._handle.close()


def _value(text: str) -> str:
    plain = text and text.isprintable() and not any(c in text for c in ' "=\\')
    return text if plain else json.dumps(text, ensure_ascii=True)
