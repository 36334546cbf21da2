"""Time stage 01 (the synthetic generator) at 10,000, 100,000 and 1,000,000 customers.

    python benchmarks/bench_generate.py [--sizes 10000 100000 1000000] [--record]

For each size, the shipped config with ``data.n_customers`` changed runs
stage 01 alone, exactly as a user would (``python -m core.pipeline run
--only 1 --force``), in a child process; Parquet writing and the generation
report are included. Peak memory is the largest total resident set size of
the child and its worker processes, sampled every 0.2 s from ``/proc``
(Linux only; elsewhere it is left out); so is the peak growth of
``/dev/shm``, where workers hand blocks to the parent as files. CPU seconds
are those of the child and its workers (user + system): on a shared
machine they are steadier than wall time, so they are recorded with the
1-minute load average before and after each size. ``--record`` appends the
results, with the machine, to ``benchmarks/RESULTS.md``.

Targets (issue "realistic generator"), 2 cores: at least 1,000,000 order
lines per second end to end; 1,000,000 customers in under 3 minutes with
peak memory under 6 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pipeline import machine, record, tree_rss_mib  # noqa: E402
from core.framework import paths  # noqa: E402




def shm_used_mib() -> float:
    """MiB in use in /dev/shm (0 where there is none)."""
    try:
        return shutil.disk_usage("/dev/shm").used / 1024**2
    except OSError:
        return 0.0


def run_sampled(command: list[str]) -> tuple[float, float | None, int, float, float]:
    """Wall seconds, peak tree RSS (MiB, None off Linux), exit code, CPU seconds of the child
    and its descendants, and peak growth of /dev/shm (MiB) of a child process."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    shm_start = shm_used_mib()
    process = subprocess.Popen(command, cwd=ROOT)
    peak, shm_peak = [0.0], [0.0]
    linux = Path("/proc/self/status").exists()

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(process.pid))
            shm_peak[0] = max(shm_peak[0], shm_used_mib() - shm_start)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    if linux:
        sampler.start()
    code = process.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if linux:
        sampler.join()
    return wall, (peak[0] if linux else None), code, cpu, shm_peak[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--record", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
            config_dir = Path(tmp) / "config"
            shutil.copytree(ROOT / "config", config_dir)
            document = yaml.safe_load((config_dir / "config.yml").read_text(encoding="utf-8"))
            document["data"]["n_customers"] = size
            (config_dir / "config.yml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            artifacts_dir = Path(tmp) / "artifacts"
            command = [sys.executable, "-m", "core.pipeline", "run", "--only", "1", "--force",
                       "--config", str(config_dir / "config.yml"), "--artifacts", str(artifacts_dir)]
            load_before = os.getloadavg()[0]
            wall, peak, code, cpu, shm = run_sampled(command)
            load_after = os.getloadavg()[0]
            if code != 0:
                print(f"stage 01 failed at {size:,} customers (exit code {code})", file=sys.stderr)
                return code
            manifest = json.loads((artifacts_dir / paths.GENERATE_DATA / paths.MANIFEST).read_text(encoding="utf-8"))
            lines = manifest["details"]["order_lines"]
            stage_seconds = manifest["duration_seconds"]
            size_mib = (artifacts_dir / paths.GENERATE_DATA / paths.TRANSACTIONS).stat().st_size / 1024**2
            rows.append((size, lines, stage_seconds, wall, peak, size_mib, cpu, shm, load_before, load_after))
            print(f"{size:,} customers: {lines:,} lines in {stage_seconds:.1f} s "
                  f"({lines / stage_seconds:,.0f} lines/s), child {wall:.1f} s, {cpu:.1f} CPU s "
                  f"({cpu / lines * 1e6:.2f} per million lines), peak {peak or 0:,.0f} MiB "
                  f"+ {shm:,.0f} MiB /dev/shm, load {load_before:.1f} -> {load_after:.1f}")
    report = "\n".join([
        f"### Stage 01 generator, {dt.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python benchmarks/bench_generate.py --sizes {' '.join(map(str, args.sizes))}` "
        "(shipped config, `data.n_customers` changed)",
        "",
        "| customers | order lines | lines per customer | stage seconds | lines per second | "
        "child wall s (imports incl.) | CPU s, all processes | CPU s per million lines | "
        "peak RSS, all processes (MiB) | peak /dev/shm growth (MiB) | transactions.parquet (MiB) | "
        "load avg (1 min) before, after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *[f"| {n:,} | {lines:,} | {lines / n:.0f} | {secs:.1f} | {lines / secs:,.0f} | {wall:.1f} | "
          f"{cpu:.1f} | {cpu / lines * 1e6:.2f} | {'' if peak is None else f'{peak:,.0f}'} | {shm:,.0f} | "
          f"{mib:,.0f} | {before:.1f}, {after:.1f} |"
          for n, lines, secs, wall, peak, mib, cpu, shm, before, after in rows],
    ]) + "\n"
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
