"""Everything stage 04 computes: fit, score everyone, keep ids, evaluate, choose the primary.

:func:`segment_customers` fits every method in every space on at most
``cluster.fit_sample_size`` customers (a seeded sample; all of them at the
default 10,000), scores every customer with the fitted models (the same
:meth:`~core.cluster.clustering._Segmenter.assign` the scoring command uses, so a
training customer scored again gets its training segment), matches the new
segment ids to a previous run's (:mod:`core.cluster.matching`), evaluates each
segmentation (:mod:`core.cluster.evaluation`) and picks the primary one.

The ground truth (``truth``) reaches only the evaluation: the agreement
measures computed once every model is fitted and the supervised reference
(a classifier of its own, trained beside the clusterers). It never reaches
a clusterer's fit, nor the choice of the primary segmentation (``auto``
chooses by stability and consensus before the truth is read), so the
segmentation delivered with a ground truth is the one delivered without.
With a truth, the best of every method and space is reported as picked
afterwards (``best_afterwards``), never delivered.

The methods and spaces are fitted side by side in ``cluster.n_jobs`` worker
processes, each with one thread per native pool; results do not depend on
the number of workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cluster import evaluation, matching
from core.cluster.clustering import NOISE, Assignment, cluster_range, sample_rows, usable_range
from core.cluster.methods import make_clusterer
from core.cluster.settings import COUNTS_SPACE, fitted_pairs
from core.framework import progress
from core.framework.errors import PipelineError
from core.framework.processes import process_alive

log = logging.getLogger(__name__)

COMPARISON_COLUMNS = [
    "method", "space", "clusters", "noise_ratio", "smallest_cluster", "largest_cluster", "smallest_share",
    "median_share", "largest_share", "silhouette", "davies_bouldin", "calinski_harabasz", "stability_reseed",
    "stability_bootstrap", "consensus", "high_confidence_share", "mean_uncertainty", "bic", "aic",
    "partition_coefficient", "partition_entropy", "ari", "nmi", "homogeneity", "completeness", "ari_to_reference",
]


@dataclasses.dataclass
class Segmentation:
    """What :func:`segment_customers` returns.

    Attributes
    ----------
    models : dict of (method, space) to fitted clusterer
    assignments : dict of (method, space) to Assignment
        Every customer, rows in input order.
    comparison : DataFrame
        One row per method and space, columns :data:`COMPARISON_COLUMNS`.
    primary : (str, str)
        Method and space feeding stage 05.
    primary_reason : str
    label_free : dict
        The segmentation ``primary: auto`` picks without the ground truth (``method``, ``space``,
        ``reason``): the primary itself under auto; what auto would deliver when the primary is named.
    best_afterwards : dict or None
        With a ground truth: the method and space agreeing best with it, picked after fitting (never
        delivered; an upper bound no user without a ground truth could choose).
    reference : dict or None
        ``{space: core.cluster.evaluation.supervised_reference(...)}`` for the model matrix (``raw``, or the
        only space); None without a ground truth or with ``evaluation.supervised_reference: false``.
    matching : dict
        Per ``<method>_<space>``: how its ids were matched to the previous run.
    migration : DataFrame
        :data:`core.cluster.matching.MIGRATION_COLUMNS`, empty without a previous run.
    has_truth : bool
        Whether a ground truth was given (and not all missing).
    seconds : dict
        Per ``<method>_<space>``: ``fit``, ``assign`` and ``evaluate`` wall seconds; ``reference`` too.
        Kept out of the comparison, so the same inputs give byte-identical files.
    """

    models: dict[tuple[str, str], Any]
    assignments: dict[tuple[str, str], Assignment]
    comparison: pd.DataFrame
    primary: tuple[str, str]
    primary_reason: str
    reference: dict[str, dict] | None
    matching: dict[str, dict]
    migration: pd.DataFrame
    has_truth: bool = False
    seconds: dict[str, Any] = dataclasses.field(default_factory=dict)
    label_free: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_afterwards: dict[str, Any] | None = None


def segment_customers(spaces: dict[str, np.ndarray], methods: list[str], cfg, seed: int, *,
                      truth: pd.Series | None = None,
                      previous: dict[str, np.ndarray] | None = None,
                      latent_explained: dict | None = None) -> Segmentation:
    """Fit, score, match, evaluate and choose.

    Parameters
    ----------
    spaces : dict of str to ndarray
        Space name (``raw``, ``latent``, ``counts``) -> matrix (n_customers, n_dims), rows aligned; the counts
        space is a :class:`core.cluster.count_mixture.CountMatrix` (sparse, with its column names), where only
        the count methods are fitted (:func:`core.cluster.settings.fitted_pairs`).
    methods : list of str
    cfg : ClusterConfig
        The ``cluster`` config section.
    seed : int
    truth : Series, optional
        Known group of each customer (the generator's persona; missing
        values allowed), rows aligned with the matrices. Evaluation only.
    previous : dict of str to ndarray, optional
        ``<method>_<space>`` -> each customer's segment id in the previous
        run (``-1`` unknown), for :func:`core.cluster.matching.match_cluster_ids`.
    latent_explained : dict, optional
        Stage 03's explained share of its network (``share``, ``on``): below
        ``cluster.primary.min_latent_explained`` the latent space is set
        aside from ``primary: auto`` (:func:`core.cluster.evaluation.spaces_set_aside`).
        None = no guard.

    Raises
    ------
    PipelineError
        Before anything is fitted, when there are fewer customers than
        :func:`minimum_customers`. A cluster-count range whose top the
        customers fitted cannot hold is clamped, with a warning
        (:func:`clamped_ranges`).
    """
    n_customers = len(next(iter(spaces.values())))
    needed, why, key = minimum_customers(methods, cfg)
    if n_customers < needed:
        raise PipelineError(f"stage 04 needs at least {needed:,} customers and the model matrix has "
                            f"{n_customers:,}: {why}; give it more customers (a longer history, or fewer "
                            f"exclusions by prepare_features.eligibility){f', or lower {key}' if key else ''}")
    n_fitted = min(n_customers, cfg.fit_sample_size)
    for key, configured, used in clamped_ranges(methods, cfg, n_fitted):
        log.warning("%s %s: %s customers are fitted, which hold at most %s clusters; the range is clamped to %s "
                    "(see the selection in comparison.json)", key, list(configured), f"{n_fitted:,}",
                    f"{n_fitted - 1:,}", list(used))
    return _segment(spaces, methods, cfg, seed, truth, previous, latent_explained)


# The setting holding each method's number-of-clusters range.
RANGE_KEYS = {"gmm": ("gmm", "n_components"), "fcm": ("fcm", "n_clusters"), "kmeans": ("kmeans", "n_clusters"),
              "sharpkmeans": ("sharpkmeans", "n_clusters"), "countmix": ("countmix", "n_components")}
# HDBSCAN's smallest cluster is never below 2 customers (core.cluster.clustering.HDBSCANClusterer).
HDBSCAN_SMALLEST_CLUSTER = 2


def _configured_range(method: str, cfg) -> tuple[str, tuple[int, int]]:
    section, field = RANGE_KEYS[method]
    return f"cluster.{section}.{field}", cluster_range(getattr(getattr(cfg, section), field))


def minimum_customers(methods: list[str], cfg) -> tuple[int, str, str | None]:
    """The fewest customers stage 04 can segment with these methods and settings, and why.

    Choosing a number of clusters by silhouette (k-means, fuzzy c-means) or
    BIC (Gaussian mixture) needs more customers than the smallest candidate
    of its range; HDBSCAN needs room for two clusters of its smallest size
    (2 customers); separation measures (silhouette) need two clusters and
    one customer more. Fewer customers crashed the fits (``Found array with
    1 sample(s)``) or, worse, silently fitted fewer clusters than the range
    allows.

    Returns
    -------
    (int, str, str or None)
        The number, the reason, and the setting that sets it (None when no
        setting does).
    """
    needs = []
    for method in methods:
        if method in RANGE_KEYS:
            key, (low, _) = _configured_range(method, cfg)
            needs.append((low + 1, f"{key} starts at {low}, and choosing a number of clusters needs more "
                                   f"customers than clusters", key))
        elif method == "hdbscan":
            needs.append((2 * HDBSCAN_SMALLEST_CLUSTER, f"HDBSCAN needs room for two clusters of at least "
                                                        f"{HDBSCAN_SMALLEST_CLUSTER} customers", None))
    needs.append((3, "silhouette needs two clusters and one customer more", None))
    return max(needs, key=lambda need: need[0])  # the first of the largest: a setting before the fixed needs


def clamped_ranges(methods: list[str], cfg, n_fitted: int) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """Each configured cluster-count range whose top ``n_fitted`` customers cannot hold: (key, configured, used).

    The estimators clamp the same way (:func:`core.cluster.clustering.usable_range`) and record it in
    their selection report.
    """
    clamped = []
    for method in methods:
        if method in RANGE_KEYS:
            key, configured = _configured_range(method, cfg)
            used = usable_range(configured, n_fitted)
            if used != configured:
                clamped.append((key, configured, used))
    return clamped


# Loky names its semaphores /loky-<creating pid>-<random> (sem.loky-... in /dev/shm on Linux) and joblib its
# memory-mapped arrays joblib_memmapping_folder_<pid>_...; both are removed by loky's resource tracker.
_WORKER_FILES = re.compile(r"(?:sem\.loky-|joblib_memmapping_folder_)(\d+)[-_]")


def remove_orphaned_worker_files(folder: Path = Path("/dev/shm")) -> list[str]:
    """Remove the semaphores and memory-mapped arrays a killed stage 04 left in ``folder``.

    Loky's resource tracker removes them when the stage ends, or when a
    stage killed alone (kill -9 of its process) loses its last worker (idle
    workers stop after 300 s). When the tracker dies too (the whole process
    group killed, the OOM killer, a container stopped) they stay in
    ``/dev/shm``, in memory, until reboot. They are attributed by the pid
    in their name: removed only when that process is gone and the file is
    ours (same user). A process still holding one keeps it (removing a
    name does not close what is open). Linux only: macOS keeps named
    semaphores out of the file system and Windows frees them with their
    last handle.

    Returns
    -------
    list of str
        The names removed.
    """
    if not sys.platform.startswith("linux") or not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _WORKER_FILES.match(entry.name)
        if not match:
            continue
        try:
            if entry.lstat().st_uid != os.getuid() or process_alive(int(match.group(1))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        except OSError as exc:  # gone meanwhile, or not ours to remove: left as it is
            log.debug("could not remove %s (%s)", entry, exc)
    if removed:
        log.info("removed %d semaphore(s) and memory-mapped folder(s) left in %s by killed runs",
                 len(removed), folder)
    return removed


def stop_idle_workers() -> None:
    """End the fits' worker processes now that every task is back, without waiting for their own teardown.

    joblib keeps its workers for the next call (none comes in a stage run) and, when the process ends, waits
    for each to unload scikit-learn and friends: about 1.2 s of stage 04's end on an idle machine. Killing
    idle workers is what joblib itself does when it aborts (``terminate(kill_workers=True)``, which also
    removes their memory-mapped folder); the next ``Parallel`` call starts new ones.
    """
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)  # joblib's pool, if one was started
    if executor is not None and hasattr(executor, "terminate"):
        executor.terminate(kill_workers=True)


@evaluation.single_threaded
def _fit_and_evaluate(method: str, space: str, X: np.ndarray, fit_rows: np.ndarray, cfg, seed: int):
    """One method in one space: fit on the sample, score everyone, measure (no ground truth here)."""
    clock = time.perf_counter()
    model = make_clusterer(method, cfg, seed, space, columns=getattr(X, "columns", None)).fit(X[fit_rows])
    fitted = time.perf_counter()
    found = model.fit_assignment() if len(fit_rows) == len(X) else model.assign(X)
    scored = time.perf_counter()
    row = {"method": method, "space": space}
    row.update(evaluation.internal_metrics(_separation_space(space, X), found, cfg.silhouette_sample_size, seed,
                                           cfg.high_confidence))
    ev = cfg.evaluation
    row.update(evaluation.stability(model, X, seed=seed, reseeds=ev.reseeds, bootstraps=ev.bootstraps,
                                    sample_size=ev.stability_sample_size, bootstrap_fraction=ev.bootstrap_fraction))
    row.update(_model_scores(model, X[fit_rows]))
    seconds = {"fit": round(fitted - clock, 3), "assign": round(scored - fitted, 3),
               "evaluate": round(time.perf_counter() - scored, 3)}
    return model, found, row, seconds


def _separation_space(space: str, X):
    """Where a segmentation's separation (silhouette, Davies-Bouldin, Calinski-Harabasz) is measured: the space
    itself, or for the counts space the square roots of each customer's department and class shares (raw
    units would weigh a customer by their basket), made dense only for the rows sampled."""
    if space != COUNTS_SPACE:
        return X
    from core.cluster.count_mixture import HellingerView

    return HellingerView(X, X.columns)


@evaluation.single_threaded
def _reference(X: np.ndarray, truth: pd.Series, cfg, seed: int):
    clock = time.perf_counter()
    result = evaluation.supervised_reference(X, truth, folds=cfg.evaluation.reference_folds,
                                             sample_size=cfg.evaluation.reference_sample_size, seed=seed)
    return result, round(time.perf_counter() - clock, 3)


#: Each task's share of stage 04's fitting time on the default data (CPU-s of one task at 10,000 customers,
#: 2026-12-05); only the order of submission follows from it. At a million customers the sharpened k-means and
#: HDBSCAN in the raw space are the longest too. The count mixture with its 4 Ward restarts: 7.3-7.4 CPU-s (fit 4.0,
#: stability 3.3; 3.8-4.8 without them; docs/decisions.md, "Primary stability, eighth round").
TASK_COST = {("countmix", "counts"): 7.4, ("hdbscan", "raw"): 7.3, ("sharpkmeans", "raw"): 5.0,
             ("kmeans", "raw"): 3.0, ("fcm", "raw"): 2.7, ("gmm", "raw"): 2.3, ("sharpkmeans", "latent"): 2.3,
             ("reference", "raw"): 2.2, ("fcm", "latent"): 1.5, ("kmeans", "latent"): 1.4, ("gmm", "latent"): 0.9,
             ("hdbscan", "latent"): 0.7}


def submission_order(tasks: list[tuple[str, str]]) -> list[int]:
    """Indices of ``tasks`` (``(method, space)`` pairs; ``("reference", space)`` for the classifier) longest
    first by :data:`TASK_COST` (1.0 for a pair it does not list), ties in their given order.

    With two workers taking the next task as each frees up, longest first keeps the two finishing together
    (the fits listed in config order ended with the 5 s count mixture while the other worker idled).
    """
    return sorted(range(len(tasks)), key=lambda i: -TASK_COST.get(tasks[i], 1.0))


def _segment(spaces, methods, cfg, seed, truth, previous, latent_explained) -> Segmentation:
    from joblib import Parallel, delayed

    n = len(next(iter(spaces.values())))
    fit_rows = sample_rows(n, cfg.fit_sample_size, seed)
    has_truth = truth is not None and pd.Series(truth).notna().any()
    # The reference is measured on the model matrix (the raw space) as the issue defines it; what the
    # latent space keeps is a diagnostic of the benchmark script, not worth its time on every run.
    model_matrix = "raw" if "raw" in spaces else next(iter(spaces))
    pairs = fitted_pairs(methods, spaces)
    # Independent fits in worker processes (each single-threaded): two cores, twice the work done. The
    # reference goes first as it is the longest single task; results come back in submission order.
    tasks = ([delayed(_reference)(spaces[model_matrix], truth, cfg, seed)]
             if has_truth and cfg.evaluation.supervised_reference else [])
    tasks += [delayed(_fit_and_evaluate)(m, s, spaces[s], fit_rows, cfg, seed) for m, s in pairs]
    n_jobs = min(cfg.n_jobs, len(tasks))
    if n_jobs > 1:
        remove_orphaned_worker_files()  # what a killed run's worker pool left, before this one starts
    # Submitted longest first, so no long fit starts when the other worker is nearly done; the results are
    # put back in the order of ``tasks``, so nothing downstream sees the submission order.
    order = submission_order(([("reference", model_matrix)] if len(tasks) > len(pairs) else []) + list(pairs))
    results = [None] * len(tasks)
    # A generator, so each task's end is reported as it comes back (in submission order) for the progress.
    for done, result in enumerate(Parallel(n_jobs=n_jobs, backend="loky", return_as="generator")(
            tasks[i] for i in order), start=1):
        results[order[done - 1]] = result
        progress.report(done / len(tasks), f"{done} of {len(tasks)} models")
    if n_jobs > 1:
        stop_idle_workers()
    reference, seconds = None, {}
    if len(results) > len(pairs):
        (ref, seconds["reference"]), results = results[0], results[1:]
        reference = {model_matrix: ref}
        log.info("supervised reference: a classifier reaches ARI %.3f on the %s space (%.1f s)",
                 ref["ari"], model_matrix, seconds["reference"])
    models, found, rows = {}, {}, []
    for (method, space), (model, assignment, row, took) in zip(pairs, results):
        models[(method, space)], found[(method, space)] = model, assignment
        rows.append(row)
        seconds[f"{method}_{space}"] = took
        log.info("%s on %s: %d clusters fitted on %s customers in %.1f s, everyone scored in %.1f s, evaluated "
                 "in %.1f s", method, space, model.n_clusters_, f"{len(fit_rows):,}", took["fit"], took["assign"],
                 took["evaluate"])

    match_info, migrations = {}, []
    for (method, space), model in models.items():
        key = f"{method}_{space}"
        if previous is None or key not in previous:
            match_info[key] = {"matched": False, "reason": "no previous run of this method and space"}
            continue
        before = np.asarray(previous[key], dtype=np.int64)
        ids = matching.match_cluster_ids(before, found[(method, space)].labels, model.cluster_ids_)
        model.set_cluster_ids(ids)
        found[(method, space)] = _relabelled(found[(method, space)], ids)
        known = before != NOISE
        after = found[(method, space)].labels
        migrations.append(matching.migration_table(method, space, before[known], after[known]))
        match_info[key] = {"matched": True, "customers_compared": int(known.sum()),
                           "kept_segment": matching.kept_share(before[known], after[known]),
                           "segments": sorted(int(i) for i in ids),
                           "new_segments": sorted(int(i) for i in set(ids.tolist()) - set(before[known].tolist())),
                           "retired_segments": sorted(int(i) for i in set(before[known].tolist()) - set(ids.tolist())
                                                      if i != NOISE)}

    # Only the segmentations fine enough to be delivered vote (evaluation.consensus).
    floor = evaluation.segment_floor([row["clusters"] for row in rows], cfg.primary.min_segments_share)
    voters = [(row["method"], row["space"]) for row in rows if row["clusters"] >= floor]
    consensus = evaluation.consensus({key: found[key].labels for key in pairs}, cfg.silhouette_sample_size, seed,
                                     voters=voters)
    for row in rows:
        row["consensus"] = consensus[(row["method"], row["space"])]
    # Chosen before the ground truth is read, so the delivered segmentation is the same with or without it.
    ev = cfg.evaluation
    share = cfg.primary.min_segments_share
    agreed = cfg.primary.min_consensus_share
    aside = evaluation.spaces_set_aside(latent_explained, cfg.primary.min_latent_explained)
    free_method, free_space, free_reason = evaluation.choose_primary(pd.DataFrame(rows), "auto", "auto",
                                                                     ev.min_stability, share, aside,
                                                                     min_consensus_share=agreed)
    primary_method, primary_space, reason = evaluation.choose_primary(pd.DataFrame(rows), cfg.primary.method,
                                                                      cfg.primary.space, ev.min_stability, share,
                                                                      aside, min_consensus_share=agreed)

    # --- the ground truth, from here on: evaluation only ---
    for row in rows:
        truth_row = (evaluation.ground_truth_metrics(found[(row["method"], row["space"])].labels, truth)
                     if has_truth else {})
        row.update({k: truth_row.get(k, float("nan")) for k in ("ari", "nmi", "homogeneity", "completeness")})
        ref = reference[model_matrix]["ari"] if reference else float("nan")
        row["ari_to_reference"] = row["ari"] / ref if reference and ref > 0 else float("nan")
    comparison = pd.DataFrame(rows)[COMPARISON_COLUMNS]
    primary = (primary_method, primary_space)
    label_free = {"method": free_method, "space": free_space, "reason": free_reason, "set_aside": aside,
                  **_truth_figures(comparison, free_method, free_space)}
    best_afterwards = None
    if has_truth and comparison["ari"].notna().any():
        best = comparison.loc[comparison["ari"].idxmax()]
        best_afterwards = {"method": str(best["method"]), "space": str(best["space"]),
                           **_truth_figures(comparison, best["method"], best["space"]),
                           "note": "picked after fitting with the ground truth; not delivered (no ground truth "
                                   "on a retailer's data)"}
    log.info("primary segmentation: %s %s (%s)", primary_method, primary_space, reason)
    migration = (pd.concat(migrations, ignore_index=True) if migrations
                 else pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("method", "space") else "str")
                                    for c in matching.MIGRATION_COLUMNS}))
    return Segmentation(models=models, assignments=found, comparison=comparison, primary=primary,
                        primary_reason=reason, reference=reference, matching=match_info, migration=migration,
                        has_truth=bool(has_truth), seconds=seconds, label_free=label_free,
                        best_afterwards=best_afterwards)


def _truth_figures(comparison: pd.DataFrame, method: str, space: str) -> dict[str, Any]:
    """ARI, its ratio to the reference, clusters and stability of one method and space (NaN without a truth)."""
    row = comparison[(comparison["method"] == method) & (comparison["space"] == space)].iloc[0]
    return {"ari": float(row["ari"]), "ari_to_reference": float(row["ari_to_reference"]),
            "clusters": int(row["clusters"]),
            "stability": float(np.nanmin([row["stability_reseed"], row["stability_bootstrap"]]))}


def _relabelled(found: Assignment, ids: np.ndarray) -> Assignment:
    """The same assignment with the model's clusters renamed ``ids`` (given in ``cluster_ids`` order)."""
    ids = np.asarray(ids, dtype=np.int64)
    lookup = np.full(int(found.cluster_ids.max(initial=0)) + 1, NOISE, dtype=np.int64)
    lookup[found.cluster_ids] = ids

    def rename(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64)
        return np.where(values >= 0, lookup[np.clip(values, 0, len(lookup) - 1)], NOISE)

    return dataclasses.replace(found, labels=rename(found.labels), runner_up=rename(found.runner_up),
                               cluster_ids=ids)


