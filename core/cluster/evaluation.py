"""How good, how stable and how true a segmentation is.

Three kinds of measure, all computed after the clusterers are fitted:

- **internal**: number of clusters, noise, size distribution, silhouette,
  Davies-Bouldin and Calinski-Harabasz (on a seeded sample, so they cost the
  same at a million customers), share of high-confidence customers and
  mean uncertainty;
- **stability**: the chosen model (its selected number of clusters fixed)
  refitted with other seeds, and on bootstrap subsamples, on one seeded sample
  of customers; the mean adjusted Rand index (ARI) over every pair of those
  fits. A deterministic method (HDBSCAN) has a reseed stability of 1 by
  construction and is judged on its bootstrap subsamples;
- **ground truth** (only where the data has one, e.g. the generator's
  persona): ARI, normalised mutual information, homogeneity and
  completeness, and the ARI a supervised classifier reaches on the same
  matrix (the reference: what the features allow at best).

The ground truth is an argument of the functions that measure against it
and of nothing that fits a clusterer.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import (adjusted_rand_score, calinski_harabasz_score, completeness_score,
                             davies_bouldin_score, homogeneity_score, normalized_mutual_info_score)

from core.cluster.clustering import NOISE, Assignment, sample_rows, sampled_silhouette

log = logging.getLogger(__name__)


def size_shares(labels: np.ndarray) -> np.ndarray:
    """Share of rows in each non-noise cluster (clusters with no row left out)."""
    clustered = labels[labels != NOISE]
    if len(clustered) == 0:
        return np.array([])
    _, counts = np.unique(clustered, return_counts=True)
    return counts / len(labels)


def internal_metrics(X: np.ndarray, found: Assignment, sample_size: int, seed: int,
                     high_confidence: float) -> dict[str, Any]:
    """Cluster count, noise, sizes, separation scores (on a sample) and confidence of one segmentation.

    ``noise_ratio`` is the share HDBSCAN called noise before noise points
    were given their most likely cluster; the other measures describe the
    segmentation as delivered (after that reassignment).
    """
    labels = found.labels
    shares = size_shares(labels)
    counts = np.round(shares * len(labels)).astype(int)
    rows = sample_rows(len(X), sample_size, seed)
    sampled = labels[rows]
    keep = sampled != NOISE
    n_sampled_clusters = len(np.unique(sampled[keep]))
    separable = n_sampled_clusters >= 2 and keep.sum() > n_sampled_clusters
    uncertainty = found.uncertainty
    noise = found.noise if found.noise is not None else labels == NOISE
    return {
        "clusters": int(len(shares)),
        "noise_ratio": float(np.mean(noise)),
        "smallest_cluster": int(counts.min()) if len(counts) else 0,
        "largest_cluster": int(counts.max()) if len(counts) else 0,
        "smallest_share": float(shares.min()) if len(shares) else float("nan"),
        "median_share": float(np.median(shares)) if len(shares) else float("nan"),
        "largest_share": float(shares.max()) if len(shares) else float("nan"),
        "silhouette": sampled_silhouette(X, labels, sample_size, seed),
        "davies_bouldin": float(davies_bouldin_score(X[rows][keep], sampled[keep])) if separable else float("nan"),
        "calinski_harabasz": (float(calinski_harabasz_score(X[rows][keep], sampled[keep])) if separable
                              else float("nan")),
        "high_confidence_share": float(np.mean(found.strength >= high_confidence)),
        "mean_uncertainty": float(np.mean(uncertainty)) if uncertainty is not None else float("nan"),
    }


def mean_pairwise_ari(labelings: list[np.ndarray]) -> float:
    """Mean adjusted Rand index over every pair of labelings of the same rows (NaN with fewer than two)."""
    pairs = list(itertools.combinations(labelings, 2))
    if not pairs:
        return float("nan")
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs]))


def single_threaded(function):
    """Run ``function`` with one thread per native pool (BLAS, OpenMP).

    The matrices here are small; threads spinning against other busy
    processes made a Gaussian-mixture fit 15 times and the gradient-boosting
    reference 10 times slower on a shared 2-core machine.
    """
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return function(*args, **kwargs)

    return wrapper


@single_threaded
def stability(model, X: np.ndarray, *, seed: int, reseeds: int, bootstraps: int, sample_size: int,
              bootstrap_fraction: float) -> dict[str, float]:
    """Stability of a fitted clusterer's chosen model, on a seeded sample of ``sample_size`` rows.

    Parameters
    ----------
    model : fitted clusterer
        Its ``fixed_params()`` (the chosen number of clusters) are kept;
        only the seed, or the rows fitted, change.
    reseeds : int
        Refits on the sample with seeds ``seed + 1 ... seed + reseeds``.
    bootstraps : int
        Refits (with ``seed``) on random ``bootstrap_fraction`` shares of the
        sample, drawn without replacement (a bootstrap's duplicated rows
        would look like dense spots to HDBSCAN); each labels the whole sample.

    Returns
    -------
    dict
        ``stability_reseed`` and ``stability_bootstrap``: mean pairwise ARI
        of the refits' labels on the sample (1 = identical partitions).
    """
    rows = sample_rows(len(X), sample_size, seed + 7919)
    S = X[rows]
    fixed = clone(model).set_params(**model.fixed_params())
    if model.deterministic or "random_state" not in fixed.get_params():
        reseed = 1.0
    else:
        labelings = [clone(fixed).set_params(random_state=seed + r).fit(S).assign(S, membership=False).labels
                     for r in range(1, reseeds + 1)]
        reseed = mean_pairwise_ari(labelings)
    rng = np.random.default_rng(seed + 104729)
    size = max(2, int(round(bootstrap_fraction * len(S))))
    labelings = []
    for _ in range(bootstraps):
        part = np.sort(rng.choice(len(S), size=size, replace=False))
        labelings.append(clone(fixed).fit(S[part]).assign(S, membership=False).labels)
    return {"stability_reseed": reseed, "stability_bootstrap": mean_pairwise_ari(labelings)}


def ground_truth_metrics(labels: np.ndarray, truth: pd.Series | np.ndarray) -> dict[str, float]:
    """Agreement of a segmentation with a known grouping: ARI, NMI, homogeneity and completeness.

    Rows whose truth is missing are left out. Noise (``-1``) counts as one
    more group, as it would for a marketer who receives it.
    """
    truth = pd.Series(np.asarray(truth, dtype=object))
    known = truth.notna().to_numpy()
    if not known.any():
        return {k: float("nan") for k in ("ari", "nmi", "homogeneity", "completeness")}
    # Integer codes: scikit-learn's metrics sort their labels, and sorting a million strings took 20 s.
    t = pd.factorize(truth[known].astype(str))[0]
    lab = np.asarray(labels)[known]
    return {"ari": float(adjusted_rand_score(t, lab)), "nmi": float(normalized_mutual_info_score(t, lab)),
            "homogeneity": float(homogeneity_score(t, lab)), "completeness": float(completeness_score(t, lab))}


@single_threaded
def supervised_reference(X: np.ndarray, truth: pd.Series | np.ndarray, *, folds: int, sample_size: int,
                         seed: int) -> dict[str, Any]:
    """What the features allow: a cross-validated gradient-boosting classifier's ARI against the truth.

    A histogram gradient-boosting classifier is trained on the model matrix
    to predict the known group; its out-of-fold predictions on a seeded
    sample of ``sample_size`` rows (stratified ``folds``-fold
    cross-validation) are scored with the adjusted Rand index like a
    clustering. No clustering can be expected to recover more of the truth
    than this from the same columns.

    Returns
    -------
    dict
        ``ari``, ``accuracy``, ``model``, ``folds``, ``rows``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    truth = pd.Series(np.asarray(truth, dtype=object))
    known = np.flatnonzero(truth.notna().to_numpy())
    rows = known[sample_rows(len(known), sample_size, seed + 15485863)]
    y = truth.iloc[rows].astype(str).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    folds = int(min(folds, counts.min())) if len(counts) else 0
    if len(classes) < 2 or folds < 2:
        return {"ari": float("nan"), "accuracy": float("nan"), "model": None, "folds": folds, "rows": len(rows)}
    # 50 rounds at a 0.3 learning rate: the same ARI as 100 at 0.1 on the 10,000 default customers
    # (0.942 against 0.940, 3-fold on 4,000), in half the time.
    model = HistGradientBoostingClassifier(max_iter=50, learning_rate=0.3, early_stopping=True, random_state=seed)
    predicted = cross_val_predict(model, X[rows], y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"ari": float(adjusted_rand_score(y, predicted)), "accuracy": float(np.mean(predicted == y)),
            "model": "HistGradientBoostingClassifier(max_iter=50, learning_rate=0.3, early_stopping=True)",
            "folds": folds,
            "rows": int(len(rows))}


