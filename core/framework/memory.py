"""The C heap's handling of freed memory, for stages whose NumPy work allocates and frees large arrays.

By default glibc serves an allocation above its mmap threshold (128 KiB, raised as the process frees such
blocks, at most 32 MiB) with a fresh mapping, unmaps it when freed, hands the top of its heap back to the
system, and gives each thread that allocates under contention an arena of its own whose heaps are at most
64 MiB. A stage that makes and drops arrays of tens to hundreds of MiB, from several threads, then faults
every one of them in again page by page: at a million customers stage 05 spent 15-17 of its 60-64 CPU-s in
the kernel (benchmarks/RESULTS.md, "fifth round"). Stage 01's generator workers tune their own heap the
same way (core/generate_data/workers.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8


def keep_freed_memory(largest: int = 1 << 30, arenas: int = 1) -> bool:
    """Let this process's C heap keep and reuse what it frees; for the rest of the process. True when applied.

    Arrays up to ``largest`` bytes come from the heap instead of a mapping of their own, up to ``largest``
    bytes of freed memory stay with the process instead of going back to the system (its resident memory
    stays near its high-water mark), and every thread shares ``arenas`` arenas (the main heap, which has no
    64 MiB limit), so a thread's large arrays are reused too; Arrow's buffers then come from the same heap
    (its system pool), and NumPy no longer asks for huge pages (:func:`_no_huge_pages_for_arrays`). Linux
    with glibc only; elsewhere (Windows, macOS, musl) nothing changes and False is
    returned.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library: keep its defaults
        return False
    applied = [mallopt(_M_MMAP_THRESHOLD, int(largest)), mallopt(_M_TRIM_THRESHOLD, int(largest)),
               mallopt(_M_TOP_PAD, 64 << 20), mallopt(_M_ARENA_MAX, int(arenas))]
    if all(applied):
        import pyarrow as pa

        # Arrow's own allocator (mimalloc) hands the pages of freed buffers back and faults them in again for
        # the next batch read; on this heap they are reused like NumPy's.
        pa.set_memory_pool(pa.system_memory_pool())
        _no_huge_pages_for_arrays()
    return all(applied)


def _no_huge_pages_for_arrays() -> None:
    """Stop NumPy asking the kernel for huge pages for its large arrays (as ``NUMPY_MADVISE_HUGEPAGE=0`` does).

    On a heap that keeps what it frees the arrays reuse pages already faulted in, so huge pages save little;
    where the kernel defragments on demand for such requests (``transparent_hugepage/defrag`` ``madvise``, as
    on the benchmark machine) a fault of a huge page can first compact memory. Stage 05 at a million customers,
    six runs each way alternating: 26.3-29.5 s (median 27.4) against 28.0-31.0 s (median 29.3), system time
    7.1-10.7 against 8.5-13.3 CPU-s (benchmarks/RESULTS.md, "Stage 05 at a million customers, seventh round").
    NumPy's switch is private (``_set_madvise_hugepage``): without it nothing changes.
    """
    import numpy as np

    for module in ("_core", "core"):
        switch = getattr(getattr(getattr(np, module, None), "multiarray", None), "_set_madvise_hugepage", None)
        if switch is not None:
            switch(False)
            return
