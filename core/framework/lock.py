"""One run per artifacts folder: a lock file naming its owner.

Two runs on one folder delete each other's temporary files and overwrite
each other's outputs, so ``run``, the numbered scripts and ``score`` (which
writes into ``<artifacts>/scores``) take ``<artifacts>/.pipeline.lock``
first; ``status`` and ``show`` only read and do not. The file holds the
owner's process id, host, start time and command. It is created with
``O_CREAT | O_EXCL``, which the operating system makes atomic: of two
processes creating it at once, exactly one succeeds.

A lock whose process is gone (killed, power cut) is taken over with a
warning; liveness is asked of this machine only, so a lock from another
host (a shared drive) is always respected and the message says how to
remove it by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from core.framework import artifacts, paths
from core.framework.errors import PipelineError
from core.framework.processes import process_alive

log = logging.getLogger(__name__)

# A lock file is written right after it is created; one still unreadable after this long was left half
# written by a process that died in between, and is taken over.
_HALF_WRITTEN_SECONDS = 10.0


@contextmanager
def folder_lock(artifacts_dir: Path, command: str) -> Iterator[dict[str, Any]]:
    """Hold the artifacts folder's lock for the block; release it however the block ends.

    Parameters
    ----------
    artifacts_dir : Path
        The folder to lock (created if missing).
    command : str
        What the owner is doing, for the message another run shows (``run --force``).

    Yields
    ------
    dict
        The owner record written into the lock file.

    Raises
    ------
    PipelineError
        When another live process holds the folder, naming it (pid, host, start time).
    """
    owner = acquire(artifacts_dir, command)
    try:
        yield owner
    finally:
        # Runs on an exception, Ctrl-C and SIGTERM (core.framework.cli.guarded turns it into KeyboardInterrupt).
        release(artifacts_dir, owner)


def lock_path(artifacts_dir: Path) -> Path:
    """``<artifacts>/.pipeline.lock``."""
    return Path(artifacts_dir) / paths.LOCK


def acquire(artifacts_dir: Path, command: str) -> dict[str, Any]:
    """Create the lock file, taking over one left by a dead process; see :func:`folder_lock`."""
    folder = artifacts.ensure_writable_folder(artifacts_dir)
    path = lock_path(folder)
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "command": command, "token": uuid.uuid4().hex}
    for _ in range(5):  # a few rounds: another process may create or remove the file between two steps
        if _create(path, owner):
            return owner
        holder = _read_holder(path)
        if holder is None:
            continue  # removed in the meantime: try again
        if not _is_stale(holder):
            raise PipelineError(held_message(path, holder))
        if _take_over(path, holder):
            log.warning("took over %s: it was left by pid %s (started %s, %s), which is no longer running",
                        path, holder.get("pid", "?"), holder.get("started_at", "?"), holder.get("command", "?"))
    raise PipelineError(f"could not take {path}: other processes keep creating and removing it; wait for them "
                        f"to finish and try again")


def release(artifacts_dir: Path, owner: dict[str, Any]) -> None:
    """Remove the lock file if it is still ``owner``'s (a wrongly taken-over lock is left to its new owner)."""
    path = lock_path(artifacts_dir)
    holder = _read_holder(path, wait=False)
    if holder is None or holder.get("token") != owner["token"]:
        log.warning("%s is no longer this process's lock; left as it is", path)
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s (%s); remove it by hand", path, exc.strerror or exc)


def held_message(path: Path, holder: dict[str, Any]) -> str:
    """Who holds the folder, and what to do."""
    if holder.get("half_written"):
        who = "a process that is starting (the lock file is being written)"
    else:
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started_at', '?')}"
               f" ({holder.get('command', '?')})")
    return (f"{path.parent} is in use by another run: {who}. Wait for it to finish (`status` and `show` work "
            f"meanwhile) or stop it; if that process is gone, delete {path}")


def _create(path: Path, owner: dict[str, Any]) -> bool:
    """Create the lock file holding ``owner``; False when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise PipelineError(f"cannot create the lock file {path}: {exc.strerror or exc}; make the folder "
                            f"writable, or give another artifacts folder with --artifacts") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(owner) + "\n")
    return True


def _read_holder(path: Path, wait: bool = True) -> dict[str, Any] | None:
    """The lock file's record; None when there is no lock file.

    A file just created by another process may be empty for a moment:
    read again for up to a second. One still unreadable is reported as
    ``{"half_written": True, "age": seconds}``.
    """
    deadline = time.monotonic() + (1.0 if wait else 0.0)
    while True:
        try:
            text = path.read_text(encoding="utf-8")
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            text, age = "", 0.0  # Windows: still open for writing by its creator
        try:
            holder = json.loads(text)
            if isinstance(holder, dict):
                return holder
        except json.JSONDecodeError:
            pass
        if time.monotonic() >= deadline:
            return {"half_written": True, "age": age, "text": text}
        time.sleep(0.1)


def _is_stale(holder: dict[str, Any]) -> bool:
    """True when the lock's owner is certainly gone."""
    if holder.get("half_written"):
        return holder["age"] > _HALF_WRITTEN_SECONDS
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: cannot be checked from here
    pid = holder.get("pid")
    # Our own pid in a lock we did not create: a previous process that had the same id (a container
    # restarted, the machine rebooted) and died holding it.
    return pid == os.getpid() or not process_alive(pid)


def _take_over(path: Path, stale: dict[str, Any]) -> bool:
    """Remove the stale lock; False when another process changed it first.

    The stale file is first renamed to a name only this process uses: of
    two processes taking over at once, one rename finds nothing to move.
    If what was moved is not the lock that was judged stale (another
    process took over and created its own in between), it is put back.
    """
    aside = path.with_name(f"{path.name}.stale{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    moved = _read_holder(aside, wait=False) or {}
    if _identity(moved) != _identity(stale):
        try:
            os.link(aside, path)  # fails if a third process holds the lock by now: then that one stands
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True  # the caller's next round creates the lock with O_EXCL


def _identity(holder: dict[str, Any]) -> str | None:
    """What tells one lock file from another: its owner's token, or a half-written file's text."""
    return holder.get("token") or holder.get("text")
