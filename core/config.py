"""The pipeline's configuration: ``config.yml`` in, a typed, validated object out.

Loaded once, at the edge (a script's or the runner's ``main``). Every key of
``config.yml`` is required, so the file shipped in ``config/`` is the one
place defaults live; the hierarchy and personas files it names are read
relative to it and validated against each other.

Each stage depends on a fixed set of config sections (:data:`STAGE_SECTIONS`);
their hash, stored in the stage's manifest, is how the runner knows a stage
is stale after a config change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from core import paths
from core.generator_config import GenerateDataConfig, check_generate_data, check_styles
from core.hierarchy import Hierarchy, load_hierarchy
from core.personas import Persona, Scenario, load_persona_file
from core.schema import ConfigError, Problems, Range, build, read_yaml, spec, suggest
from core.strategies import StrategyTable, load_strategies

CLUSTER_METHODS = ("hdbscan", "gmm", "fcm", "kmeans")
SPACES = ("raw", "latent")
DATA_SOURCES = ("synthetic", "file")
FILE_FORMATS = ("csv", "parquet")
AMOUNT_KINDS = ("line", "order")
DECIMAL_MARKS = (".", ",")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data the pipeline runs on."""

    source: str = spec(choices=DATA_SOURCES, help="synthetic: generated from the personas; file: a "
                                                  "retailer's own log, described in section ingest")
    n_customers: int = spec(minimum=1, help="number of synthetic customers")
    history_start: dt.date = spec(help="first day of the synthetic transaction history")
    history_end: dt.date = spec(help="last day of the synthetic transaction history")


@dataclasses.dataclass(frozen=True)
class TransactionsFileConfig:
    """Stage 01 with data.source file: the retailer's transaction log."""

    file: str | None = spec(help="the log (CSV or Parquet), relative to this file; null when data.source "
                                 "is synthetic")
    format: str = spec(choices=FILE_FORMATS, help="how the file is stored")
    columns: dict[str, str] = spec(help="the file's column name -> ours (README \"Using your own data\"); "
                                        "customer_id, order_date and line_amount are required")
    amount_is: str = spec(choices=AMOUNT_KINDS, help="line: each row is an order line (or a whole order, "
                                                     "when that is all the log has); order: each row is one "
                                                     "whole order, so an order id appears once")


@dataclasses.dataclass(frozen=True)
class CustomersFileConfig:
    """Stage 01 with data.source file: an optional customer profile file."""

    file: str | None = spec(help="profile file (CSV or Parquet), relative to this file; null for none")
    format: str = spec(choices=FILE_FORMATS, help="how the file is stored")
    columns: dict[str, str] = spec(help="the file's column name -> ours (a customers.parquet column); "
                                        "customer_id is required")


@dataclasses.dataclass(frozen=True)
class CsvConfig:
    """How CSV files are read."""

    delimiter: str = spec(help="one character between fields, or the word tab")
    decimal: str = spec(choices=DECIMAL_MARKS, help="decimal mark of numbers; the other mark may group "
                                                    "thousands (1.234,56 or 1,234.56)")
    encoding: str = spec(help="text encoding, e.g. utf-8, cp1252, latin-1")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Stage 01 with data.source file: reading a retailer's own data."""

    transactions: TransactionsFileConfig = spec()
    customers: CustomersFileConfig = spec()
    csv: CsvConfig = spec()
    date_format: str | None = spec(help="strptime format of dates written as text, e.g. '%d/%m/%Y' or "
                                        "'%Y-%m-%d %H:%M:%S'; null = ISO 8601 (2024-03-31, "
                                        "2024-03-31T14:05:00)")
    latest_date: dt.date | None = spec(help="rows dated after this day are rejected as in the future; "
                                            "null = the day the stage runs")
    max_rejected_share: float = spec(minimum=0.0, maximum=1.0,
                                     help="the stage stops when a larger share of a file's rows is rejected")


