"""Raw-space methods on overlapping persona sets: representations and stability (issue 13, item 4; helper alt13).

    python benchmarks/bench_overlap_methods.py --runs /work/tune_runs [--sets tune-a,tune-b] [--candidates a,b]
                                               [--scan LOW,HIGH]

``--runs`` holds one folder per tuning set with stages 01-04 run by main's code
(``python benchmarks/bench_persona_sets.py --customers 4000 --sets tuning --workdir DIR``).

Reads each tuning set's stage 02 model matrix (``features.parquet``), the
persona (evaluation only) and stage 04's ``comparison.json`` (the supervised
reference, the delivered primary and the best of eight picked afterwards) from
``<runs>/<set>/artifacts``, fits each candidate raw-space clusterer the way
stage 04 fits a method (on at most ``cluster.fit_sample_size`` customers,
everyone scored), and measures it as stage 04 does: ARI over the same
reference figure, and stability as
:func:`core.cluster.evaluation.stability` (the lower of reseed and subsample
mean pairwise ARI). The persona is read only after the fit, to judge.

Candidates (every one chooses its number of segments without labels):

- ``gmm_tied``: the Gaussian mixture with one covariance shared by all
  components (a label-free Mahalanobis metric: the pooled within-segment
  covariance, as linear discriminant analysis uses), count by silhouette;
- ``pa_white_kmeans`` / ``pa_white_gmm``: the model matrix projected on its
  principal directions above Horn's parallel-analysis noise floor (stage 03's
  rule), each whitened, then k-means / the diagonal mixture;
- ``bag_coassoc`` / ``bag_centres``: k-means bagged over 20 subsamples, combined by co-association and
  average linkage, or by clustering the runs' centres; ``kmeans_50``: k-means with 50 starts;
- ``sharp:STEPS:FRACTION:N_INIT`` (and ``sharp1_kmeans``, ``sharp2_kmeans``): k-means on the customers
  sharpened by their nearest neighbours, :class:`core.cluster.sharpened.SharpenedKMeansClusterer`, the one
  integrated as stage 04's ``sharpkmeans`` (3 steps, 2%, 10 starts);
- ``lda_kmeans``: k-means, then alternately the k-1 discriminant directions of
  the current partition (within-segment covariance whitened) and k-means in
  them, until the partition stops moving (Ding and Li 2007, "adaptive
  dimension reduction for clustering").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from sklearn.cluster import KMeans  # noqa: E402

from core.cluster import evaluation  # noqa: E402
from core.cluster.clustering import (GaussianMixtureClusterer, KMeansClusterer, _fit_input,  # noqa: E402
                                     _Segmenter, sample_rows)
from core.cluster.sharpened import SharpenedKMeansClusterer  # noqa: E402
from core.config import load_config  # noqa: E402


class ProjectedClusterer(_Segmenter):
    """A clusterer fitted on a projection of the model matrix learnt without labels (prototype).

    projection: ``pa_white`` (principal directions above the parallel-analysis floor, whitened);
    inner: ``kmeans`` or ``gmm`` (diagonal), count by silhouette in the projected space.
    """

    def __init__(self, projection="pa_white", inner="kmeans", n_clusters=(2, 20), random_state=0,
                 selection_sample_size=4000, silhouette_sample_size=3000):
        self.projection = projection
        self.inner = inner
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.selection_sample_size = selection_sample_size
        self.silhouette_sample_size = silhouette_sample_size

    def _inner(self):
        if self.inner == "kmeans":
            return KMeansClusterer(n_clusters=self.n_clusters, n_init=10, random_state=self.random_state,
                                   silhouette_sample_size=self.silhouette_sample_size,
                                   selection_sample_size=self.selection_sample_size)
        return GaussianMixtureClusterer(n_components=self.n_clusters, covariance_type="diag",
                                        selection="silhouette", random_state=self.random_state,
                                        silhouette_sample_size=self.silhouette_sample_size,
                                        selection_sample_size=self.selection_sample_size)

    def fit(self, X, y=None):
        from core.train_autoencoder.latent_size import choose_latent_dim

        X = _fit_input(self, X)
        self.mean_ = X.mean(axis=0)
        choice = choose_latent_dim(X - self.mean_, max_dim=X.shape[1], min_dim=2, random_state=self.random_state)
        d = choice.latent_dim
        _, s, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        scale = s[:d] / np.sqrt(len(X) - 1) if self.projection == "pa_white" else np.ones(d)
        self.components_ = vt[:d].T / scale  # whitened: unit variance per kept direction
        self.dims_ = d
        self.model_ = self._inner().fit(self._project(X))
        self._finish_fit(X, self.model_.n_clusters_)
        return self

    def _project(self, X):
        return (X - self.mean_) @ self.components_

    def _assign_internal(self, X, membership):
        return self.model_._assign_internal(self._project(X), membership)

    def fixed_params(self):
        return {"n_clusters": (self.n_clusters_, self.n_clusters_)}


class LDAKMeansClusterer(_Segmenter):
    """k-means alternating with the discriminant subspace of its own partition (Ding and Li 2007; prototype)."""

    def __init__(self, n_clusters=(2, 20), random_state=0, max_rounds=10, selection_sample_size=4000,
                 silhouette_sample_size=3000, shrink=0.1):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.max_rounds = max_rounds
        self.selection_sample_size = selection_sample_size
        self.silhouette_sample_size = silhouette_sample_size
        self.shrink = shrink

    def fit(self, X, y=None):
        X = _fit_input(self, X)
        start = KMeansClusterer(n_clusters=self.n_clusters, n_init=10, random_state=self.random_state,
                                silhouette_sample_size=self.silhouette_sample_size,
                                selection_sample_size=self.selection_sample_size).fit(X)
        k = start.n_clusters_
        labels = start.labels_
        self.rounds_ = 0
        for _ in range(self.max_rounds):
            W = self._discriminant(X, labels, k)
            km = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit(X @ W)
            self.rounds_ += 1
            from sklearn.metrics import adjusted_rand_score
            same = adjusted_rand_score(labels, km.labels_)
            labels = km.labels_
            if same > 0.999:
                break
        self.W_, self.model_ = W, km
        self._finish_fit(X, k)
        return self

    def _discriminant(self, X, labels, k):
        """Directions separating the partition's segments, within-segment covariance whitened (shrunk)."""
        from scipy.linalg import eigh

        mu = X.mean(axis=0)
        Sw = np.zeros((X.shape[1], X.shape[1]))
        Sb = np.zeros_like(Sw)
        for c in range(k):
            part = X[labels == c]
            if len(part) == 0:
                continue
            d = part - part.mean(axis=0)
            Sw += d.T @ d
            m = (part.mean(axis=0) - mu)[:, None]
            Sb += len(part) * (m @ m.T)
        Sw /= len(X)
        Sb /= len(X)
        Sw = (1 - self.shrink) * Sw + self.shrink * np.trace(Sw) / len(Sw) * np.eye(len(Sw))
        vals, vecs = eigh(Sb, Sw)
        order = np.argsort(vals)[::-1][: max(k - 1, 1)]
        return vecs[:, order]

    def _assign_internal(self, X, membership):
        d = self.model_.transform(X @ self.W_)
        labels = d.argmin(axis=1)
        two = np.sort(d, axis=1)[:, :2]
        strength = 1.0 - two[:, 0] / np.maximum(two[:, 1], 1e-12)
        from core.cluster.clustering import second_best
        return labels, strength, second_best(d, higher_is_better=False), None, None

    def fixed_params(self):
        return {"n_clusters": (self.n_clusters_, self.n_clusters_)}


