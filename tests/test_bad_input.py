"""Hardening (issue 12), each test written from an attack: identifiers smuggled into an export through a
profile column, malformed files handed to ``score``, too few customers, impossible settings, semaphores a
killed stage 04 leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import small_config_document, write_config
from test_pipeline import copy_run, pipeline_run  # noqa: F401 - pipeline_run: the session's finished run
from core.config import load_config
from core.framework import paths
from core.framework.errors import PipelineError
from core.pipeline import main, run_pipeline

# --- a retailer's tiny log, through every stage --------------------------------------------------------


def tiny_log(n_customers: int, seed: int = 3) -> pd.DataFrame:
    """Order lines of ``n_customers`` customers in 2023 (a few orders each), under a till's column names."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(1, n_customers + 1):
        first = int(rng.integers(0, 200))
        for day in sorted(rng.integers(first, 365, size=int(rng.integers(2, 8)))):
            rows.append((customer, (pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(day))).strftime("%Y-%m-%d"),
                         round(float(rng.lognormal(np.log(40), 0.5)), 2)))
    return pd.DataFrame(rows, columns=["CustomerNo", "InvoiceDate", "Amount"])


def retailer_config(folder: Path, log: pd.DataFrame, people: pd.DataFrame | None = None,
                    people_columns: dict[str, str] | None = None) -> dict:
    """The small config reading ``log`` (and ``people``, the customer file) as CSV files beside it, with
    one quick method so the tests stay about the data."""
    folder.mkdir(parents=True, exist_ok=True)
    log.to_csv(folder / "log.csv", index=False)
    doc = small_config_document()
    doc["data"]["source"] = "file"
    doc["ingest"]["transactions"].update(file="log.csv", columns={
        "CustomerNo": "customer_id", "InvoiceDate": "order_date", "Amount": "line_amount"})
    doc["ingest"]["latest_date"] = "2023-12-31"
    if people is not None:
        people.to_csv(folder / "people.csv", index=False)
        doc["ingest"]["customers"].update(file="people.csv", columns=people_columns)
    doc["train_autoencoder"]["epochs"] = 2
    # A log of customer, date and amount gives 4 model features: 3 latent dimensions, the shipped value.
    doc["train_autoencoder"]["latent_dim"] = 3
    doc["cluster"].update(methods=["kmeans"], spaces=["raw"])
    doc["cluster"]["primary"].update(method="kmeans", space="raw")
    doc["cluster"]["evaluation"]["ground_truth"] = None
    return doc


@pytest.mark.parametrize("column, target, secret, kind", [
    ("Email", "email", "jane.doe@example.com", "an email address"),
    # No shape gives a street address away: found because it is a value of customers.parquet's street_address.
    ("Address", "street_address", "Flat 2, Patel Underpass", "a customer's identifier in customers.parquet"),
])
def test_an_identifier_in_a_described_profile_column_stops_stage_05_and_nothing_is_exported(
        tmp_path, caplog, column, target, secret, kind):
    """The attack: the customer file's Region holds jane.doe@example.com (also customer 1's Email), and
    region is a describe column. The export would summarise it; stage 05 must refuse, masked."""
    log = tiny_log(60)
    people = pd.DataFrame({"CustomerNo": range(1, 61), "Age": 30 + np.arange(60) % 40,
                           column: [secret] + [f"c{i}@shop.test" for i in range(2, 61)], "Region": secret})
    doc = retailer_config(tmp_path / "config", log, people,
                          {"CustomerNo": "customer_id", "Age": "age", column: target, "Region": "region"})
    doc["profile_export"]["describe_columns"] = ["age", "region"]
    config = load_config(write_config(tmp_path / "config", doc))
    artifacts = tmp_path / "artifacts"
    with pytest.raises(PipelineError) as error:
        run_pipeline(config, artifacts)
    message = str(error.value)
    assert f"profile export would carry 1 direct identifier(s) of customers: {kind} " in message
    assert "from profile column 'region'" in message
    assert "remove 'region' from profile_export.describe_columns" in message
    assert secret not in message and f"({secret[0]}{'*' * (len(secret) - 2)}{secret[-1]})" in message
    stage_05 = paths.stage_dir(artifacts, paths.PROFILE_EXPORT)
    assert not (stage_05 / paths.MANIFEST).exists()
    for exported in (stage_05.glob("segment_profiles*") if stage_05.exists() else []):
        assert secret not in exported.read_text(encoding="utf-8")
    assert not (stage_05 / paths.SEGMENT_PROFILES_JSON).exists()
    # Stages 01 to 04 completed: only the export was refused.
    assert all((paths.stage_dir(artifacts, s) / paths.MANIFEST).exists() for s in paths.STAGE_NAMES[:4])
    # And through the command line: exit 2, the identifier nowhere in the log.
    code = main(["run", "--config", str(config.path), "--artifacts", str(artifacts)])
    assert code == 2 and secret not in caplog.text
    assert secret not in (artifacts / paths.PIPELINE_LOG).read_text(encoding="utf-8")


