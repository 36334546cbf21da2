"""Score customers with a finished run's fitted models: one chain, built by stages 02 to 04.

:class:`ScoringChain` holds the pieces the stages fitted and saved, in the
order they run:

1. order lines -> the eligible customers' features: stage 02's
   :class:`~core.prepare_features.prepare.FeatureModel` (``feature-scaler.pkl``),
   whose :meth:`~core.prepare_features.prepare.FeatureModel.customer_features`
   is the function stage 02 builds its own customers' features with, run with
   the settings, eligibility rules and class-mix embedding stage 02 saved;
2. features -> the model matrix (its fitted ``ModelMatrixTransformer``,
   float32 like ``features.parquet``);
3. model matrix -> the latent space (stage 03's ``autoencoder-model.keras``);
4. each space -> every clustering model of stage 04 (``<method>-<space>.pkl``;
   their ``assign``, the method stage 04 scores its own customers with);
5. order lines -> each customer's ``p_alive``, ``expected_orders``,
   ``expected_revenue`` and ``churn_risk``, from the parameters stage 02
   saved (``customer_value_model.json``, numbers rather than a pickle):
   :func:`~core.prepare_features.value_estimates.predict_values`, the same
   arithmetic stage 02 ran after its fit.

So scoring the training customers again gives their training segments, and
a new customer gets the segment the same models would have given it.

:func:`load_saved_run` builds the chain from an artifacts folder; every file
it reads goes through :func:`_load_output`, which checks it against the
SHA-256 its stage's manifest recorded before anything is deserialised.
:func:`score_customers` is a plain function.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.cluster.evaluation import single_threaded
from core.domain import customer_ids
from core.cluster.settings import COUNTS_SPACE
from core.cluster.snapshots import model_spaces, window_counts
from core.domain.columns import ID_COLUMN
from core.domain.hierarchy import Hierarchy
from core.framework import artifacts, paths
from core.framework.errors import PipelineError
from core.prepare_features.aggregate import REQUIRED_LINE_COLUMNS
from core.prepare_features.columns import CLASS_MIX, sellable_classes
from core.prepare_features.prepare import FeatureModel
from core.prepare_features.transformers import ModelMatrixTransformer
from core.prepare_features.value_estimates import VALUE_COLUMNS, order_values, predict_values
from core.profile_export.recommendations import SavedRecommender
from core.train_autoencoder.autoencoder import AutoencoderTransformer

log = logging.getLogger(__name__)

#: Columns a transaction log needs for features (see ``core.prepare_features.aggregate.build_customer_features``).
TRANSACTION_INPUT_COLUMNS = REQUIRED_LINE_COLUMNS


@dataclasses.dataclass(frozen=True)
class ScoringChain:
    """The fitted pieces of a finished run, from order lines to segments.

    Attributes
    ----------
    feature_model : core.prepare_features.prepare.FeatureModel
        Stage 02: order lines to features, features to the model matrix.
    autoencoder : core.train_autoencoder.autoencoder.AutoencoderTransformer or None
        Stage 03; None when no clustering model uses the latent space.
    models : dict of (method, space) to fitted clusterer
        Stage 04, every method and space it compared.
    primary : (str, str)
        The method and space stage 04 chose as the segmentation.
    hierarchy : core.domain.hierarchy.Hierarchy
        The config's hierarchy, checked to have the sellable classes stage
        02 was trained with: department kinds decide which lines are spend.
    customer_value : dict or None
        Stage 02's ``customer_value_model.json`` (its ``estimated`` false
        when stage 02 could not fit the models); None: no customer value.
    recommender : core.profile_export.recommendations.SavedRecommender or None
        Stage 05's fitted next-best-class model (``recommendation-model.pkl``);
        None when stage 05 has not completed (no recommendations then).
    """

    feature_model: FeatureModel
    autoencoder: AutoencoderTransformer | None
    models: dict[tuple[str, str], Any]
    primary: tuple[str, str]
    hierarchy: Hierarchy
    customer_value: dict | None = None
    recommender: Any = None

    @property
    def transformer(self) -> ModelMatrixTransformer:
        """Stage 02's fitted model-matrix transformer (its ``columns`` are the model features)."""
        return self.feature_model.matrix

    def segment(self, features: pd.DataFrame, counts=None) -> pd.DataFrame:
        """Every model's segment for each row of ``features`` (the chain from the model matrix on).

        Parameters
        ----------
        features : DataFrame
            One row per customer: ``customer_id`` and the model features in
            their own units, without missing values.
        counts : sparse matrix, optional
            The same customers' units per class (the counts space), from their order lines. Without it the
            models of the counts space are left out (their columns absent), and a primary there is refused.

        Returns
        -------
        DataFrame
            ``customer_id``, ``segment``, ``segment_strength``,
            ``segment_runner_up`` (primary segmentation),
            ``reconstruction_error`` (with an autoencoder), then
            ``<method>_<space>_label`` and ``_strength`` per model.
        """
        if counts is None and self.primary[1] == COUNTS_SPACE:
            raise PipelineError(f"the primary segmentation ({self.primary[0]} in the {COUNTS_SPACE} space) is made "
                                f"from each customer's units per class, which a features file does not hold; "
                                f"score their order lines instead")
        matrix = self.feature_model.transform(features)
        names = (["raw", "latent"] if self.autoencoder is not None else ["raw"]) + \
            ([COUNTS_SPACE] if counts is not None else [])
        spaces = model_spaces(matrix, self.autoencoder, names, counts)
        found = {key: model.assign(spaces[key[1]]) for key, model in self.models.items() if key[1] in spaces}
        primary = found[self.primary]
        out = {ID_COLUMN: features[ID_COLUMN].to_numpy(), "segment": primary.labels,
               "segment_strength": primary.strength, "segment_runner_up": primary.runner_up}
        if self.autoencoder is not None:
            out["reconstruction_error"] = self.autoencoder.reconstruction_error(matrix).astype(np.float64)
        for (method, space), assignment in found.items():
            out[f"{method}_{space}_label"] = assignment.labels
            out[f"{method}_{space}_strength"] = assignment.strength
        return pd.DataFrame(out)


