"""Time stage 01 (the synthetic generator) at 10,000, 100,000 and 1,000,000 customers.

    python benchmarks/bench_generate.py [--sizes 10000 100000 1000000] [--record]

For each size, the shipped config with ``data.n_customers`` changed runs
stage 01 alone, exactly as a user would (``python -m core.pipeline run
--only 1 --force``), in a child process; Parquet writing and the generation
report are included. Peak memory is the largest total resident set size of
the child and its worker processes, sampled every 0.2 s from ``/proc``
(Linux; on macOS the largest single process; not measured on Windows, see
benchmarks/common.py); so is the peak growth of ``/dev/shm`` (Linux), where
workers hand blocks to the parent as files. CPU seconds are those of the
child and its workers (user + system; Linux and macOS): on a shared machine
they are steadier than wall time, so they are recorded with the 1-minute
load average before and after each size. ``--record`` appends the results,
with the machine, to ``benchmarks/RESULTS.md``.

Targets (issue "realistic generator"), 2 cores: at least 1,000,000 order
lines per second end to end; 1,000,000 customers in under 3 minutes with
peak memory under 6 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from common import load_average, load_text, machine, mib, record, run_child, seconds  # noqa: E402
from core.framework import paths  # noqa: E402


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
            load_before = load_average()
            run = run_child(command, tree=True)
            load_after = load_average()
            if run.exit_code != 0:
                print(f"stage 01 failed at {size:,} customers (exit code {run.exit_code})", file=sys.stderr)
                return run.exit_code
            # The whole tree where /proc allows it (Linux), else the largest single process (macOS), else None.
            peak = run.peak_tree_rss_mib if run.peak_tree_rss_mib is not None else run.peak_rss_mib
            wall, cpu, shm = run.wall_seconds, run.cpu_seconds, run.peak_shm_growth_mib
            manifest = json.loads((artifacts_dir / paths.GENERATE_DATA / paths.MANIFEST).read_text(encoding="utf-8"))
            lines = manifest["details"]["order_lines"]
            stage_seconds = manifest["duration_seconds"]
            size_mib = (artifacts_dir / paths.GENERATE_DATA / paths.TRANSACTIONS).stat().st_size / 1024**2
            rows.append((size, lines, stage_seconds, wall, peak, size_mib, cpu, shm, load_before, load_after))
            print(f"{size:,} customers: {lines:,} lines in {stage_seconds:.1f} s "
                  f"({lines / stage_seconds:,.0f} lines/s), child {wall:.1f} s, CPU {seconds(cpu)}, "
                  f"peak {mib(peak)} + {mib(shm)} /dev/shm, load {load_text(load_before)} -> "
                  f"{load_text(load_after)}")
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
          f"{seconds(cpu, '')} | {'n/a' if cpu is None else f'{cpu / lines * 1e6:.2f}'} | {mib(peak, '')} | "
          f"{mib(shm, '')} | {size_mib:,.0f} | {load_text(before)}, {load_text(after)} |"
          for n, lines, secs, wall, peak, size_mib, cpu, shm, before, after in rows],
    ]) + "\n"
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