def one_customer_log() -> pd.DataFrame:
    """The attack's log: one customer, six orders over 2023 (enough to pass stage 02's eligibility rules)."""
    days = pd.date_range("2023-01-05", periods=6, freq="50D").strftime("%Y-%m-%d")
    return pd.DataFrame({"CustomerNo": 1, "InvoiceDate": days, "Amount": [20.0, 35.5, 12.0, 50.0, 8.25, 41.0]})


def test_a_one_customer_log_stops_stage_04_with_the_minimum_it_needs(tmp_path, capsys):
    config = write_config(tmp_path / "config", retailer_config(tmp_path / "config", one_customer_log()))
    artifacts = tmp_path / "artifacts"
    assert main(["run", "--config", str(config), "--artifacts", str(artifacts)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    # retailer_config fits k-means with cluster.kmeans.n_clusters [2, 5]: 2 clusters need 3 customers.
    assert len(errors) == 1 and errors[0].endswith(
        "stage 04 needs at least 3 customers and the model matrix has 1: cluster.kmeans.n_clusters starts at 2, "
        "and choosing a number of clusters needs more customers than clusters; give it more customers (a longer "
        "history, or fewer exclusions by prepare_features.eligibility), or lower cluster.kmeans.n_clusters")
    assert (paths.stage_dir(artifacts, paths.TRAIN_AUTOENCODER) / paths.MANIFEST).exists()
    assert not (paths.stage_dir(artifacts, paths.CLUSTER) / paths.MANIFEST).exists()


# --- impossible settings ---------------------------------------------------------------------------------


def test_a_latent_layer_as_wide_as_the_model_matrix_stops_stage_03(tmp_path):
    doc = retailer_config(tmp_path / "config", tiny_log(40))
    # A log of customer, date and amount gives 4 model features (no departments, no season configured for a
    # retailer's log): 4 latent dims compress nothing.
    doc["train_autoencoder"].update(hidden_units=[64], latent_dim=4)
    config = load_config(write_config(tmp_path / "config", doc))
    with pytest.raises(PipelineError, match=r"train_autoencoder\.latent_dim in .*config\.yml is 4, but the model "
                                            r"matrix \(features\.parquet\) has 4 input\(s\): the latent layer must be "
                                            r"smaller than its inputs; use at most 3$"):
        run_pipeline(config, tmp_path / "artifacts")
    assert not (paths.stage_dir(tmp_path / "artifacts", paths.TRAIN_AUTOENCODER) / paths.MANIFEST).exists()


@pytest.mark.parametrize("change, key, message", [
    (lambda d: d["train_autoencoder"].update(hidden_units=[16, 8], latent_dim=100), "train_autoencoder.latent_dim",
     "100 is not smaller than the narrowest hidden layer (8 units in train_autoencoder.hidden_units [16, 8]): no "
     "bottleneck; use at most 7"),
    (lambda d: d["train_autoencoder"].update(hidden_units=[8, 16], latent_dim=4), "train_autoencoder.hidden_units",
     "[8, 16] widens; each encoder layer must be no wider than the one before"),
    # The small config chooses among candidates on 300 customers: 300 clusters can never be told apart there.
    (lambda d: d["cluster"]["kmeans"].update(n_clusters=[4, 3000]), "cluster.kmeans.n_clusters",
     "[4, 3000] reaches beyond what can be fitted and scored: cluster.selection_sample_size is 300 customers, "
     "which hold at most 299 clusters"),
    (lambda d: d["cluster"]["gmm"].update(n_components=[2.5, 4]), "cluster.gmm.n_components",
     "[2.5, 4]: numbers of clusters are whole numbers"),
])
def test_impossible_settings_are_config_errors_at_load_time(tmp_path, change, key, message):
    from core.framework.schema import ConfigError

    doc = small_config_document()
    change(doc)
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, doc))
    assert f"key '{key}': {message}" in str(error.value)


