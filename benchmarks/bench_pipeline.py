"""Time the whole pipeline (and optionally the test suite) on this machine.

    python benchmarks/bench_pipeline.py [--config PATH] [--tests] [--record]

Runs every stage with ``--force`` into a fresh temporary artifacts folder, in
a child process exactly as a user would (``python -m core.pipeline run``),
then reads each stage's duration from its manifest. ``--tests`` also times
``python -m pytest``. Peak memory is the child's maximum resident set size
(Linux and macOS). ``--record`` appends the result, with the machine it ran
on, to ``benchmarks/RESULTS.md``.

Targets (issue "five-stage chain"): default config (10,000 customers) end to
end in under 2 minutes; test suite in under 5 minutes; 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.framework import paths  # noqa: E402


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
    results = ROOT / "benchmarks" / "RESULTS.md"
    with open(results, "a", encoding="utf-8") as handle:
        handle.write("\n" + report)
    print(f"appended to {results}")
    return results


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MiB (Linux /proc)."""
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


def run_child(command: list[str]) -> tuple[float, float | None, int]:
    """Wall seconds, peak RSS in MiB (None where unknown) and exit code of a child process."""
    start = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT)
    wall = time.perf_counter() - start
    peak = None
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak = rss / 1024 if sys.platform != "darwin" else rss / 1024**2  # KiB on Linux, bytes on macOS
    except ImportError:  # Windows
        pass
    return wall, peak, process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=paths.DEFAULT_CONFIG)
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        artifacts_dir = Path(tmp) / "artifacts"
        command = [sys.executable, "-m", "core.pipeline", "run", "--force", "--config", str(args.config),
                   "--artifacts", str(artifacts_dir)]
        wall, peak, code = run_child(command)
        if code != 0:
            print(f"pipeline failed with exit code {code}", file=sys.stderr)
            return code
        stages = {}
        for name in paths.STAGE_NAMES:
            manifest = json.loads((artifacts_dir / name / paths.MANIFEST).read_text(encoding="utf-8"))
            stages[name] = (manifest["duration_seconds"], manifest["summary"])
    lines = [
        f"### Pipeline, {dt.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python benchmarks/bench_pipeline.py{' --tests' if args.tests else ''}` "
        f"(config `{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}`)",
        f"- End to end (child process, imports included): **{wall:.1f} s**"
        + (f", peak memory {peak:,.0f} MiB" if peak else ""),
        "",
        "| stage | seconds | summary |",
        "|---|---:|---|",
        *[f"| {name} | {secs:.1f} | {summary} |" for name, (secs, summary) in stages.items()],
    ]
    if args.tests:
        test_wall, _, test_code = run_child([sys.executable, "-m", "pytest", "-q"])
        lines += ["", f"- Test suite (`python -m pytest -q`): **{test_wall:.1f} s**, exit code {test_code}"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
