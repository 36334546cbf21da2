"""Stage 05's next-best classes alone, phase by phase: wall and CPU seconds of each step of ``fit_recommendations``.

Runs the stage's own ``fit_recommendations`` (as the stage calls it, with the spend by month and attribute summed
on its read of the order lines; nothing written) on a finished artifacts
folder with timers around its steps: reading and summing the order lines (``PurchaseHistory.add``; the Parquet
reads between the calls are in the total only), the cuts, the fits, the weight search, the holdout, the
cross-sell comparison, everyone's top k and the table. CPU seconds are the process's (the summing and scoring
threads included), so a step's CPU can exceed its wall time.

    python benchmarks/bench_next_best_phases.py --config CONFIG --artifacts DIR
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.framework import memory  # noqa: E402
from core.framework.stage import StageContext  # noqa: E402
from core.profile_export import line_totals, recommendation_outputs as outputs, recommendations as rec, stage  # noqa: E402,E501
from bench_profile_parts import upstream_inputs  # noqa: E402

STEPS = [(rec.PurchaseHistory, "add", "read and sum the lines"), (rec.PurchaseHistory, "interactions", "cuts"),
         (rec.PurchaseHistory, "bought", "bought in a period"), (rec.NextBestClasses, "fit", "fits"),
         (rec, "choose_weights", "weight search"), (rec, "measure", "holdout measure"),
         (outputs, "compare_cross_sell", "cross-sell comparison"), (rec.NextBestClasses, "recommend", "everyone's top k"),
         (rec, "recommendation_table", "table"),
         (line_totals.SpendTotals, "add", "spend totals (own thread)")]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(owner, name: str, label: str, totals: dict) -> None:
    """Replace ``owner.name`` by the same function adding its wall and CPU seconds to ``totals[label]``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), _cpu()
        try:
            return function(*args, **kwargs)
        finally:
            entry = totals.setdefault(label, [0.0, 0.0, 0])
            entry[0] += time.perf_counter() - wall
            entry[1] += _cpu() - cpu
            entry[2] += 1

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--artifacts", required=True, type=Path)
    args = parser.parse_args(argv)
    ctx = StageContext(stage=stage.STAGE, config=load_config(args.config), artifacts_dir=args.artifacts,
                       inputs=upstream_inputs(args.artifacts), config_hash="0" * 64)
    totals: dict[str, list] = {}
    for owner, name, label in STEPS:
        timed(owner, name, label, totals)
    wall, cpu = time.perf_counter(), _cpu()
    memory.keep_freed_memory()  # as the stage does
    stage._fit_next_best(ctx, concurrent.futures.Future())  # with the spend totals summed on its read
    print(f"fit_recommendations: {time.perf_counter() - wall:.1f} s, {_cpu() - cpu:.1f} CPU-s, peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    for label, (seconds, cpu_seconds, calls) in totals.items():
        print(f"  {label:<24} {seconds:6.1f} s {cpu_seconds:6.1f} CPU-s  ({calls} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