@dataclasses.dataclass(frozen=True)
class EligibilityConfig:
    """Stage 02: which customers with a purchase are segmented; the others are listed with the rule."""

    min_tenure_days: int = spec(minimum=0, help="days from the first order to the analysis date, at least")
    min_orders: int = spec(minimum=1, help="orders (purchase transactions with merchandise), at least")
    min_net_spend: float = spec(help="net spend after returns, at least (currency units)")
    max_recency_days: int | None = spec(minimum=0, help="days since the last order, at most; null = no limit "
                                                        "(lapsed customers are a segment)")


ATTRIBUTES = ("channel", "brand_tier", "style", "color", "brand")


@dataclasses.dataclass(frozen=True)
class PrepareFeaturesConfig:
    """Stage 02: customer features, eligibility and the model matrix."""

    analysis_date: dt.date | None = spec(help="date features are measured at; null = last date in the data")
    eligibility: EligibilityConfig = spec()
    holiday_window: tuple[str, ...] = spec(help="[MM-DD, MM-DD] first and last day (inclusive) of the holiday "
                                                "season for holiday_share")
    back_to_school_window: tuple[str, ...] = spec(help="[MM-DD, MM-DD] first and last day (inclusive) of the "
                                                       "back-to-school season for back_to_school_share")
    attribute_shares: tuple[str, ...] = spec(choices=ATTRIBUTES, help="line attributes whose spend shares "
                                                                      "become features, where the data has them")
    max_attribute_values: int = spec(minimum=2, help="columns per attribute at most; values beyond the "
                                                     "largest by spend pool as 'other'")
    kids_size_pattern: str = spec(help="regular expression (case-insensitive) matching kids' sizes, for "
                                       "kids_size_share")
    engine_memory_mb: int = spec(minimum=256, help="memory (MB) the aggregation engine (DuckDB) may hold; "
                                                   "beyond it, it spills to a temporary folder")
    class_mix_components: int = spec(minimum=0, help="class-mix columns (class_mix_01, ...): each customer's "
                                                     "class spend shares, square-rooted and projected on this many "
                                                     "singular vectors; 0 = none")
    model_features: tuple[str, ...] = spec(help="feature columns (fnmatch patterns) entering the model matrix")
    scaler: str = spec(choices=("standard", "robust"), help="model-matrix scaling: standard (mean 0, sd 1) or "
                                                           "robust (median 0, interquartile range 1)")
    log1p_features: tuple[str, ...] = spec(help="model features (patterns) log1p-transformed before scaling")


@dataclasses.dataclass(frozen=True)
class TrainAutoencoderConfig:
    """Stage 03: the autoencoder."""

    hidden_units: tuple[int, ...] = spec(minimum=1, help="units of each encoder layer; the decoder mirrors them")
    latent_dim: int = spec(minimum=1, help="size of the latent representation")
    activation: str = spec(choices=("relu", "elu", "selu", "tanh", "gelu"), help="hidden-layer activation")
    l2: float = spec(minimum=0.0, help="L2 weight penalty")
    batch_norm: bool = spec(help="batch normalisation after each hidden layer")
    input_dropout: float = spec(minimum=0.0, maximum=0.9, help="share of input values zeroed at random "
                                "in each training step (a denoising autoencoder); 0 = none")
    epochs: int = spec(minimum=1, help="maximum training epochs")
    batch_size: int = spec(minimum=1, help="customers per gradient step")
    learning_rate: float = spec(exclusive_minimum=0.0, help="Adam learning rate")
    validation_split: float = spec(minimum=0.0, maximum=0.5, help="share of customers held out for early stopping")
    early_stopping_patience: int = spec(minimum=1, help="epochs without validation improvement before stopping")


@dataclasses.dataclass(frozen=True)
class HdbscanConfig:
    """Stage 04: HDBSCAN."""

    min_cluster_size_fraction: float = spec(exclusive_minimum=0.0, maximum=0.5,
                                            help="smallest cluster as a share of customers")
    min_samples: int = spec(minimum=1, help="neighbours defining a core point; larger = more conservative")
    cluster_selection_method: str = spec(choices=("eom", "leaf"),
                                         help="eom keeps the most persistent clusters, leaf the finest ones")
    reassign_noise: bool = spec(help="give noise customers their most likely cluster (membership vectors), "
                                     "with a low strength; the noise ratio is still reported")


