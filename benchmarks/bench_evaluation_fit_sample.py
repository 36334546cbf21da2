"""Stage 05's evaluation fitted on a sample of customers against fitted on everyone: the paired difference.

``profile_export.recommendations.evaluation_fit_customers`` makes the evaluation's fits (the weights'
validation split, the temporal holdout, the cross-sell comparison) from a seeded sample of customers when
there are more. This measures what that costs on a finished artifacts folder: the holdout's model
(with the weights given, or those of the folder's ``recommendation_evaluation.json``) and the baselines,
fitted once on the sample and once on every customer, scored on the same customers (the sample's scored
holdout customers), so the per-customer recall@k differences give the mean difference and its paired
standard error. The weights and cross-sell choices of the two ways are compared from two stage runs
(``run --only 5 --force`` with the key above and below the customer count).

    python benchmarks/bench_evaluation_fit_sample.py --config CONFIG --artifacts DIR [--fit-customers N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.framework import paths  # noqa: E402
from core.framework.stage import StageContext  # noqa: E402
from core.profile_export import recommendation_outputs as outputs, recommendations as rec, stage  # noqa: E402
from bench_profile_parts import upstream_inputs  # noqa: E402

MODELS = ("model", *rec.BASELINES, *rec.CANDIDATES)


def per_customer_recall(model: rec.NextBestClasses, holdout: rec.Holdout, segments, rows: np.ndarray,
                        k: int) -> dict[str, np.ndarray]:
    """Recall@k of each customer of ``rows`` (the holdout's row numbers) for the model and every baseline."""
    specs = {"model": model.weights_, **{b: b for b in rec.BASELINES}, **rec.CANDIDATES}
    out: dict[str, list] = {name: [] for name in specs}
    for start in range(0, len(rows), rec.SCORE_BATCH):
        batch = rows[start:start + rec.SCORE_BATCH]
        comps = model.components(holdout.fit, segments, batch)
        for name, spec in specs.items():
            scores = (rec.baseline_scores(spec, model, holdout.fit, segments, batch) if isinstance(spec, str)
                      else model.blend(comps, spec))
            items, _ = rec.top_k(np.asarray(scores, dtype=np.float64), k)
            metrics = rec.ranking_metrics(items, holdout.relevant[batch], holdout.fit.counts[batch])
            out[name].append(metrics["recall"])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--artifacts", required=True, type=Path)
    parser.add_argument("--fit-customers", type=int, default=None, help="default: the config's key")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    settings = config.profile_export.recommendations
    fit_customers = args.fit_customers or settings.evaluation_fit_customers
    ctx = StageContext(stage=stage.STAGE, config=config, artifacts_dir=args.artifacts,
                       inputs=upstream_inputs(args.artifacts), config_hash="0" * 64)
    started = time.perf_counter()
    customers = ctx.read_parquet(paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT,
                                 columns=["customer_id", "last_order_date", "recency_days"])
    assignments = stage._aligned(ctx.read_parquet(paths.CLUSTER, paths.ASSIGNMENTS,
                                                  columns=["customer_id", "segment"]), customers)
    ids, segments = assignments["customer_id"].to_numpy(), assignments["segment"].to_numpy()
    k, window, seed = settings.top_k, settings.evaluation_window_days, config.seed
    end = outputs.analysis_date(customers)
    cuts = [end - pd.Timedelta(days=2 * window), end - pd.Timedelta(days=window), end]
    items = rec.recommendable_items(config.hierarchy, "class")
    history = rec.PurchaseHistory(ids, items, cuts, window)
    for lines in outputs.line_batches(ctx):
        history.add(lines)
    document = json.loads((ctx.output_dir / paths.RECOMMENDATION_EVALUATION).read_text(encoding="utf-8"))
    weights = document["weights"]
    sample = rec.evaluation_fit_rows(len(ids), fit_customers, seed)
    if sample is None:
        raise SystemExit(f"{len(ids):,} customers, at most {fit_customers:,}: no sample to compare")
    sampled = rec.Holdout.of(history, seed, settings.evaluation_customers, rows=sample)
    whole = rec.Holdout.of(history, seed, settings.evaluation_customers)
    del history
    rows = sampled.scored
    on_sample = per_customer_recall(sampled.fitted(weights, k, segments[sample]), sampled, segments[sample],
                                    rows, k)
    on_all = per_customer_recall(whole.fitted(weights, k, segments), whole, segments, sample[rows], k)
    print(f"{len(ids):,} customers, evaluation fit on {len(sample):,}; weights {weights}; "
          f"{len(rows):,} customers scored (the same in both)")
    print(f"{'model':<20} {'everyone':>9} {'sample':>9} {'difference':>11} {'paired SE':>10}")
    for name in MODELS:
        diff = on_sample[name] - on_all[name]
        print(f"{name:<20} {on_all[name].mean():9.4f} {on_sample[name].mean():9.4f} {diff.mean():+11.5f} "
              f"{diff.std() / np.sqrt(len(diff)):10.5f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - started:.1f} s, peak {peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
