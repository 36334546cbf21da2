"""The artifact catalog: every file a stage writes, with its format and what it holds, declared once.

File names stay the string constants of :mod:`core.framework.paths` (every
module uses them); this module says, for each, which stage writes it, in
which format and what it holds. :data:`FORMATS` holds one reader and one
writer per format. :class:`~core.framework.stage.StageContext` refuses a
write the catalog does not declare for its stage and reads each input
with its format's reader; ``show`` prints each output's description and
shows it by format.

A name may be a pattern with ``{fields}`` (``membership-{method}-{space}.parquet``):
stage 04 writes one file per method and space, stage 05 one export per
extra segmentation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

import joblib
import pandas as pd
import yaml

from core.framework import artifacts, paths
from core.framework.errors import PipelineError

Source = Path | BinaryIO


# ---------------------------------------------------------------------------
# Formats


def _bytes(source: Source) -> bytes:
    return source.read_bytes() if isinstance(source, Path) else source.read()


def _write_text(text: str, target: Path) -> None:
    # newline="\n": the same bytes, and so the same hash, on Windows as elsewhere.
    target.write_text(text, encoding="utf-8", newline="\n")


def _write_csv(frame: pd.DataFrame, target: Path) -> None:
    frame.to_csv(target, index=False, encoding="utf-8", lineterminator="\n")


def _write_yaml(value: Any, target: Path) -> None:
    _write_text(yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100), target)


@dataclasses.dataclass(frozen=True)
class Format:
    """How files of one format are read and written.

    Attributes
    ----------
    name : str
        The key in :data:`FORMATS` (``parquet``, ``json`` ...).
    read : callable or None
        ``read(path or binary file object, **options)``; None when the file is
        opened by its stage's own code (a Keras network, an image).
    write : callable or None
        ``write(value, path)``; None when the stage's code writes the file
        (through ``StageContext.write_with``).
    verified : bool
        Loading runs code or rebuilds objects (a pickle, a Keras model): read
        only through :func:`core.framework.artifacts.load_verified`, after the
        bytes are checked against the hash a manifest recorded.
    text : bool
        UTF-8 text a stage may render itself and write with ``write_text``.
    shown_as : str or None
        How ``show`` prints it: ``"table"`` (schema and first rows),
        ``"lines"`` (first lines) or None (its description only).
    opened_by : str
        Who reads it when ``read`` is None.
    """

    name: str
    read: Callable[..., Any] | None
    write: Callable[[Any, Path], None] | None
    verified: bool = False
    text: bool = False
    shown_as: str | None = None
    opened_by: str = ""


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("parquet", pd.read_parquet, lambda frame, target: frame.to_parquet(target, index=False),
           shown_as="table"),
    Format("csv", pd.read_csv, _write_csv, shown_as="table"),
    Format("json", lambda source: json.loads(_bytes(source)),
           lambda value, target: _write_text(artifacts.json_text(value), target), text=True, shown_as="lines"),
    Format("yaml", lambda source: yaml.safe_load(_bytes(source)), _write_yaml, text=True, shown_as="lines"),
    Format("joblib", joblib.load, lambda value, target: joblib.dump(value, target), verified=True),
    Format("keras", None, None, verified=True,
           opened_by="core.train_autoencoder.autoencoder.AutoencoderTransformer.load, after "
                     "core.framework.artifacts.load_output has verified it"),
    Format("png", None, None, opened_by="an image viewer (embedded in report.html)"),
    Format("html", lambda source: _bytes(source).decode("utf-8"), _write_text, text=True,
           opened_by="a web browser"),
    Format("text", lambda source: _bytes(source).decode("utf-8"), _write_text, text=True),
)}


# ---------------------------------------------------------------------------
# Artifacts


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One file (or one family of files, when ``name`` is a pattern) and who writes it.

    Attributes
    ----------
    stage : str or None
        The stage that writes it (its folder); None for the runner's own
        files in every stage's folder (the manifest).
    name : str
        The file name (a :mod:`core.framework.paths` constant), or a pattern
        whose ``{fields}`` stand for a method, space or segmentation name.
    format : str
        A key of :data:`FORMATS`.
    description : str
        One line: what the file holds (printed by ``show``).
    """

    stage: str | None
    name: str
    format: str
    description: str

    @property
    def is_pattern(self) -> bool:
        """True when ``name`` stands for several files (``{method}-{space}.pkl``)."""
        return "{" in self.name

    def matches(self, file: str) -> bool:
        """True when ``file`` is this artifact's name, or an instance of its pattern."""
        return _name_regex(self.name).fullmatch(file) is not None