class BaggedKMeansClusterer(_Segmenter):
    """k-means bagged over subsamples, the runs combined by co-association (prototype).

    k by silhouette as stage 04's k-means; then ``runs`` k-means fits (``n_init`` starts each) on
    ``fraction`` subsamples of at most ``sample_size`` rows each label that sample; the share of runs
    putting two rows together is cut into k by average linkage (``combine: coassoc``), or the runs' centres
    are pooled and clustered into k (``combine: centres``); the groups' means start a final k-means on
    every row fitted.
    """

    def __init__(self, n_clusters=(2, 20), random_state=0, runs=20, fraction=0.8, n_init=2, sample_size=1500,
                 combine="coassoc", selection_sample_size=4000, silhouette_sample_size=3000):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.runs = runs
        self.fraction = fraction
        self.n_init = n_init
        self.sample_size = sample_size
        self.combine = combine
        self.selection_sample_size = selection_sample_size
        self.silhouette_sample_size = silhouette_sample_size

    def fit(self, X, y=None):
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        X = _fit_input(self, X)
        lo, hi = self.n_clusters if not isinstance(self.n_clusters, int) else (self.n_clusters, self.n_clusters)
        if lo == hi:
            k = int(lo)
        else:
            k = KMeansClusterer(n_clusters=self.n_clusters, n_init=10, random_state=self.random_state,
                                silhouette_sample_size=self.silhouette_sample_size,
                                selection_sample_size=self.selection_sample_size).fit(X).n_clusters_
        rng = np.random.default_rng(self.random_state)
        S = X[sample_rows(len(X), self.sample_size, self.random_state + 11)]
        together = np.zeros((len(S), len(S)))
        centres = []
        for r in range(self.runs):
            part = rng.choice(len(S), size=int(self.fraction * len(S)), replace=False)
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=int(rng.integers(1 << 31))).fit(S[part])
            lab = km.predict(S)
            together += lab[:, None] == lab[None, :]
            centres.append(km.cluster_centers_)
        if self.combine == "coassoc":
            dist = 1.0 - together / self.runs
            np.fill_diagonal(dist, 0.0)
            groups = fcluster(linkage(squareform(dist, checks=False), method="average"), k, criterion="maxclust") - 1
            init = np.array([S[groups == g].mean(axis=0) for g in np.unique(groups)])
        else:
            pooled = np.vstack(centres)
            grp = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit(pooled)
            init = grp.cluster_centers_
        self.model_ = KMeans(n_clusters=len(init), init=init, n_init=1).fit(X)
        self._finish_fit(X, len(init))
        return self

    def _assign_internal(self, X, membership):
        from core.cluster.clustering import second_best
        d = self.model_.transform(X)
        two = np.sort(d, axis=1)[:, :2]
        return d.argmin(axis=1), 1.0 - two[:, 0] / np.maximum(two[:, 1], 1e-12), second_best(d, False), None, None

    def fixed_params(self):
        return {"n_clusters": (self.n_clusters_, self.n_clusters_)}


