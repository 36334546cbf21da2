"""Who may ask what, and the record of it: the service's state behind every HTTP route and MCP tool.

:class:`Service` checks a caller's key and scope (401 without a valid key,
403 without the scope), writes every customer-level request to the audit
log (refusals included), and answers through :mod:`core.service.answers`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.service import answers
from core.service.answers import LineCheck, ServiceError
from core.service.audit import AuditLog
from core.service.keys import ApiKey, KeyStore
from core.service.run import ServedRun, manifests_fingerprint
from core.service.settings import ServiceConfig

log = logging.getLogger(__name__)

# Seconds between looks at the keys file and at the stage manifests (a stat and a few small reads).
_RECHECK_SECONDS = 1.0


class Service:
    """The run served, the keys, the audit log and the limits: one per process.

    Parameters
    ----------
    run : ServedRun
    settings : ServiceConfig
    keys_file, audit_log : Path
        Resolved paths (``service.keys_file`` against the config folder,
        ``service.audit_log`` against the artifacts folder).
    check_lines : callable
        The score command's input checks (``core.pipeline.check_scoring_input``).
    load_chain : callable
        Loads the run's scoring models (:func:`core.service.run.load_scoring_chain`); called once, in the
        background, by :meth:`start`.
    """

    def __init__(self, run: ServedRun, settings: ServiceConfig, keys_file: Path, audit_log: Path,
                 check_lines: LineCheck, load_chain: Callable[[], Any]):
        self.run = run
        self.settings = settings
        self.keys = KeyStore(keys_file)
        self.audit = AuditLog(audit_log)
        self.scorer = answers.Scorer(load_chain, check_lines, settings.max_score_lines)
        self.customer_answers = answers.CustomerAnswers(run)
        self._checked_at = 0.0
        self._newer_run = False
        self._recheck_lock = threading.Lock()

    # -- keys -------------------------------------------------------------------------------------

    def _recheck(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < _RECHECK_SECONDS or not self._recheck_lock.acquire(blocking=False):
            return
        try:
            self.keys.reload()
            self._newer_run = manifests_fingerprint(self.run.artifacts_dir) != self.run.fingerprint
            self._checked_at = now
        except Exception:  # noqa: BLE001 - a half-written keys file: keep the keys already read, say so
            log.warning("could not re-read %s; the keys read before stay in use", self.keys.path, exc_info=True)
            self._checked_at = now
        finally:
            self._recheck_lock.release()

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key of an ``Authorization`` header; 401 when there is none or it is not a valid key."""
        self._recheck()
        key = self.keys.authenticate(authorization)
        if key is None:
            missing = not authorization
            raise ServiceError(401, "no key: send Authorization: Bearer <key> (create one with add-key)" if missing
                               else "not a valid key: send Authorization: Bearer <key> with a key from add-key")
        return key

    @staticmethod
    def require(key: ApiKey, scope: str) -> None:
        """403 unless ``key`` carries ``scope``."""
        if not key.allows(scope):
            raise ServiceError(403, f"key {key.name!r} lacks the scope {scope!r} (it has "
                                    f"{', '.join(sorted(key.scopes)) or 'none'}); create a key with "
                                    f"add-key NAME --scopes {scope}")

    # -- answers ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: ok and the run id (no key needed)."""
        self._recheck()
        return answers.health(self.run, self._newer_run, self.scorer.state)

    def customer(self, key: ApiKey, via: str, customer_id: Any) -> dict[str, Any]:
        """A customer's answer, audited; 400 for a malformed id, 403 without the scope, 404 for an unknown id."""
        text, at = self._find_customer(key, via, customer_id)
        found = answers.get_customer(self.run, text)
        self.audit.record(key.name, via, "get_customer", text, f"found segment {found['segment']['segment_id']}")
        return found

    def customer_json(self, key: ApiKey, via: str, customer_id: Any) -> bytes:
        """:meth:`customer` as the JSON body of ``GET /customers/{id}`` (the segment's strategy rendered once)."""
        text, at = self._find_customer(key, via, customer_id)
        body, segment_id = self.customer_answers.render(text, at)
        self.audit.record(key.name, via, "get_customer", text, f"found segment {segment_id}")
        return body

    def _find_customer(self, key: ApiKey, via: str, customer_id: Any) -> tuple[str, int]:
        """(the id's text, its row); a refusal or an unknown id is audited and raised as ServiceError."""
        try:
            self.require(key, "customers")
            text = answers.check_customer_id(customer_id, self.settings.max_customer_id_length)
            at = self.run.customers.find(text)
            if at is None:
                raise ServiceError(404, f"no customer {text!r} in run {self.run.run_id}")
        except ServiceError as exc:
            shown = str(customer_id)[: self.settings.max_customer_id_length + 1]
            self.audit.record(key.name, via, "get_customer", shown,
                              "not found" if exc.status == 404 else f"refused {exc.status}")
            raise
        return text, at

    def score(self, key: ApiKey, via: str, body: Any) -> dict[str, Any]:
        """Score order lines, audited one line per customer; 403 without the scope, 4xx for a bad body."""
        try:
            self.require(key, "customers")
            rows = self.scorer.score(body)
        except ServiceError as exc:
            self.audit.record(key.name, via, "score", "-", f"refused {exc.status}")
            raise
        for customer_id, result in answers.score_result(rows):
            self.audit.record(key.name, via, "score", customer_id, result)
        return {"run_id": self.run.run_id, "customers": rows}

    def close(self) -> None:
        """Close the audit log."""
        self.audit.close()