def _model_scores(model, X_fit: np.ndarray) -> dict[str, float]:
    """Method-specific figures: BIC and AIC of a mixture, partition coefficient and entropy of fuzzy c-means."""
    scores = {k: float("nan") for k in ("bic", "aic", "partition_coefficient", "partition_entropy")}
    if hasattr(model, "model_") and hasattr(model.model_, "bic"):
        scores["bic"], scores["aic"] = float(model.model_.bic(X_fit)), float(model.model_.aic(X_fit))
    if hasattr(model, "partition_coefficient_"):
        scores["partition_coefficient"] = model.partition_coefficient_
        scores["partition_entropy"] = model.partition_entropy_
    return scores


def assignments_table(result: Segmentation, customer_ids: np.ndarray,
                      reconstruction_error: np.ndarray | None = None) -> pd.DataFrame:
    """One row per customer: the primary segment, then every method's label and strength.

    Columns: ``customer_id``, ``segment``, ``segment_strength``,
    ``segment_runner_up`` (primary method), ``reconstruction_error`` (the
    autoencoder's, when given), then per method and space
    ``<method>_<space>_label``, ``_strength``, ``_uncertainty`` (methods with
    a soft assignment: all but k-means) and ``_noise`` (HDBSCAN: noise before
    reassignment).
    """
    primary = result.assignments[result.primary]
    table = {"customer_id": np.asarray(customer_ids), "segment": primary.labels,
             "segment_strength": primary.strength, "segment_runner_up": primary.runner_up}
    if reconstruction_error is not None:
        table["reconstruction_error"] = np.asarray(reconstruction_error, dtype=np.float64)
    for (method, space), found in result.assignments.items():
        prefix = f"{method}_{space}"
        table[f"{prefix}_label"] = found.labels
        table[f"{prefix}_strength"] = found.strength
        if found.membership is not None:
            table[f"{prefix}_uncertainty"] = found.uncertainty
        if found.noise is not None:
            table[f"{prefix}_noise"] = found.noise
    return pd.DataFrame(table)


