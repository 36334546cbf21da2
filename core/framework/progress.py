"""How far a long step is, and how long it has left: a bar on a console, log lines elsewhere.

A step that can take more than a few seconds (aggregating a hundred million
order lines, fitting eight clustering models, profiling a million
customers) says how far it is::

    with Progress("02_prepare_features: features", total=100, unit="%") as progress:
        ...
        progress.advance(40, "lines table built")

On an interactive console (standard error is a terminal) the reporter
redraws one line in place, ``[#####.....] 40% 12.0 s, about 18 s left``, at
most a few times a second. When standard error is a file, a pipe or a CI
log (``CI`` set in the environment), it writes a plain log line instead,
at most one every ``interval`` seconds (10 by default), so a log stays
readable; a step that ends before the first interval says nothing extra.
``PIPELINE_PROGRESS`` (``bar``, ``log`` or ``off``) overrides the choice.

The estimate of what is left assumes the rest goes at the pace so far:
``elapsed * (total - done) / done``, taken when the work done last moved and
counted down from then, so a heartbeat during a long part without reports
does not stretch the estimate (at that pace a part worth 70% that sits at
3% would look hours long); once the countdown runs out while nothing moves,
the line says ``longer than estimated`` instead of a number. Callers whose parts differ in cost
advance by each part's measured share of the time rather than by one per
part (stage 02 does), so the estimate stays honest.

A stage whose parts are separate functions reports through *steps*: the
stage opens a reporter and wraps each part in :meth:`Progress.step` with the
part's share of the work; code inside the part, which knows nothing of the
stage, calls the module function :func:`report` with how far it is through
its own work, and that moves the stage's reporter within the step's share.
Outside any step (a test, the score command) :func:`report` does nothing::

    with Progress("02_prepare_features", total=100, unit="%") as progress:
        with progress.step(45, "features"):
            build_features(...)        # calls report(0.3, "lines table built") and so on
        with progress.step(40, "customer value"):
            ...

Reporting costs a clock read and a comparison per call (well under a
microsecond); nothing is drawn or logged more often than the throttle
allows, so a step does not slow down measurably.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Iterator, TextIO

log = logging.getLogger(__name__)

#: Seconds between two log lines (file or CI output).
LOG_INTERVAL = 10.0
#: Seconds between two redraws of the console bar.
BAR_INTERVAL = 0.25
_BAR_WIDTH = 24
_MODES = ("bar", "log", "off")
# The innermost open step of each thread: (reporter, work done when the step began, the step's share).
_active = threading.local()


_termination = threading.Event()


def request_termination() -> None:
    """Remember that the process was asked to stop (the entry points' SIGTERM and Ctrl-C handler)."""
    _termination.set()


def clear_termination() -> None:
    """Forget an earlier request (a new command in the same process starts clean)."""
    _termination.clear()


def termination_requested() -> bool:
    """Whether the process was asked to stop since :func:`clear_termination`."""
    return _termination.is_set()


def stop_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` in the main thread once the process was asked to stop.

    The signal handler raises it where the signal lands; a library that swallows it there (TensorFlow
    while it is imported: a SIGTERM at the start of stage 03 let the stage run to its end, 2 runs of 6)
    would let a stopped run go on. Every progress update calls this, so the request comes back at the
    next one. Other threads never raise it: their errors are their stage's to report.
    """
    if _termination.is_set() and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt


def report(fraction: float, note: str | None = None) -> None:
    """Say how far the current step is through its own work (0 to 1); nothing outside a step.

    For code that does not know which stage runs it: it moves the reporter
    whose :meth:`Progress.step` encloses the call.
    """
    steps = getattr(_active, "steps", None)
    if not steps:
        return
    progress, base, share = steps[-1]
    progress.update(base + share * min(max(fraction, 0.0), 1.0), note)


def output_mode(stream: TextIO | None = None) -> str:
    """``bar`` on an interactive console, ``log`` for a file, pipe or CI, or ``PIPELINE_PROGRESS``'s value."""
    wanted = os.environ.get("PIPELINE_PROGRESS", "").strip().lower()
    if wanted in _MODES:
        return wanted
    stream = sys.stderr if stream is None else stream
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return "bar" if interactive and not os.environ.get("CI") else "log"


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``: short and readable."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Reports the progress of one step with an estimate of the time left.

    Parameters
    ----------
    what : str
        What the step does, e.g. ``"04_cluster: fitting models"``.
    total : float
        How much work there is, in ``unit`` (parts, customers, a share).
    unit : str
        Shown after the counts (``"customers"``); ``"%"`` shows a percentage only.
    mode : {"bar", "log", "off"}, optional
        Default :func:`output_mode`.
    stream : file, optional
        Where the bar is drawn (default standard error).
    interval : float, optional
        Seconds between updates (default :data:`LOG_INTERVAL` for log
        lines, :data:`BAR_INTERVAL` for the bar).
    clock : callable, optional
        Seconds as a float (default :func:`time.monotonic`); tests pass their own.
    heartbeat : bool
        Also report every ``interval`` seconds while no work is counted (a
        thread that wakes up once an interval): for steps whose parts each
        take minutes (a model fitted on a million customers), so the output
        never goes quiet while the step is alive.
    """

    def __init__(self, what: str, total: float, unit: str = "", *, mode: str | None = None,
                 stream: TextIO | None = None, interval: float | None = None, clock=time.monotonic,
                 heartbeat: bool = False):
        self.what = what
        self.total = float(total)
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.mode = mode or output_mode(self.stream)
        if self.mode not in _MODES:
            raise ValueError(f"progress mode {self.mode!r}: use one of {', '.join(_MODES)}")
        self.interval = interval if interval is not None else (BAR_INTERVAL if self.mode == "bar" else LOG_INTERVAL)
        self.done = 0.0
        self.note = ""
        self._clock = clock
        self._started = clock()
        self._moved_at = self._started
        self._last_shown = self._started
        self._shown = False
        self._closed = False
        self._drawn = 0
        self._stop = threading.Event()
        self._beat = None
        if heartbeat and self.mode != "off":
            self._beat = threading.Thread(target=self._heartbeat, name="progress-heartbeat", daemon=True)
            self._beat.start()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    @property
    def elapsed(self) -> float:
        """Seconds since the step started."""
        return self._clock() - self._started

    def remaining(self) -> float | None:
        """Seconds left at the pace up to the last movement, less the time since; None before any work is done.

        Negative once the part in progress takes longer than the pace so far predicted.
        """
        if self.done <= 0 or self.total <= 0:
            return None
        until_moved = self._moved_at - self._started
        return until_moved * max(self.total - self.done, 0.0) / self.done - (self._clock() - self._moved_at)

    @contextlib.contextmanager
    def step(self, share: float, note: str) -> Iterator["Progress"]:
        """A part of the work worth ``share`` of :attr:`total`; :func:`report` inside it moves within that share.

        When the block ends the step counts as done, however far the code in it reported.
        """
        base = self.done
        steps = _active.__dict__.setdefault("steps", [])
        steps.append((self, base, share))
        self.update(base, note)
        try:
            yield self
        finally:
            steps.pop()
        self.update(base + share)

    def advance(self, amount: float = 1.0, note: str | None = None) -> None:
        """Count ``amount`` more work done (``note`` says what was just finished)."""
        self.update(self.done + amount, note)

    def update(self, done: float, note: str | None = None) -> None:
        """Set the work done so far to ``done``; report if the throttle allows (and stop if asked to)."""
        stop_if_requested()
        done = min(float(done), self.total) if self.total > 0 else float(done)
        if done > self.done:
            self._moved_at = self._clock()
        self.done = done
        if note is not None:
            self.note = note
        if self.mode == "off":
            return
        now = self._clock()
        if now - self._last_shown >= self.interval:
            self._last_shown = now
            self._show()

    def close(self, failed: bool = False) -> None:
        """End the step: finish the bar's line, or log how long it took if anything was logged."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.mode == "bar" and self._shown:
            self._draw(final=True)
        elif self.mode == "log" and self._shown and not failed:
            log.info("%s: done in %s", self.what, format_seconds(self.elapsed))

    def message(self) -> str:
        """The progress as one line of text, e.g. ``features: 40% (lines table built), 12 s, about 18 s left``."""
        share = self.done / self.total if self.total > 0 else 0.0
        if self.unit == "%" or not self.unit:
            amount = f"{share:.0%}"
        else:
            amount = f"{share:.0%} ({self.done:,.0f} of {self.total:,.0f} {self.unit})"
        left = self.remaining()
        if left is None or share >= 1:
            estimate = ""
        elif left > 0:
            estimate = f", about {format_seconds(left)} left"
        else:
            estimate = ", longer than estimated"
        note = f" [{self.note}]" if self.note else ""
        return f"{self.what}: {amount}{note}, {format_seconds(self.elapsed)}{estimate}"

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            if self._clock() - self._last_shown >= self.interval:
                self._last_shown = self._clock()
                self._show()

    def _show(self) -> None:
        self._shown = True
        if self.mode == "bar":
            self._draw()
        else:
            log.info("%s", self.message())

    def _draw(self, final: bool = False) -> None:
        share = self.done / self.total if self.total > 0 else 0.0
        filled = int(round(_BAR_WIDTH * min(share, 1.0)))
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        try:
            # Padded over the previous drawing (no terminal escapes: Windows consoles show them raw), the
            # cursor left at the line's start so the next redraw, or a log line, overwrites the bar.
            line = f"[{bar}] {self.message()}"
            self.stream.write(line.ljust(self._drawn) + ("\n" if final else "\r"))
            self._drawn = len(line)
            self.stream.flush()
        except (OSError, ValueError):  # a closed console: progress is not worth failing a step for
            self.mode = "off"