# ---------------------------------------------------------------------------
# Loading the chain


def load_saved_run(artifacts_dir: Path, config) -> ScoringChain:
    """The scoring chain a completed run saved in ``artifacts_dir``.

    Parameters
    ----------
    artifacts_dir : Path
    config : core.config.PipelineConfig
        Its hierarchy must have the sellable classes stage 02 was trained
        with.

    Raises
    ------
    PipelineError
        When stage 02, 03 or 04 has not completed in ``artifacts_dir``, a
        saved file is not the one its stage wrote, was written by an older
        version of the code, or the hierarchy changed since stage 02.
    """
    for stage in (paths.PREPARE_FEATURES, paths.TRAIN_AUTOENCODER, paths.CLUSTER):
        if artifacts.read_manifest(paths.stage_dir(artifacts_dir, stage)) is None:
            raise PipelineError(f"scoring needs the saved models of stage {stage}, which has not completed in "
                                f"{artifacts_dir}; run the pipeline first (`run.bat` or `./run.sh`)")
    comparison = _load_output(artifacts_dir, paths.CLUSTER, paths.COMPARISON_JSON, json.load)
    pairs = [(row["method"], row["space"]) for row in comparison["methods"]]
    models = {(m, s): _load_pickle(artifacts_dir, paths.CLUSTER, paths.cluster_model_file(m, s)) for m, s in pairs}
    autoencoder = None
    if any(s == "latent" for _, s in pairs):
        autoencoder = _load_output(artifacts_dir, paths.TRAIN_AUTOENCODER, paths.AUTOENCODER_MODEL,
                                   AutoencoderTransformer.load, as_file=True)
    feature_model = _load_pickle(artifacts_dir, paths.PREPARE_FEATURES, paths.FEATURE_SCALER)
    customer_value = _load_output(artifacts_dir, paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE_MODEL, json.load)
    scaler_path = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.FEATURE_SCALER
    if not isinstance(feature_model, FeatureModel):
        raise PipelineError(f"{scaler_path} holds a {type(feature_model).__name__}, not the feature model this "
                            f"version of the code saves; rerun the pipeline from stage {paths.PREPARE_FEATURES}")
    # Scoring builds features as stage 02 did: with its saved settings and the hierarchy it knew.
    if list(feature_model.sellable_classes) != sellable_classes(config.hierarchy):
        raise PipelineError(f"the hierarchy of {config.path} is not the one stage 02 was trained with (its "
                            f"sellable classes differ); rerun the pipeline from stage 02 before scoring")
    return ScoringChain(feature_model=feature_model, autoencoder=autoencoder, models=models,
                        primary=(comparison["primary"]["method"], comparison["primary"]["space"]),
                        hierarchy=config.hierarchy, customer_value=customer_value,
                        recommender=_load_recommender(artifacts_dir))


