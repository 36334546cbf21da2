"""A mixture of Dirichlet-multinomials on unit counts against stage 04's methods, on persona sets already built.

Reads one built set's stage 01-04 artifacts (``<set>/artifacts``: ``customers.parquet``, stage 02's
``enriched_class.parquet`` (its ``class_units__<department>__<class>`` columns) and ``features.parquet``
(for the customers stage 04 segments), stage 04's ``comparison.json``) and fits
:class:`core.cluster.count_mixture.CountMixtureClusterer` on each customer's units per department
and per class. The number of components is chosen without labels (BIC on the selection sample, within
``--kmin``..``--kmax``); stability is measured as stage 04 does (``core/cluster/evaluation.py``
``stability``: refits with 5 other seeds and on 5 subsamples of 80% of a 2,000-row sample; the lower
of the two mean pairwise ARIs). The persona only scores the result, against the set's own
``supervised_reference`` and its delivered primary and best of eight from ``comparison.json``.

Example::

    python benchmarks/bench_count_mixture.py /work/tune_runs/tune-b /work/tune_runs/tune-d
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cluster.count_mixture import CountMixtureClusterer  # noqa: E402
from core.cluster import evaluation  # noqa: E402
from core.cluster.clustering import sampled_silhouette  # noqa: E402
from core.cluster.evaluation import stability  # noqa: E402


def load_set(root: Path):
    """Class-unit counts (customers of ``features.parquet``), their column names, persona, comparison.json, seed."""
    art = root / "artifacts"
    ids = pd.read_parquet(art / "02_prepare_features" / "features.parquet", columns=["customer_id"])["customer_id"]
    wide = pd.read_parquet(art / "02_prepare_features" / "enriched_class.parquet")
    columns = [c for c in wide.columns if c.startswith("class_units__")]
    wide = wide.set_index("customer_id").loc[ids.to_numpy(), columns]
    customers = pd.read_parquet(art / "01_generate_data" / "customers.parquet")
    truth = customers.set_index("customer_id").loc[ids.to_numpy(), "persona"].astype(str).to_numpy()
    comparison = json.loads((art / "04_cluster" / "comparison.json").read_text())
    seed = int(yaml.safe_load((root / "config" / "config.yml").read_text())["seed"])
    return wide.to_numpy(float).clip(min=0), tuple(columns), truth, comparison, seed


def auto_with_count_mixture(root: Path, labels: np.ndarray, stab: dict, truth: np.ndarray, ref: float,
                            seed: int) -> dict:
    """``primary: auto`` as stage 04 runs it (evaluation.consensus, choose_primary, the set's own settings) with the
    count mixture as a ninth candidate; the eight others' labels and measures are the set's saved ones."""
    art = root / "artifacts"
    cfg = yaml.safe_load((root / "config" / "config.yml").read_text())["cluster"]
    table = pd.read_csv(art / "04_cluster" / "comparison.csv")
    assignments = pd.read_parquet(art / "04_cluster" / "assignments.parquet")
    features = pd.read_parquet(art / "02_prepare_features" / "features.parquet")
    if not np.array_equal(assignments["customer_id"].to_numpy(), features["customer_id"].to_numpy()):
        raise SystemExit(f"{root}: assignments and features list different customers")
    sample = cfg.get("silhouette_sample_size", 3000)
    row = {"method": "count_mixture", "space": "counts", "clusters": int(len(np.unique(labels))), **stab,
           "silhouette": sampled_silhouette(features.drop(columns="customer_id").to_numpy(float), labels,
                                            sample, seed)}
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    labelings = {(m, s): assignments[f"{m}_{s}_label"].to_numpy() for m, s in zip(table["method"][:-1],
                                                                                  table["space"][:-1])}
    labelings[("count_mixture", "counts")] = labels
    primary = cfg["primary"]
    floor = evaluation.segment_floor(table["clusters"], primary["min_segments_share"])
    voters = [(m, s) for m, s, c in zip(table["method"], table["space"], table["clusters"]) if c >= floor]
    agreement = evaluation.consensus(labelings, sample, seed, voters=voters)
    table["consensus"] = [agreement[(m, s)] for m, s in zip(table["method"], table["space"])]
    comparison = json.loads((art / "04_cluster" / "comparison.json").read_text())
    aside = evaluation.spaces_set_aside(comparison.get("latent_explained"), primary["min_latent_explained"])
    method, space, reason = evaluation.choose_primary(table, "auto", "auto", cfg["evaluation"]["min_stability"],
                                                      primary["min_segments_share"], aside,
                                                      min_consensus_share=primary["min_consensus_share"])
    chosen = labelings[(method, space)]
    picked = table[(table["method"] == method) & (table["space"] == space)].iloc[0]
    return {"auto_with_it": f"{method} {space}", "auto_ratio": round(adjusted_rand_score(truth, chosen) / ref, 3),
            "auto_stability": round(float(min(picked["stability_reseed"], picked["stability_bootstrap"])), 3),
            "auto_segments": int(picked["clusters"]), "count_mixture_consensus": round(agreement[("count_mixture",
                                                                                                "counts")], 3),
            "auto_reason": reason}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--kmin", type=int, default=2)
    p.add_argument("--kmax", type=int, default=20)
    p.add_argument("--start", choices=["ward", "kmeans++"], default="ward")
    p.add_argument("--n-init", type=int, default=3, help="kmeans++ starts")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--scan-tol", type=float, default=1e-2, help="tolerance of the BIC scan's candidate fits")
    p.add_argument("--selection-sample-size", type=int, default=5000, help="rows the BIC scan fits")
    p.add_argument("--ward-sample-size", type=int, default=None, help="rows of Ward's start tree (default: the "
                   "selection sample's)")
    p.add_argument("--scan-step", type=int, default=1, help="BIC at every n-th count, then around the best")
    p.add_argument("--no-stability", action="store_true", help="fit and score only (no stability, no auto rerun)")
    args = p.parse_args(argv)
    for root in args.sets:
        t0 = time.perf_counter()
        c0 = time.process_time()
        X, columns, truth, comp, seed = load_set(root)
        model = CountMixtureClusterer(n_components=(args.kmin, args.kmax), columns=columns, start=args.start,
                                      n_init=args.n_init, tol=args.tol, random_state=seed, scan_tol=args.scan_tol,
                                      selection_sample_size=args.selection_sample_size,
                                      ward_sample_size=args.ward_sample_size,
                                      scan_step=args.scan_step).fit(X)
        ari = adjusted_rand_score(truth, model.labels_)
        t_fit = time.perf_counter() - t0
        cpu_fit = time.process_time() - c0
        stab = ({"stability_reseed": float("nan"), "stability_bootstrap": float("nan")} if args.no_stability else
                stability(model, X, seed=seed, reseeds=5, bootstraps=5, sample_size=2000, bootstrap_fraction=0.8))
        ref = comp["supervised_reference"]["raw"]["ari"]
        lf, best = comp["label_free_primary"], comp["best_afterwards"]
        auto = ({} if args.no_stability else
                auto_with_count_mixture(root, model.labels_, stab, truth, ref, seed))
        print(json.dumps({
            "set": root.name, "personas": len(np.unique(truth)), "k": model.n_clusters_,
            "ari": round(ari, 3), "ratio": round(ari / ref, 3),
            "stability": round(min(stab.values()), 3), **{k: round(v, 3) for k, v in stab.items()},
            "delivered": f"{lf['method']} {lf['space']} {lf['ari_to_reference']:.3f} stab {lf['stability']:.3f}",
            "best_of_8": f"{best['method']} {best['space']} {best['ari_to_reference']:.3f} stab {best['stability']:.3f}",
            **auto, "reference": round(ref, 3), "fit_s": round(t_fit, 1), "fit_cpu_s": round(cpu_fit, 2),
            "all_cpu_s": round(time.process_time() - c0, 2), "all_s": round(time.perf_counter() - t0, 1),
            "bic": {int(a): round(b, 1) for a, b in model.bic_.items()}, "settings": vars(args) | {"sets": None},
        }, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
