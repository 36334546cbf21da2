"""End-to-end behaviour of the five-stage chain: outputs, invariants, reruns, determinism, failures."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from conftest import small_config_document, write_config
from test_report_browser import assert_page_renders, needs_chromium
from test_segmentation import COMPARISON_CSV_COLUMNS
from core.framework import paths
from core.cluster.settings import fitted_pairs
from core.config import CLUSTER_METHODS, SPACES, load_config
from core.domain.tables import CUSTOMER_COLUMNS, IDENTITY_COLUMNS, TRANSACTION_COLUMNS
from core.pipeline import (PipelineError, all_stages, main, pipeline_status, run_pipeline, run_stage,
                           show_stage)

PROFILE_COLUMNS = [c for c in CUSTOMER_COLUMNS if c != "customer_id" and c not in IDENTITY_COLUMNS]


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> tuple[Path, Path]:
    """One full run on the small config: (config path, artifacts folder). Treat as read-only."""
    root = tmp_path_factory.mktemp("pipeline")
    config_path = write_config(root / "config", small_config_document())
    artifacts_dir = root / "artifacts"
    outcome = run_pipeline(load_config(config_path), artifacts_dir)
    assert set(outcome.values()) == {"ran"}
    return config_path, artifacts_dir


def read(artifacts_dir: Path, stage: str, file: str) -> pd.DataFrame:
    return pd.read_parquet(paths.stage_dir(artifacts_dir, stage) / file)


def sha256_of(path: Path) -> str:
    """The file's SHA-256, computed here rather than by the code under test."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_run(pipeline_run, destination: Path) -> tuple[Path, Path]:
    config_path, artifacts_dir = pipeline_run
    shutil.copytree(config_path.parent, destination / "config")
    shutil.copytree(artifacts_dir, destination / "artifacts")
    return destination / "config" / "config.yml", destination / "artifacts"


def rerun_with(pipeline_run, tmp_path, change) -> tuple[Path, Path]:
    """Copy the shared run, apply ``change`` to its config document, and return (config, artifacts)."""
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    change(document)
    config_path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return config_path, artifacts_dir


# --- outputs and invariants -------------------------------------------------


def test_every_stage_writes_a_complete_manifest(pipeline_run):
    """Each manifest records config and hash, hashed inputs, hashed outputs with rows, seed, versions, timing."""
    _, artifacts_dir = pipeline_run
    for name in paths.STAGE_NAMES:
        manifest = json.loads((paths.stage_dir(artifacts_dir, name) / paths.MANIFEST).read_text())
        assert manifest["stage"] == name
        assert manifest["seed"] == 42
        assert len(manifest["config_hash"]) == 64 and manifest["config"]
        assert manifest["duration_seconds"] >= 0 and manifest["started_at"]
        assert {"numpy", "pandas", "scikit-learn", "keras"} <= set(manifest["library_versions"])
        for record in manifest["outputs"]:
            path = paths.stage_dir(artifacts_dir, name) / record["file"]
            assert record["sha256"] == sha256_of(path), (name, record["file"])
            if path.suffix == ".parquet":
                assert record["rows"] == len(pd.read_parquet(path))
        stage = dict((s.name, s) for s in all_stages())[name]
        declared = {(up, f) for up, files in stage.inputs.items() for f in files}
        assert {(r["stage"], r["file"]) for r in manifest["inputs"]} == declared
        # Each input as this stage read it: the file the earlier stage wrote, byte for byte and row for row.
        for record in manifest["inputs"]:
            path = paths.stage_dir(artifacts_dir, record["stage"]) / record["file"]
            assert record["sha256"] == sha256_of(path), (name, record["file"])
            if path.suffix == ".parquet":
                assert record["rows"] == len(pd.read_parquet(path)), (name, record["file"])


def test_generated_tables_have_the_documented_columns(pipeline_run):
    _, artifacts_dir = pipeline_run
    transactions = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    customers = read(artifacts_dir, paths.GENERATE_DATA, paths.CUSTOMERS)
    products = read(artifacts_dir, paths.GENERATE_DATA, paths.PRODUCTS)
    assert list(transactions.columns) == list(TRANSACTION_COLUMNS)
    assert str(transactions["original_order_id"].dtype) == "Int64", "ids must not come back as floats"
    assert transactions["original_order_id"].isna().to_numpy().tolist() == (~transactions["is_return"]).tolist()
    assert list(customers.columns) == list(CUSTOMER_COLUMNS)
    assert {"sku", "department", "class", "base_price"} <= set(products.columns)
    assert customers["customer_id"].is_unique and len(customers) == 300
    assert set(transactions["sku"].dropna()) <= set(products["sku"])


def test_each_customer_has_exactly_one_assignment_or_is_excluded(pipeline_run):
    _, artifacts_dir = pipeline_run
    customers = read(artifacts_dir, paths.GENERATE_DATA, paths.CUSTOMERS)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    excluded = read(artifacts_dir, paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS)
    assert assignments["customer_id"].is_unique
    assert not set(assignments["customer_id"]) & set(excluded["customer_id"])
    assert sorted(assignments["customer_id"].tolist() + excluded["customer_id"].tolist()) == \
        sorted(customers["customer_id"])


def test_assignments_hold_label_and_strength_for_every_method_and_space(pipeline_run):
    _, artifacts_dir = pipeline_run
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    comparison = pd.read_csv(paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON)
    clusters = {(m, s): n for m, s, n in zip(comparison["method"], comparison["space"], comparison["clusters"])}
    for method, space in fitted_pairs(CLUSTER_METHODS, SPACES):
        labels = assignments[f"{method}_{space}_label"]
        strength = assignments[f"{method}_{space}_strength"]
        assert labels.min() >= -1
        assert strength.between(0, 1).all()
        assert (paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.cluster_model_file(method, space)).exists()
        if clusters[(method, space)] == 0:
            # Only HDBSCAN may find no cluster at all (the small config's barely trained latent space can
            # hold no dense region): everyone is noise, with nothing to be reassigned to, and no soft table.
            assert method == "hdbscan" and (labels == -1).all() and assignments[f"{method}_{space}_noise"].all()
            assert f"{method}_{space}_uncertainty" not in assignments
            continue
        if method not in ("kmeans", "sharpkmeans"):  # hard assignments: no membership table
            assert assignments[f"{method}_{space}_uncertainty"].between(0, 1).all()
            soft = read(artifacts_dir, paths.CLUSTER, paths.membership_file(method, space))
            assert (soft["customer_id"] == assignments["customer_id"]).all()
            assert (soft.drop(columns="customer_id").sum(axis=1) <= 1 + 1e-5).all()
    assert sorted(zip(comparison["method"], comparison["space"])) == [
        ("countmix", "counts"), ("fcm", "latent"), ("fcm", "raw"), ("gmm", "latent"), ("gmm", "raw"),
        ("hdbscan", "latent"), ("hdbscan", "raw"), ("kmeans", "latent"), ("kmeans", "raw"),
        ("sharpkmeans", "latent"), ("sharpkmeans", "raw")]
    assert list(comparison.columns) == COMPARISON_CSV_COLUMNS
    found_some = [space for space in ("raw", "latent") if clusters[("hdbscan", space)] > 0]
    assert found_some, "HDBSCAN found clusters in at least one space"
    for space in found_some:
        assert (assignments[f"hdbscan_{space}_label"] != -1).all(), "noise customers get their most likely segment"
    document = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    primary = document["primary"]
    assert primary["reason"].startswith("auto:") and document["ground_truth"] == "persona"
    assert (assignments["segment"] == assignments[f"{primary['method']}_{primary['space']}_label"]).all()
    latent = read(artifacts_dir, paths.TRAIN_AUTOENCODER, paths.LATENT)
    np.testing.assert_array_equal(assignments["reconstruction_error"], latent["reconstruction_error"])
    manifest = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.MANIFEST).read_text())
    assert manifest["details"]["primary"] == primary


