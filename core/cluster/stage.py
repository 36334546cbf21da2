"""Stage 04: cluster customers in the raw (scaled features), latent and counts spaces; evaluate; choose the primary.

Reads ``features.parquet`` and ``class_spend_long.parquet`` (each customer's units per class: the counts
space, fitted by the count mixture only) from stage 02, ``latent.parquet`` from stage 03
and, for evaluation only, the ground-truth column (``persona``) of
``customers.parquet`` from stage 01. Writes to ``artifacts/04_cluster/``:

- ``assignments.parquet``: one row per customer: ``segment``,
  ``segment_strength``, ``segment_runner_up`` of the primary segmentation,
  ``reconstruction_error`` (stage 03's outlier signal), then
  ``<method>_<space>_label``/``_strength`` (and ``_uncertainty``, ``_noise``
  where they apply) for every method and space;
- ``comparison.csv`` and ``comparison.json``: every method and space's
  metrics (sizes, separation, stability, agreement with the ground truth
  and the supervised reference); the JSON adds the primary choice and its
  reason, the reference and each model's selection;
- ``membership-<method>-<space>.parquet`` for the soft methods;
- ``migration.csv``: customers moving between the previous run's segments
  and this run's (segment ids are matched to the previous run's);
- one fitted model per method and space (``<method>-<space>.pkl``);
- ``segment_history.parquet`` and ``transitions.csv``: the primary model
  applied at each snapshot date to the customers' trailing window of order
  lines (:mod:`core.cluster.snapshots`; reads ``transactions.parquet``,
  ``feature-scaler.pkl`` and ``autoencoder-model.keras`` for it).

Run ``python 04_cluster.py --help``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from core.cluster.settings import COUNTS_SPACE, fitted_pairs
from core.framework import paths
from core.framework.errors import PipelineError
from core.framework.progress import Progress
from core.framework.stage import Stage, StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    # Imported when the stage runs: scikit-learn and friends cost a second that status and skips never need.
    from core.cluster import snapshots

    cfg = ctx.config.cluster
    plan = snapshots.plan_snapshots(ctx)  # settings the log cannot honour stop the stage before any fit
    raw = ctx.read_parquet(paths.PREPARE_FEATURES, paths.FEATURES)
    latent = ctx.read_parquet(paths.TRAIN_AUTOENCODER, paths.LATENT)
    ids = raw["customer_id"].to_numpy()
    if not np.array_equal(ids, latent["customer_id"].to_numpy()):
        raise PipelineError(f"{paths.LATENT} and {paths.FEATURES} list different customers; stage "
                            f"{paths.TRAIN_AUTOENCODER} is older than {paths.PREPARE_FEATURES}: rerun it")
    matrices = {
        "raw": raw.drop(columns="customer_id").to_numpy(np.float64),
        "latent": latent.filter(like="latent_").to_numpy(np.float64),
    }
    if COUNTS_SPACE in cfg.spaces:
        matrices[COUNTS_SPACE] = _counts(ctx, ids)
    spaces = {name: matrices[name] for name in cfg.spaces}
    keys = [f"{m}_{s}" for m, s in fitted_pairs(cfg.methods, spaces)]
    previous = _previous_labels(ctx, ids, keys, spaces) if cfg.match_previous else None
    # The snapshot windows' features need no fitted model: built in a thread while the fits run in their
    # worker processes (the main process only waits for them).
    with snapshots.WindowsInBackground(ctx, plan) as windows:
        _fit_write_and_snapshot(ctx, cfg, spaces, ids, latent, previous, plan, windows)


def _fit_write_and_snapshot(ctx: StageContext, cfg, spaces: dict[str, np.ndarray], ids: np.ndarray,
                            latent: pd.DataFrame, previous, plan, windows) -> None:
    """Fit and evaluate every model, write this stage's tables and models, then the snapshots."""
    from core.cluster import segmentation, snapshots  # see run

    # The fits and their evaluation are nearly all of the stage's time; each model reports as it finishes.
    with Progress(f"{paths.CLUSTER}: fitting and evaluating", total=1, unit="%", heartbeat=True) as progress, \
            progress.step(1, "models"):
        result = segmentation.segment_customers(spaces, list(cfg.methods), cfg, ctx.config.seed,
                                                truth=_ground_truth(ctx, ids), previous=previous,
                                                latent_explained=_latent_explained(ctx))

    assignments = segmentation.assignments_table(result, ids, latent["reconstruction_error"].to_numpy())
    ctx.write_parquet(paths.ASSIGNMENTS, assignments)
    ctx.write_csv(paths.COMPARISON, result.comparison)
    method, space = result.primary
    document = {
        "primary": {"method": method, "space": space, "reason": result.primary_reason},
        # How much of the held-out customers stage 03's network reconstructs, and the spaces auto left out for it.
        "latent_explained": _latent_explained(ctx),
        "ground_truth": cfg.evaluation.ground_truth if result.has_truth else None,
        "supervised_reference": result.reference,
        # What auto delivers without a ground truth (the primary itself under auto), and, with a truth, the
        # best method picked afterwards: the honest figure and the upper bound, side by side.
        "label_free_primary": result.label_free,
        "best_afterwards": result.best_afterwards,
        "methods": [{**row, "selection": result.models[(row["method"], row["space"])].selection_report(),
                     "label_matching": result.matching[f"{row['method']}_{row['space']}"]}
                    for row in result.comparison.to_dict(orient="records")],
    }
    ctx.write_json(paths.COMPARISON_JSON, segmentation.json_ready(document))
    ctx.write_csv(paths.MIGRATION, result.migration)
    for (m, s), found in result.assignments.items():
        if found.membership is not None:
            ctx.write_parquet(paths.membership_file(m, s), segmentation.membership_table(found, ids))
    for (m, s), model in result.models.items():
        ctx.write_joblib(paths.cluster_model_file(m, s), model)
    # Segments over time, by the models just trained (issue 16).
    snapshot_details = snapshots.write_snapshots(ctx, plan, result.models[result.primary], result.primary[1],
                                                 windows)

    chosen = result.comparison[(result.comparison["method"] == method) & (result.comparison["space"] == space)]
    ctx.details = segmentation.json_ready({
        "primary": document["primary"],
        "customers": len(ids),
        "fit_customers": min(len(ids), cfg.fit_sample_size),
        "supervised_reference": result.reference,
        "label_matching": result.matching,
        "seconds": result.seconds,
        "selection": {f"{m}_{s}": model.selection_report() for (m, s), model in result.models.items()},
        "comparison": result.comparison.to_dict(orient="records"),
        "snapshots": snapshot_details,
    })
    ctx.summary = (f"{len(ids):,} customers, {len(result.models)} models; primary {method}_{space}: "
                   f"{int(chosen['clusters'].iloc[0])} segments ({result.primary_reason})"
                   + snapshots.summary(snapshot_details))


