"""Score customers with a finished run's saved transforms and models.

The path is the training path, step by step, with the saved pieces:
order lines -> customer features (``core.prepare_features.features.build_customer_features``)
-> the model matrix (stage 02's fitted ``feature-scaler.pkl``, written as
float32 like ``features.parquet``) -> the latent space (stage 03's
``autoencoder-model.keras``) -> every clustering model of stage 04 (their
:meth:`assign`, the function stage 04 itself scores its customers with). So
scoring the training customers again gives their training segments, and a
new customer gets the segment the same models would have given it.

:func:`load_saved_run` reads the saved pieces (the one function here that
touches files); :func:`score_customers` is a plain function.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.framework import artifacts, paths
from core.framework.errors import PipelineError
from core.cluster.evaluation import single_threaded
from core.prepare_features.features import (ID_COLUMN, EligibilityRules, FeatureSettings, add_class_mix, apply_eligibility,
                           build_customer_features, customers_without_features, sellable_classes)

log = logging.getLogger(__name__)

#: Columns a transaction log needs for features (see ``core.prepare_features.features.build_customer_features``).
TRANSACTION_INPUT_COLUMNS = ("customer_id", "order_id", "order_date", "department", "class", "quantity",
                             "line_amount", "is_return")


@dataclasses.dataclass
class SavedRun:
    """The fitted pieces of a finished run.

    Attributes
    ----------
    transformer : core.prepare_features.features.ModelMatrixTransformer
    autoencoder : core.train_autoencoder.autoencoder.AutoencoderTransformer or None
        None when no model uses the latent space.
    models : dict of (method, space) to fitted clusterer
    primary : (str, str)
        The method and space stage 04 chose as the segmentation.
    hierarchy : core.domain.hierarchy.Hierarchy
        To build department features from order lines.
    settings : core.prepare_features.features.FeatureSettings
        Stage 02's feature settings (windows, attributes), so order lines
        give the features stage 02 would have computed.
    eligibility : core.prepare_features.features.EligibilityRules
        Stage 02's rules: a customer who fails them is reported, not scored.
    """

    transformer: Any
    autoencoder: Any
    models: dict[tuple[str, str], Any]
    primary: tuple[str, str]
    hierarchy: Any
    settings: FeatureSettings = FeatureSettings()
    eligibility: EligibilityRules = EligibilityRules()


def load_saved_run(artifacts_dir: Path, config) -> SavedRun:
    """Load the transform, autoencoder and clustering models a completed run saved.

    Raises
    ------
    PipelineError
        When stage 02, 03 or 04 has not completed in ``artifacts_dir``.
    """
    import json

    import joblib

    from core.train_autoencoder.autoencoder import AutoencoderTransformer

    for stage in (paths.PREPARE_FEATURES, paths.TRAIN_AUTOENCODER, paths.CLUSTER):
        if artifacts.read_manifest(paths.stage_dir(artifacts_dir, stage)) is None:
            raise PipelineError(f"scoring needs the saved models of stage {stage}, which has not completed in "
                                f"{artifacts_dir}; run the pipeline first (`run.bat` or `./run.sh`)")
    cluster_dir = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    comparison = json.loads((cluster_dir / paths.COMPARISON_JSON).read_text(encoding="utf-8"))
    pairs = [(row["method"], row["space"]) for row in comparison["methods"]]
    models = {(m, s): joblib.load(cluster_dir / paths.cluster_model_file(m, s)) for m, s in pairs}
    autoencoder = None
    if any(s == "latent" for _, s in pairs):
        autoencoder = AutoencoderTransformer.load(
            paths.stage_dir(artifacts_dir, paths.TRAIN_AUTOENCODER) / paths.AUTOENCODER_MODEL)
    transformer = joblib.load(paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.FEATURE_SCALER)
    primary = (comparison["primary"]["method"], comparison["primary"]["space"])
    # Stage 02 saved the settings it built the features with: scoring follows those, not today's config.
    trained_classes = getattr(transformer, "sellable_classes_", None)
    if trained_classes is not None and list(trained_classes) != sellable_classes(config.hierarchy):
        raise PipelineError(f"the hierarchy of {config.path} is not the one stage 02 was trained with (its "
                            f"sellable classes differ); rerun the pipeline from stage 02 before scoring")
    cfg = config.prepare_features
    return SavedRun(transformer=transformer, autoencoder=autoencoder, models=models, primary=primary,
                    hierarchy=config.hierarchy,
                    settings=getattr(transformer, "feature_settings_", None) or FeatureSettings.from_config(cfg),
                    eligibility=getattr(transformer, "eligibility_", None)
                    or EligibilityRules.from_config(cfg.eligibility))


def input_kind(frame: pd.DataFrame, transformer, source: str = "the input") -> str:
    """``transactions`` (an order-line log) or ``features`` (one row per customer with the feature columns).

    Raises
    ------
    PipelineError
        Naming what each kind would need, when the columns fit neither.
    """
    if all(c in frame.columns for c in TRANSACTION_INPUT_COLUMNS):
        return "transactions"
    needed = [ID_COLUMN, *transformer.columns]
    if all(c in frame.columns for c in needed):
        return "features"
    missing_lines = [c for c in TRANSACTION_INPUT_COLUMNS if c not in frame.columns]
    missing_features = [c for c in needed if c not in frame.columns]
    raise PipelineError(f"{source} is neither a transaction log (missing {', '.join(missing_lines)}) nor a "
                        f"features file (missing {', '.join(missing_features[:6])}"
                        f"{', ...' if len(missing_features) > 6 else ''}); give order lines with the columns "
                        f"of transactions.parquet, or customer features like enriched_department.parquet")


def _as_transactions(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Order lines with the types feature building needs (a CSV reads dates and flags as text)."""
    lines = frame.copy()
    if not pd.api.types.is_datetime64_any_dtype(lines["order_date"]):
        try:
            lines["order_date"] = pd.to_datetime(lines["order_date"])
        except (ValueError, TypeError) as exc:
            raise PipelineError(f"{source}: column order_date holds values that are not dates ({exc}); "
                                f"write dates as YYYY-MM-DD") from None
    if not pd.api.types.is_bool_dtype(lines["is_return"]):
        text = lines["is_return"].astype(str).str.strip().str.lower()
        known = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        bad = sorted(set(text) - set(known))
        if bad:
            raise PipelineError(f"{source}: column is_return holds {', '.join(bad[:5])}; use true or false")
        lines["is_return"] = text.map(known).astype(bool)
    return lines


