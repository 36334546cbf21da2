"""A mixture of Dirichlet-multinomials on unit counts against stage 04's methods, on persona sets already built.

Reads one built set's stage 01-04 artifacts (``<set>/artifacts``: customers, stage 02's
``class_spend_long.parquet`` and ``features.parquet``, stage 04's ``comparison.json``) and fits
:class:`core.cluster.count_mixture.CountMixture` on each customer's units per department and per
class (a Dirichlet tree) plus a diagonal Gaussian on the model matrix's other columns. The number of
components is chosen without labels (BIC on all rows, or held-out log-likelihood); stability is measured as stage 04
does (``core/cluster/evaluation.py`` ``stability``: refits with 5 other seeds and on 5 subsamples of
80% of a 2,000-row sample; the lower mean pairwise ARI). The persona only scores the result.

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

from core.cluster.clustering import sample_rows  # noqa: E402
from core.cluster.count_mixture import CountBlock, CountMixture  # noqa: E402
from core.cluster.evaluation import mean_pairwise_ari  # noqa: E402

TOL = 1e-3
INIT = 'kmeans++'
MIX_PREFIXES = ("dept_share__", "dept_entropy", "class_mix_")


def load_set(root: Path, units: str):
    """Blocks, Gaussian columns, init matrix, persona labels and comparison.json of one built set."""
    art = root / "artifacts"
    features = pd.read_parquet(art / "02_prepare_features" / "features.parquet")
    ids = features["customer_id"].to_numpy()
    long = pd.read_parquet(art / "02_prepare_features" / "class_spend_long.parquet")
    long = long[long["customer_id"].isin(ids)]
    row = pd.Index(ids).get_indexer(long["customer_id"])
    vals = long["units"].to_numpy(float)
    if units == "sqrt":
        vals = np.sqrt(vals)
    elif units == "log":
        vals = np.log1p(vals)
    depts = pd.Index(sorted(long["department"].unique()))
    pairs = pd.MultiIndex.from_frame(long[["department", "class"]]).unique().sort_values()
    dept_col = depts.get_indexer(long["department"])
    class_col = pairs.get_indexer(pd.MultiIndex.from_frame(long[["department", "class"]]))
    import scipy.sparse as sp
    n = len(ids)
    Xd = sp.csr_matrix((vals, (row, dept_col)), shape=(n, len(depts)))
    Xc = sp.csr_matrix((vals, (row, class_col)), shape=(n, len(pairs)))
    blocks = [CountBlock(Xd, np.zeros(len(depts), int)),
              CountBlock(Xc, depts.get_indexer(pairs.get_level_values(0)))]
    cols = [c for c in features.columns if c != "customer_id"]
    gauss = [c for c in cols if not c.startswith(MIX_PREFIXES)]
    Z = features[gauss].to_numpy(float)
    init = features[cols].to_numpy(float)
    customers = pd.read_parquet(art / "01_generate_data" / "customers.parquet")
    truth = customers.set_index("customer_id").loc[ids, "persona"].astype(str).to_numpy()
    comparison = json.loads((art / "04_cluster" / "comparison.json").read_text())
    seed = yaml.safe_load((root / "config" / "config.yml").read_text())["seed"]
    return blocks, Z, init, truth, comparison, int(seed), gauss


def take(blocks, Z, init, rows):
    return [b.take(rows) for b in blocks], Z[rows], init[rows]


def choose_k(blocks, Z, init, ks, seed, n_init, criterion):
    scores = {}
    if criterion == "heldout":
        rng = np.random.default_rng(seed + 17)
        perm = rng.permutation(Z.shape[0])
        half = Z.shape[0] // 2
        tr, te = np.sort(perm[:half]), np.sort(perm[half:])
        btr, ztr, itr = take(blocks, Z, init, tr)
        bte, zte, _ = take(blocks, Z, init, te)
    for k in ks:
        if criterion == "bic":
            m = CountMixture(n_components=k, n_init=n_init, random_state=seed, tol=TOL, init=INIT).fit(blocks, Z, init)
            scores[k] = -m.bic(blocks, Z)
        else:
            m = CountMixture(n_components=k, n_init=n_init, random_state=seed, tol=TOL, init=INIT).fit(btr, ztr, itr)
            scores[k] = m.score(bte, zte)
    return max(scores, key=scores.get), scores


def stability(k, blocks, Z, init, seed, n_init):
    """Stage 04's measure: 5 reseeds and 5 80% subsamples of a 2,000-row sample; returns (reseed, bootstrap)."""
    rows = sample_rows(Z.shape[0], 2000, seed + 7919)
    bS, zS, iS = take(blocks, Z, init, rows)
    lab = [CountMixture(n_components=k, n_init=n_init, random_state=seed + r, tol=TOL, init=INIT).fit(bS, zS, iS).predict(bS, zS)
           for r in range(1, 6)]
    reseed = mean_pairwise_ari(lab)
    rng = np.random.default_rng(seed + 104729)
    size = int(round(0.8 * len(rows)))
    lab = []
    for _ in range(5):
        part = np.sort(rng.choice(len(rows), size=size, replace=False))
        bP, zP, iP = take(bS, zS, iS, part)
        lab.append(CountMixture(n_components=k, n_init=n_init, random_state=seed, tol=TOL, init=INIT).fit(bP, zP, iP).predict(bS, zS))
    return reseed, mean_pairwise_ari(lab)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--kmin", type=int, default=2)
    p.add_argument("--kmax", type=int, default=20)
    p.add_argument("--n-init", type=int, default=3)
    p.add_argument("--select-n-init", type=int, default=1)
    p.add_argument("--criterion", choices=["bic", "heldout"], default="bic")
    p.add_argument("--units", choices=["raw", "sqrt", "log"], default="raw")
    p.add_argument("--no-gauss", action="store_true", help="counts only")
    p.add_argument("--no-stability", action="store_true")
    p.add_argument("--init", choices=["kmeans++", "ward"], default="kmeans++")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--fixed-k", type=int, default=None, help="skip the choice (diagnostic only)")
    args = p.parse_args(argv)
    global TOL, INIT
    TOL = args.tol
    INIT = args.init
    for root in args.sets:
        t0 = time.perf_counter()
        blocks, Z, init, truth, comp, seed, gauss = load_set(root, args.units)
        if args.no_gauss:
            Z = Z[:, :0]
        ref = comp["supervised_reference"]["raw"]["ari"]
        if args.fixed_k:
            k, scores = args.fixed_k, {}
        else:
            k, scores = choose_k(blocks, Z, init, range(args.kmin, args.kmax + 1), seed, args.select_n_init,
                                 args.criterion)
        model = CountMixture(n_components=k, n_init=args.n_init, random_state=seed, tol=TOL, init=INIT).fit(blocks, Z, init)
        labels = model.predict(blocks, Z)
        ari = adjusted_rand_score(truth, labels)
        t_fit = time.perf_counter() - t0
        stab = (float("nan"), float("nan")) if args.no_stability else stability(k, blocks, Z, init, seed, args.n_init)
        lf = comp["label_free_primary"]
        best = comp["best_afterwards"]
        print(json.dumps({
            "set": root.name, "personas": len(np.unique(truth)), "k": k, "segments": int(len(np.unique(labels))),
            "ari": round(ari, 3), "ratio": round(ari / ref, 3),
            "stability": round(min(stab), 3), "stability_reseed": round(stab[0], 3),
            "stability_bootstrap": round(stab[1], 3),
            "delivered": f"{lf['method']} {lf['space']} {lf['ari_to_reference']:.3f} stab {lf['stability']:.3f}",
            "best_of_8": f"{best['method']} {best['space']} {best['ari_to_reference']:.3f} stab {best['stability']:.3f}",
            "reference": round(ref, 3), "fit_s": round(t_fit, 1), "all_s": round(time.perf_counter() - t0, 1),
            "scores": {int(a): round(b, 1) for a, b in scores.items()},
            "settings": vars(args) | {"sets": None},
        }, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
