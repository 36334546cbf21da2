"""Shared fixtures: a small but complete configuration written to a temporary folder."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from core.framework import paths

SHIPPED_CONFIG = paths.REPO_ROOT / "config"


def small_config_document() -> dict:
    """The shipped config.yml, shrunk to a few hundred customers and short training."""
    doc = yaml.safe_load((SHIPPED_CONFIG / "config.yml").read_text(encoding="utf-8"))
    doc["data"].update(n_customers=300, history_start="2023-01-01", history_end="2023-12-31")
    doc["generate_data"]["chunk_size"] = 120  # several chunks even on small data
    # A one-year history: the customer-value holdout check needs horizon_days + 90 days of it to run.
    doc["customer_value"]["horizon_days"] = 120
    doc["train_autoencoder"].update(hidden_units=[16, 8], latent_dim=4, epochs=15, batch_size=64,
                                    early_stopping_patience=5)
    cluster = doc["cluster"]
    # One process: worker start-up would cost more than the fits of 300 customers.
    cluster.update(silhouette_sample_size=300, selection_sample_size=300, n_jobs=1)
    # min_samples 2 (the shipped config has 1): with customers who differ within their persona, 5 left
    # HDBSCAN no cluster at all in the latent space of these 300 customers.
    cluster["hdbscan"].update(min_cluster_size_fraction=0.05, min_samples=2)
    cluster["gmm"]["n_components"] = [2, 5]
    cluster["fcm"].update(n_clusters=[2, 5], max_iter=100)
    cluster["kmeans"]["n_clusters"] = [2, 5]
    cluster["countmix"]["n_components"] = [2, 5]
    cluster["evaluation"].update(reseeds=2, bootstraps=2, stability_sample_size=300, reference_sample_size=300)
    return doc


def write_config(folder: Path, document: dict, **others: dict) -> Path:
    """Write ``document`` as config.yml in ``folder`` beside the files it names.

    ``others`` maps a file stem (``hierarchy``, ``personas``, ``strategies``)
    to a document written in place of the shipped file; files not given are
    copied from ``config/``. Returns the path of config.yml.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("hierarchy", "personas", "strategies"):
        if stem in others:
            (folder / f"{stem}.yml").write_text(
                yaml.safe_dump(copy.deepcopy(others[stem]), sort_keys=False, allow_unicode=True), encoding="utf-8")
        else:
            shutil.copy(SHIPPED_CONFIG / f"{stem}.yml", folder / f"{stem}.yml")
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(copy.deepcopy(document), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


@pytest.fixture
def small_config_path(tmp_path: Path) -> Path:
    """Path of a small, valid config.yml in a fresh temporary folder."""
    return write_config(tmp_path / "config", small_config_document())