def test_the_comparison_measures_how_well_the_segments_recover_the_personas(pipeline_run):
    """Each row's ARI is the agreement of that segmentation's labels with the customers' personas, recomputed
    here from the saved tables; the primary recovers the personas far better than chance, and about as well as the
    supervised reference (a classifier that saw the personas)."""
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    personas = read(artifacts_dir, paths.GENERATE_DATA, paths.CUSTOMERS).set_index("customer_id")["persona"]
    persona = assignments["customer_id"].map(personas)
    comparison = pd.read_csv(folder / paths.COMPARISON).set_index(["method", "space"])
    for (method, space), row in comparison.iterrows():
        recomputed = adjusted_rand_score(persona, assignments[f"{method}_{space}_label"])
        assert row["ari"] == pytest.approx(recomputed, abs=1e-12), (method, space)
    document = json.loads((folder / paths.COMPARISON_JSON).read_text())
    primary_ari = comparison.loc[(document["primary"]["method"], document["primary"]["space"]), "ari"]
    reference_ari = document["supervised_reference"]["raw"]["ari"]
    # Measured on this config (seed 42, about 275 segmented customers over one year) with customers who differ
    # within their persona, shop for households and change persona (issues 13 and 16), and the label-free
    # primary: reference 0.702, primary 0.415, best of eight 0.417, the primary's labels against shuffled
    # personas at most 0.011 over 50 shuffles. Before (customers who were copies of their persona): primary
    # hdbscan_raw 0.568, reference 0.868. These floors fail when the personas are misaligned with the customers
    # (ARI about 0), the primary drops to half of what it reaches, or the reference stops learning them.
    # Since the sharpened k-means (docs/decisions.md, sixth round): primary sharpkmeans_raw, 11 segments, 0.736 (the
    # other raw methods 0.415 to 0.429).
    assert primary_ari > 0.35
    assert reference_ari > 0.5
    # Far better than chance, measured: the same labels against shuffled personas (same sizes) stay near 0.
    rng = np.random.default_rng(0)
    primary_labels = assignments[f"{document['primary']['method']}_{document['primary']['space']}_label"]
    chance = [adjusted_rand_score(rng.permutation(persona.to_numpy()), primary_labels) for _ in range(50)]
    assert primary_ari > 3 * max(max(chance), 0.01), (primary_ari, max(chance))
    # The reference is no strict ceiling: its classifier learns from two thirds of 275 customers in each fold, while
    # the clustering sees all of them (0.736 against 0.702 here; on the 4,000-customer persona sets tune-b and set-6
    # clusterings reach 1.2 to 1.4 times it). A primary far above it would mean the reference stopped learning.
    assert primary_ari < 1.25 * reference_ari, (primary_ari, reference_ari)


def test_primary_auto_sets_aside_the_latent_space_of_the_small_configs_untrained_network(pipeline_run):
    """15 epochs on 283 customers (226 trained on) leave the network near its random start: 0.019 explained (held-out
    loss 0.979 against 0.998 for the column means), latent ARIs 0.04 to 0.10. auto chooses among the raw-space
    segmentations, says why, and the latent ones are still compared."""
    _, artifacts_dir = pipeline_run
    history = json.loads((paths.stage_dir(artifacts_dir, paths.TRAIN_AUTOENCODER) / paths.TRAINING_HISTORY)
                         .read_text())
    explained = history["explained"]
    assert explained["on"] == "held-out rows" and explained["share"] < 0.1
    assert explained["share"] == pytest.approx(1 - explained["loss"] / explained["mean_loss"])
    manifest = json.loads((paths.stage_dir(artifacts_dir, paths.TRAIN_AUTOENCODER) / "manifest.json").read_text())
    assert manifest["details"]["explained"] == explained
    document = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    assert document["latent_explained"] == explained
    assert document["primary"]["space"] == "raw"
    assert "set aside: latent space: the autoencoder explains" in document["primary"]["reason"]
    assert list(document["label_free_primary"]["set_aside"]) == ["latent"]
    assert {row["space"] for row in document["methods"]} == {"raw", "latent", "counts"}


def test_a_refit_with_the_same_seed_gives_the_same_segments(pipeline_run):
    """The basis of the reseed stability: the same rows and seed give the same partition (ARI exactly 1), so
    only another seed may move a customer; HDBSCAN uses no seed, and its reseed stability is exactly 1."""
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    matrix = read(artifacts_dir, paths.PREPARE_FEATURES, paths.FEATURES).drop(columns="customer_id").to_numpy(float)
    for method in ("hdbscan", "gmm", "fcm", "kmeans"):
        saved = joblib.load(folder / paths.cluster_model_file(method, "raw"))
        refit = clone(saved).fit(matrix)  # the saved params, random_state included; unfitted again
        assert adjusted_rand_score(refit.assign(matrix).labels, assignments[f"{method}_raw_label"]) == 1.0, method
    comparison = pd.read_csv(folder / paths.COMPARISON).set_index(["method", "space"])
    assert (comparison.loc["hdbscan", "stability_reseed"] == 1.0).all()


def test_no_profile_column_reaches_basic_or_features(pipeline_run):
    _, artifacts_dir = pipeline_run
    for file in (paths.BASIC, paths.FEATURES):
        columns = set(read(artifacts_dir, paths.PREPARE_FEATURES, file).columns)
        assert not columns & set(PROFILE_COLUMNS), file
    enriched = read(artifacts_dir, paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT)
    assert set(PROFILE_COLUMNS) <= set(enriched.columns)