def _load_recommender(artifacts_dir: Path) -> SavedRecommender | None:
    """Stage 05's saved recommender (verified like every pickle), or None when stage 05 has not completed."""
    if artifacts.read_manifest(paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)) is None:
        return None
    recommender = _load_pickle(artifacts_dir, paths.PROFILE_EXPORT, paths.RECOMMENDATION_MODEL)
    if not isinstance(recommender, SavedRecommender):
        raise PipelineError(f"{paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.RECOMMENDATION_MODEL} "
                            f"holds a {type(recommender).__name__}, not the recommender this version of the code "
                            f"saves; rerun the pipeline from stage {paths.PROFILE_EXPORT}")
    return recommender


def _load_output(artifacts_dir: Path, stage: str, file: str, loader: Callable[[Any], Any], *,
                 as_file: bool = False) -> Any:
    """Load ``file`` of ``stage``: the one place scoring reads a saved file.

    The file is checked against the SHA-256 its stage's manifest recorded
    before anything is deserialised (``core.framework.artifacts.load_output``).
    """
    return artifacts.load_output(artifacts_dir, stage, file, loader, as_file=as_file)


def _load_pickle(artifacts_dir: Path, stage: str, file: str) -> Any:
    """A joblib file of ``stage`` (verified by :func:`_load_output`); a class it names that is gone stops clearly."""
    path = paths.stage_dir(artifacts_dir, stage) / file

    def unpickle(handle) -> Any:
        try:
            return joblib.load(handle)
        except (ModuleNotFoundError, AttributeError) as exc:
            # The pickle names a module or class this code no longer has: it predates the code.
            raise PipelineError(f"{path} was saved by an older version of the code ({exc}); rerun the pipeline "
                                f"from stage {stage}") from None

    return _load_output(artifacts_dir, stage, file, unpickle)


# ---------------------------------------------------------------------------
# Scoring


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


def trained_id_kind(artifacts_dir: Path, configured: str) -> str:
    """The kind of customer id to read a score file with: the configured one, or with ``auto`` the run's.

    With ``auto``, the kind stage 01 found (the type of ``customer_ids.parquet``'s
    ``source_customer_id``), so a text-id retailer's ``12345`` stays the text ``12345``;
    ``auto`` again when that file is not there.
    """
    mapping = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.CUSTOMER_IDS
    if configured != "auto" or not mapping.is_file():
        return configured
    source_type = pq.read_schema(mapping).field(customer_ids.SOURCE_ID).type
    return "number" if pa.types.is_integer(source_type) else "text"