@dataclasses.dataclass(frozen=True)
class GmmConfig:
    """Stage 04: Gaussian mixture."""

    n_components: Range = spec(minimum=1, help="[min, max] components; the number is chosen by BIC")
    covariance_type: str = spec(choices=("full", "tied", "diag", "spherical"), help="covariance structure")
    n_init: int = spec(minimum=1, help="initialisations per candidate")


@dataclasses.dataclass(frozen=True)
class FcmConfig:
    """Stage 04: fuzzy c-means."""

    n_clusters: Range = spec(minimum=2, help="[min, max] clusters, chosen by `selection`")
    selection: str = spec(choices=("silhouette", "partition_coefficient"),
                          help="criterion choosing the number of clusters (partition coefficient and entropy "
                               "are reported either way)")
    fuzziness: float = spec(exclusive_minimum=1.0, help="fuzzifier m (> 1)")
    tolerance: float = spec(exclusive_minimum=0.0, help="stop when memberships change less than this between "
                                                         "iterations (root mean square per membership value)")
    max_iter: int = spec(minimum=1, help="maximum iterations")


@dataclasses.dataclass(frozen=True)
class KmeansConfig:
    """Stage 04: k-means."""

    n_clusters: Range = spec(minimum=2, help="[min, max] clusters; the number is chosen by silhouette")
    n_init: int = spec(minimum=1, help="initialisations per candidate")


@dataclasses.dataclass(frozen=True)
class PrimaryConfig:
    """Stage 04: the segmentation stage 05 describes."""

    method: str = spec(choices=CLUSTER_METHODS + ("auto",),
                       help="method feeding stage 05, or auto: chosen by stability and agreement with the "
                            "ground truth where there is one")
    space: str = spec(choices=SPACES + ("auto",), help="space feeding stage 05, or auto")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Stage 04: how each segmentation is evaluated (after fitting; nothing here changes a fit)."""

    ground_truth: str | None = spec(help="column of customers.parquet with each customer's known group "
                                         "(the generator's persona), for evaluation only; null = none")
    reseeds: int = spec(minimum=2, help="refits with other seeds for the reseed stability")
    bootstraps: int = spec(minimum=2, help="refits on subsamples for the bootstrap stability")
    bootstrap_fraction: float = spec(exclusive_minimum=0.0, maximum=1.0,
                                     help="share of the stability sample in each bootstrap subsample "
                                          "(drawn without replacement)")
    stability_sample_size: int = spec(minimum=50, help="customers sampled for the stability refits")
    supervised_reference: bool = spec(help="with a ground truth: cross-validate a gradient-boosting classifier "
                                           "predicting it, the ARI the features allow")
    reference_sample_size: int = spec(minimum=50, help="customers sampled for the supervised reference")
    reference_folds: int = spec(minimum=2, help="cross-validation folds of the supervised reference")
    min_stability: float = spec(minimum=0.0, maximum=1.0,
                                help="primary auto: prefer segmentations at least this stable (ARI)")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Stage 04: clustering."""

    methods: tuple[str, ...] = spec(choices=CLUSTER_METHODS, help="methods to fit")
    spaces: tuple[str, ...] = spec(choices=SPACES, help="feature spaces to cluster in")
    primary: PrimaryConfig = spec()
    n_jobs: int = spec(minimum=1, help="worker processes fitting the methods and spaces side by side "
                                       "(1 = all in the stage's own process)")
    fit_sample_size: int = spec(minimum=100, help="models are fitted on at most this many customers (a seeded "
                                                  "sample) and score everyone")
    selection_sample_size: int = spec(minimum=100, help="customers sampled to choose the number of clusters; "
                                                        "the chosen model is refit on the fit sample")
    silhouette_sample_size: int = spec(minimum=100, help="customers sampled for silhouette, Davies-Bouldin "
                                                         "and Calinski-Harabasz")
    high_confidence: float = spec(minimum=0.0, maximum=1.0,
                                  help="strength at or above which a customer counts as high-confidence")
    match_previous: bool = spec(help="keep the previous run's segment ids (Hungarian matching) and write "
                                     "migration.csv")
    hdbscan: HdbscanConfig = spec()
    gmm: GmmConfig = spec()
    fcm: FcmConfig = spec()
    kmeans: KmeansConfig = spec()
    evaluation: EvaluationConfig = spec()