def membership_table(found: Assignment, customer_ids: np.ndarray) -> pd.DataFrame:
    """``customer_id`` and one float32 column ``segment_<id>`` per segment: the soft assignment."""
    frame = pd.DataFrame(found.membership.astype(np.float32), columns=[f"segment_{i}" for i in found.cluster_ids])
    frame.insert(0, "customer_id", np.asarray(customer_ids))
    return frame


def previous_labels(current_ids: np.ndarray, previous: pd.DataFrame | None, keys: list[str],
                    fallback: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray] | None:
    """Each current customer's segment in the previous run, per ``<method>_<space>``.

    Parameters
    ----------
    current_ids : ndarray
        Customer ids of this run, in row order.
    previous : DataFrame or None
        The previous ``assignments.parquet`` (``customer_id`` and ``<key>_label`` columns).
    keys : list of str
        ``<method>_<space>`` of this run.
    fallback : dict of str to ndarray, optional
        For keys whose previous run shares no customer with this one: the
        previous model's predictions for this run's customers (raw space only:
        a retrained autoencoder's latent space is not the old one).

    Returns
    -------
    dict or None
        ``-1`` where a customer was not in the previous run; None without a previous run.
    """
    if previous is None and not fallback:
        return None
    out = {}
    for key in keys:
        column = f"{key}_label"
        if previous is not None and column in previous and "customer_id" in previous:
            old = pd.Series(previous[column].to_numpy(np.int64), index=previous["customer_id"].to_numpy())
            old = old[~old.index.duplicated()]
            mapped = old.reindex(current_ids).fillna(NOISE).to_numpy(np.int64)
            if (mapped != NOISE).any():
                out[key] = mapped
                continue
        if fallback and key in fallback:
            out[key] = np.asarray(fallback[key], dtype=np.int64)
    return out


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has no NaN) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {(k.item() if hasattr(k, "item") else k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