def candidates(cfg, seed: int) -> dict:
    """Every candidate estimator, with the stage's own sample sizes."""
    common = {"selection_sample_size": cfg.selection_sample_size, "silhouette_sample_size": cfg.silhouette_sample_size,
              "random_state": seed}
    return {
        "gmm_tied": lambda: GaussianMixtureClusterer(n_components=cfg.gmm.n_components, covariance_type="tied",
                                                     selection="silhouette", **common),
        "gmm_full": lambda: GaussianMixtureClusterer(n_components=cfg.gmm.n_components, covariance_type="full",
                                                     selection="silhouette", **common),
        "pa_white_kmeans": lambda: ProjectedClusterer(inner="kmeans", n_clusters=cfg.kmeans.n_clusters, **common),
        "pa_kmeans": lambda: ProjectedClusterer(projection="pa", inner="kmeans", n_clusters=cfg.kmeans.n_clusters,
                                                **common),
        "pa_white_gmm": lambda: ProjectedClusterer(inner="gmm", n_clusters=cfg.gmm.n_components, **common),
        "bag_coassoc": lambda: BaggedKMeansClusterer(n_clusters=cfg.kmeans.n_clusters, combine="coassoc", **common),
        "bag_centres": lambda: BaggedKMeansClusterer(n_clusters=cfg.kmeans.n_clusters, combine="centres", **common),
        "kmeans_50": lambda: KMeansClusterer(n_clusters=cfg.kmeans.n_clusters, n_init=50, **common),
        "sharp1_kmeans": lambda: SharpenedKMeansClusterer(n_clusters=cfg.kmeans.n_clusters, steps=1, **common),
        "sharp2_kmeans": lambda: SharpenedKMeansClusterer(n_clusters=cfg.kmeans.n_clusters, steps=2, **common),
        "lda_kmeans": lambda: LDAKMeansClusterer(n_clusters=cfg.kmeans.n_clusters, **common),
    }