def keyed_by_customer(frame: pd.DataFrame, kind: str = "auto", max_length: int = 64,
                      source: str = "the input") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` with its ``customer_id`` replaced by the pipeline's keys, and the mapping back.

    Ids are read as stage 01 reads a log's (:mod:`core.domain.customer_ids`): ``kind``
    ``auto`` takes the kind of most rows. A missing, too long or invalid id, or one of the
    other kind, stops scoring naming the row: a score file has no rejects table.
    """
    ids = frame[ID_COLUMN]
    decided = kind == "auto"
    if decided:
        shaped, missing = customer_ids.number_shaped(ids)
        kind = customer_ids.majority_kind(int(shaped.sum()), int((~shaped & ~missing).sum()))
    parsed = customer_ids.parse_customer_ids(ids, kind, max_length, decided)
    for mask, problem in ((parsed.missing, "no customer_id"),
                          (parsed.too_long, f"a customer_id longer than {max_length} characters"),
                          (parsed.invalid, f"{'not a whole number' if kind == 'number' else 'not a usable id'}"),
                          (parsed.other_kind, f"a {'text' if kind == 'number' else 'number'} id among {kind} ids "
                                              f"(set ingest.customer_id.kind to read them all one way)")):
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            value = ids.iloc[row]
            value = value.item() if isinstance(value, np.generic) else value  # 7.5, not np.float64(7.5)
            raise PipelineError(f"{source}: column {ID_COLUMN}, row {row + 1}: {value!r} is {problem}")
    registry = customer_ids.IdRegistry(kind)
    registry.add(parsed, np.ones(len(ids), bool))
    return frame.assign(**{ID_COLUMN: parsed.keys}), registry.mapping()


@single_threaded
def score_customers(frame: pd.DataFrame, saved: ScoringChain, *, analysis_date: pd.Timestamp | None = None,
                    source: str = "the input", id_kind: str = "auto", max_id_length: int = 64) -> pd.DataFrame:
    """Segment, strength and every method's label for each customer in ``frame``.

    Parameters
    ----------
    frame : DataFrame
        Order lines (the columns of ``transactions.parquet``) or customer
        features (``customer_id`` and the model-matrix feature columns in
        their own units, as in ``enriched_department.parquet``).
    saved : ScoringChain
    analysis_date : Timestamp, optional
        For order lines: the day features are measured at (default: the
        last order date in ``frame``, as stage 02 does).
    source : str
        Named in error messages.
    id_kind, max_id_length : str, int
        How customer ids are read (config ``ingest.customer_id``): the output carries them as the
        input wrote them (:func:`keyed_by_customer`).

    Returns
    -------
    DataFrame
        One row per customer: the columns of :meth:`ScoringChain.segment`,
        then ``excluded_reason``: empty, or why a customer of the order
        lines is not segmented (no features, or a failed eligibility rule;
        its segment columns are then missing). Scored customers come
        first. Then ``p_alive``, ``expected_orders``, ``expected_revenue``,
        ``churn_risk`` at the analysis date (order lines only: null for a
        features file) and ``customer_value_note``: empty, or why they are
        null for that customer. Then the next-best classes of stage 05's
        model, ``next_best_<rank>_department``, ``_class``, ``_reason``, and
        ``recommendation_note`` (:func:`_with_recommendations`).
    """
    frame, mapping = keyed_by_customer(frame, id_kind, max_id_length, source)
    return customer_ids.with_source_ids(_score_keyed(frame, saved, analysis_date, source), mapping)


def _score_keyed(frame: pd.DataFrame, saved: ScoringChain, analysis_date: pd.Timestamp | None,
                 source: str) -> pd.DataFrame:
    """:func:`score_customers` on a frame whose ``customer_id`` holds the pipeline's keys."""
    lines, day = None, None
    if input_kind(frame, saved.transformer, source) == "transactions":
        lines = _as_transactions(frame, source)
        day = pd.Timestamp(analysis_date if analysis_date is not None else lines["order_date"].max()).normalize()
        features, excluded, counts = _features_from_lines(lines, saved, day, source)
        if features.empty:
            # Nobody to score (every customer new or without merchandise): the same columns, all missing.
            scored = _nobody_scored(excluded, saved)
            return _with_recommendations(_with_customer_values(scored, lines, day, saved, source), lines, day,
                                         saved)
    else:
        features, excluded, counts = _features_from_file(frame, source), None, None
    values = features[list(saved.transformer.columns)]
    empty = values.columns[values.isna().any()].tolist()
    if empty:
        raise PipelineError(f"{source}: missing values in {', '.join(empty[:6])}; every customer needs every "
                            f"model feature")
    scored = saved.segment(features, counts)
    scored["excluded_reason"] = ""
    if excluded is not None and len(excluded):
        scored = pd.concat([scored, excluded.rename(columns={"reason": "excluded_reason"})], ignore_index=True)
        labels = [c for c in scored.columns if c.endswith("_label") or c in ("segment", "segment_runner_up")]
        scored[labels] = scored[labels].astype("Int64")
    return _with_recommendations(_with_customer_values(scored, lines, day, saved, source), lines, day, saved)


def _with_customer_values(scored: pd.DataFrame, lines: pd.DataFrame | None, day: pd.Timestamp | None,
                          saved: ScoringChain, source: str) -> pd.DataFrame:
    """``scored`` with each customer's value columns from stage 02's saved models, and a note where they are null."""
    model = saved.customer_value
    n = len(scored)
    columns: dict[str, Any] = {c: np.full(n, np.nan) for c in VALUE_COLUMNS[:-1]}
    columns["churn_risk"] = pd.array([pd.NA] * n, dtype="string")
    notes = np.full(n, "", dtype=object)
    if model is None:
        notes[:] = "not estimated: the saved run has no customer-value model"
    elif not model["estimated"]:
        notes[:] = f"not estimated: {model['reason']}"
    elif lines is None:
        notes[:] = "not estimated: a features file holds no order history; score order lines for customer value"
    else:
        orders = order_values(lines, model["non_merchandise_departments"], day)
        try:
            predicted = predict_values(orders, day, model) if len(orders) else None
        except ValueError as exc:
            raise PipelineError(f"{source}: customer value cannot be computed ({exc})") from None
        ids = scored[ID_COLUMN].to_numpy()
        found = np.isin(ids, predicted.index) if predicted is not None else np.zeros(n, dtype=bool)
        if found.any():
            rows = predicted.loc[ids[found]]
            for column in VALUE_COLUMNS[:-1]:
                columns[column][found] = rows[column].to_numpy()
            columns["churn_risk"][found] = rows["churn_risk"].array
        notes[~found] = f"no merchandise purchase order by the analysis date {day.date()}"
    return scored.assign(**columns, customer_value_note=notes)


def _with_recommendations(scored: pd.DataFrame, lines: pd.DataFrame | None, day: pd.Timestamp | None,
                          saved: ScoringChain) -> pd.DataFrame:
    """``scored`` with each customer's next-best classes from stage 05's model, and a note where there are none.

    Columns ``next_best_<rank>_department``, ``_class`` and ``_reason`` for
    rank 1 to top_k (``class`` empty at department level), then
    ``recommendation_note``. A customer without a segment (not eligible)
    gets everyone's popularity and their own repeats; a features file gives
    no own history, so segment popularity only.
    """
    recommender = saved.recommender
    n = len(scored)
    k = recommender.model.top_k if recommender is not None and recommender.model is not None else 0
    columns: dict[str, Any] = {}
    for rank in range(1, k + 1):
        for part in ("department", "class", "reason"):
            columns[f"next_best_{rank}_{part}"] = np.full(n, None, dtype=object)
    notes = np.full(n, "", dtype=object)
    if recommender is None:
        notes[:] = "no recommendations: stage 05 has not completed in the saved run"
    elif recommender.model is None:
        notes[:] = f"no recommendations: {recommender.explanation}"
    else:
        table = recommender.recommend_lines(lines, scored[ID_COLUMN].to_numpy(), scored["segment"], day)
        where = pd.Index(scored[ID_COLUMN]).get_indexer(table[ID_COLUMN])
        for part in ("department", "class", "reason"):
            for rank in range(1, k + 1):
                at = (table["rank"] == rank).to_numpy()
                columns[f"next_best_{rank}_{part}"][where[at]] = table[part].to_numpy()[at]
        got = np.zeros(n, dtype=bool)
        got[where] = True
        notes[~got] = "no recommendations: no merchandise class scores for this customer"
        if lines is None:
            notes[got] = "from the segment only: a features file holds no purchase history"
    return scored.assign(**columns, recommendation_note=notes)


def _features_from_lines(lines: pd.DataFrame, saved: ScoringChain, day: pd.Timestamp,
                         source: str) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """The eligible customers' features, ``customer_id`` and ``reason`` of the others (stage 02's reasons), and
    the eligible customers' units per class when a model is fitted in the counts space (else None)."""
    eligible = saved.feature_model.customer_features(lines, saved.hierarchy, day)
    # The class-mix columns come from the saved embedding, never from the lines' own columns.
    missing = [c for c in saved.transformer.columns if c not in eligible.features.columns
               and not c.startswith(CLASS_MIX)]
    if missing and (len(eligible.features) or len(eligible.failed_rules)):
        why = sorted({reason for name, reason in eligible.dropped.items()
                      if any(fnmatch.fnmatchcase(c, name) for c in missing)})
        raise PipelineError(f"{source}: the model needs {', '.join(missing[:6])}"
                            f"{', ...' if len(missing) > 6 else ''}, which these order lines cannot give"
                            f"{' (' + '; '.join(why) + ')' if why else ''}; add the column(s) they need "
                            f"or score a features file")
    counts = None
    if any(space == COUNTS_SPACE for _, space in saved.models):
        counts = window_counts(saved.feature_model, eligible, eligible.features[ID_COLUMN].to_numpy(np.int64))
    return eligible.features, eligible.excluded[[ID_COLUMN, "reason"]], counts


def _features_from_file(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A features file's rows, refused when a customer appears twice."""
    features = frame.drop_duplicates(ID_COLUMN)
    if len(features) != len(frame):
        raise PipelineError(f"{source}: {len(frame) - len(features)} customer_id value(s) appear twice; a "
                            f"features file has one row per customer")
    return features


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


def _nobody_scored(excluded: pd.DataFrame, saved: ScoringChain) -> pd.DataFrame:
    """The output columns for customers none of whom could be scored: every segment column missing."""
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
