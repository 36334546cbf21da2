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

``--parts BLOCKS`` instead times each part of the stage in one process, on
the first BLOCKS blocks of 1,000 customers of ``--config`` (default the
shipped one): drawing, the tables, the report's counts, the hand-over
between processes (the spill file and the pickled rest), merging and the
customers table, and the Parquet write, in CPU seconds per million lines
(CPU time: steadier than wall time on a shared machine). With the
environment variable ``BENCH_CODE`` set to another checkout, that
checkout's ``core`` is timed the same way (the harness also runs the
generator as it was before issue 18's speed work, commit 45fc6d6).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# BENCH_CODE: another checkout whose core/ is timed (for --parts before and after a change).
CODE_ROOT = Path(os.environ.get("BENCH_CODE", ROOT)).resolve()
sys.path[:0] = [str(CODE_ROOT), str(ROOT / "benchmarks")]

from common import load_average, load_text, machine, mib, record, run_child, seconds  # noqa: E402
from core.framework import paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--record", action="store_true", help="append the results to benchmarks/RESULTS.md")
    parser.add_argument("--parts", type=int, metavar="BLOCKS",
                        help="time the stage's parts in one process on this many blocks instead")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yml",
                        help="config for --parts (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.parts:
        print(time_parts(args.config, args.parts))
        return 0
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


def time_parts(config_path: Path, n_blocks: int) -> str:
    """CPU seconds per million lines of each part of stage 01, the parts run one after another in this process."""
    import pickle
    import time

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.config import load_config
    from core.generate_data import generator
    from core.generate_data.report import GenerationReport

    config = load_config(config_path)
    # The generator before issue 18's speed work built a DataFrame per block (block_tables).
    current = hasattr(generator, "transactions_table")
    clock = time.process_time
    spent = dict.fromkeys(["draw", "tables", "report", "hand_over", "merge_and_customers", "parquet"], 0.0)
    start = clock()
    plan = generator.build_plan(config.personas, config.scenarios, config.hierarchy, config.data,
                                config.generate_data, config.seed)
    if current:
        plan.identity  # built on first use now: count it with the plan
    plan_seconds = clock() - start
    report = GenerationReport(plan, config.personas, config.scenarios, config.generate_data)
    writer = pq.ParquetWriter(pa.BufferOutputStream(), generator.DICTIONARY_TRANSACTION_SCHEMA,
                              **generator.TRANSACTION_PARQUET_OPTIONS)
    lines, customers, chunk = 0, [], []
    spill = Path(tempfile.gettempdir() if not Path("/dev/shm").is_dir() else "/dev/shm") / f"parts-{os.getpid()}.arrow"
    for index in range(n_blocks):
        t0 = clock()
        block = generator.draw_block(index * generator.BLOCK_SIZE + 1, generator.BLOCK_SIZE, plan,
                                     np.random.default_rng([config.seed, 2, index]))
        t1 = clock()
        if current:
            table = generator.transactions_table(block, plan, 0)
            rest = (generator.customer_columns(block, plan), generator.event_columns(block, plan))
        else:
            frame, table = generator.block_tables(block, plan, 0)
            rest = (frame, generator.persona_events(block, plan))
        t2 = clock()
        part = GenerationReport(plan)
        part.add(block)
        if current:
            part = part.compact()
        else:
            part.plan = part.config_personas = part.config_scenarios = part.config_generate = None
        t3 = clock()
        with pa.OSFile(str(spill), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
            ipc.write_table(table)
        rest, part = pickle.loads(pickle.dumps((rest, part)))
        table = pa.ipc.open_file(pa.memory_map(str(spill))).read_all()
        os.remove(spill)
        t4 = clock()
        report.merge(part)
        customers.append(generator.add_identities(rest[0], plan) if current else rest[0])
        chunk.append(table)
        last = len(chunk) == 10 or index == n_blocks - 1
        if last:
            (generator.customer_frame(generator._concatenate(customers), plan) if current
             else pd.concat(customers, ignore_index=True))
            customers = []
        t5 = clock()
        if last:
            writer.write_table(pa.concat_tables(chunk))
            chunk = []
        spent["parquet"] += clock() - t5
        for name, seconds_spent in zip(("draw", "tables", "report", "hand_over", "merge_and_customers"),
                                       (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            spent[name] += seconds_spent
        lines += table.num_rows
    writer.close()
    start = clock()
    report.finish()
    finish_seconds = clock() - start
    per_million = {name: value / lines * 1e6 for name, value in spent.items()}
    rows = "\n".join(f"| {name.replace('_', ' ')} | {value:.3f} |" for name, value in per_million.items())
    return (f"{n_blocks} blocks, {lines:,} lines ({'current' if current else 'before issue 18'} code); plan "
            f"{plan_seconds:.2f} CPU-s, report finish {finish_seconds:.2f} CPU-s\n\n"
            f"| part | CPU-s per million lines |\n|---|---:|\n{rows}\n| total | {sum(per_million.values()):.3f} |")


if __name__ == "__main__":
    sys.exit(main())