def consensus(labelings: dict[Any, np.ndarray], sample_size: int, seed: int,
              voters: list[Any] | None = None) -> dict[Any, float]:
    """How much each segmentation agrees with the others: its mean ARI to every other voter, on a sample.

    No ground truth: the segmentations of the same customers by different
    methods and spaces vote. A method that found the data's structure agrees
    with the others that found it; one that split the customers its own way
    (a mixture with twice the clusters, fuzzy c-means with two) agrees with
    few. HDBSCAN noise left unassigned counts as one more group.

    ``voters`` (default: all) are the segmentations whose agreement counts:
    stage 04 lets only those with enough segments to be delivered vote
    (:func:`segment_floor`), since coarse splits agree with each other and
    with any other coarse split, and so favoured the one fine segmentation
    that is itself nearly coarse (the tests' small config: k-means latent
    with 3 segments, ARI 0.08 against the persona, over k-means raw with 4,
    0.36). A segmentation is never its own voter.
    """
    keys = list(labelings)
    voters = keys if voters is None else [key for key in keys if key in set(voters)]
    rows = sample_rows(len(next(iter(labelings.values()))), sample_size, seed + 31)
    pairs = {}
    for a, b in itertools.combinations(keys, 2):
        if a in voters or b in voters:
            pairs[(a, b)] = pairs[(b, a)] = adjusted_rand_score(labelings[a][rows], labelings[b][rows])
    out = {}
    for key in keys:
        others = [pairs[(key, other)] for other in voters if other != key]
        out[key] = float(np.mean(others)) if others else float("nan")
    return out