def _counts(ctx: StageContext, ids: np.ndarray):
    """The counts space: each customer's units per sellable class, from stage 02's ``class_spend_long.parquet``.

    Sparse (a customer buys in a few dozen of hundreds of classes; a million customers' dense counts would be
    2.7 GB), rows in ``ids``' order, columns the hierarchy's sellable classes
    (:func:`core.cluster.count_mixture.count_columns`), as scoring and the snapshot windows build them.
    """
    from core.cluster.count_mixture import count_columns, count_space, counts_matrix, sellable_index
    from core.prepare_features.columns import sellable_classes

    keys = sellable_classes(ctx.config.hierarchy)
    long = ctx.read_parquet(paths.PREPARE_FEATURES, paths.CLASS_SPEND_LONG,
                            columns=["customer_id", "department", "class", "units"])
    index = sellable_index(long["department"], long["class"], keys)
    if (index < 0).any():
        d, c = long.loc[index < 0, ["department", "class"]].astype(str).iloc[0]
        raise PipelineError(f"{paths.CLASS_SPEND_LONG} has units in {d} / {c}, which is not a sellable class of "
                            f"the hierarchy of {ctx.config.path} ({int((index < 0).sum()):,} rows); stage "
                            f"{paths.PREPARE_FEATURES} ran with another hierarchy: rerun it")
    X = counts_matrix(ids, long["customer_id"].to_numpy(), index, long["units"].to_numpy(), len(keys))
    return count_space(X, count_columns(keys))