def _fixed(make, k: int):
    """The candidate with its count fixed at ``k`` (for the scan)."""
    def fixed():
        model = make()
        key = "n_components" if "n_components" in model.get_params() else "n_clusters"
        return model.set_params(**{key: (k, k)})
    return fixed


def load_set(folder: Path):
    """Model matrix, persona aligned to it, comparison.json and the set's config."""
    art = folder / "artifacts"
    raw = pd.read_parquet(art / "02_prepare_features" / "features.parquet")
    customers = pd.read_parquet(art / "01_generate_data" / "customers.parquet", columns=["customer_id", "persona"])
    truth = customers.drop_duplicates("customer_id").set_index("customer_id")["persona"].reindex(raw["customer_id"])
    comparison = json.loads((art / "04_cluster" / "comparison.json").read_text())
    cfg = load_config(folder / "config" / "config.yml")
    return raw.drop(columns="customer_id").to_numpy(np.float64), truth.reset_index(drop=True), comparison, cfg


def measure(name: str, make, X, truth, cfg, seed: int, ref: float) -> dict:
    """Fit as stage 04 does, score everyone, stability as stage 04 measures it, then the persona's ARI."""
    clock = time.perf_counter()
    with_threads = evaluation.single_threaded(lambda: make().fit(X[sample_rows(len(X), cfg.fit_sample_size, seed)]))
    model = with_threads()
    labels = model.assign(X, membership=False).labels
    fit_s = time.perf_counter() - clock
    ev = cfg.evaluation
    stab = evaluation.stability(model, X, seed=seed, reseeds=ev.reseeds, bootstraps=ev.bootstraps,
                                sample_size=ev.stability_sample_size, bootstrap_fraction=ev.bootstrap_fraction)
    ari = evaluation.ground_truth_metrics(labels, truth)["ari"]
    return {"candidate": name, "clusters": int(model.n_clusters_), "ari": ari, "ratio": ari / ref,
            "reseed": stab["stability_reseed"], "bootstrap": stab["stability_bootstrap"],
            "stability": min(stab["stability_reseed"], stab["stability_bootstrap"]), "fit_s": round(fit_s, 1),
            "all_s": round(time.perf_counter() - clock, 1), "dims": getattr(model, "dims_", None)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("/work/tune_runs"))
    parser.add_argument("--sets", default="tune-a,tune-b,tune-c,tune-d,tune-e")
    parser.add_argument("--candidates", default="gmm_tied,pa_white_kmeans,lda_kmeans")
    parser.add_argument("--scan", default="", help="LOW,HIGH: each candidate at every fixed count instead of its choice")
    args = parser.parse_args(argv)
    for name in args.sets.split(","):
        X, truth, comparison, cfg = load_set(args.runs / name)
        seed = load_config(args.runs / name / "config" / "config.yml").seed
        ref = comparison["supervised_reference"]["raw"]["ari"]
        lf, best = comparison["label_free_primary"], comparison["best_afterwards"]
        print(f"{name}: reference {ref:.3f}; delivered {lf['method']} {lf['space']} {lf['ari_to_reference']:.3f} "
              f"stab {lf['stability']:.3f} ({lf['clusters']}); best of 8 {best['method']} {best['space']} "
              f"{best['ari_to_reference']:.3f} stab {best['stability']:.3f} ({best['clusters']})", flush=True)
        makers = candidates(cfg.cluster, seed)
        for cand in args.candidates.split(","):
            if cand.startswith("sharp:"):  # sharp:steps:neighbours_fraction:n_init
                _, st, fr, ni = cand.split(":")
                makers[cand] = (lambda st=st, fr=fr, ni=ni, c=cfg.cluster: SharpenedKMeansClusterer(
                    n_clusters=c.kmeans.n_clusters, steps=int(st), neighbours_fraction=float(fr), n_init=int(ni),
                    selection_sample_size=c.selection_sample_size, silhouette_sample_size=c.silhouette_sample_size,
                    random_state=seed))
        counts = range(*(int(v) + i for i, v in enumerate(args.scan.split(",")))) if args.scan else [None]
        for cand, k in [(c, k) for c in args.candidates.split(",") for k in counts]:
            make = makers[cand] if k is None else _fixed(makers[cand], k)
            row = measure(cand, make, X, truth, cfg.cluster, seed, ref)
            print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
