"""API keys: who may ask what.

A key is a random string shown once, by ``add-key``; the keys file keeps
only its SHA-256, with the key's name and scopes, so a copy of the file
lets nobody in. Scopes: ``segments`` (aggregates: the run, the segment
profiles) and ``customers`` (per-customer lookups and scoring).

The file is re-read when it changes on disk, so a key added while the
service runs works at once, without mixing keys of two versions of the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from pathlib import Path

from core.framework import artifacts
from core.framework.errors import PipelineError

SCOPES = ("segments", "customers")
KEY_PREFIX = "seg_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """A key's name and scopes (never the key itself)."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this key carries ``scope``."""
        return scope in self.scopes


#: The caller of the MCP server over stdio: the local user who started it, trusted with every scope.
LOCAL_USER = ApiKey("local-stdio", frozenset(SCOPES))


def hash_key(key: str) -> str:
    """The SHA-256 (hex) stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """``segments,customers`` as a set, refusing unknown or empty scopes with the allowed ones named."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise PipelineError(f"--scopes {text!r}: {'unknown scope ' + ', '.join(unknown) if unknown else 'empty'}; "
                            f"give one or more of {', '.join(SCOPES)}, separated by commas")
    return frozenset(scopes)


def add_key(keys_file: Path, name: str, scopes: frozenset[str]) -> str:
    """Create a key called ``name`` with ``scopes``, store its hash in ``keys_file`` and return the key.

    The key is returned once and never stored. Refuses a name already in the
    file (remove its entry to replace it) and a name that is not 1-64
    letters, digits, dots, dashes or underscores (it is written into the
    audit log).
    """
    if not _NAME.match(name):
        raise PipelineError(f"key name {name!r}: use 1-64 letters, digits, '.', '-' or '_', starting with a "
                            f"letter or digit (it names the caller in the audit log)")
    entries = _read_entries(keys_file) if Path(keys_file).exists() else []
    if any(entry["name"] == name for entry in entries):
        raise PipelineError(f"{keys_file} already has a key named {name!r}; choose another name, or delete that "
                            f"entry from the file to replace the key")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entries.append({"name": name, "scopes": sorted(scopes), "sha256": hash_key(key),
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    artifacts.write_json(keys_file, {"keys": entries})
    return key


class KeyStore:
    """The keys of ``keys_file``, checked in constant time, re-read when the file changes."""

    def __init__(self, keys_file: Path):
        self.path = Path(keys_file)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: tuple[tuple[str, ApiKey], ...] = ()
        self.reload()

    def reload(self) -> None:
        """Read the file again if its size or modification time changed (a missing file: no keys)."""
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and (stamp is not None or not self._keys):
            return
        keys = () if stamp is None else tuple(
            (entry["sha256"], ApiKey(entry["name"], frozenset(entry["scopes"]))) for entry in _read_entries(self.path))
        with self._lock:
            self._keys, self._stamp = keys, stamp

    @property
    def names(self) -> list[str]:
        """Names of the keys now accepted."""
        return [key.name for _, key in self._keys]

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key an ``Authorization: Bearer <key>`` header carries, or None.

        Every stored hash is compared, with :func:`hmac.compare_digest`, so
        the time taken says nothing about which key, or how much of one,
        matched.
        """
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        digest = hash_key(presented.strip())
        found = None
        for stored, key in self._keys:
            if hmac.compare_digest(stored, digest):
                found = key
        return found


def _read_entries(keys_file: Path) -> list[dict]:
    """The entries of a keys file, refusing a malformed one with the file and the fix named."""
    fix = "fix it by hand, or delete it and create the keys again with add-key"
    try:
        document = json.loads(Path(keys_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"keys file {keys_file} cannot be read ({exc}); {fix}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise PipelineError(f"keys file {keys_file}: expected {{\"keys\": [...]}}; {fix}")
    for number, entry in enumerate(entries, 1):
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str)
              and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
              and isinstance(entry.get("scopes"), list) and set(entry["scopes"]) <= set(SCOPES))
        if not ok:
            raise PipelineError(f"keys file {keys_file}: entry {number} needs a name, a sha256 (64 hex digits) and "
                                f"scopes from {', '.join(SCOPES)}; {fix}")
    return entries
