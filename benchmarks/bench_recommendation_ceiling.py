"""The ceiling of next-best classes on generated data: each customer's classes ranked by the generator's truth.

    python benchmarks/bench_recommendation_ceiling.py --config CONFIG --artifacts DIR [--replicates 30] [--k 5]
                                                      [--window-days 182] [--record]

Reads a finished synthetic run (``DIR``, made with ``CONFIG``; stage 01's transactions, stage 02's analysis date,
stage 04's segments) and scores the same customers as stage 05's temporal holdout (segmented, bought before and
in the window). Every block of customers is drawn again exactly as stage 01 drew it (same seed, same block), which
gives each customer's hidden truth: persona, department, class, tier and style mixes, usual classes and their
weights, basics and their cycles, household member, life event and the tastes after it. Their visits and lines are
then redrawn ``--replicates`` times from other seeds with that truth held fixed (no dropout: the scored customers
all bought in the window). Ranking each customer's classes by how often they were bought in the evaluation window
over the redraws (ties: by the expected lines) is what a model that knew every customer's truth would do; its
recall@k on the actual window is the ceiling of any model of the lines. Printed beside it: the profile component
alone, the own-top-classes baseline, and both rankings by the customer's lines before the cut, in quarters.

Nothing in the generator changes: its functions are called as stage 01 calls them, with the customer draws (and
the life events) replaced by the first draw's for the redraws. The redraw of block 0 is checked against the file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_recommendations import _table, load_history  # noqa: E402
from common import command_line, load_average, load_span, machine, record  # noqa: E402
from core.config import load_config  # noqa: E402
from core.generate_data import generator  # noqa: E402
from core.profile_export import recommendations as rec  # noqa: E402

# Redraws use seeds [REDRAW_SEED, replicate, block]: never stage 01's [seed, 2, block].
REDRAW_SEED = 9_999
# The first redraw of block 0 must give at least this share of the file's (customer, day, class) keys: lines moved
# to data-quality classes by the generator's noise (0.2% of lines) and till lines are the only difference.
FIDELITY = 0.95


@contextlib.contextmanager
def _held(block: dict):
    """Within the block: the generator draws the customers, their life events and their tastes after them as in
    ``block`` (stage 01's draw), so only visits and lines are new."""
    customers = copy.deepcopy(block["customers"])
    customers["dropout"] = np.zeros_like(customers["dropout"])
    o = block["orders"]
    events = {"which": o["event"], "day": o["event_day"], "to": o["to"], "at_risk_years": o["at_risk_years"]}
    saved = generator.draw_customers, generator._draw_life_events, generator._add_after_event_slots
    generator.draw_customers = lambda *args, **kwargs: copy.deepcopy(customers)
    generator._draw_life_events = lambda *args, **kwargs: {k: v.copy() for k, v in events.items()}
    generator._add_after_event_slots = lambda *args, **kwargs: None  # the held customers carry them
    try:
        yield
    finally:
        generator.draw_customers, generator._draw_life_events, generator._add_after_event_slots = saved


def _window_lines(block: dict, class_item: np.ndarray, rows: np.ndarray, after_day: int,
                  shape: tuple[int, int]) -> sp.csr_matrix:
    """Customers x classes: the block's merchandise lines after plan day ``after_day`` (``rows``: each block
    customer's row in the history, -1 for none)."""
    lines, orders = block["lines"], block["orders"]
    day = orders["day"][lines["order"]]
    customer = orders["customer"][lines["order"]]
    item = class_item[lines["class_row"]]
    keep = (day > after_day) & (item >= 0) & (rows[customer] >= 0)
    matrix = sp.csr_matrix((np.ones(int(keep.sum())), (rows[customer[keep]], item[keep])), shape=shape)
    matrix.sum_duplicates()
    return matrix


def _check_fidelity(block: dict, class_item: np.ndarray, history: rec.PurchaseHistory, artifacts: Path,
                    start: pd.Timestamp, ids: np.ndarray) -> float:
    """Share of the file's (customer, day, class) keys of these customers that the redraw of stage 01's block has."""
    lines, orders = block["lines"], block["orders"]
    item = class_item[lines["class_row"]]
    drawn = pd.DataFrame({"customer_id": ids[orders["customer"][lines["order"]]],
                          "day": orders["day"][lines["order"]], "item": item})
    drawn = drawn[drawn["item"] >= 0].drop_duplicates()
    lines_file = pd.read_parquet(artifacts / "01_generate_data" / "transactions.parquet",
                                 columns=["customer_id", "order_date", "department", "class", "is_return"],
                                 filters=[("customer_id", "<=", int(ids.max())), ("customer_id", ">=", int(ids.min()))])
    lines_file = lines_file[~lines_file["is_return"].to_numpy(bool)]
    lines_file = lines_file.assign(item=rec.item_codes(lines_file, history.items),
                                   day=(lines_file["order_date"].dt.normalize() - start).dt.days)
    wanted = lines_file.loc[lines_file["item"] >= 0, ["customer_id", "day", "item"]].drop_duplicates()
    found = wanted.merge(drawn, how="left", on=["customer_id", "day", "item"], indicator=True)
    return float((found["_merge"] == "both").mean())


def truth_scores(config: Path, artifacts: Path, history: rec.PurchaseHistory, replicates: int) -> np.ndarray:
    """Customers x classes: share of the redraws in which the customer bought the class in the evaluation window,
    plus a tie-break by the mean lines (at most 1e-3 of one redraw's share)."""
    cfg = load_config(config)
    if cfg.data.source != "synthetic":
        raise SystemExit(f"{config}: data.source is {cfg.data.source!r}; the ceiling needs the generator's truth "
                         "(data.source: synthetic)")
    plan = generator.build_plan(cfg.personas, cfg.scenarios, cfg.hierarchy, cfg.data, cfg.generate_data, cfg.seed)
    catalog = plan.catalog
    key = pd.MultiIndex.from_frame(history.items[["department", "class"]])
    class_item = key.get_indexer(pd.MultiIndex.from_arrays(
        [[catalog.departments[d] for d in catalog.class_department], catalog.class_names])).astype(np.int64)
    start = pd.Timestamp(cfg.data.history_start)
    after_day = (history.cuts[1] - start).days
    bought, lines = np.zeros(history.shape, np.float32), np.zeros(history.shape, np.float32)
    size = generator.BLOCK_SIZE
    for index in range(-(-cfg.data.n_customers // size)):
        n = min(size, cfg.data.n_customers - index * size)
        block = generator.draw_block(index * size + 1, n, plan, np.random.default_rng([cfg.seed, 2, index]))
        ids = block["customers"]["customer_id"]
        rows = history.customer_index.get_indexer(ids)
        if index == 0:
            share = _check_fidelity(block, class_item, history, artifacts, start, ids)
            if share < FIDELITY:
                raise SystemExit(f"{artifacts}: the generator redraws only {share:.1%} of block 0's lines from "
                                 f"{config}: was the run made with this config and this code's generator?")
            print(f"block 0 redrawn: {share:.2%} of the file's (customer, day, class) keys", flush=True)
        with _held(block):
            for replicate in range(replicates):
                again = generator.draw_block(index * size + 1, n, plan,
                                             np.random.default_rng([REDRAW_SEED, replicate, index]))
                window = _window_lines(again, class_item, rows, after_day, history.shape)
                dense = window.toarray().astype(np.float32)
                bought += (dense > 0) / replicates
                lines += dense / replicates
    return bought + 1e-3 / replicates * lines / max(float(lines.max()), 1.0)


def ceiling_section(config: Path, artifacts: Path, k: int, window: int, replicates: int, seed: int) -> list[str]:
    started = time.perf_counter()
    history, segments, end = load_history(artifacts, k, window)
    truth = truth_scores(config, artifacts, history, replicates)
    fit, relevant = history.interactions(1), history.bought(2)
    rows = rec.evaluable_rows(fit, relevant)["evaluated"]
    result = rec.evaluate_history(history, segments, k, seed)
    model = rec.NextBestClasses(weights=result["weights"], top_k=k).fit(fit, segments)
    tie = rec.TIE_BREAK * model.global_popularity_
    comps = model.components(fit, segments, rows)
    rankings = {"generator's truth (share of redraws buying the class in the window)": truth[rows] + tie,
                f"chosen blend ({', '.join(f'{c} {w:.1f}' for c, w in result['weights'].items() if w)})":
                    model.blend(comps),
                "profile component alone": comps["profile"] + tie,
                "own top classes by spend (the best baseline, as stage 05 scores it)":
                    rec.baseline_scores("own_top_classes", model, fit, segments, rows)}
    recall = {name: rec.ranking_metrics(rec.top_k(scores, k)[0], relevant[rows], fit.counts[rows])
              for name, scores in rankings.items()}
    lines = np.asarray(fit.counts[rows].sum(axis=1)).ravel()
    quarter = pd.qcut(lines, 4, labels=False, duplicates="drop")
    bounds = [f"{lines[quarter == q].min():.0f}-{lines[quarter == q].max():.0f}" for q in range(quarter.max() + 1)]
    base = recall["own top classes by spend (the best baseline, as stage 05 scores it)"]["recall"].mean()
    table = [[name, f"{m['recall'].mean():.4f}", f"{m['recall'].mean() / base:.2f}", f"{m['hit_rate'].mean():.3f}",
              f"{m['discovery'].mean():.3f}",
              *[f"{m['recall'][quarter == q].mean():.3f}" for q in range(len(bounds))]]
             for name, m in recall.items()]
    truth_recall = next(iter(recall.values()))["recall"]
    model_recall = recall[next(n for n in recall if n.startswith("chosen blend"))]["recall"]
    difference = truth_recall - model_recall
    return [f"### Ceiling: the generator's truth, k = {k}", "",
            f"Input: {artifacts} (config {config}); {len(rows):,} customers scored on the classes bought "
            f"{(history.cuts[1] + pd.Timedelta(days=1)).date()} to {history.cuts[2].date()}; truth from "
            f"{replicates} redraws of every customer's visits and lines with their drawn persona, tastes and life "
            f"event held. Truth minus chosen blend: {difference.mean():+.4f} (paired standard error "
            f"{difference.std() / np.sqrt(len(difference)):.4f}); target recall 1.2 x the baseline = {1.2 * base:.4f}. "
            f"{time.perf_counter() - started:.0f} s.", "",
            *_table(["ranking", f"recall@{k}", "x baseline", f"hit@{k}", "discovery",
                     *[f"recall, history lines {b}" for b in bounds]], table), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the config the run in --artifacts was made with")
    parser.add_argument("--artifacts", type=Path, required=True, help="artifacts folder of a run finished up to stage 04")
    parser.add_argument("--replicates", type=int, default=30, help="redraws of every customer's visits and lines")
    parser.add_argument("--k", type=int, default=5, help="classes recommended per customer")
    parser.add_argument("--window-days", type=int, default=182, help="evaluation window, days")
    parser.add_argument("--seed", type=int, default=42, help="seed of the validation sample (the run's config seed)")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.replicates < 1:
        parser.error(f"--replicates must be at least 1, got {args.replicates}")
    load_before = load_average()
    report = ceiling_section(args.config, args.artifacts, args.k, args.window_days, args.replicates, args.seed)
    print("\n".join(report))
    if args.record:
        command, loads = command_line("bench_recommendation_ceiling.py", argv), load_span(load_before)
        record("\n".join([f"\n## Next-best classes: the ceiling of any model on generated data (issue 15, branch "
                          f"nb15), {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC\n",
                          f"- Machine: {machine()}", f"- Command: `{command.strip()}`",
                          f"- Load average (1, 5, 15 min) {loads}", ""] + report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
