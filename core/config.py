"""The pipeline's configuration: ``config.yml`` in, a typed, validated object out.

Loaded once, at the edge (a script's or the runner's ``main``). Every key of
``config.yml`` is required, so the file shipped in ``config/`` is the one
place defaults live; the hierarchy and personas files it names are read
relative to it and validated against each other.

Each section's typed form and its own checks live with the stage that owns
it (``core/<stage>/settings.py``); this module reads the file, assembles the
sections and runs the checks that span several of them. Each stage declares
the sections it reads (``Stage.sections``); their hash, stored in the stage's
manifest, is how the runner knows a stage is stale after a config change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from core.cluster.settings import (CLUSTER_METHODS, SPACES, ClusterConfig, check_cluster, check_pairs, check_snapshots,
                                   fitted_pairs)
from core.domain.hierarchy import Hierarchy, load_hierarchy
from core.domain.tables import CUSTOMER_COLUMNS, IDENTITY_COLUMNS
from core.domain.columns import identifier_columns
from core.framework import paths
from core.framework.schema import ConfigError, Problems, build, read_yaml, spec, suggest
from core.framework.stage import config_hash
from core.generate_data.personas import Persona, Scenario, load_persona_file
from core.generate_data.settings import (DataConfig, GenerateDataConfig, IngestConfig, check_generate_data,
                                         check_history, check_ingest, check_styles)
from core.prepare_features.settings import (CustomerValueConfig, PrepareFeaturesConfig, check_customer_value,
                                            check_model_features, check_prepare_features)
from core.profile_export.settings import ProfileExportConfig
from core.profile_export.strategies import StrategyTable, load_strategies
from core.service.settings import ServiceConfig, check_service
from core.train_autoencoder.settings import TrainAutoencoderConfig, check_train_autoencoder


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
    customer_value: CustomerValueConfig = spec()
    train_autoencoder: TrainAutoencoderConfig = spec()
    cluster: ClusterConfig = spec()
    profile_export: ProfileExportConfig = spec()
    service: ServiceConfig = spec()


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs, validated.

    Attributes
    ----------
    path : Path
        The config file it was read from.
    hierarchy : Hierarchy
    personas : dict of str to Persona
    seed, data, generate_data, ingest, prepare_features, customer_value, train_autoencoder, cluster, profile_export
        The sections of ``config.yml`` (``customer_value`` is read by stage 02).
    service : ServiceConfig
        Read by ``serve`` and ``add-key`` only (:mod:`core.service`); no stage reads it.
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
    customer_value: CustomerValueConfig
    train_autoencoder: TrainAutoencoderConfig
    cluster: ClusterConfig
    profile_export: ProfileExportConfig
    service: ServiceConfig
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
    source_files = check_ingest(parsed.ingest, parsed.data.source == "file", path, problems)
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
        prepare_features=parsed.prepare_features, customer_value=parsed.customer_value,
        train_autoencoder=parsed.train_autoencoder,
        cluster=parsed.cluster, profile_export=parsed.profile_export, service=parsed.service,
        source_files=source_files,
    )


def _check_cross_fields(cfg: _ConfigFile, problems: Problems) -> None:
    check_history(cfg.data, cfg.generate_data, problems)
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
    check_cluster(cl, problems)
    check_pairs(cl, problems)
    # A retailer's log has its history only once stage 01 read it: stage 04 checks the snapshots then.
    if cfg.data.source == "synthetic" and cfg.data.history_start < cfg.data.history_end:
        check_snapshots(cl.snapshots, cfg.data.history_start, cfg.data.history_end, problems,
                        " of data.history_start and data.history_end")
    check_train_autoencoder(cfg.train_autoencoder, problems)
    truth = cl.evaluation.ground_truth
    if truth is not None:
        allowed = [c for c in CUSTOMER_COLUMNS if c != "customer_id" and c not in IDENTITY_COLUMNS]
        if truth not in allowed:
            problems.add("cluster.evaluation.ground_truth",
                         f"'{truth}' is not a column of customers.parquet that can be a ground truth"
                         f"{suggest(truth, allowed)}; allowed: {', '.join(allowed)}, or null for none")
    if not cfg.prepare_features.model_features:
        problems.add("prepare_features.model_features", "empty; list at least one feature")
    check_prepare_features(cfg.prepare_features, problems)
    check_customer_value(cfg.customer_value, problems)
    check_service(cfg.service, problems)
    export = cfg.profile_export
    low, high = export.value_quantiles
    if not (0 < low < high < 1):
        problems.add("profile_export.value_quantiles", f"[{low}, {high}] must satisfy 0 < low < high < 1")
    if list(export.age_bands) != sorted(set(export.age_bands)):
        problems.add("profile_export.age_bands", f"{list(export.age_bands)} must be strictly ascending")
    leaked = identifier_columns(export.describe_columns)
    if leaked:
        problems.add("profile_export.describe_columns",
                     f"{', '.join(leaked)} look(s) like direct identifiers (names, emails, phones, addresses, "
                     f"ids); segment profiles for agents never carry them: remove them")
    fitted = {f"{m}_{s}" for m, s in fitted_pairs(cl.methods, cl.spaces)}
    for name in export.also_profile:
        if name not in fitted:
            problems.add("profile_export.also_profile", f"'{name}' is not fitted by stage 04; allowed: "
                                                        f"{', '.join(sorted(fitted))}")


def _check_against_hierarchy(cfg: _ConfigFile, hierarchy: Hierarchy, problems: Problems) -> None:
    check_generate_data(cfg.generate_data, hierarchy.merchandise_departments,
                        {d: hierarchy.departments[d].classes for d in hierarchy.merchandise_departments},
                        problems)
    check_model_features(cfg.prepare_features, hierarchy, problems)


__all__ = ["ConfigError", "PipelineConfig", "load_config", "config_hash", "CLUSTER_METHODS", "SPACES"]