@functools.lru_cache(maxsize=None)
def _name_regex(name: str) -> re.Pattern:
    # A field is a method, space or segmentation name (kmeans, latent, kmeans_latent): never a '-' or '.'.
    parts = re.split(r"\{\w+\}", name)
    return re.compile(r"[A-Za-z0-9_]+".join(re.escape(part) for part in parts))


def _export(file: str) -> str:
    return paths.extra_export_file(file, "{segmentation}")


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(None, paths.MANIFEST, "json",
             "the stage's run: config and hashes, code hash, inputs and outputs with SHA-256, seed, versions"),
    # 01_generate_data
    Artifact(paths.GENERATE_DATA, paths.TRANSACTIONS, "parquet",
             "one row per order line (returns negative), generated from the personas or ingested"),
    Artifact(paths.GENERATE_DATA, paths.CUSTOMERS, "parquet",
             "one row per customer: profile columns, identifiers and (generated data only) the persona"),
    Artifact(paths.GENERATE_DATA, paths.PRODUCTS, "parquet", "the catalog: one row per SKU with its hierarchy"),
    Artifact(paths.GENERATE_DATA, paths.CUSTOMER_IDS, "parquet",
             "one row per customer: the pipeline's integer key (customer_id) and the id as the source wrote it "
             "(source_customer_id: int64 for whole-number ids, text otherwise)"),
    Artifact(paths.GENERATE_DATA, paths.GENERATION_REPORT, "json",
             "the generated data measured against its config; the stage fails when they disagree"),
    Artifact(paths.GENERATE_DATA, paths.PERSONA_EVENTS, "parquet",
             "synthetic data only: each customer's life event (persona change) with its day, the ground truth"),
    Artifact(paths.GENERATE_DATA, paths.REJECTS, "parquet",
             "ingestion only: every input line not accepted, with its row number and reason"),
    Artifact(paths.GENERATE_DATA, paths.CUSTOMER_REJECTS, "parquet",
             "ingestion with a customer file only: every customer row not accepted, with the reason"),
    # 02_prepare_features
    Artifact(paths.PREPARE_FEATURES, paths.BASIC, "parquet",
             "one row per segmented customer: recency, frequency, monetary and behaviour features"),
    Artifact(paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT, "parquet",
             "basic features plus department shares and the customer profile, for analysis"),
    Artifact(paths.PREPARE_FEATURES, paths.ENRICHED_CLASS, "parquet",
             "enriched_department plus spend and units per product class (wide)"),
    Artifact(paths.PREPARE_FEATURES, paths.CLASS_SPEND_LONG, "parquet",
             "spend and units per customer and product class, non-zero rows only (long)"),
    Artifact(paths.PREPARE_FEATURES, paths.FEATURES, "parquet",
             "the scaled model matrix: customer_id and the model features stages 03 and 04 fit on"),
    Artifact(paths.PREPARE_FEATURES, paths.FEATURE_SCALER, "joblib",
             "the fitted feature model (eligibility, class-mix embedding, scaling), to score new customers"),
    Artifact(paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS, "parquet",
             "customers not segmented, with the eligibility rule and reason"),
    Artifact(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE, "parquet",
             "one row per customer with a purchase, segmented or not: p_alive, expected orders and revenue over "
             "the horizon, churn risk (null when not estimated)"),
    Artifact(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE_MODEL, "json",
             "the customer-value models' parameters (MBG/NBD, Gamma-Gamma) and fit report, to score new customers"),
    Artifact(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE_EVALUATION, "json",
             "the temporal holdout check of the customer-value models: aggregate errors, MAE, deciles"),
    # 03_train_autoencoder
    Artifact(paths.TRAIN_AUTOENCODER, paths.AUTOENCODER_MODEL, "keras", "the trained autoencoder"),
    Artifact(paths.TRAIN_AUTOENCODER, paths.ENCODER_MODEL, "keras",
             "the trained encoder alone, to encode new customers"),
    Artifact(paths.TRAIN_AUTOENCODER, paths.LATENT, "parquet",
             "one row per customer: latent_0..latent_{k-1} and reconstruction_error"),
    Artifact(paths.TRAIN_AUTOENCODER, paths.TRAINING_HISTORY, "json",
             "training and validation loss per epoch, and the share of the held-out customers reconstructed"),
    Artifact(paths.TRAIN_AUTOENCODER, paths.LOSS_PLOT, "png", "the loss curve"),
    # 04_cluster
    Artifact(paths.CLUSTER, paths.ASSIGNMENTS, "parquet",
             "one row per customer: the primary segment, strength, runner-up, and every method and space's labels"),
    Artifact(paths.CLUSTER, paths.COMPARISON, "csv",
             "every method and space's metrics: sizes, separation, stability, agreement with the ground truth"),
    Artifact(paths.CLUSTER, paths.COMPARISON_JSON, "json",
             "the comparison plus the primary choice and its reason, the reference and each model's selection"),
    Artifact(paths.CLUSTER, paths.MIGRATION, "csv",
             "customers moving between the previous run's segments and this run's"),
    Artifact(paths.CLUSTER, paths.SEGMENT_HISTORY, "parquet",
             "one row per snapshot date and customer active in its window: the primary segment and strength "
             "the trained models give that window's behaviour (or why the customer is not segmented)"),
    Artifact(paths.CLUSTER, paths.TRANSITIONS, "csv",
             "customers by segment at one snapshot and the next: from_date, to_date, from_segment, to_segment"),
    Artifact(paths.CLUSTER, paths.MEMBERSHIP, "parquet",
             "soft assignment of one method and space: each customer's membership of each segment"),
    Artifact(paths.CLUSTER, paths.CLUSTER_MODEL, "joblib", "the fitted clustering model of one method and space"),
    # 05_profile_export
    Artifact(paths.PROFILE_EXPORT, paths.SEGMENT_PROFILES_JSON, "json",
             "segment profiles of the primary segmentation for AI agents (schemas/segment_profiles.schema.json)"),
    Artifact(paths.PROFILE_EXPORT, paths.SEGMENT_PROFILES_YAML, "yaml", "the same segment profiles as YAML"),
    Artifact(paths.PROFILE_EXPORT, paths.CLUSTER_INSIGHTS, "csv",
             "one row per segment, every segment in full: the analyst's table of the profiles"),
    Artifact(paths.PROFILE_EXPORT, _export(paths.SEGMENT_PROFILES_JSON), "json",
             "segment profiles of an extra segmentation (profile_export.also_profile)"),
    Artifact(paths.PROFILE_EXPORT, _export(paths.SEGMENT_PROFILES_YAML), "yaml",
             "segment profiles of an extra segmentation, as YAML"),
    Artifact(paths.PROFILE_EXPORT, _export(paths.CLUSTER_INSIGHTS), "csv",
             "the analyst's table of an extra segmentation's profiles"),
    Artifact(paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS, "parquet",
             "one row per customer: segment id and name, strength, runner-up and reconstruction error"),
    Artifact(paths.PROFILE_EXPORT, paths.REPORT, "html", "the self-contained report for people, charts embedded"),
    Artifact(paths.PROFILE_EXPORT, paths.SEGMENT_SIZES_PLOT, "png", "share of customers and revenue per segment"),
    Artifact(paths.PROFILE_EXPORT, paths.DEPARTMENT_HEATMAP, "png", "department spend shares per segment"),
    Artifact(paths.PROFILE_EXPORT, paths.PROJECTION_PLOT, "png",
             "customers projected to 2-D in the space the segments were found in"),
    Artifact(paths.PROFILE_EXPORT, paths.LOSS_CURVE, "png", "the autoencoder's loss curve"),
    Artifact(paths.PROFILE_EXPORT, paths.RECOMMENDATIONS, "parquet",
             "next-best classes: one row per segmented customer and rank, with department, class, score, reason"),
    Artifact(paths.PROFILE_EXPORT, paths.RECOMMENDATION_EVALUATION, "json",
             "the recommendations measured on a temporal holdout against three baselines, or why there are none"),
    Artifact(paths.PROFILE_EXPORT, paths.RECOMMENDATION_MODEL, "joblib",
             "the fitted next-best-class model (or why there is none), what score recommends new customers with"),
    Artifact(paths.PROFILE_EXPORT, paths.SEGMENT_SIZES_OVER_TIME_PLOT, "png",
             "customers in each segment at every snapshot date"),
    Artifact(paths.PROFILE_EXPORT, paths.SEGMENT_FLOW_PLOT, "png",
             "customers moving between segments from one snapshot to the next (alluvial chart)"),
    Artifact(paths.PROFILE_EXPORT, paths.CALIBRATION_PLOT, "png",
             "predicted against actual orders by decile in the customer-value holdout check"),
)