def segment_floor(clusters, min_segments_share: float) -> int:
    """The fewest segments a delivered segmentation needs: ``min_segments_share`` of the most any found, at least 2."""
    return max(2, int(np.ceil(min_segments_share * float(np.max(clusters)))))


def spaces_set_aside(latent_explained: dict | None, min_latent_explained: float) -> dict[str, str]:
    """The spaces ``primary: auto`` leaves out, each with why: the latent space when its network learnt too little.

    ``latent_explained`` is stage 03's record of its trained network
    (:func:`core.train_autoencoder.autoencoder.explained_share`: ``share``,
    the part of the held-out customers' deviation from the column means
    the reconstruction removes, and ``on``). Below
    ``min_latent_explained`` the latent space keeps too little of the
    features: at about 0 it is an untrained network's, and a segmentation
    of it, however stable, groups customers by the network's random start
    (the tests' small config: 0.02 explained, latent ARIs 0.04 to 0.10
    against the persona); at 0.29 to 0.40 (overlapping persona sets) its
    stable coarse splits won the choice at 0.1 to 0.5 of the reference
    below the raw space's segmentations (docs/decisions.md, fifth round).
    None (no record) or a minimum of 0 sets nothing aside.
    """
    if latent_explained is None or min_latent_explained <= 0:
        return {}
    share = float(latent_explained["share"])
    if share >= min_latent_explained:
        return {}
    return {"latent": f"the autoencoder explains {share:.1%} of the {latent_explained.get('on', 'held-out rows')} "
                      f"(below cluster.primary.min_latent_explained {min_latent_explained:g}): its latent space "
                      f"keeps too little of the features (an untrained network explains about nothing)"}