def _latent_explained(ctx: StageContext) -> dict | None:
    """Stage 03's record of how much its network explains (``history.json``), or None when it has none."""
    from core.train_autoencoder.stage import EXPLAINED_KEY

    return ctx.read_json(paths.TRAIN_AUTOENCODER, paths.TRAINING_HISTORY).get(EXPLAINED_KEY)


def _ground_truth(ctx: StageContext, ids: np.ndarray) -> pd.Series | None:
    """The configured ground-truth column aligned with ``ids``; None when not configured or all missing."""
    column = ctx.config.cluster.evaluation.ground_truth
    if column is None:
        return None
    import pyarrow.parquet as pq

    available = pq.read_schema(ctx.input_path(paths.GENERATE_DATA, paths.CUSTOMERS)).names
    if column not in available:
        raise PipelineError(f"cluster.evaluation.ground_truth in {ctx.config.path} names '{column}', which "
                            f"{paths.CUSTOMERS} does not have; use one of {', '.join(available)}, or null")
    customers = ctx.read_parquet(paths.GENERATE_DATA, paths.CUSTOMERS, columns=["customer_id", column])
    truth = customers.drop_duplicates("customer_id").set_index("customer_id")[column].reindex(ids)
    if truth.isna().all():
        log.info("no ground truth: %s is empty in %s", column, paths.CUSTOMERS)
        return None
    return truth.reset_index(drop=True)


def _previous_labels(ctx: StageContext, ids: np.ndarray, keys: list[str],
                     spaces: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The previous run's segment of each customer, from the assignments and models still in this stage's folder.

    Read before this run overwrites them, and only what the previous run's
    manifest lists with the same SHA-256 (:meth:`StageContext.read_previous`:
    a replaced model stops the stage before it is unpickled; the files read
    are recorded in the new manifest). Customers are matched by id; when
    the previous run shares no customer with this one, or its assignments
    are gone, a raw-space model of the previous run scores this run's
    customers instead.
    """
    previous = None
    try:
        previous = ctx.read_previous(paths.ASSIGNMENTS)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - the file is the one recorded; an older layout only means no matching
        log.warning("previous %s unreadable (%s); segment ids are not matched", paths.ASSIGNMENTS, exc)
    from core.cluster import segmentation  # see run

    labels = segmentation.previous_labels(ids, previous, keys) or {}
    fallback = {}
    for key in keys:
        method, space = key.rsplit("_", 1)
        if key in labels or space != "raw":
            continue
        model_file = paths.cluster_model_file(method, space)
        try:
            old = ctx.read_previous(model_file)
            if old is not None and getattr(old, "n_features_in_", None) == spaces[space].shape[1]:
                fallback[key] = old.assign(spaces[space], membership=False).labels
        except PipelineError:
            raise  # not the file the previous run wrote: never swallowed
        except Exception as exc:  # noqa: BLE001 - a model from older code only means no matching
            log.warning("previous model %s unusable (%s); its segment ids are not matched", model_file, exc)
    return {**labels, **fallback} or None


STAGE = Stage(
    name=paths.CLUSTER,
    # customers.parquet last: its ground truth is for evaluation; the matrices are what is clustered.
    # The order lines, the feature model and the network: the snapshots run the trained chain on each window.
    inputs={paths.PREPARE_FEATURES: (paths.FEATURES, paths.FEATURE_SCALER, paths.CLASS_SPEND_LONG),
            paths.TRAIN_AUTOENCODER: (paths.LATENT, paths.AUTOENCODER_MODEL, paths.TRAINING_HISTORY),
            paths.GENERATE_DATA: (paths.CUSTOMERS, paths.TRANSACTIONS)},
    description="Cluster customers with HDBSCAN, Gaussian mixture, fuzzy c-means, k-means and a mixture of "
                "Dirichlet-multinomials on their units per class; evaluate and compare them; choose the primary "
                "segmentation.",
    sections=("seed", "cluster"),
    run=run,
)