def find(stage: str, file: str) -> Artifact | None:
    """The catalog entry of ``file`` in ``stage``'s folder (the stage's own, or the runner's), or None."""
    return next((a for a in ARTIFACTS if a.stage in (stage, None) and a.matches(file)), None)


def stage_output(stage: str, file: str, format: str | None = None) -> Artifact:
    """The entry of a file ``stage`` writes; stop when the catalog does not declare it (a bug in the stage code).

    Parameters
    ----------
    stage, file : str
        The writing stage and the file name.
    format : str, optional
        The format the caller writes; must be the declared one.

    Raises
    ------
    PipelineError
        When the file is not declared for ``stage``, is the runner's, or is
        declared in another format.
    """
    entry = find(stage, file)
    where = f"the artifact catalog ({Path(__file__).relative_to(paths.REPO_ROOT).as_posix()})"
    if entry is None:
        raise PipelineError(f"stage {stage} writes {file}, which {where} does not declare for it (a bug in the "
                            f"stage code: declare the file there, with its format and description)")
    if entry.stage is None:
        raise PipelineError(f"stage {stage} writes {file}, which is the runner's (a bug in the stage code)")
    if format is not None and not _compatible(entry.format, format):
        raise PipelineError(f"stage {stage} writes {file} as {format}, but {where} declares it as {entry.format} "
                            f"(a bug in the stage code)")
    return entry


