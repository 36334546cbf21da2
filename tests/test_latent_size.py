"""Tests of the latent size chosen from the data (core/train_autoencoder/latent_size.py, ``latent_dim: 0``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import small_config_document, write_config

from core.config import load_config
from core.framework import paths
from core.pipeline import run_pipeline
from core.train_autoencoder.latent_size import choose_latent_dim


def factors(n_rows: int, n_factors: int, n_columns: int, seed: int) -> np.ndarray:
    """``n_factors`` independent factors of falling strength (3, 2.5, 2, ...) mixed into noisy columns, scaled.

    Scaled to unit variance as stage 02 scales the model matrix: shuffled columns keep each column's variance, so
    with unequal variances the chance spectrum would start at the largest column variance.
    """
    rng = np.random.default_rng(seed)
    loadings = np.zeros((n_factors, n_columns))
    for f in range(n_factors):  # each factor drives its own block of columns, so none hides another
        loadings[f, f::n_factors] = 3.0 - 0.5 * f
    X = rng.normal(size=(n_rows, n_factors)) @ loadings + rng.normal(size=(n_rows, n_columns))
    return (X - X.mean(axis=0)) / X.std(axis=0)


@pytest.mark.parametrize("n_factors", [2, 4, 6])
def test_the_number_of_factors_behind_the_columns_is_found(n_factors):
    choice = choose_latent_dim(factors(2000, n_factors, 24, seed=n_factors), max_dim=15)
    assert choice.components_above_chance == n_factors
    assert choice.latent_dim == n_factors


def test_columns_without_any_relation_give_the_smallest_size_and_a_ceiling_caps_the_count():
    noise = np.random.default_rng(0).normal(size=(2000, 20))
    assert choose_latent_dim(noise, max_dim=15).components_above_chance <= 1  # chance alone: at most a fluke
    assert choose_latent_dim(noise, max_dim=15).latent_dim == 2
    capped = choose_latent_dim(factors(2000, 6, 24, seed=1), max_dim=4)
    assert (capped.components_above_chance, capped.latent_dim) == (6, 4)


def test_the_choice_is_seeded_and_refuses_a_matrix_it_cannot_use():
    X = factors(6000, 3, 12, seed=2)  # above sample_size: the sample is drawn from random_state
    assert choose_latent_dim(X, max_dim=8, random_state=5) == choose_latent_dim(X, max_dim=8, random_state=5)
    with pytest.raises(ValueError, match="at least 3 rows"):
        choose_latent_dim(X[:2], max_dim=8)
    with pytest.raises(ValueError, match="max_dim must be at least 1"):
        choose_latent_dim(X, max_dim=0)


@pytest.fixture(scope="module")
def chain_with_auto_latent(tmp_path_factory):
    """Stages 01 to 03 on the tests' small generated data with ``latent_dim: 0``."""
    root = tmp_path_factory.mktemp("auto_latent")
    document = small_config_document()
    document["train_autoencoder"]["latent_dim"] = 0
    config = load_config(write_config(root / "config", document))
    artifacts = root / "artifacts"
    for stage in (paths.GENERATE_DATA, paths.PREPARE_FEATURES, paths.TRAIN_AUTOENCODER):
        run_pipeline(config, artifacts, only=stage)
    return config, artifacts


def test_stage_03_trains_the_size_the_generated_customers_features_call_for(chain_with_auto_latent):
    config, artifacts = chain_with_auto_latent
    matrix = pd.read_parquet(paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.FEATURES)
    X = matrix.drop(columns="customer_id").to_numpy(np.float32)
    expected = choose_latent_dim(X, max_dim=min(config.train_autoencoder.hidden_units) - 1, random_state=config.seed)
    # The generated personas differ in many ways (departments, tiers, value, frequency): more than 2 directions.
    assert 2 < expected.components_above_chance
    assert 2 < expected.latent_dim < min(config.train_autoencoder.hidden_units)
    latent = pd.read_parquet(paths.stage_dir(artifacts, paths.TRAIN_AUTOENCODER) / paths.LATENT)
    assert [c for c in latent.columns if c.startswith("latent_")] == [f"latent_{i}" for i in range(expected.latent_dim)]
    manifest = json.loads((paths.stage_dir(artifacts, paths.TRAIN_AUTOENCODER) / paths.MANIFEST).read_text())
    assert manifest["details"]["latent_dim"] == expected.latent_dim
    assert manifest["details"]["latent_dim_choice"]["components_above_chance"] == expected.components_above_chance
