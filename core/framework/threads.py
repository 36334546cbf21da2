"""Work moved into threads of its own: an iterator read ahead (:func:`read_ahead`), one call beside the caller's
(:func:`in_thread`).

:func:`read_ahead`: decoding a Parquet batch (Arrow, which leaves the interpreter lock) and the caller's own work on
the batch before it then overlap instead of taking turns: at a million customers stage 05's next-best classes
decode 136 M order lines in about 3-7 CPU-s, which the thread that sums them otherwise waits for batch by batch.
The items and their order are the source's: only when each is made changes.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")

_END = object()


def read_ahead(source: Iterable[Item], depth: int = 1, name: str = "read-ahead") -> Iterator[Item]:
    """The items of ``source`` in order, each made in a thread while the caller holds the one before.

    At most ``depth`` items wait made beyond the one the caller holds (memory stays a few items'). The
    source's exception is raised here, where its item would have come. Leaving the loop early (``break``,
    an exception, the generator closed) stops the thread at its next item and waits for it, so the source is
    never read by two threads and nothing runs on after the caller has gone.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    made: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                if not _put(made, (item, None), stop):
                    return
            _put(made, (_END, None), stop)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            _put(made, (_END, exc), stop)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = _get(made, thread)
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            thread.join(0.5)  # in slices: a plain join does not see Ctrl+C on Windows


def _put(made: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Hand ``entry`` over, waiting for room; False once the caller stopped reading."""
    while not stop.is_set():
        try:
            made.put(entry, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _get(made: queue.Queue, thread: threading.Thread) -> tuple:
    """The next entry; waits in slices so Ctrl+C reaches the caller on Windows too."""
    while True:
        try:
            return made.get(timeout=0.5)
        except queue.Empty:
            if not thread.is_alive() and made.empty():
                raise RuntimeError("the read-ahead thread ended without its last item (a bug)") from None


def in_thread(function: Callable, *args, name: str = "worker") -> concurrent.futures.Future:
    """``function(*args)`` started in a thread of its own, which ends with it; its Future (result or exception).

    For one piece of work beside the caller's (Arrow and NumPy leave the interpreter lock in their long calls);
    the thread is not a daemon, so an interpreter that exits waits for it rather than cutting it short.
    """
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(function, *args)
    finally:
        pool.shutdown(wait=False)  # the one thread ends with its task
