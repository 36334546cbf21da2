"""Segments over time against the truth, the window-length trade-off, and the snapshots' speed (issue 16).

    python benchmarks/bench_migration.py truth --artifacts DIR --config FILE [--windows 90 180 365] [--record]
    python benchmarks/bench_migration.py speed --artifacts DIR --config FILE --log FILE [--reader blocks|windows]
        [--record]

``truth`` reads a finished run (stages 01 to 04 of ``--config`` in
``--artifacts``): its ``segment_history.parquet`` against stage 01's
``persona_events.parquet`` (:func:`core.cluster.snapshots.against_events`):
of the customers with a persona event, the share whose segment changes
within two snapshots after it (target >= 0.6); of those without one, active
at two consecutive snapshots, the share keeping their segment (target >=
0.9). Then the trade-off: the same trained chain (loaded through
:func:`core.scoring.load_saved_run`, verified, nothing refitted) run again
for each ``--windows`` length on the same snapshot dates (the quarter ends
after a warm-up as long as the longest window), both shares for each.

``speed`` times what stage 04 does for the snapshots (the windows of the
quarter ends of the log's history after ``cluster.snapshots.warmup_days``,
read once by block of customers as stage 04 reads them
(:func:`block_windows`; ``--reader windows``: window by window,
:func:`segment_history`), :func:`transitions`, both tables written to
Parquet and CSV) on ``--log``
(a ``transactions.parquet``, e.g. stage 01 of a larger run) with the chain
trained in ``--artifacts``: wall and CPU seconds, per snapshot, and per
million customers. Target: eight quarterly snapshots of a million customers
in at most 5 minutes on 2 cores.

``--record`` appends the tables to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from core.cluster import snapshots  # noqa: E402
from core.config import load_config  # noqa: E402
from core.framework import paths  # noqa: E402
from core.scoring import load_saved_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
EVENTS = paths.PERSONA_EVENTS


def trained_chain(artifacts: Path, config, model: str | None = None) -> snapshots.TrainedChain:
    """Stages 02 to 04's fitted pieces of a finished run, verified as the score command loads them.

    ``model`` (``<method>_<space>``) picks another of stage 04's models than the primary.
    """
    saved = load_saved_run(artifacts, config)
    method, space = saved.primary if model is None else model.rsplit("_", 1)
    return snapshots.TrainedChain(feature_model=saved.feature_model, autoencoder=saved.autoencoder,
                                  model=saved.models[(method, space)], space=space, hierarchy=config.hierarchy)


def truth(args) -> list[str]:
    config = load_config(args.config)
    data = paths.stage_dir(args.artifacts, paths.GENERATE_DATA)
    events = pd.read_parquet(data / EVENTS)
    history = pd.read_parquet(paths.stage_dir(args.artifacts, paths.CLUSTER) / paths.SEGMENT_HISTORY)
    cfg = config.cluster.snapshots
    headline = snapshots.against_events(history, events)
    lines = [f"Run: `{args.artifacts}` (config `{args.config}`, seed {config.seed}); {len(events):,} persona "
             f"events; the pipeline's own snapshots (window {cfg.window_days} days, every {cfg.every}, "
             f"switch ratio {cfg.switch_ratio:g}, below {cfg.min_orders} orders {cfg.weak_switch_ratio:g}, "
             f"{headline['snapshots']} dates):", "",
             "| window days | snapshots | events measured | changed within 2 snapshots | pairs without event | "
             "kept segment | seconds |", "|---:|---:|---:|---:|---:|---:|---:|",
             _row(cfg.window_days, headline, float("nan")), "",
             f"Trade-off, same chain and dates for every window (quarter ends after {max(args.windows)} days):", "",
             "| window days | switch ratio | min orders | weak switch ratio | snapshots | events measured | "
             "changed within 2 snapshots | pairs without event | kept segment | seconds |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    chain = trained_chain(args.artifacts, config)
    source = data / paths.TRANSACTIONS
    start, end = snapshots.history_range(source)
    dates = snapshots.snapshot_dates(dataclasses.replace(cfg, dates=(), warmup_days=max(args.windows)), start, end)
    for window in args.windows:
        for ratio, min_orders, weak in itertools.product(args.switch_ratios, args.min_orders,
                                                          args.weak_switch_ratios):
            began = time.perf_counter()
            found = snapshots.segment_history(lambda day: snapshots.window_lines(source, day, window), chain, dates,
                                              ratio, min_orders, max(weak, ratio))
            measured = snapshots.against_events(found.history, events)
            lines.append(_row(window, measured, time.perf_counter() - began, (ratio, min_orders, max(weak, ratio))))
            print(lines[-1], flush=True)
    return lines


def _row(window: int, m: dict, seconds: float, rule: tuple | None = None) -> str:
    took = "" if seconds != seconds else f"{seconds:.1f}"
    shown = "" if rule is None else "".join(f" {v:g} |" for v in rule)
    return (f"| {window} |{shown} {m['snapshots']} | {m['events_measured']:,} | {m['changed_after_event']:.3f} | "
            f"{m['pairs_without_event']:,} | {m['kept_without_event']:.3f} | {took} |")


def speed(args) -> list[str]:
    import resource

    config = load_config(args.config)
    cfg = config.cluster.snapshots
    chain = trained_chain(args.artifacts, config, args.model)
    start, end = snapshots.history_range(args.log)
    dates = snapshots.snapshot_dates(dataclasses.replace(cfg, dates=()), start, end)
    import pyarrow.parquet as pq

    # As stage 04 decides it (core.cluster.snapshots.write_snapshots), unless --in-flight says otherwise.
    in_flight = args.in_flight or snapshots.windows_in_flight(pq.ParquetFile(args.log).metadata.num_rows,
                                                             (end - start).days + 1, cfg.window_days)
    cpu0, began = time.process_time(), time.perf_counter()
    built = (snapshots.block_windows(args.log, chain.feature_model, chain.hierarchy, dates, cfg.window_days)
             if args.reader == "blocks" else None)
    if built is not None:
        in_flight = "all (read once by block of customers)"
        found = snapshots.history_of_windows(chain, built, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio)
    else:
        found = snapshots.segment_history(lambda day: snapshots.window_lines(args.log, day, cfg.window_days), chain,
                                          dates, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio,
                                          in_flight=in_flight)
    moves = snapshots.transitions(found.history)
    with tempfile.TemporaryDirectory() as folder:
        found.history.to_parquet(Path(folder) / paths.SEGMENT_HISTORY, index=False)
        moves.to_csv(Path(folder) / paths.TRANSITIONS, index=False)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu0
    customers = found.history["customer_id"].nunique()
    total = pq.ParquetFile(args.log).metadata.num_rows
    log_customers = pq.read_table(args.log, columns=["customer_id"])["customer_id"].unique().__len__()
    per_million = wall * 1_000_000 / log_customers
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [f"| {d} | {v['lines']:,} | {v['active_customers']:,} | {v['segmented']:,} | {v['seconds']:.1f} |"
            for d, v in found.details["snapshots"].items()]
    return [f"Chain trained in `{args.artifacts}`; log `{args.log}`: {log_customers:,} customers, {total:,} lines, "
            f"{start} to {end}; window {cfg.window_days} days, {len(dates)} snapshots every {cfg.every}, "
            f"{in_flight} window(s) in flight; "
            f"model {args.model or 'primary'} ({chain.space} space). {machine()}", "",
            "| snapshot | window lines | active customers | segmented | seconds |", "|---|---:|---:|---:|---:|",
            *rows, "",
            f"All {len(dates)} snapshots, transitions and both files written: **{wall:.1f} s wall**, {cpu:.1f} s CPU "
            f"(this process), peak RSS {peak:,.0f} MiB; {customers:,} distinct customers segmented at least once. "
            f"Linear in customers (every step is per customer or per line): "
            f"**{per_million:.0f} s per million customers** at {len(dates)} snapshots."]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("truth", "speed"))
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log", type=Path, help="speed: the transactions.parquet to snapshot")
    parser.add_argument("--model", help="speed: <method>_<space> of stage 04 to time instead of the primary")
    parser.add_argument("--in-flight", type=int, default=0,
                        help="speed, --reader windows: snapshot windows built side by side (default: as stage 04 "
                             "decides)")
    parser.add_argument("--reader", choices=("blocks", "windows"), default="blocks",
                        help="speed: read the log once by block of customers (stage 04's way when the log is split "
                             "by customer) or window by window")
    parser.add_argument("--windows", type=int, nargs="+", default=[90, 120, 180, 270, 365])
    parser.add_argument("--switch-ratios", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--min-orders", type=int, nargs="+", default=[0, 5],
                        help="truth: minimum-evidence thresholds (orders in the window); 0 = the rule off")
    parser.add_argument("--weak-switch-ratios", type=float, nargs="+", default=[10.0],
                        help="truth: switch ratios below --min-orders (raised to the switch ratio if lower)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    lines = truth(args) if args.mode == "truth" else speed(args)
    text = "\n".join(lines)
    print(text)
    if args.record:
        heading = f"\n### Segments over time ({args.mode}), {dt.date.today()}\n\n"
        command = f"`python benchmarks/bench_migration.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(heading + command + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