def choose_primary(comparison: pd.DataFrame, method: str, space: str,
                   min_stability: float, min_segments_share: float = 0.0,
                   set_aside: dict[str, str] | None = None, *,
                   min_consensus_share: float = 0.0) -> tuple[str, str, str]:
    """The segmentation stage 05 describes, and why; never from a ground truth.

    Parameters
    ----------
    comparison : DataFrame
        One row per method and space with ``stability_reseed``,
        ``stability_bootstrap``, ``clusters``, ``consensus`` and ``silhouette``.
    method, space : str
        From config: a name, or ``auto`` to choose.
    min_stability : float
        The stability (the lower of the reseed and bootstrap ARI) a primary
        should reach; the reason says when the one chosen does not.
    min_segments_share : float
        With ``auto``: a candidate needs at least this share of the most
        segments any segmentation in ``comparison`` found (all methods and
        spaces, whatever ``method`` and ``space`` restrict). A 2-segment
        split is the most reproducible one and agrees with the other coarse
        splits, so consensus x stability alone delivered 2 segments where
        other methods found 6 to 18 (0.09 of the reference on ``tune-b``,
        14 personas, where k-means and fuzzy c-means raw found 18 segments
        at 0.72 and 0.66; 0.25 on an 8-persona set). The median number
        of segments is no bar when half the methods chose 2 (``tune-b``).
        The bar comes from what the methods found in these data, not from a
        number fixed in advance; if nothing reaches it, at least 2.
    set_aside : dict of str to str, optional
        With ``space: auto``: spaces whose candidates are not chosen, each
        with the reason (:func:`spaces_set_aside`), unless no other
        candidate is left. They still count for the segment floor and stay
        in the comparison; the reason names them.
    min_consensus_share : float
        With ``auto``: a candidate also needs a consensus of at least this
        share of the highest any candidate (with enough segments) reaches.
        Stability first let a stable coarse split of an untrained network's
        latent space win over the segmentations every raw method agreed on
        (the tests' small config once its shares were square-rooted: fuzzy
        c-means latent, 3 segments, stability 0.94, consensus 0.25 against
        0.46 for k-means raw; ARI 0.09 against the persona, k-means raw 0.43).

    Returns
    -------
    (method, space, reason)
        With ``auto``, among the candidates with enough segments (see
        ``min_segments_share``): **stability first**. Those reaching
        ``min_stability`` compete on consensus alone (the one the other
        methods agree with most; ties by stability, then silhouette); when
        none reaches it, the highest consensus x stability squared. The
        squared stability weighs reproducibility as the issue does (a primary
        that moves at every refit is no segmentation to act on): consensus x
        stability delivered fuzzy c-means raw with 10 and 20 segments at
        stability 0.65 to 0.77 on overlapping persona sets where the Gaussian
        mixture raw was both more stable and closer to the persona (``tune-c``:
        0.653 against 0.919 of the reference). A stability filter with no
        segment floor picked a reproducible but uninformative split (fuzzy
        c-means with four segments on fourteen overlapping personas:
        stability 0.98, consensus 0.30); consensus alone one that moves at
        every refit. A ground truth is not an argument: on a retailer's data
        there is none, and the segmentation delivered with one must be the
        one delivered without it.
    """
    if method != "auto" and space != "auto":
        return method, space, "named in config (cluster.primary)"
    table = comparison.copy()
    if method != "auto":
        table = table[table["method"] == method]
    if space != "auto":
        table = table[table["space"] == space]
    table, aside = _without_spaces(table, set_aside if space == "auto" else None)
    floor = segment_floor(comparison["clusters"], min_segments_share)
    fine_enough = table[table["clusters"] >= floor]
    table = fine_enough if not fine_enough.empty else table[table["clusters"] >= 2]
    if table.empty:
        table = comparison.copy()
    table["stability"] = table[["stability_reseed", "stability_bootstrap"]].min(axis=1, skipna=True).fillna(0.0)
    table["consensus_"] = table["consensus"].fillna(0.0).clip(lower=0.0)
    table["silhouette_rank"] = table["silhouette"].fillna(-1.0)
    agreed_floor = min_consensus_share * table["consensus_"].max()
    table = table[table["consensus_"] >= agreed_floor]
    stable = table[table["stability"] >= min_stability]
    if not stable.empty:
        best = stable.sort_values(["consensus_", "stability", "silhouette_rank"], ascending=False,
                                  kind="stable").iloc[0]
        how = (f"highest consensus among {len(stable)} of {len(table)} candidate(s) with at least {floor} "
               f"segments and stability at least {min_stability}")
    else:
        table["score"] = table["consensus_"] * table["stability"] ** 2
        best = table.sort_values(["score", "stability", "silhouette_rank"], ascending=False, kind="stable").iloc[0]
        how = (f"none of {len(table)} candidate(s) with at least {floor} segments reaches stability "
               f"{min_stability}: highest consensus x stability squared")
    if min_consensus_share > 0:
        how += f", among those with consensus at least {agreed_floor:.3f} ({min_consensus_share:g} of the highest)"
    warning = ("" if best["stability"] >= min_stability else
               f"; below stability {min_stability}: no segmentation of these customers is both agreed on and "
               f"reproducible")
    reason = (f"auto: {how} (consensus ARI {best['consensus']:.3f}, stability {best['stability']:.3f}, "
              f"{int(best['clusters'])} segments), chosen without the ground truth{warning}{aside}")
    return str(best["method"]), str(best["space"]), reason


def _without_spaces(table: pd.DataFrame, set_aside: dict[str, str] | None) -> tuple[pd.DataFrame, str]:
    """``table`` without the candidates of the ``set_aside`` spaces, and the sentence the reason ends with."""
    present = {name: why for name, why in (set_aside or {}).items() if (table["space"] == name).any()}
    if not present:
        return table, ""
    kept = table[~table["space"].isin(list(present))]
    why = "; ".join(f"{name} space: {text}" for name, text in present.items())
    if kept.empty:
        return table, f"; not set aside, as no other space was fitted: {why}"
    return kept, f"; set aside: {why}"
