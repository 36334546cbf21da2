"""Stability of stage 04's models on persona sets already built: the yardstick's size and the count mixture's starts.

For each built set (``<set>/config/config.yml`` and ``<set>/artifacts`` with stages 01-03 done, as
``bench_persona_sets.py`` leaves them) and each ``method:space`` given, the model is fitted as stage 04 fits it
(``core.cluster.methods.make_clusterer``, the set's own config, one thread) and its stability measured as stage 04
measures it (``core.cluster.evaluation.stability``: 5 reseeds and 5 refits on 80% subsamples of a seeded sample),
at each ``--sizes`` sample size. Also reported: the mean ARI of the same subsample refits with the delivered model's
labels of the sample (``vs_delivered``), and the model's ARI against the persona (scoring only). ``--restarts``
refits the count mixture with each number of Ward restarts (``cluster.countmix.ward_restarts``). CPU seconds are
the process's own (one thread).

Example (docs/decisions.md, "Primary stability, eighth round")::

    python benchmarks/bench_primary_stability.py /work/stab_runs/tune-d /work/stab_runs/tune-e \\
        --pairs countmix:counts sharpkmeans:raw --sizes 2000 4000 --restarts 0 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cluster import evaluation  # noqa: E402
from core.cluster.clustering import sample_rows  # noqa: E402
from core.cluster.count_mixture import count_columns, count_space, counts_matrix, sellable_index  # noqa: E402
from core.cluster.methods import make_clusterer  # noqa: E402
from core.config import load_config  # noqa: E402
from core.framework import paths  # noqa: E402
from core.prepare_features.columns import sellable_classes  # noqa: E402


def load_spaces(root: Path):
    """The set's config, its raw, latent and counts spaces (as stage 04 builds them) and the persona of each row."""
    cfg = load_config(root / "config" / "config.yml")
    art = root / "artifacts"
    raw = pd.read_parquet(art / paths.PREPARE_FEATURES / paths.FEATURES)
    ids = raw["customer_id"].to_numpy()
    long = pd.read_parquet(art / paths.PREPARE_FEATURES / paths.CLASS_SPEND_LONG,
                           columns=["customer_id", "department", "class", "units"])
    keys = sellable_classes(cfg.hierarchy)
    index = sellable_index(long["department"], long["class"], keys)
    counts = counts_matrix(ids, long["customer_id"].to_numpy(), index, long["units"].to_numpy(), len(keys))
    latent = pd.read_parquet(art / paths.TRAIN_AUTOENCODER / paths.LATENT)
    spaces = {"raw": raw.drop(columns="customer_id").to_numpy(np.float64),
              "latent": latent.filter(like="latent_").to_numpy(np.float64),
              "counts": count_space(counts, count_columns(keys))}
    customers = pd.read_parquet(art / paths.GENERATE_DATA / paths.CUSTOMERS, columns=["customer_id", "persona"])
    truth = customers.set_index("customer_id").loc[ids, "persona"].astype(str).to_numpy()
    return cfg, spaces, truth


@evaluation.single_threaded
def measure(model, X, seed: int, size: int, ev) -> dict:
    """Stage 04's stability at ``size`` rows, and the same subsample refits against the delivered labels."""
    clock = time.process_time()
    found = evaluation.stability(model, X, seed=seed, reseeds=ev.reseeds, bootstraps=ev.bootstraps, sample_size=size,
                                 bootstrap_fraction=ev.bootstrap_fraction)
    seconds = time.process_time() - clock
    rows = sample_rows(X.shape[0], size, seed + 7919)  # evaluation.stability's sample and subsamples, again
    S = X[rows]
    delivered = model.assign(S, membership=False).labels
    fixed = clone(model).set_params(**model.fixed_params())
    rng = np.random.default_rng(seed + 104729)
    part_size = max(2, int(round(ev.bootstrap_fraction * S.shape[0])))
    agreement = []
    for _ in range(ev.bootstraps):
        part = np.sort(rng.choice(S.shape[0], size=part_size, replace=False))
        agreement.append(adjusted_rand_score(delivered, clone(fixed).fit(S[part]).assign(S, membership=False).labels))
    return {"size": size, "reseed": round(found["stability_reseed"], 3),
            "bootstrap": round(found["stability_bootstrap"], 3), "vs_delivered": round(float(np.mean(agreement)), 3),
            "stability_cpu_s": round(seconds, 2)}


@evaluation.single_threaded
def fit(method: str, space: str, X, cfg, seed: int, restarts: int | None):
    """The model stage 04 fits (on its fit sample), with ``restarts`` Ward restarts for the count mixture."""
    model = make_clusterer(method, cfg, seed, space, columns=getattr(X, "columns", None))
    if restarts is not None:
        model.set_params(ward_restarts=restarts)
    clock = time.process_time()
    model.fit(X[sample_rows(X.shape[0], cfg.fit_sample_size, seed)])
    return model, time.process_time() - clock


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--pairs", nargs="+", default=["countmix:counts", "sharpkmeans:raw"], help="method:space")
    p.add_argument("--sizes", nargs="+", type=int, default=[2000], help="stability sample sizes")
    p.add_argument("--restarts", nargs="+", type=int, default=None, help="the count mixture's Ward restarts to try "
                                                                          "(default: the set's config)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    args = p.parse_args(argv)
    rows = []
    for root in args.sets:
        cfg, spaces, truth = load_spaces(root)
        for pair in args.pairs:
            method, space = pair.split(":")
            for restarts in (args.restarts if method == "countmix" and args.restarts else [None]):
                model, fit_seconds = fit(method, space, spaces[space], cfg.cluster, cfg.seed, restarts)
                X = spaces[space]
                all_rows = model.assign(X, membership=False).labels
                head = {"set": root.name, "model": f"{method}_{space}", "restarts": restarts,
                        "segments": int(model.n_clusters_), "fit_cpu_s": round(fit_seconds, 2),
                        "ari": round(evaluation.ground_truth_metrics(all_rows, truth)["ari"], 3)}
                for size in args.sizes:
                    rows.append({**head, **measure(model, X, cfg.seed, size, cfg.cluster.evaluation)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
