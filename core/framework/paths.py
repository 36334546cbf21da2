"""Every path the pipeline reads or writes, declared once.

A stage's outputs live in ``<artifacts>/<stage name>/`` where the stage name is
its script's file name without ``.py`` (``02_prepare_features``). Scripts and
tests refer to files through the constants here, never through literals;
:mod:`core.framework.catalog` says which stage writes each, in which format,
and what it holds.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yml"
DEFAULT_ARTIFACTS = REPO_ROOT / "artifacts"

# Stage names in run order; each is also the script name and the output folder.
GENERATE_DATA = "01_generate_data"
PREPARE_FEATURES = "02_prepare_features"
TRAIN_AUTOENCODER = "03_train_autoencoder"
CLUSTER = "04_cluster"
PROFILE_EXPORT = "05_profile_export"
STAGE_NAMES = (GENERATE_DATA, PREPARE_FEATURES, TRAIN_AUTOENCODER, CLUSTER, PROFILE_EXPORT)

MANIFEST = "manifest.json"
PIPELINE_LOG = "pipeline.log"
# In the artifacts folder while a run or a score holds it: its owner's pid, host and start time.
LOCK = ".pipeline.lock"

# 01_generate_data
TRANSACTIONS = "transactions.parquet"
CUSTOMERS = "customers.parquet"
PRODUCTS = "products.parquet"
# Each customer's key inside the pipeline and the id as the source wrote it (core/domain/customer_ids.py).
CUSTOMER_IDS = "customer_ids.parquet"
GENERATION_REPORT = "generation_report.json"
PERSONA_EVENTS = "persona_events.parquet"
# ... and, with data.source: file, the input rows it did not accept, with the reason
REJECTS = "rejects.parquet"
CUSTOMER_REJECTS = "customer_rejects.parquet"

# 02_prepare_features
BASIC = "basic.parquet"
ENRICHED_DEPARTMENT = "enriched_department.parquet"
ENRICHED_CLASS = "enriched_class.parquet"
CLASS_SPEND_LONG = "class_spend_long.parquet"
FEATURES = "features.parquet"
FEATURE_SCALER = "feature-scaler.pkl"
EXCLUDED_CUSTOMERS = "excluded_customers.parquet"
# ... and each customer's value and churn risk (issue 14), the models' parameters and their holdout check
CUSTOMER_VALUE = "customer_value.parquet"
CUSTOMER_VALUE_MODEL = "customer_value_model.json"
CUSTOMER_VALUE_EVALUATION = "customer_value_evaluation.json"

# 03_train_autoencoder
AUTOENCODER_MODEL = "autoencoder-model.keras"
ENCODER_MODEL = "encoder.keras"
LATENT = "latent.parquet"
LOSS_PLOT = "loss-plot.png"
TRAINING_HISTORY = "history.json"

# 04_cluster
ASSIGNMENTS = "assignments.parquet"
COMPARISON = "comparison.csv"
COMPARISON_JSON = "comparison.json"
MIGRATION = "migration.csv"
# Segments over time (issue 16): the trained models applied at each snapshot date.
SEGMENT_HISTORY = "segment_history.parquet"
TRANSITIONS = "transitions.csv"
# Patterns: one file per method and space.
CLUSTER_MODEL = "{method}-{space}.pkl"
MEMBERSHIP = "membership-{method}-{space}.parquet"


def cluster_model_file(method: str, space: str) -> str:
    """File name of a fitted clustering model, e.g. ``hdbscan-latent.pkl``."""
    return CLUSTER_MODEL.format(method=method, space=space)


def membership_file(method: str, space: str) -> str:
    """File name of a soft assignment (probabilities, memberships), e.g. ``membership-gmm-latent.parquet``."""
    return MEMBERSHIP.format(method=method, space=space)


# 05_profile_export
SEGMENT_PROFILES_JSON = "segment_profiles.json"
SEGMENT_PROFILES_YAML = "segment_profiles.yaml"
CLUSTER_INSIGHTS = "cluster_insights.csv"
CUSTOMERS_WITH_SEGMENTS = "customers_with_segments.parquet"
REPORT = "report.html"
SEGMENT_SIZES_PLOT = "segment-sizes.png"
DEPARTMENT_HEATMAP = "department-heatmap.png"
PROJECTION_PLOT = "projection.png"
LOSS_CURVE = "loss-curve.png"
# Next-best classes per customer (issue 15) and their temporal-holdout evaluation.
RECOMMENDATIONS = "recommendations.parquet"
RECOMMENDATION_EVALUATION = "recommendation_evaluation.json"
RECOMMENDATION_MODEL = "recommendation-model.pkl"
CALIBRATION_PLOT = "calibration.png"
# Segments over time (issue 16): sizes at each snapshot and the moves between them.
SEGMENT_SIZES_OVER_TIME_PLOT = "segment-sizes-over-time.png"
SEGMENT_FLOW_PLOT = "segment-flows.png"
SEGMENT_PROFILES_SCHEMA = REPO_ROOT / "schemas" / "segment_profiles.schema.json"


def extra_export_file(file: str, segmentation: str) -> str:
    """File name of an export for a non-primary segmentation: ``segment_profiles__kmeans_latent.json``."""
    stem, dot, suffix = file.partition(".")
    return f"{stem}__{segmentation}{dot}{suffix}"


def stage_dir(artifacts_dir: Path, stage: str) -> Path:
    """Folder holding one stage's outputs and manifest."""
    return Path(artifacts_dir) / stage