def _compatible(declared: str, written: str) -> bool:
    # write_text writes any text format a stage renders itself (the YAML export, the HTML report).
    return declared == written or (written == "text" and FORMATS[declared].text)


def read_file(path: Path, format: str, *, sha256: str | None = None, stage: str = "", **options: Any) -> Any:
    """Read ``path`` with ``format``'s reader; a verified format only once its bytes match ``sha256``.

    Parameters
    ----------
    path : Path
        The file.
    format : str
        A key of :data:`FORMATS`.
    sha256 : str, optional
        The hash a manifest recorded for the file; required for a verified
        format (joblib), ignored otherwise.
    stage : str
        The stage that wrote it (named in errors).
    **options
        Passed to the reader (``columns=`` for Parquet).

    Raises
    ------
    PipelineError
        When the format has no generic reader (Keras, PNG), or a verified
        file is not the one recorded (nothing is deserialised then).
    """
    kind = FORMATS[format]
    if kind.read is None:
        raise PipelineError(f"{path} ({format}) has no generic reader: it is opened by {kind.opened_by or 'its stage'}")
    if kind.verified:
        return artifacts.load_verified(path, sha256, lambda handle: kind.read(handle, **options), stage=stage)
    return kind.read(Path(path), **options)


def read_output(artifacts_dir: Path, stage: str, file: str, **options: Any) -> Any:
    """Read output ``file`` of a completed ``stage`` by its declared format (verified ones against the manifest)."""
    entry = find(stage, file)
    if entry is None:
        raise PipelineError(f"{stage}/{file} is not in the artifact catalog")
    kind = FORMATS[entry.format]
    if kind.verified and kind.read is not None:
        return artifacts.load_output(artifacts_dir, stage, file, lambda handle: kind.read(handle, **options))
    return read_file(paths.stage_dir(artifacts_dir, stage) / file, entry.format, stage=stage, **options)
