"""What every benchmark shares: run a child process and measure it, describe the machine, record the result.

What can be measured depends on the operating system (psutil is not a
dependency, so only the standard library is used):

- **Linux**: wall time; the child's CPU seconds (user + system) and peak
  resident set size from ``os.wait4`` (the child and every descendant it
  waited for, so worker processes count); with ``tree=True`` also the peak
  total resident memory of the child and its live descendants, sampled from
  ``/proc`` every 0.2 s (workers that hold memory at the same time as their
  parent), and the peak growth of ``/dev/shm``.
- **macOS**: as Linux without ``/proc`` and ``/dev/shm``: the peak is that of
  the largest single process.
- **Windows**: wall time only. CPU seconds and peak memory are ``None`` and
  print as ``n/a (Windows: not measured)``.

The stage durations the benchmarks report come from the manifests, the same
on every system.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# What a value this system cannot measure prints as: "n/a (Windows: not measured)" on Windows.
NOT_MEASURED = f"n/a ({platform.system() or 'this system'}: not measured)"
_PROC = Path("/proc/self/status").exists()


@dataclasses.dataclass
class ChildRun:
    """What :func:`run_child` measured. ``None`` where this system cannot measure it."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float | None
    peak_rss_mib: float | None  # the largest single process (the child or a descendant it waited for)
    peak_tree_rss_mib: float | None  # the child and its live descendants together (tree=True, Linux)
    peak_shm_growth_mib: float | None  # growth of /dev/shm (tree=True, Linux)
    stdout: str | None  # with capture=True
    stderr: str | None


def run_child(command: list[str], *, tree: bool = False, capture: bool = False) -> ChildRun:
    """Run ``command`` in ROOT and measure it (see the module docstring for what each system gives)."""
    start = time.perf_counter()
    pipe = subprocess.PIPE if capture else None
    process = subprocess.Popen(command, cwd=ROOT, stdout=pipe, stderr=pipe, text=capture or None)
    streams: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name, stream=stream: streams.__setitem__(name, stream.read()),
                                daemon=True)
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)) if stream is not None]
    finished = threading.Event()
    peaks = {"tree": 0.0, "shm": 0.0}
    shm_start = shm_used_mib()

    def sample() -> None:
        # Waits on the event, not process.poll(): poll would reap the child before os.wait4 reads its usage.
        while not finished.is_set():
            peaks["tree"] = max(peaks["tree"], tree_rss_mib(process.pid))
            if shm_start is not None:
                peaks["shm"] = max(peaks["shm"], (shm_used_mib() or 0.0) - shm_start)
            finished.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True) if tree and _PROC else None
    for thread in readers + ([sampler] if sampler else []):
        thread.start()
    cpu = peak = None
    if hasattr(os, "wait4"):  # Linux and macOS
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 1024**2  # KiB or bytes
    else:  # Windows
        code = process.wait()
    wall = time.perf_counter() - start
    finished.set()
    for thread in readers + ([sampler] if sampler else []):
        thread.join()
    return ChildRun(exit_code=code, wall_seconds=wall, cpu_seconds=cpu, peak_rss_mib=peak,
                    peak_tree_rss_mib=peaks["tree"] if sampler else None,
                    peak_shm_growth_mib=peaks["shm"] if sampler and shm_start is not None else None,
                    stdout=streams.get("stdout"), stderr=streams.get("stderr"))


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MiB (Linux /proc; 0 elsewhere)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total / 1024


def shm_used_mib() -> float | None:
    """MiB in use in /dev/shm; None where there is none (macOS, Windows)."""
    try:
        return shutil.disk_usage("/dev/shm").used / 1024**2
    except OSError:
        return None


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (other work on a shared machine); None on Windows."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def load_span(before: tuple[float, float, float] | None) -> str:
    """``before 1.00 0.80 0.50, after 1.20 0.90 0.60`` from the load taken before a run and now; ``n/a`` on Windows."""
    after = load_average()
    if before is None or after is None:
        return "n/a"
    return f"before {' '.join(f'{v:.2f}' for v in before)}, after {' '.join(f'{v:.2f}' for v in after)}"


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``benchmarks/<script>`` with ``argv`` (the process's own arguments when None)."""
    return " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def mib(value: float | None, unit: str = " MiB") -> str:
    """``1,234 MiB`` for a measured value in MiB, :data:`NOT_MEASURED` for None."""
    return NOT_MEASURED if value is None else f"{value:,.0f}{unit}"


def seconds(value: float | None, unit: str = " s") -> str:
    """``12.3 s`` for measured seconds, :data:`NOT_MEASURED` for None (CPU time on Windows)."""
    return NOT_MEASURED if value is None else f"{value:,.1f}{unit}"


def load_text(load: tuple[float, float, float] | None) -> str:
    """The 1-minute load average, or ``n/a`` where the system has none (Windows)."""
    return "n/a" if load is None else f"{load[0]:.1f}"


def machine() -> str:
    """CPU model, cores, memory and OS of this machine."""
    cpu = platform.processor() or "unknown CPU"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024**2:.0f} GiB"
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {memory} RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def record(report: str) -> Path:
    """Append ``report`` to benchmarks/RESULTS.md, where every measurement is kept with its machine."""
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write("\n" + report)
    print(f"appended to {RESULTS}")
    return RESULTS
