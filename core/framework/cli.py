"""Command-line plumbing shared by the runner and every numbered script.

Logging to the console and ``pipeline.log``, the common arguments, and the
guard that turns the errors a user can fix into one clear line and exit
code 2.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn

from core.framework import paths, progress
from core.framework.errors import PipelineError
from core.framework.schema import ConfigError

log = logging.getLogger(__name__)


def configure_logging(artifacts_dir: Path, verbose: bool = False) -> None:
    """Log to the console and append to ``<artifacts>/pipeline.log`` (tracebacks go to the file only, if any).

    When the log file cannot be opened (a read-only folder, a path through
    a file) the console still gets everything, tracebacks included (see
    :func:`guarded`), and one warning names the file and says why.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    for noisy in ("matplotlib", "PIL", "absl", "tensorflow", "h5py", "numba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
        logfile = logging.FileHandler(Path(artifacts_dir) / paths.PIPELINE_LOG, encoding="utf-8")
    except OSError as exc:
        log.warning("logging to the console only: cannot write %s (%s)",
                    (Path(artifacts_dir) / paths.PIPELINE_LOG).absolute(), exc.strerror or exc)
        return
    logfile.setLevel(logging.DEBUG)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(logfile)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--artifacts``, shared by the runner and every script."""
    parser.add_argument("--config", type=Path, default=paths.DEFAULT_CONFIG,
                        help="config file (default: config/config.yml); the hierarchy and personas "
                             "files are named in it, relative to it")
    parser.add_argument("--artifacts", type=Path, default=paths.DEFAULT_ARTIFACTS,
                        help="artifacts folder (default: artifacts/)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")


def _raise_interrupt(signum, frame) -> None:
    progress.request_termination()
    raise KeyboardInterrupt


def guarded(action: Callable[[], int]) -> int:
    """Run a command; turn the errors a user can fix into one clear message and exit code 2.

    Anything unexpected is reported in one line too, with its traceback in
    ``pipeline.log``, and exit code 1. A termination signal is handled like
    Ctrl-C, so temporary files are removed on the way out.
    """
    import signal

    progress.clear_termination()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        code = action()
        if progress.termination_requested():  # swallowed where it landed, and no progress update since
            raise KeyboardInterrupt
        return code
    except (ConfigError, PipelineError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; the stage that was running is left without a manifest and will rerun")
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line for the user, the rest in the log
        logfile = log_file()
        if logfile is None:
            # No log file to keep the traceback: the console gets it, or it would be lost.
            log.error("unexpected %s: %s (please report it with this traceback)", type(exc).__name__, exc,
                      exc_info=True)
            return 1
        log.debug("unexpected error", exc_info=True)
        log.error("unexpected %s: %s (traceback in %s; please report it)", type(exc).__name__, exc, logfile)
        return 1


def exit_with(code: int) -> NoReturn:
    """End the process with ``code`` (the entry points' ``sys.exit(main())``).

    An interrupt that lands while a library is being imported (TensorFlow runs code through CPython's
    ``PyRun_*`` there) leaves CPython's "unhandled KeyboardInterrupt" flag set even though
    :func:`guarded` handled it, and the interpreter then ends by killing itself with SIGINT: exit -2
    instead of 130 (measured: a SIGTERM at the start of stage 03). After an interrupt everything that
    must be undone has been (the ``finally`` blocks ran, the lock is released), so the process flushes its
    logs and streams and leaves with 130 directly.
    """
    if code == 130:
        _flush_and_leave(code)
    _leave_without_teardown(code)


def _leave_without_teardown(code: int) -> NoReturn:
    """End the process as the interpreter would, minus its teardown of every module.

    After a stage, that teardown (every object TensorFlow, pandas and DuckDB created, collected and freed
    one by one) took 1 to 2 s of the process's wall time with nothing left to do (stage 03: 1.1 CPU-s;
    docs/decisions.md, "Default chain under 45 s"). The steps that matter run as in a normal exit: the
    ``atexit`` handlers (the log's flush and close, temporary folders, the worker pools' shutdown), then the
    streams' flush. When a thread that is not a daemon still runs, the normal exit waits for it here too.
    """
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's (private): elsewhere a normal exit
    running = [t for t in threading.enumerate()
               if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if run_exit_handlers is None or running or not isinstance(code, int):
        sys.exit(code)
    run_exit_handlers()
    _flush_and_leave(code)


def _flush_and_leave(code: int) -> NoReturn:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing left to flush
            pass
    os._exit(code)


def log_file() -> Path | None:
    """The file :func:`configure_logging` logs to, or None when it logs to the console only."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def check_artifacts_dir(artifacts_dir: Path) -> None:
    """Stop when ``--artifacts`` cannot be a folder: it, or one of its parents, is a file.

    Whether it can be written is checked by the commands that write (the
    lock of ``run`` and ``score``, and each stage for its own folder).

    Raises
    ------
    PipelineError
        Naming the folder and the file in the way: exit code 2.
    """
    folder = Path(artifacts_dir)
    for candidate in (folder, *folder.parents):
        try:
            is_file = candidate.exists() and not candidate.is_dir()
        except OSError:  # a parent we may not look into: the commands that write say more
            continue
        if is_file:
            what = "is a file" if candidate == folder else f"is inside {candidate}, which is a file"
            raise PipelineError(f"--artifacts {artifacts_dir} {what}; give a folder (it is created if missing)")