@dataclasses.dataclass(frozen=True)
class ProfileExportConfig:
    """Stage 05: segment profiles, exports and report."""

    top_departments: int = spec(minimum=1, help="departments listed per segment")
    top_classes: int = spec(minimum=0, help="classes listed per segment")
    value_quantiles: Range = spec(maximum=1.0, help="[low, high] population quantiles of net revenue "
                                                    "separating low, mid and high value")
    lapsed_after_days: int = spec(minimum=1, help="a customer with no order for this many days is lapsed")
    currency: str = spec(help="symbol written before amounts in descriptions")
    min_segment_size: int = spec(minimum=1, help="smaller segments are not described in detail in the "
                                                 "agent export and the report")
    describe_columns: tuple[str, ...] = spec(help="profile columns summarised per segment (demographics); "
                                                  "never direct identifiers")
    age_bands: tuple[int, ...] = spec(minimum=0, help="ascending age band edges, e.g. [25, 35, 45] gives "
                                                      "under 25, 25-34, 35-44, 45+")
    explain_features: int = spec(minimum=1, help="most distinguishing features listed per segment")
    projection_sample_size: int = spec(minimum=10, help="customers drawn in the report's 2-D projection")
    also_profile: tuple[str, ...] = spec(help="other segmentations to export too, as <method>_<space>")