def test_feature_revenue_equals_the_sum_of_transactions(pipeline_run):
    """Net revenue is the sum of the customer's merchandise (and Unknown-department) lines."""
    config_path, artifacts_dir = pipeline_run
    hierarchy = load_config(config_path).hierarchy
    transactions = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    basic = read(artifacts_dir, paths.PREPARE_FEATURES, paths.BASIC).set_index("customer_id")
    other_kinds = [d for d, dept in hierarchy.departments.items() if dept.kind != "merchandise"]
    spend = transactions[~transactions["department"].isin(other_kinds)]
    per_customer = spend.groupby("customer_id")["line_amount"].sum().reindex(basic.index)
    np.testing.assert_allclose(basic["net_revenue"].to_numpy(), per_customer.to_numpy(), rtol=1e-9, atol=1e-6)


def test_stage_02_manifest_records_eligibility_dropped_features_and_the_model_matrix(pipeline_run):
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES)
    details = json.loads((folder / paths.MANIFEST).read_text(encoding="utf-8"))["details"]
    excluded = read(artifacts_dir, paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS)
    assert details["excluded_customers"] == {**{rule: 0 for rule in details["excluded_customers"]},
                                             **excluded["rule"].value_counts().to_dict()}
    transactions = pd.read_parquet(paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS)
    for column, feature in (("discount_amount", "discount_share"), ("brand_tier", "brand_tier_share__*"),
                            ("size", "kids_size_share")):
        has_data = column in transactions and transactions[column].notna().any()
        assert (feature in details["dropped_features"]) != has_data, column
    features = read(artifacts_dir, paths.PREPARE_FEATURES, paths.FEATURES)
    assert details["model_matrix"]["columns"] == list(features.columns[1:])
    assert {"dept_entropy", "holiday_share", "class_mix_01"} <= set(details["model_matrix"]["columns"])
    long = read(artifacts_dir, paths.PREPARE_FEATURES, paths.CLASS_SPEND_LONG)
    wide = read(artifacts_dir, paths.PREPARE_FEATURES, paths.ENRICHED_CLASS).set_index("customer_id")
    spend = wide.filter(like="class_spend__").to_numpy().sum()
    assert long["spend"].sum() == pytest.approx(spend, rel=1e-5) and (long[["spend", "units"]] != 0).any(axis=1).all()


