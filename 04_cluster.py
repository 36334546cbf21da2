"""Stage 04: cluster customers in the raw (scaled features) and latent spaces.

Reads ``features.parquet`` from stage 02 and ``latent.parquet`` from stage 03
and writes to ``artifacts/04_cluster/``: ``assignments.parquet`` (one row per
customer: ``segment``, ``segment_strength`` and ``segment_runner_up`` (second
most likely segment) of the primary method, then
``<method>_<space>_label``/``_strength`` for every method and space),
``comparison.csv`` and one fitted model per method and space
(``<method>-<space>.pkl``). Run ``python 04_cluster.py --help``.
"""

from __future__ import annotations

import sys

import numpy as np

from core import clustering, paths
from core.pipeline import PipelineError, Stage, StageContext, stage_main

STAGE = Stage(
    name=paths.CLUSTER,
    inputs={paths.PREPARE_FEATURES: (paths.FEATURES,), paths.TRAIN_AUTOENCODER: (paths.LATENT,)},
    description="Cluster customers with HDBSCAN, Gaussian mixture, fuzzy c-means and k-means; compare them.",
)


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    cfg = ctx.config.cluster
    raw = ctx.read_parquet(paths.PREPARE_FEATURES, paths.FEATURES)
    latent = ctx.read_parquet(paths.TRAIN_AUTOENCODER, paths.LATENT)
    if not np.array_equal(raw["customer_id"].to_numpy(), latent["customer_id"].to_numpy()):
        raise PipelineError(f"{paths.LATENT} and {paths.FEATURES} list different customers; stage "
                            f"{paths.TRAIN_AUTOENCODER} is older than {paths.PREPARE_FEATURES}: rerun it")
    matrices = {
        "raw": raw.drop(columns="customer_id").to_numpy(np.float64),
        "latent": latent.filter(like="latent_").to_numpy(np.float64),
    }
    spaces = {name: matrices[name] for name in cfg.spaces}
    assignments, comparison, models = clustering.cluster_all(spaces, list(cfg.methods), cfg, ctx.config.seed)
    primary = f"{cfg.primary.method}_{cfg.primary.space}"
    assignments.insert(0, "segment_runner_up", models[(cfg.primary.method, cfg.primary.space)].runner_up_)
    assignments.insert(0, "segment_strength", assignments[f"{primary}_strength"])
    assignments.insert(0, "segment", assignments[f"{primary}_label"])
    assignments.insert(0, "customer_id", raw["customer_id"].to_numpy())
    ctx.write_parquet(paths.ASSIGNMENTS, assignments)
    ctx.write_csv(paths.COMPARISON, comparison)
    for (method, space), model in models.items():
        ctx.write_joblib(paths.cluster_model_file(method, space), model)
    ctx.details = {
        "primary": {"method": cfg.primary.method, "space": cfg.primary.space, "reason": "named in config"},
        "selection": {f"{m}_{s}": model.selection_report() for (m, s), model in models.items()},
        "comparison": comparison.to_dict(orient="records"),
    }
    chosen = comparison[(comparison["method"] == cfg.primary.method) & (comparison["space"] == cfg.primary.space)]
    ctx.summary = (f"{len(assignments):,} customers, {len(models)} models; primary {primary}: "
                   f"{int(chosen['clusters'].iloc[0])} segments")


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