def blobs(n_per_blob: int = 10, seed: int = 0) -> np.ndarray:
    """Four tight, far-apart groups of customers in 3 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float)
    return np.vstack([c + rng.normal(scale=0.3, size=(n_per_blob, 3)) for c in centres])


def small_cluster_config(**kmeans):
    import dataclasses

    cfg = load_config(paths.DEFAULT_CONFIG).cluster
    return dataclasses.replace(cfg, n_jobs=1, primary=dataclasses.replace(cfg.primary, method="auto", space="raw"),
                               methods=("kmeans", "gmm"), spaces=("raw",),
                               kmeans=dataclasses.replace(cfg.kmeans, **kmeans),
                               gmm=dataclasses.replace(cfg.gmm, n_components=(2.0, 6.0)))


def test_a_cluster_range_beyond_the_customers_is_clamped_with_a_warning_and_the_same_choice(caplog):
    from core.cluster.segmentation import segment_customers

    X = blobs()  # 40 customers hold at most 39 clusters
    clamped = segment_customers({"raw": X}, ["kmeans", "gmm"], small_cluster_config(n_clusters=(2.0, 60.0)), 0)
    assert ("cluster.kmeans.n_clusters [2, 60]: 40 customers are fitted, which hold at most 39 clusters; the range "
            "is clamped to [2, 39]") in caplog.text
    report = clamped.models[("kmeans", "raw")].selection_report()
    # Clamped to 39, then lowered to what 40 customers support: sqrt(40 / 2) = 4 clusters (size_limited_top).
    assert report["configured_range"] == [2, 60] and report["candidate_range"] == [2, 4]
    assert report["clamped"] == "40 customers fitted hold at most 39 clusters"
    assert sorted(report["silhouette"]) == list(range(2, 5))
    # The same run as one configured within what 40 customers hold: nothing else moves, the primary included.
    within = segment_customers({"raw": X}, ["kmeans", "gmm"], small_cluster_config(n_clusters=(2.0, 39.0)), 0)
    assert clamped.primary == within.primary
    pd.testing.assert_frame_equal(clamped.comparison, within.comparison)
    assert clamped.models[("kmeans", "raw")].n_clusters_ == 4
    assert "clamped" not in within.models[("kmeans", "raw")].selection_report()
    assert within.models[("kmeans", "raw")].selection_report()["limited_by_size"].startswith("at most sqrt(40 / 2) = 4")


def test_a_cluster_count_no_customer_count_here_can_hold_is_refused_before_fitting():
    from core.cluster.segmentation import minimum_customers, segment_customers

    cfg = small_cluster_config(n_clusters=(45.0, 45.0))
    assert minimum_customers(["kmeans", "gmm"], cfg)[:2] == (
        46, "cluster.kmeans.n_clusters starts at 45, and choosing a number of clusters needs more customers than "
            "clusters")
    with pytest.raises(PipelineError, match=r"stage 04 needs at least 46 customers and the model matrix has 40: "
                                            r"cluster\.kmeans\.n_clusters starts at 45"):
        segment_customers({"raw": blobs()}, ["kmeans", "gmm"], cfg, 0)


def test_minimum_customers_of_the_shipped_config():
    from core.cluster.segmentation import minimum_customers

    cfg = load_config(paths.DEFAULT_CONFIG).cluster  # gmm, fcm and k-means start at 2 clusters
    assert minimum_customers(["gmm", "fcm", "kmeans"], cfg)[:2] == (
        3, "cluster.gmm.n_components starts at 2, and choosing a number of clusters needs more customers than clusters")
    assert minimum_customers(list(cfg.methods), cfg)[0] == 4  # HDBSCAN's two clusters of 2 need the most
    assert minimum_customers(["hdbscan"], cfg)[:2] == (4, "HDBSCAN needs room for two clusters of at least 2 "
                                                          "customers")


def test_a_fixed_cluster_count_beyond_the_customers_stops_stage_04_and_the_primary_stays(pipeline_run, tmp_path,
                                                                                          capsys):
    """The attack: k-means n_clusters [3000, 3000] on fewer customers silently made n - 1 clusters and
    changed the primary. Now stage 04 stops before fitting; nothing it wrote before is replaced."""
    import yaml

    config, artifacts = copy_run(pipeline_run, tmp_path)
    comparison = paths.stage_dir(artifacts, paths.CLUSTER) / paths.COMPARISON_JSON
    before = comparison.read_bytes()
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["cluster"]["kmeans"]["n_clusters"] = [3000, 3000]
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert main(["run", "--only", "4", "--config", str(config), "--artifacts", str(artifacts)]) == 2
    customers = len(pd.read_parquet(paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.FEATURES))
    assert (f"stage 04 needs at least 3,001 customers and the model matrix has {customers}: "
            f"cluster.kmeans.n_clusters starts at 3000") in capsys.readouterr().err
    assert comparison.read_bytes() == before
    assert not (paths.stage_dir(artifacts, paths.CLUSTER) / paths.MANIFEST).exists()


# --- score: malformed input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scoring_run(pipeline_run, tmp_path_factory):
    """A copy of the finished run to score against (score takes the artifacts folder's lock)."""
    return copy_run(pipeline_run, tmp_path_factory.mktemp("scoring"))


def _order_lines(artifacts: Path, rows: int = 12) -> pd.DataFrame:
    return pd.read_parquet(paths.stage_dir(artifacts, paths.GENERATE_DATA) / paths.TRANSACTIONS).head(rows)


def _features(artifacts: Path, rows: int = 5) -> pd.DataFrame:
    return pd.read_parquet(paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT).head(rows)


def _model_feature(artifacts: Path) -> str:
    return json.loads((paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.MANIFEST)
                      .read_text(encoding="utf-8"))["details"]["model_matrix"]["columns"][0]


def write_empty(folder, artifacts):
    (folder / "new.csv").write_bytes(b"")
    return "new.csv", "the file is empty; give order lines"


def write_header_only(folder, artifacts):
    _order_lines(artifacts).head(0).to_csv(folder / "new.csv", index=False)
    return "new.csv", "no rows (a header only); give at least one order line or customer"


def write_zero_row_parquet(folder, artifacts):
    _features(artifacts).head(0).to_parquet(folder / "new.parquet")
    return "new.parquet", "no rows (a header only)"


def write_damaged_parquet(folder, artifacts):
    _order_lines(artifacts).to_parquet(folder / "new.parquet")
    (folder / "new.parquet").write_bytes((folder / "new.parquet").read_bytes()[:200])
    return "new.parquet", "not a readable Parquet file ("


def write_text_amount(folder, artifacts):
    lines = _order_lines(artifacts).astype({"line_amount": "object"})
    lines.loc[3, "line_amount"] = "12,50 GBP"
    lines.to_csv(folder / "new.csv", index=False)
    return "new.csv", "column line_amount, row 4 after the header: '12,50 GBP' is not a number; expected a number"


def write_infinite_amount(folder, artifacts):
    lines = _order_lines(artifacts)
    lines.loc[7, "line_amount"] = np.inf
    lines.to_parquet(folder / "new.parquet")
    return "new.parquet", "column line_amount, row 8: inf is not a finite number"


def write_infinite_feature(folder, artifacts):
    features = _features(artifacts)
    column = _model_feature(artifacts)
    features.loc[2, column] = np.inf
    features.to_csv(folder / "new.csv", index=False)
    return "new.csv", f"column {column}, row 3 after the header: inf is not a finite number"


def write_bad_date(folder, artifacts):
    lines = _order_lines(artifacts)
    lines["order_date"] = lines["order_date"].dt.strftime("%Y-%m-%d")
    lines.loc[5, "order_date"] = "2023-02-30"
    lines.to_csv(folder / "new.csv", index=False)
    return "new.csv", "column order_date, row 6 after the header: '2023-02-30' is not a date; expected YYYY-MM-DD"


def write_missing_customer(folder, artifacts):
    lines = _order_lines(artifacts).astype({"customer_id": "float64"})
    lines.loc[4, "customer_id"] = np.nan
    lines.to_csv(folder / "new.csv", index=False)
    return "new.csv", "column customer_id, row 5 after the header: no value; every order line needs customer_id"


def write_fractional_customer(folder, artifacts):
    features = _features(artifacts).astype({"customer_id": "float64"})
    features.loc[1, "customer_id"] = 7.5
    features.to_parquet(folder / "new.parquet")
    return "new.parquet", "column customer_id, row 2: 7.5 is not a whole number"


def write_bad_return_flag(folder, artifacts):
    lines = _order_lines(artifacts).astype({"is_return": "object"})
    lines.loc[0, "is_return"] = "refund?"
    lines.to_csv(folder / "new.csv", index=False)
    return "new.csv", "column is_return, row 1 after the header: 'refund?' is not true or false"


@pytest.mark.parametrize("write", [
    write_empty, write_header_only, write_zero_row_parquet, write_damaged_parquet, write_text_amount,
    write_infinite_amount, write_infinite_feature, write_bad_date, write_missing_customer, write_fractional_customer,
    write_bad_return_flag])
def test_score_refuses_malformed_input_in_one_line_naming_the_file_and_the_problem(scoring_run, tmp_path, capsys,
                                                                                   write):
    config, artifacts = scoring_run
    name, problem = write(tmp_path, artifacts)
    output = tmp_path / "scored.csv"
    code = main(["score", str(tmp_path / name), "--output", str(output), "--config", str(config),
                 "--artifacts", str(artifacts)])
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 2 and len(errors) == 1, errors
    assert f"ERROR {tmp_path / name}: {problem}" in errors[0]
    assert "Traceback" not in errors[0] and not output.exists()


# --- loky's semaphores after a killed stage 04 -------------------------------------------------------------


def test_files_of_a_gone_process_are_removed_and_a_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from core.cluster.segmentation import remove_orphaned_worker_files

    if not sys.platform.startswith("linux"):
        pytest.skip("loky's semaphores are files in /dev/shm on Linux only")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getpid()
    for name in (f"sem.loky-{dead}-ab12cd34", f"sem.loky-{alive}-ef56gh78", "sem.other-1-x", "unrelated"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / f"joblib_memmapping_folder_{dead}_0a1b_2c3d").mkdir()
    (tmp_path / f"joblib_memmapping_folder_{dead}_0a1b_2c3d" / "array.pkl").write_bytes(b"x")
    removed = remove_orphaned_worker_files(tmp_path)
    assert sorted(removed) == [f"joblib_memmapping_folder_{dead}_0a1b_2c3d", f"sem.loky-{dead}-ab12cd34"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"sem.loky-{alive}-ef56gh78", "sem.other-1-x",
                                                                 "unrelated"])


