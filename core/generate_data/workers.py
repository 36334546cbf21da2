"""Worker processes that draw the generator's blocks side by side, and how they hand blocks back.

:func:`draw_in_workers` runs a block-drawing function in a process pool and
yields its results in block order. The machinery lives here so that
:mod:`core.generate_data.generator` is only about drawing customers, orders
and lines:

- **Hand-over through shared memory** (POSIX): a worker writes a block's
  transactions as an Arrow file in a per-run folder in ``/dev/shm`` and the
  parent memory-maps it; a pipe would copy it three times (pickle, pipe,
  unpickle). Windows cannot delete a mapped file, so there blocks go through
  the pipe. A killed run cannot remove its folder: the folder's name carries
  the process id, and the next run removes the folders of processes gone
  (:func:`remove_orphaned_spills`).
- **Workers die with their parent.** A worker blocked on a full pipe to a
  parent killed with SIGKILL would otherwise sleep forever, re-parented,
  holding a few hundred MB. On Linux the kernel kills it
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a thread in the worker
  checks every second that the parent still runs and ends the worker when
  it does not.
- **Start methods**: fork (the Linux default) and spawn (Windows, macOS)
  give the same blocks; ``start_method`` chooses (None: the platform's).
- **glibc keeps freed memory** in the workers (:func:`_keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from core.framework.processes import process_alive

SPILL_PREFIX = "retail-generator-"
"""Start of the name of every spill folder; the creating process's id follows."""

PARENT_POLL_SECONDS = 1.0
"""How often a worker without a parent-death signal checks that its parent still runs."""

# Linux: <sys/prctl.h>.
_PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------------------------
# The pool


def draw_in_workers(draw: Callable[[int], tuple], n_blocks: int, workers: int, blocks_per_chunk: int,
                    start_method: str | None = None) -> Iterator[tuple]:
    """Yield ``draw(0)``, ..., ``draw(n_blocks - 1)`` in that order, drawn by ``workers`` processes.

    Parameters
    ----------
    draw : callable
        ``draw(index) -> (customers, transactions, report part)``, where
        ``transactions`` is a ``pyarrow.Table``. It is sent to each worker
        once, so under spawn it must pickle (a module-level function or a
        ``functools.partial`` of one).
    n_blocks, workers : int
    blocks_per_chunk : int
        Blocks the caller gathers before writing: the workers draw up to a
        chunk (plus two blocks each) ahead of it.
    start_method : str or None
        ``"fork"``, ``"spawn"`` or ``"forkserver"``; None for the platform's default.

    Closing the iterator (or an error in the caller) stops the workers and
    removes the spill folder. Iterate it from one thread, and keep that
    thread alive while the workers run: on Linux they are killed when the
    thread that started them ends (see :func:`_die_with_parent`).
    """
    spill = spill_folder()
    try:
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                                       initializer=_init_worker, initargs=(draw, os.getpid()))
        try:
            # Blocks in flight or done but not yet taken: a bounded window keeps memory flat however
            # many customers there are. It spans a chunk so that the workers keep drawing the next
            # chunk while the caller writes this one (a window of a few blocks left both workers idle
            # for most of each Parquet write); done blocks wait as files in shared memory.
            yield from _in_order(executor, n_blocks, blocks_per_chunk + 2 * workers, spill)
        finally:
            executor.shutdown(cancel_futures=True)
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def _in_order(executor: ProcessPoolExecutor, n_blocks: int, window: int, spill: str | None) -> Iterator[tuple]:
    """Every block's result in block order, with at most ``window`` blocks submitted and not yet taken."""
    pending: deque = deque()
    for index in range(n_blocks):
        pending.append(executor.submit(_draw_block, index, spill))
        if len(pending) == window:
            yield _received(pending.popleft().result())
    while pending:
        yield _received(pending.popleft().result())


def _received(result: tuple) -> tuple:
    """A worker's result with its spilled transactions mapped back into a table."""
    customers, transactions, part = result
    if isinstance(transactions, str):
        transactions_file = transactions
        transactions = pa.ipc.open_file(pa.memory_map(transactions_file)).read_all()
        # Unlinked now, the file's memory is freed as soon as the table is (POSIX keeps a
        # mapped file's pages until it is unmapped).
        os.remove(transactions_file)
    return customers, transactions, part


# ----------------------------------------------------------------------------------------------
# Inside a worker