@dataclasses.dataclass(frozen=True)
class _ConfigFile:
    """The layout of config.yml."""

    seed: int = spec(minimum=0, help="one seed for every random choice")
    hierarchy_file: str = spec(help="hierarchy YAML, relative to this file")
    personas_file: str = spec(help="personas YAML, relative to this file")
    strategies_file: str = spec(help="strategy rule table YAML, relative to this file")
    data: DataConfig = spec()
    generate_data: GenerateDataConfig = spec()
    ingest: IngestConfig = spec()
    prepare_features: PrepareFeaturesConfig = spec()
    train_autoencoder: TrainAutoencoderConfig = spec()
    cluster: ClusterConfig = spec()
    profile_export: ProfileExportConfig = spec()


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs, validated.

    Attributes
    ----------
    path : Path
        The config file it was read from.
    hierarchy : Hierarchy
    personas : dict of str to Persona
    seed, data, generate_data, ingest, prepare_features, train_autoencoder, cluster, profile_export
        The sections of ``config.yml``.
    source_files : dict of str to Path
        With ``data.source: file``, the retailer's files stage 01 reads, resolved against the
        config file's folder: ``transactions`` and, when given, ``customers``. Empty otherwise.
    """

    path: Path
    seed: int
    hierarchy_file: Path
    personas_file: Path
    strategies_file: Path
    hierarchy: Hierarchy
    personas: dict[str, Persona]
    scenarios: dict[str, Scenario]
    strategies: StrategyTable
    data: DataConfig
    generate_data: GenerateDataConfig
    ingest: IngestConfig
    prepare_features: PrepareFeaturesConfig
    train_autoencoder: TrainAutoencoderConfig
    cluster: ClusterConfig
    profile_export: ProfileExportConfig
    source_files: dict[str, Path] = dataclasses.field(default_factory=dict)

    def section(self, name: str) -> Any:
        """A config section, or the parsed hierarchy/personas, as plain data."""
        if name == "hierarchy":
            return self.hierarchy.to_dict()
        if name == "personas":
            return {"personas": {k: dataclasses.asdict(p) for k, p in self.personas.items()},
                    "scenarios": {k: dataclasses.asdict(s) for k, s in self.scenarios.items()}}
        if name == "strategies":
            return dataclasses.asdict(self.strategies)
        value = getattr(self, name)
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# The config each stage reads; a change to any of them makes that stage stale.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    # ingest: how a retailer's file is read; the file's content is an input of its own
    # (stage_source_files), hashed like the upstream files of the other stages.
    paths.GENERATE_DATA: ("seed", "data", "generate_data", "ingest", "hierarchy", "personas"),
    paths.PREPARE_FEATURES: ("prepare_features", "hierarchy"),
    paths.TRAIN_AUTOENCODER: ("seed", "train_autoencoder"),
    paths.CLUSTER: ("seed", "cluster"),
    # cluster: the primary method and space named in the export.
    paths.PROFILE_EXPORT: ("seed", "profile_export", "cluster", "hierarchy", "strategies"),
}


def stage_config(config: PipelineConfig, stage: str) -> dict[str, Any]:
    """The sections ``stage`` depends on, as JSON-ready plain data."""
    return {name: _plain(config.section(name)) for name in STAGE_SECTIONS[stage]}


def stage_source_files(config: PipelineConfig, stage: str) -> dict[str, Path]:
    """Files outside the artifacts folder that ``stage`` reads as data (a retailer's log), by role.

    Their content is hashed into the stage's manifest, so editing the file makes the stage stale.
    """
    return dict(config.source_files) if stage == paths.GENERATE_DATA else {}


def config_hash(values: dict[str, Any]) -> str:
    """Stable SHA-256 of JSON-ready config values."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, Path)):
        return str(value)
    return value


def load_config(path: Path | str = paths.DEFAULT_CONFIG) -> PipelineConfig:
    """Read ``config.yml`` and the hierarchy and personas files it names.

    Parameters
    ----------
    path : path-like
        The config file; ``hierarchy_file`` and ``personas_file`` are
        resolved relative to its folder.

    Raises
    ------
    ConfigError
        With one line per problem, each naming the file, key, bad value and
        what is allowed.
    """
    path = Path(path)
    problems = Problems(str(path))
    parsed = build(_ConfigFile, read_yaml(path), problems)
    if parsed is not None:
        _check_cross_fields(parsed, problems)
    problems.raise_if_any()
    hierarchy_path = path.parent / parsed.hierarchy_file
    personas_path = path.parent / parsed.personas_file
    strategies_path = path.parent / parsed.strategies_file
    for key, named in (("hierarchy_file", hierarchy_path), ("personas_file", personas_path),
                       ("strategies_file", strategies_path)):
        if not named.is_file():
            problems.add(key, f"{getattr(parsed, key)!r} names {named}, which was not found; "
                              f"give a path relative to {path.parent}")
    problems.raise_if_any()
    hierarchy = load_hierarchy(hierarchy_path)
    personas, scenarios = load_persona_file(personas_path, hierarchy)
    strategies = load_strategies(strategies_path, hierarchy)
    _check_against_hierarchy(parsed, hierarchy, problems)
    source_files = _check_ingest(parsed, path, problems)
    problems.raise_if_any()
    # Styles are declared in config.yml but used in personas.yml: the mistake is in the latter.
    persona_problems = Problems(str(personas_path))
    styles = parsed.generate_data.catalog.styles
    for name, persona in personas.items():
        check_styles(persona.style_affinity, styles, persona_problems, f"personas.{name}.style_affinity")
    for name, scenario in scenarios.items():
        check_styles(scenario.style_boost, styles, persona_problems, f"scenarios.{name}.style_boost")
    persona_problems.raise_if_any()
    return PipelineConfig(
        path=path, seed=parsed.seed, hierarchy_file=hierarchy_path, personas_file=personas_path,
        strategies_file=strategies_path, hierarchy=hierarchy, personas=personas, scenarios=scenarios,
        strategies=strategies, data=parsed.data, generate_data=parsed.generate_data, ingest=parsed.ingest,
        prepare_features=parsed.prepare_features, train_autoencoder=parsed.train_autoencoder,
        cluster=parsed.cluster, profile_export=parsed.profile_export, source_files=source_files,
    )


def _check_cross_fields(cfg: _ConfigFile, problems: Problems) -> None:
    from core.schema import check_sums_to_one

    analysis_date = cfg.prepare_features.analysis_date
    if analysis_date is not None and not cfg.data.history_start <= analysis_date:
        problems.add("prepare_features.analysis_date",
                     f"{analysis_date} is before data.history_start {cfg.data.history_start}: no customer "
                     f"would have bought yet; use a date in the history, or null for the last date")
    if cfg.data.history_end <= cfg.data.history_start:
        problems.add("data.history_end", f"{cfg.data.history_end} is not after history_start "
                                         f"{cfg.data.history_start}; the window must be at least one day")
    cl = cfg.cluster
    if not cl.methods:
        problems.add("cluster.methods", f"empty; list at least one of {', '.join(CLUSTER_METHODS)}")
    if not cl.spaces:
        problems.add("cluster.spaces", f"empty; list at least one of {', '.join(SPACES)}")
    for name, values in (("methods", cl.methods), ("spaces", cl.spaces)):
        if len(set(values)) != len(values):
            problems.add(f"cluster.{name}", f"{list(values)} lists a value twice")
    if (cl.primary.method not in cl.methods + ("auto",)) or (cl.primary.space not in cl.spaces + ("auto",)):
        problems.add("cluster.primary", f"{cl.primary.method}/{cl.primary.space} is not fitted; "
                                        f"it must be one of cluster.methods and one of cluster.spaces (or auto)")
    truth = cl.evaluation.ground_truth
    if truth is not None:
        from core.tables import CUSTOMER_COLUMNS, IDENTITY_COLUMNS

        allowed = [c for c in CUSTOMER_COLUMNS if c != "customer_id" and c not in IDENTITY_COLUMNS]
        if truth not in allowed:
            problems.add("cluster.evaluation.ground_truth",
                         f"'{truth}' is not a column of customers.parquet that can be a ground truth"
                         f"{suggest(truth, allowed)}; allowed: {', '.join(allowed)}, or null for none")
    if not cfg.prepare_features.model_features:
        problems.add("prepare_features.model_features", "empty; list at least one feature")
    _check_prepare_features(cfg.prepare_features, problems)
    export = cfg.profile_export
    low, high = export.value_quantiles
    if not (0 < low < high < 1):
        problems.add("profile_export.value_quantiles", f"[{low}, {high}] must satisfy 0 < low < high < 1")
    if list(export.age_bands) != sorted(set(export.age_bands)):
        problems.add("profile_export.age_bands", f"{list(export.age_bands)} must be strictly ascending")
    from core.profiling import identifier_columns

    leaked = identifier_columns(export.describe_columns)
    if leaked:
        problems.add("profile_export.describe_columns",
                     f"{', '.join(leaked)} look(s) like direct identifiers (names, emails, phones, addresses, "
                     f"ids); segment profiles for agents never carry them: remove them")
    fitted = {f"{m}_{s}" for m in cl.methods for s in cl.spaces}
    for name in export.also_profile:
        if name not in fitted:
            problems.add("profile_export.also_profile", f"'{name}' is not fitted by stage 04; allowed: "
                                                        f"{', '.join(sorted(fitted))}")


def _check_against_hierarchy(cfg: _ConfigFile, hierarchy: Hierarchy, problems: Problems) -> None:
    check_generate_data(cfg.generate_data, hierarchy.merchandise_departments,
                        {d: hierarchy.departments[d].classes for d in hierarchy.merchandise_departments},
                        problems)
    _check_model_features(cfg.prepare_features, hierarchy, problems)


def _check_ingest(cfg: _ConfigFile, path: Path, problems: Problems) -> dict[str, Path]:
    """Column mappings name our columns and, with ``data.source: file``, the files exist.

    Returns the files stage 01 reads, resolved against the config file's folder.
    """
    import codecs

    from core.ingest import CUSTOMER_TARGETS, REQUIRED_CUSTOMER, REQUIRED_TRANSACTION, TRANSACTION_TARGETS

    ingest = cfg.ingest
    reading = cfg.data.source == "file"
    for role, section, targets, required in (
            ("transactions", ingest.transactions, TRANSACTION_TARGETS, REQUIRED_TRANSACTION),
            ("customers", ingest.customers, CUSTOMER_TARGETS, REQUIRED_CUSTOMER)):
        key = f"ingest.{role}.columns"
        seen: dict[str, str] = {}
        for theirs, ours in section.columns.items():
            if ours not in targets:
                problems.add(f"{key}.{theirs}", f"'{ours}' is not a column we know{suggest(ours, list(targets))}; "
                                                f"map each of your columns to one of: {', '.join(targets)}")
            elif ours in seen:
                problems.add(f"{key}.{theirs}", f"'{ours}' is already mapped from '{seen[ours]}'; map one of "
                                                f"your columns to each of ours")
            seen.setdefault(ours, theirs)
        used = reading and (role == "transactions" or section.file is not None)
        missing = [c for c in required if c not in seen]
        if used and missing:
            problems.add(key, f"no column maps to {', '.join(missing)}; add '<your column name>: {missing[0]}' "
                              f"(required: {', '.join(required)})")
        if role == "transactions" and "class" in seen and "department" not in seen:
            problems.add(f"{key}.{seen['class']}", "class is mapped but department is not; a class is placed "
                                                   "within its department: map the department column too")
    delimiter = ingest.csv.delimiter
    if delimiter != "tab" and len(delimiter) != 1:
        problems.add("ingest.csv.delimiter", f"{delimiter!r} is not one character; write e.g. ',' or ';' "
                                             f"or the word tab")
    try:
        codecs.lookup(ingest.csv.encoding)
    except LookupError:
        problems.add("ingest.csv.encoding", f"{ingest.csv.encoding!r} is not a known text encoding; use e.g. "
                                            f"utf-8, cp1252 or latin-1")
    if ingest.date_format is not None and "%" not in ingest.date_format:
        problems.add("ingest.date_format", f"{ingest.date_format!r} has no % directive; write a strptime "
                                           f"format such as '%d/%m/%Y', or null for ISO 8601 dates")
    files: dict[str, Path] = {}
    if not reading:
        return files
    if ingest.transactions.file is None:
        problems.add("ingest.transactions.file", "null, but data.source is file; give the path of your "
                                                 "transaction log, relative to this file")
    for role, name in (("transactions", ingest.transactions.file), ("customers", ingest.customers.file)):
        if name is None:
            continue
        named = path.parent / name
        if not named.is_file():
            problems.add(f"ingest.{role}.file", f"{name!r} names {named}, which was not found; give a path "
                                                f"relative to {path.parent}")
        files[role] = named
    return files


def _check_model_features(cfg: PrepareFeaturesConfig, hierarchy: Hierarchy, problems: Problems) -> None:
    """Model-matrix patterns must name behavioural features and never an id, profile or ground-truth column."""
    import fnmatch

    from core.features import check_model_patterns, possible_feature_names

    for problem in check_model_patterns(cfg.model_features, hierarchy, cfg.attribute_shares):
        problems.add("prepare_features.model_features", problem)
    possible = possible_feature_names(hierarchy, cfg.attribute_shares)
    for pattern in cfg.log1p_features:
        if not any(fnmatch.fnmatchcase(c, pattern) for c in possible) and not any(
                pattern.startswith(f"{a}_share__") for a in cfg.attribute_shares):
            problems.add("prepare_features.log1p_features",
                         f"'{pattern}' matches no behavioural feature (e.g. {', '.join(possible[:6])}, ...)")


def _check_prepare_features(cfg: PrepareFeaturesConfig, problems: Problems) -> None:
    import re

    for name in ("holiday_window", "back_to_school_window"):
        window = getattr(cfg, name)
        key = f"prepare_features.{name}"
        if len(window) != 2:
            problems.add(key, f"{list(window)} must be two days [MM-DD, MM-DD] (first and last, inclusive)")
            continue
        for day in window:
            try:
                dt.date.fromisoformat(f"2024-{day}")  # a leap year, so 02-29 is allowed
            except ValueError:
                problems.add(key, f"'{day}' is not a day of the year written MM-DD (e.g. '07-15'); quote it in "
                                  f"YAML")
    try:
        re.compile(cfg.kids_size_pattern)
    except re.error as exc:
        problems.add("prepare_features.kids_size_pattern", f"{cfg.kids_size_pattern!r} is not a regular "
                                                           f"expression: {exc}")
    if len(set(cfg.attribute_shares)) != len(cfg.attribute_shares):
        problems.add("prepare_features.attribute_shares", f"{list(cfg.attribute_shares)} lists a value twice")


__all__ = ["ConfigError", "PipelineConfig", "load_config", "stage_config", "stage_source_files", "config_hash",
           "STAGE_SECTIONS", "CLUSTER_METHODS", "SPACES", "DATA_SOURCES"]
