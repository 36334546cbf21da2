"""Stage 02's function: features, eligibility, the three datasets and the scaled model matrix.

:func:`prepare_features` runs the steps in order: the eligible customers'
features (:func:`~core.prepare_features.eligibility.eligible_customer_features`),
the class mix fitted on them, the profile joined, every column given its
role, the model matrix resolved from the config patterns and fitted. What
it fitted is one :class:`FeatureModel` (saved as ``feature-scaler.pkl``),
which turns new order lines into model-matrix rows along the same path:
that is what the score command runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from core.domain.columns import ID_COLUMN
from core.domain.hierarchy import Hierarchy
from core.framework import progress
from core.prepare_features.aggregate import FeatureSettings
from core.prepare_features.columns import (CLASS_MIX, CORE_FEATURES, DEPT_SPEND, DEPT_UNITS, ROLE_GROUND_TRUTH,
                                           ROLE_PROFILE, ROLES, ModelColumns, class_feature_names, column_roles,
                                           profile_columns, resolve_model_columns, sellable_classes)
from core.prepare_features.eligibility import (BASIC_ELIGIBILITY, ELIGIBILITY_RULES, NO_FEATURE_RULES,
                                               EligibleFeatures, eligible_customer_features)
from core.prepare_features.settings import EligibilityConfig, PrepareFeaturesConfig
from core.prepare_features.transformers import (ClassMixEmbedding, ModelMatrixTransformer, add_class_mix,
                                                class_mix_names, class_spend_matrix)


@dataclasses.dataclass(frozen=True)
class FeatureModel:
    """Stage 02's fitted pieces, saved as ``feature-scaler.pkl``: how order lines become model-matrix rows.

    Scoring follows what stage 02 saved, not today's config, so a customer
    scores as it would have trained.

    Attributes
    ----------
    settings : FeatureSettings
        What the features were built with, the attribute share columns
        fixed to the ones built (``attribute_columns``).
    eligibility : EligibilityConfig
        The rules a customer must pass to be segmented.
    sellable_classes : list of (str, str)
        The hierarchy's sellable (department, class) pairs: the class mix's
        input columns. Scoring refuses a hierarchy whose pairs differ.
    class_mix : ClassMixEmbedding or None
        Fitted on the eligible customers; None when it could not be built
        (the reason is in the manifest's ``dropped_features``).
    matrix : ModelMatrixTransformer
        Fitted on the eligible customers' features.
    """

    settings: FeatureSettings
    eligibility: EligibilityConfig
    sellable_classes: list[tuple[str, str]]
    class_mix: ClassMixEmbedding | None
    matrix: ModelMatrixTransformer

    @property
    def columns(self) -> list[str]:
        """The model matrix's columns, in order."""
        return list(self.matrix.columns)

    def customer_features(self, lines, hierarchy: Hierarchy, analysis_date: pd.Timestamp | None) -> EligibleFeatures:
        """The eligible customers' features from order lines, built as stage 02 built the training customers'.

        Parameters
        ----------
        lines : DataFrame, pyarrow.Table or path of a Parquet file
        hierarchy : Hierarchy
            With the :attr:`sellable_classes` of training.
        analysis_date : Timestamp or None
            None = the last ``order_date`` in the lines.

        Returns
        -------
        EligibleFeatures
            With the ``class_mix_*`` columns when :attr:`class_mix` is set.
        """
        eligible = eligible_customer_features(lines, hierarchy, analysis_date, self.settings, self.eligibility)
        return with_class_mix(eligible, self.class_mix)

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """The model matrix of ``features``, float32 like ``features.parquet`` (what stages 03 and 04 fit on).

        Parameters
        ----------
        features : DataFrame
            One row per customer with the :attr:`columns`.

        Returns
        -------
        ndarray of float32, shape (n_customers, len(columns))
        """
        return self.matrix.transform(features).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PreparedFeatures:
    """Everything stage 02 writes, and what its manifest records.

    ``enriched_class`` is not held whole (a million customers times 664
    float32 class columns is 2.7 GB): :meth:`enriched_class_batches` builds
    it a batch of customers at a time from ``class_long``.

    Attributes
    ----------
    basic : DataFrame
        ``customer_id``, the core features, department spend and units.
    enriched_department : DataFrame
        ``customer_id``, the dates, every feature, profile and ground truth.
    class_long : DataFrame
        Non-zero class totals per customer (see
        :attr:`~core.prepare_features.aggregate.CustomerFeatures.class_long`).
    class_columns : list of str
        The class columns of ``enriched_class`` (spend, then units).
    model_matrix : DataFrame
        ``customer_id`` and the scaled columns, float32.
    feature_model : FeatureModel
        What was fitted (``feature-scaler.pkl``).
    analysis_date : Timestamp
    excluded : DataFrame
        ``customer_id``, ``rule``, ``reason``, sorted by id.
    roles : dict of str to str
        Every column's role.
    details : dict
        For the manifest.
    """

    basic: pd.DataFrame
    enriched_department: pd.DataFrame
    class_long: pd.DataFrame
    class_columns: list[str]
    model_matrix: pd.DataFrame
    feature_model: FeatureModel
    analysis_date: pd.Timestamp
    excluded: pd.DataFrame
    roles: dict[str, str]
    details: dict[str, Any]

    def enriched_class_batches(self, batch_rows: int = 100_000) -> Iterator[pa.Table]:
        """``enriched_class.parquet`` a batch of customers at a time, as Arrow tables ready to write.

        Each batch is the batch's rows of ``enriched_department`` followed by
        float32 spend then units per sellable merchandise class
        (:attr:`class_columns`).
        """
        ids = self.enriched_department[ID_COLUMN].to_numpy()
        long_ids = self.class_long[ID_COLUMN].to_numpy()
        col = self.class_long["class_idx"].to_numpy(np.int64)
        spend = self.class_long["spend"].to_numpy(np.float32)
        units = self.class_long["units"].to_numpy(np.float32)
        n_classes = len(self.class_columns) // 2
        for start in range(0, len(ids), batch_rows):
            batch_ids = ids[start:start + batch_rows]
            # Both tables are sorted by customer: a batch's class rows are one slice.
            lo = np.searchsorted(long_ids, batch_ids[0], side="left")
            hi = np.searchsorted(long_ids, batch_ids[-1], side="right")
            rows = np.searchsorted(batch_ids, long_ids[lo:hi])
            # One contiguous row per column, so Arrow takes each without a copy.
            values = np.zeros((2 * n_classes, len(batch_ids)), dtype=np.float32)
            values[col[lo:hi], rows] = spend[lo:hi]
            values[n_classes + col[lo:hi], rows] = units[lo:hi]
            part = pa.Table.from_pandas(self.enriched_department.iloc[start:start + batch_rows], preserve_index=False)
            yield pa.Table.from_arrays(part.columns + [pa.array(v) for v in values],
                                       names=part.column_names + self.class_columns)

    @property
    def class_spend_long(self) -> pd.DataFrame:
        """``class_spend_long.parquet``: customer_id, department, class, spend, units (non-zero only)."""
        return self.class_long.drop(columns=["class_idx", "row"])

    @property
    def enriched_class(self) -> pd.DataFrame:
        """The whole of ``enriched_class.parquet`` in memory (small data and tests only)."""
        return pa.concat_tables(self.enriched_class_batches()).to_pandas()


def prepare_features(lines, customers: pd.DataFrame | None, hierarchy: Hierarchy, model_patterns: Iterable[str],
                     log1p_patterns: Iterable[str], analysis_date: pd.Timestamp | None = None,
                     eligibility: EligibilityConfig = BASIC_ELIGIBILITY,
                     settings: FeatureSettings = FeatureSettings(), scaler: str = "standard",
                     class_mix_components: int = 12, sqrt_patterns: Iterable[str] = ()) -> PreparedFeatures:
    """Features, eligibility, the three datasets and the scaled model matrix.

    Parameters
    ----------
    lines : DataFrame, pyarrow.Table or path of a Parquet file
        Order lines (see :func:`~core.prepare_features.aggregate.build_customer_features`).
    customers : DataFrame or None
        ``customers.parquet``: its profile and ground-truth columns join the
        enriched datasets; identity columns never do.
    hierarchy : Hierarchy
    model_patterns, log1p_patterns : iterable of str
        fnmatch patterns over behavioural features
        (:func:`~core.prepare_features.columns.resolve_model_columns`).
    analysis_date : Timestamp, optional
        Defaults to the last ``order_date`` in the lines.
    eligibility : EligibilityConfig
    settings : FeatureSettings
    scaler : {"standard", "robust"}
        How the model matrix is scaled (:class:`ModelMatrixTransformer`).
    class_mix_components : int
        Columns of the class-mix embedding (:class:`ClassMixEmbedding`,
        fitted on the eligible customers); 0 = none.
    sqrt_patterns : iterable of str
        fnmatch patterns of the model features square-rooted before scaling
        (shares of a whole; :class:`ModelMatrixTransformer`).

    Returns
    -------
    PreparedFeatures
        Every dataset holds the eligible customers, sorted by id.

    Raises
    ------
    ValueError
        If no customer is eligible, a pattern names a non-feature column, or
        the lines lack a required column.
    """
    eligible = eligible_customer_features(lines, hierarchy, analysis_date, settings, eligibility,
                                          customers=customers)
    _require_someone_eligible(eligible)
    progress.report(0.96, "eligibility")
    class_columns = class_feature_names(hierarchy) if "dept_*" not in eligible.dropped else []
    class_mix, why_no_mix = _fit_class_mix(eligible, len(class_columns) // 2, class_mix_components)
    if why_no_mix:
        eligible = dataclasses.replace(eligible, dropped={**eligible.dropped, f"{CLASS_MIX}*": why_no_mix})
    progress.report(0.99, "class mix fitted")
    eligible = with_class_mix(eligible, class_mix)
    features = _join_profile(eligible.features, customers)
    roles = column_roles(list(features.columns) + class_columns, eligible.feature_columns + class_columns,
                         profile_columns(customers.columns) if customers is not None else ())
    # Class columns are behavioural but too many and too sparse to model: the matrix draws from the
    # department-level features only.
    model_roles = {c: r for c, r in roles.items() if c not in set(class_columns)}
    chosen = resolve_model_columns(model_patterns, log1p_patterns, model_roles, eligible.dropped, sqrt_patterns)
    model = FeatureModel(settings=settings.with_attribute_columns(eligible.feature_columns), eligibility=eligibility,
                         sellable_classes=sellable_classes(hierarchy), class_mix=class_mix,
                         matrix=ModelMatrixTransformer(columns=chosen.columns, log1p_columns=chosen.log1p_columns,
                                                       scaler=scaler, sqrt_columns=chosen.sqrt_columns).fit(features))
    matrix = pd.DataFrame(model.transform(features), columns=model.columns)
    matrix.insert(0, ID_COLUMN, features[ID_COLUMN].to_numpy())
    excluded = eligible.excluded.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    return PreparedFeatures(basic=features[_basic_columns(eligible.feature_columns)], enriched_department=features,
                            class_long=eligible.class_long, class_columns=class_columns, model_matrix=matrix,
                            feature_model=model, analysis_date=eligible.analysis_date, excluded=excluded,
                            roles=roles, details=_details(eligible, excluded, roles, chosen, model))


def prepare_features_from_config(lines, customers: pd.DataFrame | None, hierarchy: Hierarchy,
                                 cfg: PrepareFeaturesConfig, source: str = "synthetic") -> PreparedFeatures:
    """:func:`prepare_features` with the config section ``prepare_features``: what the stage and its benchmark run.

    ``source`` (``data.source``) decides whether the configured seasons apply
    (:meth:`~core.prepare_features.aggregate.FeatureSettings.from_config`).
    """
    return prepare_features(lines, customers, hierarchy, cfg.model_features, cfg.log1p_features,
                            pd.Timestamp(cfg.analysis_date) if cfg.analysis_date else None,
                            eligibility=cfg.eligibility, settings=FeatureSettings.from_config(cfg, source),
                            scaler=cfg.scaler, class_mix_components=cfg.class_mix_components,
                            sqrt_patterns=cfg.sqrt_features)


def with_class_mix(eligible: EligibleFeatures, class_mix: ClassMixEmbedding | None) -> EligibleFeatures:
    """``eligible`` with the fitted embedding's ``class_mix_*`` columns added (unchanged without one or customers)."""
    if class_mix is None or eligible.features.empty:
        return eligible
    return dataclasses.replace(eligible, features=add_class_mix(eligible.features, eligible.class_long, class_mix),
                               feature_columns=eligible.feature_columns + class_mix_names(class_mix))


def _require_someone_eligible(eligible: EligibleFeatures) -> None:
    """Stop when no customer is left to segment, saying whether features or the rules left nobody."""
    if not eligible.features.empty:
        return
    failed = eligible.failed_rules
    if failed.empty:
        raise ValueError(f"no customer has a purchase on or before the analysis date "
                         f"{eligible.analysis_date.date()}")
    raise ValueError(f"no customer passes the eligibility rules ({len(failed):,} with features all fail "
                     f"them: {failed['rule'].value_counts().to_dict()})")


def _fit_class_mix(eligible: EligibleFeatures, n_classes: int,
                   n_components: int) -> tuple[ClassMixEmbedding | None, str | None]:
    """The class-mix embedding fitted on the eligible customers, or None and why it cannot be built."""
    why = ("prepare_features.class_mix_components is 0" if n_components == 0
           else eligible.dropped.get("dept_*") if n_classes == 0
           else "the hierarchy has fewer than 2 sellable classes" if n_classes < 2
           else "fewer than 2 eligible customers" if len(eligible.features) < 2
           else None)
    if why:
        return None, why
    shares = class_spend_matrix(eligible.class_long, eligible.features[ID_COLUMN].to_numpy(), n_classes)
    if shares.nnz == 0:
        return None, "no line falls in a sellable class of the hierarchy"
    return ClassMixEmbedding(n_components=n_components).fit(shares), None


def _join_profile(features: pd.DataFrame, customers: pd.DataFrame | None) -> pd.DataFrame:
    """``features`` with the customer table's profile and ground-truth columns (never identities) joined."""
    if customers is None:
        return features
    profile = customers[[ID_COLUMN] + profile_columns(customers.columns)].drop_duplicates(ID_COLUMN)
    return features.merge(profile, on=ID_COLUMN, how="left", validate="one_to_one")


def _basic_columns(feature_columns: list[str]) -> list[str]:
    """``basic.parquet``'s columns: customer_id, the core features, department spend and units."""
    return [ID_COLUMN] + list(CORE_FEATURES) + [c for c in feature_columns if c.startswith((DEPT_SPEND, DEPT_UNITS))]


def _details(eligible: EligibleFeatures, excluded: pd.DataFrame, roles: dict[str, str], chosen: ModelColumns,
             model: FeatureModel) -> dict[str, Any]:
    """The manifest's ``details`` of stage 02."""
    rules_counts = {r: 0 for r in NO_FEATURE_RULES + ELIGIBILITY_RULES}
    rules_counts.update(excluded["rule"].value_counts().to_dict())
    scaler, class_mix = model.matrix.scaler_, model.class_mix
    center = scaler.center_ if hasattr(scaler, "center_") else scaler.mean_
    return {
        "analysis_date": eligible.analysis_date.date().isoformat(),
        "customers": len(eligible.features),
        "excluded_customers": {k: int(v) for k, v in rules_counts.items()},
        "eligibility": dataclasses.asdict(model.eligibility),
        "lines": eligible.lines,
        "dropped_features": eligible.dropped,
        "column_roles": {role: sum(r == role for r in roles.values()) for role in ROLES},
        "profile_columns": [c for c, r in roles.items() if r in (ROLE_PROFILE, ROLE_GROUND_TRUTH)],
        "model_matrix": {"columns": chosen.columns, "log1p_columns": chosen.log1p_columns,
                         "sqrt_columns": chosen.sqrt_columns,
                         "scaler": type(scaler).__name__,
                         "center": [round(float(v), 6) for v in center],
                         "scale": [round(float(v), 6) for v in scaler.scale_],
                         "class_mix": None if class_mix is None else {
                             "components": len(class_mix.components_),
                             "explained_variance_ratio": [round(float(v), 4)
                                                          for v in class_mix.explained_variance_ratio_]},
                         "patterns_without_data": chosen.patterns_without_data},
    }