_WORKER_DRAW: Callable[[int], tuple] | None = None


def _init_worker(draw: Callable[[int], tuple], parent_pid: int) -> None:
    global _WORKER_DRAW
    _die_with_parent(parent_pid)
    # Under fork a worker inherits the stage's SIGTERM handler, which raises KeyboardInterrupt:
    # the pool's worker loop catches it and blocks sending it to a parent that may be gone.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _keep_freed_memory()
    _WORKER_DRAW = draw


def _draw_block(index: int, spill: str | None) -> tuple:
    customers, transactions, part = _WORKER_DRAW(index)
    if spill is None:
        return customers, transactions, part
    path = f"{spill}/block-{index:07d}.arrow"
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, transactions.schema) as writer:
        writer.write_table(transactions)
    return customers, path, part


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (the process that made the pool) ends.

    On Linux the kernel sends SIGKILL when the parent thread that started
    this worker ends: here, the thread iterating :func:`draw_in_workers`.
    The parent may have died before the request: then this process was
    already handed to another parent, and ends now. Elsewhere, or when
    ``prctl`` is unavailable, a daemon thread checks every second.
    """
    if sys.platform.startswith("linux") and _request_parent_death_signal():
        # Under forkserver the direct parent is the server (which ends with parent_pid), so a
        # different parent alone does not mean the pool's maker has gone.
        if os.getppid() != parent_pid and not process_alive(parent_pid):
            os._exit(1)
        return
    watcher = threading.Thread(target=_exit_when_parent_gone, args=(parent_pid, os.getppid()),
                               name="parent-watch", daemon=True)
    watcher.start()


def _request_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False when it cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_parent_gone(parent_pid: int, first_parent: int,
                           interval: float = PARENT_POLL_SECONDS) -> None:
    """Poll until ``parent_pid`` has ended or this process was re-parented, then exit at once.

    ``os._exit``: no clean-up runs, as with a kill; the parent's clean-up (or
    the next run's) removes what the worker leaves. On Windows ``os.getppid``
    keeps the dead parent's id, so there liveness alone decides.
    """
    while os.getppid() == first_parent and process_alive(parent_pid):
        time.sleep(interval)
    os._exit(1)


def _keep_freed_memory() -> None:
    """Let this process's C heap keep the memory it frees (glibc only; elsewhere nothing).

    A block allocates and frees hundreds of NumPy arrays of about a megabyte. By default
    glibc maps such arrays afresh or hands the top of its heap back to the system as soon as
    they are freed, so every block faulted its memory in again, page by page: about 7,000
    page faults a block, a quarter of a worker's CPU time on a 2-core virtual machine
    (``benchmarks/RESULTS.md``). Arrays up to 32 MiB now come from the heap, and freed memory
    stays with the process up to 1 GiB; a worker's resident memory stays at its high-water
    mark (a few hundred MiB), which it reached anyway.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (e.g. musl): keep its defaults
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


# ----------------------------------------------------------------------------------------------
# Spill folders


def spill_folder() -> str | None:
    """A new folder where workers hand blocks to the parent (POSIX only; None elsewhere).

    In ``/dev/shm`` when it is writable (files there are memory), else the
    temporary folder. Orphaned folders of earlier runs are removed first.
    """
    if os.name != "posix":
        return None
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    # A killed run cannot clean up, and files in /dev/shm hold memory until the machine restarts:
    # the folder carries its process id, and the next run removes those of processes gone.
    remove_orphaned_spills(Path(base))
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=base)


def remove_orphaned_spills(base: Path, quiet_seconds: float = 600.0) -> list[Path]:
    """Remove the spill folders in ``base`` left by generator processes that no longer run.

    Returns the folders removed. Folders of running processes, folders
    whose name carries no process id, and folders changed in the last
    ``quiet_seconds`` are left alone: a running generator adds and removes
    files all the time, and the last rule keeps the folder of a run in
    another container sharing /dev/shm (whose process ids this one cannot
    see) out of reach.
    """
    removed = []
    for folder in sorted(base.glob(f"{SPILL_PREFIX}*")):
        pid = folder.name[len(SPILL_PREFIX):].split("-", 1)[0]
        if not (folder.is_dir() and pid.isdigit()) or process_alive(int(pid)):
            continue
        if time.time() - folder.stat().st_mtime < quiet_seconds:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