def test_latent_and_model_matrix_cover_the_same_customers(pipeline_run):
    config_path, artifacts_dir = pipeline_run
    features = read(artifacts_dir, paths.PREPARE_FEATURES, paths.FEATURES)
    latent = read(artifacts_dir, paths.TRAIN_AUTOENCODER, paths.LATENT)
    assert (features["customer_id"].to_numpy() == latent["customer_id"].to_numpy()).all()
    latent_dim = load_config(config_path).train_autoencoder.latent_dim
    assert [c for c in latent.columns if c.startswith("latent_")] == [f"latent_{i}" for i in range(latent_dim)]
    assert (latent["reconstruction_error"] >= 0).all()
    png = paths.stage_dir(artifacts_dir, paths.TRAIN_AUTOENCODER) / paths.LOSS_PLOT
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profiles_export_the_same_content_as_json_and_yaml(pipeline_run):
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    as_json = json.loads((folder / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    as_yaml = yaml.safe_load((folder / paths.SEGMENT_PROFILES_YAML).read_text(encoding="utf-8"))
    assert as_json == as_yaml
    insights = pd.read_csv(folder / paths.CLUSTER_INSIGHTS)
    segments = as_json["segments"]
    assert len(insights) == len(segments) == as_json["metadata"]["segments"]
    segmented = len(read(artifacts_dir, paths.PREPARE_FEATURES, paths.BASIC))  # 300 less the excluded
    assert sum(s["size"] for s in segments) == segmented == as_json["metadata"]["customers"]
    assert len({s["name"] for s in segments}) == len(segments)
    described = [s for s in segments if not s["suppressed"]]
    assert described and all(s["description"] and s["top_departments"] and s["strategy"]["channel"]
                             for s in described)
    small = as_json["metadata"]["min_segment_size"]
    assert all((s["size"] < small) == s["suppressed"] for s in segments)
    assert all(set(s) == {"segment_id", "name", "suppressed", "size", "share_of_customers", "reason"}
               for s in segments if s["suppressed"])


# --- restartability -------------------------------------------------------------


def test_second_run_skips_every_stage(pipeline_run, tmp_path):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    outcome = run_pipeline(load_config(config_path), artifacts_dir)
    assert outcome == {name: "skipped" for name in paths.STAGE_NAMES}
    assert all(s.up_to_date for s in pipeline_status(load_config(config_path), artifacts_dir))


# Run in a child: the numbered script as `python 0N_....py` runs it, then the heavy libraries it loaded.
# The script ends through cli.exit_with, which runs the exit handlers and then leaves without the interpreter's
# teardown, so the probe prints from an exit handler; the exit code is the script's.
_SKIP_PROBE = """
import atexit, runpy, sys
script, config, artifacts = sys.argv[1:]
sys.argv = [script, "--config", config, "--artifacts", artifacts]
heavy = ("tensorflow", "keras", "sklearn", "scipy", "duckdb", "matplotlib")
atexit.register(lambda: print(sorted(name for name in heavy if name in sys.modules)))
runpy.run_path(script, run_name="__main__")
"""


def test_an_up_to_date_script_skips_without_loading_tensorflow_or_scikit_learn(pipeline_run, tmp_path):
    """A rerun with everything up to date, script by script, loads none of the heavy libraries.

    They cost seconds per script (TensorFlow alone more than a second): only a
    stage that actually runs imports them.
    """
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    for name in paths.STAGE_NAMES:
        script = paths.REPO_ROOT / f"{name}.py"
        result = subprocess.run([sys.executable, "-c", _SKIP_PROBE, str(script), str(config_path), str(artifacts_dir)],
                                cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "up to date, skipped" in result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", f"{name}.py loaded {result.stdout.strip()}"


def test_changed_config_section_reruns_that_stage_and_the_later_ones(pipeline_run, tmp_path):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path,
                                            lambda d: d["cluster"]["kmeans"].update(n_init=2))
    config = load_config(config_path)

    status = {s.stage: s for s in pipeline_status(config, artifacts_dir)}
    assert status[paths.TRAIN_AUTOENCODER].up_to_date
    assert status[paths.CLUSTER].state == "stale"
    assert "config section 'cluster' changed" in status[paths.CLUSTER].reasons

    outcome = run_pipeline(config, artifacts_dir)
    assert outcome == {paths.GENERATE_DATA: "skipped", paths.PREPARE_FEATURES: "skipped",
                       paths.TRAIN_AUTOENCODER: "skipped", paths.CLUSTER: "ran", paths.PROFILE_EXPORT: "ran"}


def test_edited_output_makes_its_stage_stale(pipeline_run, tmp_path):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    insights = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.CLUSTER_INSIGHTS
    insights.write_text(insights.read_text(encoding="utf-8") + "tampered\n", encoding="utf-8")
    status = {s.stage: s for s in pipeline_status(load_config(config_path), artifacts_dir)}
    assert status[paths.PROFILE_EXPORT].state == "stale"
    assert any("cluster_insights.csv" in r for r in status[paths.PROFILE_EXPORT].reasons)


def test_an_input_rewritten_upstream_is_found_changed_without_hashing_it_again(pipeline_run, tmp_path, monkeypatch):
    """An input its upstream stage rewrote (a rerun: new bytes, a new record in that stage's manifest) makes the
    stage stale, its hash taken from the upstream record while the file is as written there; an input edited
    behind its stage's back (the upstream record no longer matches) is hashed and found changed all the same."""
    from core.framework import artifacts

    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    config = load_config(config_path)
    cluster = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    comparison = cluster / paths.COMPARISON
    comparison.write_text(comparison.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    manifest = json.loads((cluster / paths.MANIFEST).read_text(encoding="utf-8"))
    manifest["outputs"] = [{**r, **artifacts.describe_file(comparison)} if r["file"] == paths.COMPARISON else r
                           for r in manifest["outputs"]]
    (cluster / paths.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    hashed, file_sha256 = [], artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda path, *a, **k: hashed.append(Path(path).name)
                        or file_sha256(path, *a, **k))
    status = {s.stage: s for s in pipeline_status(config, artifacts_dir)}
    assert status[paths.PROFILE_EXPORT].state == "stale"
    assert f"input {paths.CLUSTER}/{paths.COMPARISON} changed" in status[paths.PROFILE_EXPORT].reasons
    assert paths.COMPARISON not in hashed
    assert not [name for name in hashed if name.endswith(".parquet")], hashed
    transitions = cluster / paths.TRANSITIONS
    transitions.write_text(transitions.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    status = {s.stage: s for s in pipeline_status(config, artifacts_dir)}
    assert f"input {paths.CLUSTER}/{paths.TRANSITIONS} changed" in status[paths.PROFILE_EXPORT].reasons
    assert paths.TRANSITIONS in hashed


def test_stage_without_its_inputs_names_the_stage_to_run_first(small_config_path, tmp_path):
    config = load_config(small_config_path)
    with pytest.raises(PipelineError, match=r"needs the outputs of stage 02_prepare_features.*run stage "
                                            r"02_prepare_features first"):
        run_pipeline(config, tmp_path / "empty", only=paths.TRAIN_AUTOENCODER)
    assert not (paths.stage_dir(tmp_path / "empty", paths.TRAIN_AUTOENCODER) / paths.MANIFEST).exists()


def test_failed_stage_leaves_no_manifest_and_blocks_the_next(pipeline_run, tmp_path):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    config = load_config(config_path)
    cluster_stage = dataclasses.replace(dict((s.name, s) for s in all_stages())[paths.CLUSTER], run=None)

    def crashing_run(ctx):
        ctx.write_csv(paths.MIGRATION, pd.DataFrame({"written": ["before the crash"]}))
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError, match="killed mid-stage"):
        run_stage(dataclasses.replace(cluster_stage, run=crashing_run), config, artifacts_dir)
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    assert not (folder / paths.MANIFEST).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
    status = {s.stage: s for s in pipeline_status(config, artifacts_dir)}
    assert status[paths.CLUSTER].state == "missing"
    assert status[paths.PROFILE_EXPORT].state == "stale"
    with pytest.raises(PipelineError, match="stage 04_cluster"):
        run_pipeline(config, artifacts_dir, only=paths.PROFILE_EXPORT)


# --- determinism ----------------------------------------------------------------


def test_same_config_and_seed_give_the_same_outputs(pipeline_run, tmp_path):
    config_path, first = pipeline_run
    second = tmp_path / "artifacts"
    run_pipeline(load_config(config_path), second)
    for stage, file in [(paths.GENERATE_DATA, paths.TRANSACTIONS), (paths.GENERATE_DATA, paths.CUSTOMERS),
                        (paths.PREPARE_FEATURES, paths.ENRICHED_CLASS), (paths.PREPARE_FEATURES, paths.FEATURES),
                        (paths.PREPARE_FEATURES, paths.CLASS_SPEND_LONG),
                        (paths.CLUSTER, paths.ASSIGNMENTS)]:
        pd.testing.assert_frame_equal(read(first, stage, file), read(second, stage, file), obj=file)
    latent_a = read(first, paths.TRAIN_AUTOENCODER, paths.LATENT)
    latent_b = read(second, paths.TRAIN_AUTOENCODER, paths.LATENT)
    np.testing.assert_allclose(latent_a.filter(like="latent_"), latent_b.filter(like="latent_"), atol=1e-6)
    profiles = [json.loads((d / paths.PROFILE_EXPORT / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
                for d in (first, second)]
    for document in profiles:
        document["metadata"].pop("generated_at")  # the one value that records when, not what
    assert profiles[0] == profiles[1]
    pd.testing.assert_frame_equal(read(first, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS),
                                  read(second, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS))


def test_another_seed_gives_other_data(tmp_path):
    document = small_config_document()
    document["seed"] = 7
    config = load_config(write_config(tmp_path / "config", document))
    run_pipeline(config, tmp_path / "artifacts", only=paths.GENERATE_DATA)
    reference = load_config(write_config(tmp_path / "ref", small_config_document()))
    run_pipeline(reference, tmp_path / "ref-artifacts", only=paths.GENERATE_DATA)
    a = read(tmp_path / "artifacts", paths.GENERATE_DATA, paths.TRANSACTIONS)
    b = read(tmp_path / "ref-artifacts", paths.GENERATE_DATA, paths.TRANSACTIONS)
    assert len(a) != len(b) or not a.equals(b)


# --- command line ---------------------------------------------------------------


def test_status_and_show_commands(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    assert main(["status", "--config", str(config_path), "--artifacts", str(artifacts_dir)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}" in out for name in paths.STAGE_NAMES) and "stale" not in out
    assert main(["show", "2", "--config", str(config_path), "--artifacts", str(artifacts_dir), "--rows", "3"]) == 0
    out = capsys.readouterr().out
    segmented = len(read(artifacts_dir, paths.PREPARE_FEATURES, paths.BASIC))
    assert f"basic.parquet: {segmented} rows" in out and "net_revenue" in out and "sha256" in out


def test_missing_input_via_command_line_exits_2_with_the_fix(small_config_path, tmp_path, capsys):
    code = main(["run", "--only", "4", "--config", str(small_config_path), "--artifacts", str(tmp_path / "a")])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs the outputs of stage 02_prepare_features" in err
    assert "run stage 02_prepare_features first" in err
    assert "Traceback" not in err


def test_bad_config_via_command_line_exits_2_naming_the_key(tmp_path, capsys):
    document = small_config_document()
    document["cluster"]["kmeans"]["n_cluster"] = [2, 4]
    path = write_config(tmp_path / "config", document)
    assert main(["status", "--config", str(path), "--artifacts", str(tmp_path / "a")]) == 2
    code = main(["run", "--config", str(path), "--artifacts", str(tmp_path / "a")])
    assert code == 2
    assert not (tmp_path / "a" / paths.GENERATE_DATA).exists(), "nothing may run on a bad config"
    err = capsys.readouterr().err
    assert "config.yml: key 'cluster.kmeans.n_cluster'" in err and "did you mean 'n_clusters'" in err


def test_every_numbered_script_has_help():
    for name in paths.STAGE_NAMES:
        result = subprocess.run([sys.executable, str(paths.REPO_ROOT / f"{name}.py"), "--help"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "--config" in result.stdout and "--artifacts" in result.stdout and "--force" in result.stdout


def test_show_of_a_stage_never_run_says_so(tmp_path):
    assert "has not completed" in show_stage(paths.CLUSTER, tmp_path)


def test_running_one_stage_warns_when_an_earlier_stage_is_stale(pipeline_run, tmp_path, caplog):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path,
                                            lambda d: d["train_autoencoder"].update(epochs=3))
    outcome = run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    assert outcome == {paths.CLUSTER: "skipped"}
    assert "03_train_autoencoder is stale (config section 'train_autoencoder' changed)" in caplog.text


def test_customers_without_a_purchase_by_the_analysis_date_are_kept_with_their_reason(tmp_path):
    """With an analysis date mid-history, later joiners are excluded, never silently dropped."""
    document = small_config_document()
    document["prepare_features"]["analysis_date"] = "2023-07-01"
    config = load_config(write_config(tmp_path / "config", document))
    run_pipeline(config, tmp_path / "artifacts", start=paths.GENERATE_DATA)
    customers = read(tmp_path / "artifacts", paths.GENERATE_DATA, paths.CUSTOMERS)
    assigned = read(tmp_path / "artifacts", paths.CLUSTER, paths.ASSIGNMENTS)["customer_id"]
    excluded = read(tmp_path / "artifacts", paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS)
    assert len(excluded) > 0 and not set(excluded["customer_id"]) & set(assigned)
    assert sorted(set(excluded["customer_id"]) | set(assigned)) == sorted(customers["customer_id"])
    later = excluded.loc[excluded["rule"] == "first_purchase_after_analysis_date", "customer_id"]
    assert len(later) > 0 and set(excluded["rule"]) <= {"first_purchase_after_analysis_date", "min_tenure_days"}
    transactions = read(tmp_path / "artifacts", paths.GENERATE_DATA, paths.TRANSACTIONS)
    first_purchase = transactions[~transactions["is_return"]].groupby("customer_id")["order_date"].min()
    assert (first_purchase.loc[later] > pd.Timestamp("2023-07-01")).all()
    assert (first_purchase.loc[assigned] <= pd.Timestamp("2023-07-01")).all()


def test_by_default_only_customers_first_seen_in_the_last_month_are_excluded(pipeline_run):
    """Default eligibility: min_tenure_days 30, no recency limit (lapsed customers are a segment)."""
    _, artifacts_dir = pipeline_run
    excluded = read(artifacts_dir, paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS)
    assert list(excluded.columns) == ["customer_id", "rule", "reason"]
    assert len(excluded) > 0 and set(excluded["rule"]) == {"min_tenure_days"}
    transactions = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    first_purchase = transactions[~transactions["is_return"]].groupby("customer_id")["order_date"].min()
    assert (first_purchase.loc[excluded["customer_id"]] > pd.Timestamp("2023-12-01")).all()
    enriched = read(artifacts_dir, paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT)
    assert enriched["recency_days"].max() > 90, "lapsed customers stay in"


def test_artifacts_path_that_is_a_file_exits_2(small_config_path, tmp_path, capsys):
    not_a_folder = tmp_path / "artifacts.txt"
    not_a_folder.write_text("x", encoding="utf-8")
    assert main(["status", "--config", str(small_config_path), "--artifacts", str(not_a_folder)]) == 2
    err = capsys.readouterr().err
    assert "is a file; give a folder" in err and "Traceback" not in err


def test_unexpected_error_is_one_line_with_the_traceback_in_the_log(small_config_path, tmp_path, capsys,
                                                                      monkeypatch):
    import core.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(pipeline, "run_pipeline", broken)
    artifacts_dir = tmp_path / "artifacts"
    assert main(["run", "--config", str(small_config_path), "--artifacts", str(artifacts_dir)]) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: something nobody foresaw" in err and "Traceback" not in err
    assert "Traceback" in (artifacts_dir / paths.PIPELINE_LOG).read_text(encoding="utf-8")


def test_a_killed_stage_leaves_no_half_written_file_and_reruns(tmp_path):
    """Kill the generator while it writes transactions: no manifest, no partial file under a real name,
    and no worker process left behind (each used to sleep on, re-parented, holding ~200 MB)."""
    import os
    import signal
    import time

    from test_generator import child_processes, survivors

    on_linux = sys.platform.startswith("linux")  # the stage's workers are found through /proc
    document = small_config_document()
    document["data"]["n_customers"] = 40000
    document["generate_data"]["chunk_size"] = 2000
    n_workers = document["generate_data"]["workers"]
    assert n_workers >= 2, "the stage must draw in worker processes for this test"
    config_path = write_config(tmp_path / "config", document)
    artifacts_dir = tmp_path / "artifacts"
    folder = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA)
    process = subprocess.Popen([sys.executable, str(paths.REPO_ROOT / "01_generate_data.py"),
                                "--config", str(config_path), "--artifacts", str(artifacts_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: dict[int, int] = {}  # pid -> start time
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        writing = folder.exists() and any(folder.glob(".transactions*"))
        workers = child_processes(process.pid) if on_linux else {}
        if writing and (len(workers) >= n_workers or not on_linux):
            break
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up code runs
    process.wait(timeout=60)
    try:
        if on_linux:
            assert len(workers) >= n_workers, f"the stage's workers were not found: {workers}"
            assert survivors(workers, seconds=10) == [], "generator workers outlived the killed stage"
    finally:
        for pid in survivors(workers, seconds=0):  # never leave them behind, even when the check fails
            os.kill(pid, signal.SIGKILL)
    assert any(folder.glob(".transactions*")), "the kill should land while transactions are being written"
    assert not (folder / paths.MANIFEST).exists()
    assert not (folder / paths.TRANSACTIONS).exists()
    config = load_config(config_path)
    assert {s.stage: s.state for s in pipeline_status(config, artifacts_dir)}[paths.GENERATE_DATA] == "missing"
    with pytest.raises(PipelineError, match="run stage 01_generate_data first"):
        run_pipeline(config, artifacts_dir, only=paths.PREPARE_FEATURES)
    if not on_linux:
        pytest.skip("the rest passed; whether workers outlive the stage is checked through /proc, on Linux only")


# --- stage 05: exports and report ---------------------------------------------------


def test_pipeline_export_validates_and_describes_only_with_allowed_columns(pipeline_run):
    from core.profile_export import export

    config_path, artifacts_dir = pipeline_run
    document = json.loads((paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.SEGMENT_PROFILES_JSON)
                          .read_text(encoding="utf-8"))
    assert export.schema_errors(document) == []
    allowed = set(load_config(config_path).profile_export.describe_columns)
    for segment in document["segments"]:
        if not segment["suppressed"]:
            assert set(segment["demographics"]) <= allowed
    customer_ids = set(read(artifacts_dir, paths.GENERATE_DATA, paths.CUSTOMERS)["customer_id"].astype(str))
    text = json.dumps(document)
    assert '"customer_id"' not in text
    assert len(document["segments"]) < 50 < len(customer_ids), "aggregates only, never one entry per customer"


def test_customers_with_segments_has_one_row_per_customer_and_a_distinct_runner_up(pipeline_run):
    _, artifacts_dir = pipeline_run
    table = read(artifacts_dir, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    assert list(table.columns) == ["customer_id", "segment_id", "segment_name", "strength",
                                   "runner_up_segment_id", "runner_up_segment_name", "reconstruction_error",
                                   "p_alive", "expected_orders", "expected_revenue", "churn_risk"]
    assert table["customer_id"].is_unique and len(table) == len(assignments)
    assert (table["segment_id"] != table["runner_up_segment_id"]).all()
    assert table["strength"].between(0, 1).all()
    names = {s["segment_id"]: s["name"] for s in json.loads(
        (paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.SEGMENT_PROFILES_JSON).read_text())["segments"]}
    assert (table["segment_name"] == table["segment_id"].map(names)).all()


@needs_chromium
def test_pipeline_report_renders_in_a_real_browser(pipeline_run, tmp_path):
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    # The test config's one-year history holds its 120-day value holdout, so the calibration chart is drawn too.
    # Its quarterly snapshots draw segment sizes over time and the flows between them.
    charts = (paths.SEGMENT_SIZES_PLOT, paths.DEPARTMENT_HEATMAP, paths.PROJECTION_PLOT, paths.LOSS_CURVE,
              paths.CALIBRATION_PLOT, paths.SEGMENT_SIZES_OVER_TIME_PLOT, paths.SEGMENT_FLOW_PLOT)
    for png in charts:
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert_page_renders(folder / paths.REPORT, expected_images=len(charts), profile_dir=tmp_path / "chromium")


def test_the_report_persona_table_counts_each_personas_customers_by_segment(pipeline_run):
    """The "Personas by segment" table: one row per persona, one column per described segment (in the export's
    order), each cell the number of that persona's customers in that segment, counted here from the tables."""
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    html = (folder / paths.REPORT).read_text(encoding="utf-8")
    section = html[html.index('<section id="personas"><h2>Personas by segment</h2>'):]
    section = section[:section.index("</section>")]
    columns = [unescape(name) for name in re.findall(r'<th scope="col" class="n">(.*?)</th>', section)]
    shown = {unescape(persona): [int(count.replace(",", "")) for count in re.findall(r"<td[^>]*>([^<]*)</td>", cells)]
             for persona, cells in re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', section)}

    segments = json.loads((folder / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))["segments"]
    assert columns == [s["name"] for s in segments if not s["suppressed"]]
    table = read(artifacts_dir, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS)
    personas = read(artifacts_dir, paths.GENERATE_DATA, paths.CUSTOMERS).set_index("customer_id")["persona"]
    counts = pd.crosstab(table["customer_id"].map(personas), table["segment_name"])
    expected = {persona: [int(counts.loc[persona].get(name, 0)) for name in columns] for persona in counts.index}
    assert shown == expected
    assert len(shown) == 10, "every persona of config/personas.yml has customers among the 274"

def test_other_segmentations_are_exported_on_request(pipeline_run, tmp_path):
    from core.profile_export import export

    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path,
                                            lambda d: d["profile_export"].update(also_profile=["kmeans_latent"]))
    outcome = run_pipeline(load_config(config_path), artifacts_dir)
    assert [k for k, v in outcome.items() if v == "ran"] == [paths.PROFILE_EXPORT]
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    extra = json.loads((folder / "segment_profiles__kmeans_latent.json").read_text(encoding="utf-8"))
    assert export.schema_errors(extra) == []
    assert extra["metadata"]["segmentation"] == "kmeans_latent" and extra["metadata"]["primary"] is False
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    assert extra["metadata"]["segments"] == assignments["kmeans_latent_label"].nunique()
    assert yaml.safe_load((folder / "segment_profiles__kmeans_latent.yaml").read_text(encoding="utf-8")) == extra
    assert (folder / "cluster_insights__kmeans_latent.csv").exists()


def test_noise_is_not_a_segment_and_gets_the_catch_all_strategy(pipeline_run, tmp_path):
    """With HDBSCAN on raw features as the primary: noise stays unassigned, the projection uses raw space."""
    def hdbscan_raw_keeping_noise(document):
        document["cluster"]["primary"].update(method="hdbscan", space="raw")
        document["cluster"]["hdbscan"]["reassign_noise"] = False

    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, hdbscan_raw_keeping_noise)
    config = load_config(config_path)
    run_pipeline(config, artifacts_dir)
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    document = json.loads((folder / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    labels = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)["hdbscan_raw_label"]
    assert (labels == -1).any(), "the small config should leave some noise"
    assert document["metadata"]["segments"] == labels[labels != -1].nunique()
    noise = next(s for s in document["segments"] if s["segment_id"] == -1)
    assert noise["name"] == "Unassigned (noise)"
    if not noise["suppressed"]:
        assert noise["position"] == "Unassigned"
        assert noise["strategy"]["rule"] == config.strategies.rules[-1].id
    # Stage 05's manifest records the stage 04 outputs of this rerun, not those of the run it was copied from.
    manifest = json.loads((folder / paths.MANIFEST).read_text(encoding="utf-8"))
    recorded = {r["file"]: r["sha256"] for r in manifest["inputs"] if r["stage"] == paths.CLUSTER}
    cluster_folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    assert recorded == {file: sha256_of(cluster_folder / file)
                        for file in (paths.ASSIGNMENTS, paths.COMPARISON, paths.COMPARISON_JSON,
                                     paths.SEGMENT_HISTORY, paths.TRANSITIONS)}
    first_run = paths.stage_dir(pipeline_run[1], paths.CLUSTER) / paths.ASSIGNMENTS
    assert recorded[paths.ASSIGNMENTS] != sha256_of(first_run), "noise kept as -1 changes the assignments"


def test_stage_05_refuses_assignments_made_for_another_primary(pipeline_run, tmp_path):
    chosen = json.loads((paths.stage_dir(pipeline_run[1], paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    other = "fcm" if chosen["primary"]["method"] != "fcm" else "kmeans"
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["cluster"]["primary"].update(
        method=other, space="latent"))
    with pytest.raises(PipelineError, match=r"assignments.parquet was made with another cluster.primary than "
                                            rf"{other}_latent.*rerun from stage 04_cluster"):
        run_pipeline(load_config(config_path), artifacts_dir, only=paths.PROFILE_EXPORT, force=True)


def test_a_describe_column_the_profile_lacks_is_named(pipeline_run, tmp_path):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["profile_export"].update(
        describe_columns=["age", "gendr"]))
    with pytest.raises(PipelineError, match=r"profile_export.describe_columns .* names 'gendr', which the customer "
                                            r"profile does not have; available: .*gender"):
        run_pipeline(load_config(config_path), artifacts_dir, only=paths.PROFILE_EXPORT)


def test_small_segments_stay_out_of_the_report_charts_and_tables(pipeline_run, tmp_path):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["profile_export"].update(
        min_segment_size=100))
    run_pipeline(load_config(config_path), artifacts_dir)
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    document = json.loads((folder / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    small = [s for s in document["segments"] if s["suppressed"]]
    assert small, "a minimum of 100 customers should suppress some of the 300 customers' segments"
    html = (folder / paths.REPORT).read_text(encoding="utf-8")
    for segment in small:
        assert segment["name"] == f"Small segment {segment['segment_id']}"
        # Whole names only: "Small segment 1" is also the start of "Small segment 10".
        whole_name = re.escape(segment["name"]) + r"(?!\d)"
        assert len(re.findall(whole_name, html)) == 1, "only on its card: not in the persona table"
    table = read(artifacts_dir, paths.PROFILE_EXPORT, paths.CUSTOMERS_WITH_SEGMENTS)
    assert set(table["segment_name"]) == {s["name"] for s in document["segments"]}


def test_seasonal_peaks_count_only_purchases_up_to_the_analysis_date(tmp_path):
    document = small_config_document()
    document["prepare_features"]["analysis_date"] = "2023-06-30"
    document["profile_export"]["min_segment_size"] = 1
    config = load_config(write_config(tmp_path / "config", document))
    run_pipeline(config, tmp_path / "artifacts")
    profiles = json.loads((paths.stage_dir(tmp_path / "artifacts", paths.PROFILE_EXPORT)
                           / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    months = {p["month"] for s in profiles["segments"] for p in s.get("seasonal_peaks", [])}
    assert months and months <= {"January", "February", "March", "April", "May", "June"}


# --- stage 04: ground truth, retraining, scoring --------------------------------------------------


def test_the_persona_never_reaches_a_clustering_fit(pipeline_run, tmp_path):
    """Stage 04 without the ground truth fits exactly the same segmentations and, with primary auto, delivers the
    same primary segment; only evaluation differs."""
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["cluster"]["evaluation"].update(
        ground_truth=None))
    assert load_config(config_path).cluster.primary.method == load_config(config_path).cluster.primary.space == "auto"
    run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    with_truth = read(pipeline_run[1], paths.CLUSTER, paths.ASSIGNMENTS)
    without = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    per_method = [c for c in with_truth.columns if c.startswith(CLUSTER_METHODS)]
    pairs = fitted_pairs(CLUSTER_METHODS, SPACES)
    assert {f"{m}_{s}_{c}" for m, s in pairs for c in ("label", "strength")} <= set(per_method)
    assert len(per_method) > 2 * len(pairs)  # and the uncertainty and noise columns
    for column in ["segment", "segment_strength", "segment_runner_up"] + per_method:
        pd.testing.assert_series_equal(without[column], with_truth[column])
    comparison = pd.read_csv(paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON)
    assert comparison["ari"].isna().all()
    document = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    assert document["ground_truth"] is None and document["supervised_reference"] is None
    assert document["best_afterwards"] is None
    first = json.loads((paths.stage_dir(pipeline_run[1], paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    assert document["primary"]["method"] == first["primary"]["method"] == first["label_free_primary"]["method"]
    assert document["primary"]["space"] == first["primary"]["space"] == first["label_free_primary"]["space"]
    assert first["label_free_primary"]["ari_to_reference"] is not None and first["best_afterwards"]["ari"] >= \
        first["label_free_primary"]["ari"]


def test_a_rerun_keeps_segment_ids_and_counts_migration(pipeline_run, tmp_path):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["cluster"]["kmeans"].update(n_init=2))
    run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    before = read(pipeline_run[1], paths.CLUSTER, paths.ASSIGNMENTS)
    after = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    migration = pd.read_csv(paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.MIGRATION)
    gmm = migration[(migration["method"] == "gmm") & (migration["space"] == "latent")]
    assert gmm["customers"].sum() == len(after), "every customer of both runs counted once"
    kept = gmm.loc[gmm["previous_segment"] == gmm["segment"], "customers"].sum()
    assert kept == (before["gmm_latent_label"] == after["gmm_latent_label"]).sum() == len(after)
    first = pd.read_csv(paths.stage_dir(pipeline_run[1], paths.CLUSTER) / paths.MIGRATION)
    assert first.empty and list(first.columns) == ["method", "space", "previous_segment", "segment", "customers"]


def test_scoring_the_training_customers_reproduces_their_training_segments(pipeline_run, tmp_path):
    from core.pipeline import score_file

    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    columns = [c for c in assignments.columns if c.endswith(("_label", "_strength")) or c.startswith("segment")]
    lines = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS
    features = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT
    for source in (lines, features):
        scored = pd.read_parquet(score_file(config, artifacts_dir, source, tmp_path / f"{source.stem}.parquet"))
        scored = scored.set_index("customer_id").loc[assignments["customer_id"]].reset_index()
        assert (scored["excluded_reason"] == "").all()
        for column in columns:
            if source == features and column.startswith("countmix_counts_"):
                # A features file holds no units per class: the count mixture's columns are left out.
                assert column not in scored
                continue
            if column.endswith("_strength"):
                # Memberships are sums of floats whose BLAS blocking follows the rows scored at once: equal to
                # the last bits only (a GMM strength differed by 5e-13 in 4 of 283 customers).
                np.testing.assert_allclose(scored[column].to_numpy(), assignments[column].to_numpy(), rtol=1e-9,
                                           atol=1e-12, err_msg=column)
            else:
                np.testing.assert_array_equal(scored[column].to_numpy(), assignments[column].to_numpy(),
                                              err_msg=column)
        np.testing.assert_allclose(scored["reconstruction_error"], assignments["reconstruction_error"], rtol=1e-5)
    # Customers stage 02 left out are left out of scoring too, with stage 02's reason.
    excluded = read(artifacts_dir, paths.PREPARE_FEATURES, paths.EXCLUDED_CUSTOMERS)
    assert len(excluded), "the fixture's config excludes some customers"
    scored = pd.read_parquet(tmp_path / f"{lines.stem}.parquet").set_index("customer_id")
    left_out = scored.loc[excluded["customer_id"]]
    assert left_out["segment"].isna().all()
    assert list(left_out["excluded_reason"]) == list(excluded["reason"])


def test_score_command_scores_new_customers_and_explains_bad_input(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = pipeline_run
    lines = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS).set_index("customer_id")
    some = assignments.index[:20]
    # New customers: the order lines of 20 known ones under new ids, and one whose lines are all after the
    # analysis date; scored as CSV, as a retailer would hand them over.
    new = lines[lines["customer_id"].isin(some)].assign(customer_id=lambda f: f["customer_id"] + 10_000_000)
    day = lines["order_date"].max()
    late = new[new["customer_id"] == new["customer_id"].iloc[0]].assign(customer_id=99_999_999,
                                                                         order_date=day + pd.Timedelta(days=3))
    source = tmp_path / "new_customers.csv"
    pd.concat([new, late]).to_csv(source, index=False)
    output = tmp_path / "scored.csv"
    code = main(["score", str(source), "--output", str(output), "--analysis-date", str(day.date()),
                 "--config", str(config_path), "--artifacts", str(artifacts_dir)])
    assert code == 0, capsys.readouterr().err
    scored = pd.read_csv(output).set_index("customer_id")
    again = scored.loc[some + 10_000_000]
    np.testing.assert_array_equal(again["segment"].to_numpy(), assignments.loc[some, "segment"].to_numpy())
    assert scored.loc[99_999_999, "excluded_reason"] == "first purchase after the analysis date"
    assert pd.isna(scored.loc[99_999_999, "segment"])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"customer_id": [1], "basket": [3]}).to_csv(bad, index=False)
    code = main(["score", str(bad), "--config", str(config_path), "--artifacts", str(artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "neither a transaction log (missing order_id" in err and "nor a features file" in err
    assert main(["score", str(tmp_path / "none.parquet"), "--config", str(config_path), "--artifacts",
                 str(tmp_path / "empty")]) == 2
    assert "was not found" in capsys.readouterr().err


def test_scoring_a_features_file_refuses_gaps_and_duplicates(pipeline_run):
    from core import scoring

    config_path, artifacts_dir = pipeline_run
    saved = scoring.load_saved_run(artifacts_dir, load_config(config_path))
    features = read(artifacts_dir, paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT).head(5)
    assert scoring.input_kind(features, saved.transformer) == "features"
    gap = features.assign(orders_per_month=[1.0, np.nan, 2.0, 3.0, 4.0])
    with pytest.raises(PipelineError, match="new.parquet: missing values in orders_per_month; every customer needs"):
        scoring.score_customers(gap, saved, source="new.parquet")
    twice = pd.concat([features, features.head(1)])
    with pytest.raises(PipelineError, match="1 customer_id value\\(s\\) appear twice"):
        scoring.score_customers(twice, saved, source="new.parquet")
    scored = scoring.score_customers(features, saved)
    assert list(scored["customer_id"]) == list(features["customer_id"]) and (scored["excluded_reason"] == "").all()


def test_scoring_a_few_customers_builds_the_training_columns_and_reports_who_cannot_be_scored(pipeline_run):
    from core import scoring

    config_path, artifacts_dir = pipeline_run
    saved = scoring.load_saved_run(artifacts_dir, load_config(config_path))
    lines = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS).set_index("customer_id")
    day = pd.Timestamp(json.loads((paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / "manifest.json")
                                  .read_text())["details"]["analysis_date"])
    # A store-only customer: their own lines have no online value, yet the model has channel_share__online.
    by_channel = lines[lines["channel"].notna()].groupby("customer_id")["channel"].agg(set)
    store_only = [c for c in by_channel.index[by_channel.map(lambda s: s == {"store"})] if c in assignments.index]
    some = (store_only[:1] + list(assignments.index[:2]))
    assert store_only, "the fixture has a store-only customer"
    scored = scoring.score_customers(lines[lines["customer_id"].isin(some)], saved, analysis_date=day)
    scored = scored.set_index("customer_id").loc[some]
    np.testing.assert_array_equal(scored["segment"].to_numpy(), assignments.loc[some, "segment"].to_numpy())
    # Only new customers: every one reported with stage 02's reason, none scored, the usual columns.
    first = lines.loc[lines["customer_id"] == some[0]].assign(customer_id=123_456_789, order_date=day)
    nobody = scoring.score_customers(first, saved, analysis_date=day)
    assert list(nobody.columns) == list(scored.reset_index().columns)
    assert nobody["segment"].isna().all() and "min_tenure_days = " in nobody.loc[0, "excluded_reason"]
    # A log without a column the model needs: the error names it.
    with pytest.raises(PipelineError, match="new.csv: the model needs brand_tier_share__.*brand_tier"):
        scoring.score_customers(lines.drop(columns="brand_tier"), saved, source="new.csv")


def test_the_count_mixture_as_primary_segments_snapshots_scores_and_profiles(pipeline_run, tmp_path):
    """countmix in the counts space, named as the primary: stage 04 fits it on stage 02's class units, the
    snapshot windows are segmented from their own units, scoring from order lines gives a training customer their
    segment, a features file (no units) is refused by name, and stage 05 profiles it."""
    from core import scoring

    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["cluster"]["primary"].update(
        method="countmix", space="counts"))
    outcome = run_pipeline(load_config(config_path), artifacts_dir, start=paths.CLUSTER)
    assert outcome[paths.CLUSTER] == outcome[paths.PROFILE_EXPORT] == "ran"
    comparison = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    assert comparison["primary"]["method"] == "countmix" and comparison["primary"]["space"] == "counts"
    assignments = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)
    assert (assignments["segment"] == assignments["countmix_counts_label"]).all()
    assert assignments["segment"].nunique() >= 2
    # Only countmix in the counts space, and countmix nowhere else.
    pairs = {(row["method"], row["space"]) for row in comparison["methods"]}
    assert {pair for pair in pairs if "countmix" in pair or "counts" in pair} == {("countmix", "counts")}
    history = read(artifacts_dir, paths.CLUSTER, paths.SEGMENT_HISTORY)
    segmented = history[history["excluded_reason"] == ""]
    assert len(segmented) and set(segmented["segment"].dropna()) <= set(assignments["segment"])

    saved = scoring.load_saved_run(artifacts_dir, load_config(config_path))
    lines = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    day = pd.Timestamp(lines["order_date"].max()).normalize()
    some = assignments["customer_id"].to_numpy()[:25]
    scored = scoring.score_customers(lines[lines["customer_id"].isin(some)], saved, analysis_date=day)
    scored = scored[scored["excluded_reason"] == ""].set_index("customer_id")
    expected = assignments.set_index("customer_id")["segment"]
    assert len(scored) and (scored["segment"].astype(int) == expected.reindex(scored.index)).all()
    features = read(artifacts_dir, paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT).head(10)
    with pytest.raises(PipelineError, match="countmix in the counts space.*features file does not hold"):
        scoring.score_customers(features, saved, source="features.parquet")
    export = json.loads((paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.SEGMENT_PROFILES_JSON)
                        .read_text())
    assert export["metadata"]["segmentation"] == "countmix_counts"