def test_semaphores_of_a_killed_worker_pool_are_removed_by_the_next_stage_04(tmp_path):
    """The attack: kill -9 a process group running loky workers (the stage, its workers and loky's resource
    tracker). Its semaphores stay in /dev/shm; the next stage 04 run removes them."""
    import dataclasses
    import os
    import signal
    import subprocess
    import sys
    import time

    from core.cluster.segmentation import segment_customers

    shm = Path("/dev/shm")
    if not sys.platform.startswith("linux") or not shm.is_dir():
        pytest.skip("loky's semaphores are files in /dev/shm on Linux only")
    code = ("import time\nfrom joblib import Parallel, delayed\n"
            "Parallel(n_jobs=2, backend='loky')(delayed(time.sleep)(60) for _ in range(2))\n")
    pool = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(shm.glob(f"sem.loky-{pool.pid}-*")):
            time.sleep(0.1)
        time.sleep(1)  # workers started: the pool is in use
    finally:
        os.killpg(pool.pid, signal.SIGKILL)  # the group this test started: stage, workers, resource tracker
        pool.wait(timeout=30)
    assert list(shm.glob(f"sem.loky-{pool.pid}-*")), "a killed pool leaves its semaphores"
    # The next stage 04 with worker processes (two fits side by side) clears them before it starts its own.
    cfg = dataclasses.replace(small_cluster_config(n_clusters=(2.0, 6.0)), n_jobs=2)
    segment_customers({"raw": blobs()}, ["kmeans", "gmm"], cfg, 0)
    assert not list(shm.glob(f"sem.loky-{pool.pid}-*"))
    assert not list(shm.glob(f"joblib_memmapping_folder_{pool.pid}_*"))
