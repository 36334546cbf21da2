"""The audit log: one line per customer-level request, for a person to read.

Each line: UTC time, the key's name, how it came (http, mcp-http,
mcp-stdio), what was asked, the customer id and the result, as
``name=value`` fields separated by two spaces. A value with spaces,
quotes or control characters is written as a JSON string, so a crafted
customer id cannot forge a line.

Lines are buffered in memory and written by a background thread every
``flush_seconds`` (0.2 s), each batch flushed and fsynced: a request
pays for formatting its line, not for a system call, and a batch is on
disk, not only in the operating system's cache, once written. Stopping
the service (Ctrl-C, SIGTERM) writes every pending line; a killed process
(``kill -9``, power loss) can lose at most the last ``flush_seconds``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from core.framework import artifacts


class AuditLog:
    """Appends lines to ``path`` (created with its folder if missing) from a background writer thread.

    Parameters
    ----------
    path : Path
    flush_seconds : float
        Longest time a recorded line waits in memory before it is written and fsynced.
    """

    def __init__(self, path: Path, flush_seconds: float = 0.2):
        self.path = Path(path)
        self.flush_seconds = flush_seconds
        artifacts.ensure_folder(self.path.parent)
        self._pending: list[str] = []
        self._lock = threading.Lock()  # guards _pending (taken per request: held for an append only)
        self._io_lock = threading.Lock()  # one batch written at a time
        self._stop = threading.Event()
        self._handle = open(self.path, "a", encoding="utf-8", newline="\n")
        self._writer = threading.Thread(target=self._write_until_stopped, name="audit-log-writer", daemon=True)
        self._writer.start()

    def record(self, key: str, via: str, action: str, customer_id: str, result: str) -> None:
        """Queue one line: time, key name, transport, action, customer id, result."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = (f"{now}  key={_value(key)}  via={_value(via)}  action={_value(action)}  "
                f"customer={_value(customer_id)}  result={_value(result)}\n")
        with self._lock:
            self._pending.append(line)

    def flush(self) -> None:
        """Write, flush and fsync the lines recorded so far."""
        with self._io_lock:
            with self._lock:
                lines, self._pending = self._pending, []
            if lines and not self._handle.closed:
                self._handle.write("".join(lines))
                self._handle.flush()
                os.fsync(self._handle.fileno())

    def _write_until_stopped(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        """Write every pending line and close the file (the service is stopping)."""
        self._stop.set()
        self._writer.join(timeout=10)
        self.flush()
        with self._io_lock:
            self._handle.close()


def _value(text: str) -> str:
    plain = text and text.isprintable() and not any(c in text for c in ' "=\\')
    return text if plain else json.dumps(text, ensure_ascii=True)