@single_threaded
def score_customers(frame: pd.DataFrame, saved: SavedRun, *, analysis_date: pd.Timestamp | None = None,
                    source: str = "the input") -> pd.DataFrame:
    """Segment, strength and every method's label for each customer in ``frame``.

    Parameters
    ----------
    frame : DataFrame
        Order lines (the columns of ``transactions.parquet``) or customer
        features (``customer_id`` and the model-matrix feature columns in
        their own units, as in ``enriched_department.parquet``).
    saved : SavedRun
    analysis_date : Timestamp, optional
        For order lines: the day features are measured at (default: the
        last order date in ``frame``, as stage 02 does).
    source : str
        Named in error messages.

    Returns
    -------
    DataFrame
        One row per customer: ``customer_id``, ``segment``,
        ``segment_strength``, ``segment_runner_up`` (primary segmentation),
        ``reconstruction_error`` (when an autoencoder was loaded), then
        ``<method>_<space>_label`` and ``_strength`` for every saved model,
        and ``excluded_reason``: empty, or why a customer of the order lines
        got no features (its segment columns are then missing).
    """
    kind = input_kind(frame, saved.transformer, source)
    excluded = pd.DataFrame({ID_COLUMN: pd.Series(dtype="int64"), "reason": pd.Series(dtype="str")})
    if kind == "transactions":
        lines = _as_transactions(frame, source)
        day = pd.Timestamp(analysis_date if analysis_date is not None else lines["order_date"].max()).normalize()
        built, _ = build_customer_features(lines, saved.hierarchy, day, saved.settings)
        features = built.features
        missing = [c for c in saved.transformer.columns if c not in features.columns
                   and not c.startswith("class_mix_")]
        if missing and len(features):
            why = sorted({reason for name, reason in built.dropped.items()
                          if any(fnmatch.fnmatchcase(c, name) for c in missing)})
            raise PipelineError(f"{source}: the model needs {', '.join(missing[:6])}"
                                f"{', ...' if len(missing) > 6 else ''}, which these order lines cannot give"
                                f"{' (' + '; '.join(why) + ')' if why else ''}; add the column(s) they need "
                                f"or score a features file")
        # The customers stage 02 would have left out, for the same reasons: no features, or a failed rule.
        keep, failed = apply_eligibility(features, saved.eligibility)
        no_features = customers_without_features(built.activity, None, features[ID_COLUMN].to_numpy())
        excluded = pd.concat([no_features, failed], ignore_index=True)[[ID_COLUMN, "reason"]]
        features = features[keep].reset_index(drop=True)
        mix = getattr(saved.transformer, "class_mix", None)
        if mix is not None:
            features = add_class_mix(features, built.class_long, mix, mix.n_features_in_)
        if features.empty:
            # Nobody to score (every customer new or without merchandise): the same columns, all missing.
            return _nobody_scored(excluded, saved)
    else:
        features = frame.drop_duplicates(ID_COLUMN)
        if len(features) != len(frame):
            raise PipelineError(f"{source}: {len(frame) - len(features)} customer_id value(s) appear twice; a "
                                f"features file has one row per customer")
    values = features[list(saved.transformer.columns)]
    empty = values.columns[values.isna().any()].tolist()
    if empty:
        raise PipelineError(f"{source}: missing values in {', '.join(empty[:6])}; every customer needs every "
                            f"model feature")
    # float32 like features.parquet, which is what stages 03 and 04 trained on.
    matrix = saved.transformer.transform(features).astype(np.float32)
    spaces = {"raw": matrix.astype(np.float64)}
    out = {ID_COLUMN: features[ID_COLUMN].to_numpy()}
    if saved.autoencoder is not None:
        spaces["latent"] = saved.autoencoder.transform(matrix).astype(np.float64)
        reconstruction = saved.autoencoder.reconstruction_error(matrix)
    found = {key: model.assign(spaces[key[1]]) for key, model in saved.models.items()}
    primary = found[saved.primary]
    out.update(segment=primary.labels, segment_strength=primary.strength, segment_runner_up=primary.runner_up)
    if saved.autoencoder is not None:
        out["reconstruction_error"] = reconstruction.astype(np.float64)
    for (method, space), a in found.items():
        out[f"{method}_{space}_label"] = a.labels
        out[f"{method}_{space}_strength"] = a.strength
    scored = pd.DataFrame(out)
    scored["excluded_reason"] = ""
    if len(excluded):
        rest = excluded.rename(columns={"reason": "excluded_reason"})
        scored = pd.concat([scored, rest], ignore_index=True)
        labels = [c for c in scored.columns if c.endswith("_label") or c in ("segment", "segment_runner_up")]
        scored[labels] = scored[labels].astype("Int64")
    return scored


def _nobody_scored(excluded: pd.DataFrame, saved: SavedRun) -> pd.DataFrame:
    n = len(excluded)
    labels = pd.array([pd.NA] * n, dtype="Int64")
    values = np.full(n, np.nan)
    columns = {ID_COLUMN: excluded[ID_COLUMN].to_numpy(), "segment": labels, "segment_strength": values,
               "segment_runner_up": labels}
    if saved.autoencoder is not None:
        columns["reconstruction_error"] = values
    for method, space in saved.models:
        columns[f"{method}_{space}_label"] = labels
        columns[f"{method}_{space}_strength"] = values
    columns["excluded_reason"] = excluded["reason"].to_numpy()
    return pd.DataFrame(columns)
