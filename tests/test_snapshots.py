"""Segments over time (issue 16): snapshot dates, windows, the trained chain at each date, transitions, bad input.

Unit tests on hand-made tables first (expected values worked out by hand in
the comments), then contract and behaviour tests on the small pipeline run
of ``tests/test_pipeline.py`` (its session fixture, read-only).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from conftest import small_config_document, write_config
from test_pipeline import pipeline_run  # noqa: F401 - the session fixture
from core.cluster import snapshots
from core.cluster.settings import SnapshotsConfig, check_snapshots
from core.config import load_config
from core.framework import paths
from core.framework.schema import ConfigError, Problems
from core.pipeline import run_stage, stage_by_name
from core.scoring import load_saved_run

QUARTERLY = SnapshotsConfig(enabled=True, every="quarter", dates=(), window_days=180, warmup_days=180,
                            switch_ratio=1.0, min_orders=0, weak_switch_ratio=1.0)
D = dt.date


# --- when: snapshot dates ---------------------------------------------------------------------------

def test_quarter_ends_after_the_warm_up():
    # 2023-01-01 + 180 days = 2023-06-30, itself a quarter end: seven quarter ends to 2024-12-31.
    dates = snapshots.snapshot_dates(QUARTERLY, D(2023, 1, 1), D(2024, 12, 31))
    assert [str(d.date()) for d in dates] == ["2023-06-30", "2023-09-30", "2023-12-31", "2024-03-31",
                                              "2024-06-30", "2024-09-30", "2024-12-31"]
    # A history starting a day later misses the first one.
    assert str(snapshots.snapshot_dates(QUARTERLY, D(2023, 1, 2), D(2024, 12, 31))[0].date()) == "2023-09-30"


@pytest.mark.parametrize("every, expected", [
    ("month", ["2023-10-31", "2023-11-30", "2023-12-31"]),
    ("half_year", ["2023-12-31"]),  # one period end: the history's last day (here the same)
    ("year", ["2023-12-31"]),
])
def test_other_periods(every, expected):
    cfg = dataclasses.replace(QUARTERLY, every=every, warmup_days=300)  # 2023-01-01 + 300 = 2023-10-28
    assert [str(d.date()) for d in snapshots.snapshot_dates(cfg, D(2023, 1, 1), D(2023, 12, 31))] == expected


def test_configured_dates_are_used_in_order():
    cfg = dataclasses.replace(QUARTERLY, dates=(D(2024, 5, 1), D(2023, 8, 15)))
    assert [str(d.date()) for d in snapshots.snapshot_dates(cfg, D(2023, 1, 1), D(2024, 12, 31))] == [
        "2023-08-15", "2024-05-01"]


def test_a_history_too_short_for_two_snapshots_gets_one_on_its_last_day():
    # Warm-up ends 2023-06-30; the only quarter end after it is 2023-06-30 itself, then the history ends.
    dates = snapshots.snapshot_dates(QUARTERLY, D(2023, 1, 1), D(2023, 8, 20))
    assert [str(d.date()) for d in dates] == ["2023-08-20"]


# --- bad input: config errors naming the key ---------------------------------------------------------

@pytest.mark.parametrize("change, key, words", [
    ({"window_days": 400}, "cluster.snapshots.window_days", ["400 days is longer than the history", "at most 365"]),
    ({"warmup_days": 365}, "cluster.snapshots.warmup_days", ["leaves no day"]),
    ({"dates": (D(2022, 12, 31),)}, "cluster.snapshots.dates[0]", ["2022-12-31 is outside the history"]),
    ({"dates": (D(2024, 1, 1),)}, "cluster.snapshots.dates[0]", ["2024-01-01 is outside the history"]),
    ({"dates": (D(2023, 9, 30), D(2023, 3, 31))}, "cluster.snapshots.dates[1]",
     ["2023-03-31 is before the end of the warm-up (2023-06-30"]),
    ({"dates": (D(2023, 9, 30), D(2023, 9, 30))}, "cluster.snapshots.dates", ["lists a date twice"]),
    ({"switch_ratio": 3.0, "weak_switch_ratio": 2.0}, "cluster.snapshots.weak_switch_ratio",
     ["2 is below switch_ratio (3)", "use at least 3"]),
])
def test_settings_the_history_cannot_honour_are_named(change, key, words):
    problems = Problems("config.yml")
    check_snapshots(dataclasses.replace(QUARTERLY, **change), D(2023, 1, 1), D(2023, 12, 31), problems)
    assert len(problems.items) == 1
    assert f"key '{key}'" in problems.items[0]
    for word in words:
        assert word in problems.items[0]


def test_a_disabled_snapshot_section_is_not_checked():
    problems = Problems("config.yml")
    check_snapshots(dataclasses.replace(QUARTERLY, enabled=False, window_days=5000), D(2023, 1, 1),
                    D(2023, 12, 31), problems)
    assert problems.items == []


def test_generated_data_is_checked_when_the_config_loads(tmp_path):
    document = small_config_document()  # history 2023-01-01 to 2023-12-31
    document["cluster"]["snapshots"].update(window_days=500, dates=["2025-03-31"])
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, document))
    text = str(error.value)
    assert "key 'cluster.snapshots.window_days': 500 days is longer than the history of data.history_start" in text
    assert "key 'cluster.snapshots.dates[0]': 2025-03-31 is outside the history" in text


# --- window lines, transitions, the truth measure ---------------------------------------------------

def lines_on(*days: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": np.arange(len(days), dtype=np.int64),
                         "order_date": pd.to_datetime(list(days)).astype("datetime64[us]")})


def test_a_window_holds_the_days_ending_on_the_snapshot_both_ends_included():
    lines = lines_on("2023-03-02", "2023-03-03", "2023-03-31", "2023-04-01")
    # 30 days ending 2023-03-31: 2023-03-02 .. 2023-03-31.
    found = snapshots.window_lines(lines, pd.Timestamp("2023-03-31"), 30, columns=["customer_id", "order_date"])
    assert found.column("customer_id").to_pylist() == [0, 1, 2]


def history_of(rows: dict[str, list]) -> pd.DataFrame:
    """segment_history from {date: [segment of customer 1, 2, ...]} (None: not active)."""
    records = [(c + 1, pd.Timestamp(day), s) for day, segments in rows.items()
               for c, s in enumerate(segments) if s is not None]
    frame = pd.DataFrame(records, columns=["customer_id", "snapshot_date", "segment"])
    frame["segment"] = frame["segment"].astype("Int64")
    return frame


HISTORY = history_of({
    # customer:     1  2  3  4     5
    "2023-03-31": [0, 0, 1, 1, None],
    "2023-06-30": [0, 1, 1, 0, 2],
    "2023-09-30": [0, 1, None, 0, 2],
})


def test_transitions_count_customers_segmented_at_both_dates():
    table = snapshots.transitions(HISTORY)
    assert list(table.columns) == snapshots.TRANSITION_COLUMNS
    # Q1 -> Q2: 1 stays in 0, 2 goes 0 -> 1, 3 stays in 1, 4 goes 1 -> 0 (5 was not active in Q1).
    # Q2 -> Q3: 1 stays 0, 2 stays 1, 4 stays 0, 5 stays 2 (3 not active in Q3).
    assert table.values.tolist() == [
        ["2023-03-31", "2023-06-30", 0, 0, 1], ["2023-03-31", "2023-06-30", 0, 1, 1],
        ["2023-03-31", "2023-06-30", 1, 0, 1], ["2023-03-31", "2023-06-30", 1, 1, 1],
        ["2023-06-30", "2023-09-30", 0, 0, 2], ["2023-06-30", "2023-09-30", 1, 1, 1],
        ["2023-06-30", "2023-09-30", 2, 2, 1]]


def test_one_snapshot_has_no_transition():
    table = snapshots.transitions(HISTORY[HISTORY["snapshot_date"] == "2023-03-31"])
    assert table.empty and list(table.columns) == snapshots.TRANSITION_COLUMNS


def test_the_truth_measure_by_hand():
    events = pd.DataFrame({"customer_id": [2, 4, 5, 1],
                           "event_date": pd.to_datetime(["2023-04-10", "2023-03-31", "2023-05-01",
                                                         "2023-07-01"]).astype("datetime64[us]")})
    found = snapshots.against_events(HISTORY, events)
    # Customer 2: before = 03-31 (0), after = 06-30 (1), 09-30 (1): changed.
    # Customer 4: event on 03-31, so 03-31 is before (1); after 06-30 (0): changed.
    # Customer 5: not active at 03-31, the snapshot before: not measured.
    # Customer 1: event 07-01: before = 06-30, needs two snapshots after: only one: not measured.
    assert (found["events_measured"], found["changed_after_event"]) == (2, 1.0)
    # Without an event: customer 3 only: 03-31 -> 06-30 kept (not active 09-30): 1 pair, kept.
    assert (found["pairs_without_event"], found["kept_without_event"]) == (1, 1.0)


def test_hysteresis_by_hand():
    from core.cluster.clustering import Assignment

    # Segments 3, 5, 7. Row 0 moved 3 -> 5 narrowly (0.35 vs 0.45): kept in 3 with ratio 2 (0.35 * 2 >= 0.45).
    # Row 1 moved 3 -> 5 clearly (0.1 vs 0.8): moves. Row 2 had no previous segment: as assigned.
    # Row 3 stayed: unchanged. Row 4's previous segment 9 is not a segment of the model: as assigned.
    membership = np.array([[0.35, 0.45, 0.20], [0.10, 0.80, 0.10], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1],
                           [0.1, 0.1, 0.8]])
    found = Assignment(labels=np.array([5, 5, 7, 3, 7]), strength=membership.max(axis=1),
                       runner_up=np.array([3, 3, 3, 5, 3]), membership=membership, cluster_ids=np.array([3, 5, 7]))
    labels, strength = snapshots.keep_previous(found, np.array([3, 3, np.nan, 3, 9]), 2.0)
    assert labels.tolist() == [3, 5, 7, 3, 7]
    assert strength.tolist() == pytest.approx([0.35, 0.8, 0.6, 0.7, 0.8])
    # Ratio 1: nobody is held back (only an exact tie would be).
    assert snapshots.keep_previous(found, np.array([3, 3, np.nan, 3, 9]), 1.0)[0].tolist() == [5, 5, 7, 3, 7]
    # Minimum evidence: row 1's clear move (8 times) is held back at a weak-evidence ratio of 10, row 0 moves
    # at ratio 1; the per-row ratios are used row by row.
    ratios = np.array([1.0, 10.0, 10.0, 10.0, 10.0])
    assert snapshots.keep_previous(found, np.array([3, 3, np.nan, 3, 9]), ratios)[0].tolist() == [5, 3, 7, 3, 7]


# --- the stage's outputs on a real run ---------------------------------------------------------------

def read(artifacts_dir, stage: str, file: str) -> pd.DataFrame:
    path = paths.stage_dir(artifacts_dir, stage) / file
    return pd.read_parquet(path) if file.endswith(".parquet") else pd.read_csv(path)


def test_segment_history_holds_one_row_per_customer_active_in_each_window(pipeline_run):
    config_path, artifacts_dir = pipeline_run
    window = load_config(config_path).cluster.snapshots.window_days
    history = read(artifacts_dir, paths.CLUSTER, paths.SEGMENT_HISTORY)
    assert list(history.columns) == snapshots.HISTORY_COLUMNS
    assert str(history["segment"].dtype) == "Int64"
    assert not history.duplicated(["customer_id", "snapshot_date"]).any()
    # The small config's year: quarter ends from the warm-up's end (2023-06-30 or 09-30, by the first order day).
    dates = sorted(history["snapshot_date"].dt.strftime("%Y-%m-%d").unique())
    assert dates[-2:] == ["2023-09-30", "2023-12-31"]
    lines = read(artifacts_dir, paths.GENERATE_DATA, paths.TRANSACTIONS)
    for day in dates:
        start = pd.Timestamp(day) - pd.Timedelta(days=window - 1)
        active = lines.loc[lines["order_date"].between(start, pd.Timestamp(day)), "customer_id"].unique()
        rows = history[history["snapshot_date"] == day]
        assert sorted(rows["customer_id"]) == sorted(active)
        # Segmented rows have a segment and strength and no reason; the others a reason and neither.
        segmented = rows["excluded_reason"] == ""
        assert rows.loc[segmented, "segment"].notna().all() and rows.loc[~segmented, "segment"].isna().all()
        assert rows.loc[segmented, "segment_strength"].between(0, 1).all()
    model_ids = set(read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS)["segment"].unique())
    assert set(history["segment"].dropna().unique()) <= model_ids | {-1}


def test_transitions_csv_is_the_count_of_the_history(pipeline_run):
    _, artifacts_dir = pipeline_run
    history = read(artifacts_dir, paths.CLUSTER, paths.SEGMENT_HISTORY)
    table = read(artifacts_dir, paths.CLUSTER, paths.TRANSITIONS)
    wide = history.dropna(subset=["segment"]).pivot(index="customer_id", columns="snapshot_date", values="segment")
    dates = list(wide.columns)
    for before, after in zip(dates, dates[1:]):
        both = wide[[before, after]].dropna()
        part = table[table["from_date"] == str(before.date())]
        assert part["customers"].sum() == len(both)
        assert part.loc[part["from_segment"] == part["to_segment"], "customers"].sum() == (
            both[before] == both[after]).sum()
    manifest = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.MANIFEST).read_text())
    assert manifest["details"]["snapshots"]["dates"] == [str(d.date()) for d in dates]


def primary_chain(config, artifacts_dir) -> snapshots.TrainedChain:
    """The trained chain of the run's primary segmentation, as stage 04 saved it."""
    saved = load_saved_run(artifacts_dir, config)
    method, space = saved.primary
    return snapshots.TrainedChain(saved.feature_model, saved.autoencoder, saved.models[(method, space)], space,
                                  config.hierarchy)


def test_a_window_of_the_whole_history_gives_the_trained_segments(pipeline_run):
    """No refit: the chain at the analysis date over all the lines is the segmentation stage 04 trained."""
    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    chain = primary_chain(config, artifacts_dir)
    source = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS
    start, end = snapshots.history_range(source)
    found = snapshots.segment_history(
        lambda day: snapshots.window_lines(source, day, (end - start).days + 1), chain, [pd.Timestamp(end)])
    trained = read(artifacts_dir, paths.CLUSTER, paths.ASSIGNMENTS).set_index("customer_id")
    segmented = found.history[found.history["excluded_reason"] == ""].set_index("customer_id")
    assert sorted(segmented.index) == sorted(trained.index)
    assert (segmented["segment"].astype(np.int64) == trained.loc[segmented.index, "segment"]).all()
    assert np.allclose(segmented["segment_strength"], trained.loc[segmented.index, "segment_strength"])


def test_windows_are_built_one_at_a_time_when_they_are_large():
    # 730 days of history, 120-day windows: a window holds about 120/730 of the lines.
    limit = snapshots.SIDE_BY_SIDE_MAX_LINES
    assert snapshots.windows_in_flight(int(limit * 730 / 120), 730, 120) == 2  # exactly at the limit
    assert snapshots.windows_in_flight(int(limit * 730 / 120) + 100, 730, 120) == 1
    assert snapshots.windows_in_flight(136_493_113, 730, 120) == 1  # a million customers: 22 million a window
    assert snapshots.windows_in_flight(1_353_376, 730, 120) == 2  # the default 10,000 customers
    assert snapshots.windows_in_flight(limit + 1, 10, 120) == 1  # a window longer than the history holds it all


def test_the_history_does_not_depend_on_how_many_windows_are_in_flight(pipeline_run):
    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    chain = primary_chain(config, artifacts_dir)
    source = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS
    cfg = config.cluster.snapshots
    history = snapshots.history_range(source)

    def segments(dates, in_flight):
        return snapshots.segment_history(lambda day: snapshots.window_lines(source, day, cfg.window_days), chain,
                                         dates, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio,
                                         in_flight=in_flight).history

    monthly = snapshots.snapshot_dates(dataclasses.replace(cfg, every="month"), *history)
    assert len(monthly) >= 3, "more windows than are in flight: both paths are used"
    pd.testing.assert_frame_equal(segments(monthly, 1), segments(monthly, 2))
    # One at a time gives what stage 04 wrote (two in flight at this size).
    pd.testing.assert_frame_equal(segments(snapshots.snapshot_dates(cfg, *history), 1),
                                  read(artifacts_dir, paths.CLUSTER, paths.SEGMENT_HISTORY), check_dtype=False)

def test_reading_the_log_once_by_block_of_customers_gives_the_same_history(pipeline_run, tmp_path):
    """Stage 04 reads a log split by customer once for all windows: the history is the window-by-window one."""
    import pyarrow.parquet as pq

    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    chain = primary_chain(config, artifacts_dir)
    cfg = config.cluster.snapshots
    source = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS
    dates = snapshots.snapshot_dates(cfg, *snapshots.history_range(source))
    # The same lines in 13 row groups: customers straddle row groups, as in the generator's large logs.
    table = pq.read_table(source)
    split = tmp_path / "transactions.parquet"
    pq.write_table(table, split, row_group_size=len(table) // 13 + 1)
    block_lines = len(table) // 4
    blocks = snapshots.customer_blocks(split, block_lines)
    assert len(blocks) >= 3
    ids = table.column("customer_id").to_numpy()
    assert blocks[0][1] is None and blocks[-1][2] is None
    bounds = [b[1] for b in blocks[1:]]
    assert bounds == sorted(bounds) and [b[2] for b in blocks[:-1]] == bounds
    # Every line in exactly one block, and a cut falls inside a customer's row groups (read by both blocks).
    size = len(table) // 13 + 1
    held = np.zeros(len(ids), np.int64)
    for groups, low, high in blocks:
        rows = np.concatenate([np.arange(g * size, min((g + 1) * size, len(ids))) for g in groups])
        inside = rows[(ids[rows] >= (low if low is not None else ids.min()))
                      & (ids[rows] < (high if high is not None else ids.max() + 1))]
        held[inside] += 1
    assert (held == 1).all()
    assert any(set(a[0]) & set(b[0]) for a, b in zip(blocks, blocks[1:]))
    built = snapshots.block_windows(split, chain.feature_model, chain.hierarchy, dates, cfg.window_days, block_lines)
    found = snapshots.history_of_windows(chain, built, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio)
    one_by_one = snapshots.segment_history(lambda day: snapshots.window_lines(source, day, cfg.window_days), chain,
                                           dates, cfg.switch_ratio, cfg.min_orders, cfg.weak_switch_ratio).history
    pd.testing.assert_frame_equal(found.history, one_by_one)
    assert [w.lines for w in built] == [len(snapshots.window_lines(source, d, cfg.window_days)) for d in dates]
    # Stage 04 took that path and wrote the same history.
    pd.testing.assert_frame_equal(one_by_one, read(artifacts_dir, paths.CLUSTER, paths.SEGMENT_HISTORY),
                                  check_dtype=False)
    manifest = json.loads((paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.MANIFEST).read_text())
    assert manifest["details"]["snapshots"]["reader"] == "once, by block of customers"


def test_a_log_not_split_by_customer_is_read_window_by_window(pipeline_run, tmp_path):
    import pyarrow.parquet as pq

    config_path, artifacts_dir = pipeline_run
    source = paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS
    table = pq.read_table(source)
    shuffled = tmp_path / "shuffled.parquet"
    order = np.random.default_rng(0).permutation(len(table))
    pq.write_table(table.take(order), shuffled, row_group_size=len(table) // 8 + 1)
    assert snapshots.customer_blocks(shuffled, len(table) // 4) is None
    chain = primary_chain(load_config(config_path), artifacts_dir)
    assert snapshots.block_windows(shuffled, chain.feature_model, chain.hierarchy, [pd.Timestamp("2023-12-31")],
                                   120, len(table) // 4) is None
    # A log small enough for one block is one block, whatever its order.
    assert snapshots.customer_blocks(shuffled, len(table)) == [(list(range(8)), None, None)]


def test_a_log_too_short_for_two_snapshots_gets_one_and_says_so(pipeline_run, tmp_path, caplog):
    """Stage 04 alone, rerun with a year-long warm-up: one snapshot on the last day, a warning, no transition."""
    import shutil

    config_path, artifacts_dir = pipeline_run
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, copy)
    document = small_config_document()
    document["cluster"]["snapshots"].update(every="year", warmup_days=330)
    config = load_config(write_config(tmp_path / "config", document))
    run_stage(stage_by_name(paths.CLUSTER), config, copy)
    history = read(copy, paths.CLUSTER, paths.SEGMENT_HISTORY)
    assert history["snapshot_date"].nunique() == 1
    assert read(copy, paths.CLUSTER, paths.TRANSITIONS).empty
    assert "too short for more than one snapshot" in caplog.text


def test_a_window_longer_than_the_log_holds_stops_stage_04_before_any_fit(pipeline_run, tmp_path):
    """The config's history is 365 days; the log's is 364 (1 January is a closed day): stage 04 names the key."""
    import shutil

    _, artifacts_dir = pipeline_run
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, copy)
    model_file = paths.stage_dir(copy, paths.CLUSTER) / paths.cluster_model_file("kmeans", "raw")
    before = model_file.stat().st_mtime_ns
    document = small_config_document()
    document["cluster"]["snapshots"].update(window_days=365)
    config = load_config(write_config(tmp_path / "config", document))  # fits the config's own dates
    with pytest.raises(ConfigError, match=r"key 'cluster\.snapshots\.window_days': 365 days is longer than the "
                                          r"history transactions\.parquet holds \(2023-01-02 to 2023-12-31, 364 "
                                          r"days\); use at most 364"):
        run_stage(stage_by_name(paths.CLUSTER), config, copy)
    assert model_file.stat().st_mtime_ns == before  # nothing was fitted or written


# --- against the truth: persona events ---------------------------------------------------------------

@pytest.fixture(scope="module")
def events_run(tmp_path_factory):
    """The whole pipeline on 1,500 customers over 2023-2024, life events three times as frequent as shipped.

    Only the number of events is raised (so that enough happen to measure): what a customer does
    after one, the segmentation settings (the shipped cluster ranges, the default data's primary) and
    the snapshots and the autoencoder's training are as shipped.
    """
    import copy

    import yaml

    from conftest import SHIPPED_CONFIG
    from core.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("events")
    document = small_config_document()
    shipped = yaml.safe_load((SHIPPED_CONFIG / "config.yml").read_text(encoding="utf-8"))
    document["data"].update(n_customers=1500, history_start="2023-01-01", history_end="2024-12-31")
    document["generate_data"]["identity"]["pool_size"] = 300
    for method in ("gmm", "fcm", "kmeans"):
        document["cluster"][method] = copy.deepcopy(shipped["cluster"][method])
    document["cluster"]["hdbscan"] = copy.deepcopy(shipped["cluster"]["hdbscan"])
    # The shipped training too: the fixture delivers fuzzy c-means in the latent space, and a network left
    # near its random start (the small config's 15 epochs explain about 2% of the held-out customers) makes
    # that space the network's draw rather than the customers' mixes. 1,200 training rows: a few seconds.
    document["train_autoencoder"] = copy.deepcopy(shipped["train_autoencoder"])
    # The default data's own choice (auto picks fuzzy c-means in the latent space there); the hysteresis
    # needs a method with memberships, which k-means, auto's choice on this small run, is not.
    document["cluster"]["primary"].update(method="fcm", space="latent")
    personas = yaml.safe_load((SHIPPED_CONFIG / "personas.yml").read_text(encoding="utf-8"))
    for persona in personas["personas"].values():
        for event in persona.get("life_events", []):
            event["yearly_rate"] = min(0.9, event["yearly_rate"] * 3)
    config = load_config(write_config(folder / "config", document, personas=personas))
    artifacts = folder / "artifacts"
    run_pipeline(config, artifacts)
    return config, artifacts


def test_segments_follow_life_events_and_hold_without_them(events_run):
    """Customers with a persona event change segment several times as often as the others, who mostly keep theirs.

    The issue's targets (0.6 and 0.9) are for the default data (10,000 customers, the shipped training),
    where the benchmark measures 0.614 and 0.914 (seed 7: 0.678, 0.940; benchmarks/RESULTS.md). This
    1,500-customer run segments more coarsely (the cluster ranges follow the data size), so fewer events
    cross a segment border: with the shipped training it measured 0.314 of 35 events changed and 0.962 of
    1,668 steady pairs kept (with the small config's 15 epochs, before the square-rooted shares and stage
    03's own loop: 0.257 and 0.950; 0.326 and 0.860 without the hysteresis and the minimum-evidence rule). Asserted: the second target itself; event customers changing at least three times as often as
    steady ones (5.1 times measured; snapshots blind to life events would give about 1); and a floor of
    0.2 changed, four times the steady customers' 0.05.
    """
    _, artifacts = events_run
    events = read(artifacts, paths.GENERATE_DATA, paths.PERSONA_EVENTS)
    history = read(artifacts, paths.CLUSTER, paths.SEGMENT_HISTORY)
    found = snapshots.against_events(history, events)
    shown = repr(found)
    assert found["events_measured"] >= 30, shown
    assert found["pairs_without_event"] >= 1500, shown
    assert found["kept_without_event"] >= 0.9, shown
    assert found["changed_after_event"] >= 0.2, shown
    assert found["changed_after_event"] >= 3 * (1 - found["kept_without_event"]), shown


def test_a_window_built_in_blocks_joins_its_counts_row_for_row():
    """At scale a window's customers come in several blocks; their counts spaces are stacked in block order
    (a CountMatrix answers len(), which scipy's vstack took for a sequence of rows: an error when the blocks have
    as many rows, minutes at a million customers otherwise)."""
    import scipy.sparse as sp

    from core.cluster.count_mixture import count_space

    columns = ["class_units__d0__a", "class_units__d0__b", "class_units__d1__c"]
    rng = np.random.default_rng(3)
    parts = []
    for start, rows in [(0, 30), (30, 30), (60, 30)]:  # blocks of one size: the old stacking raised
        counts = sp.random(rows, 3, density=0.5, format="csr", random_state=start) * 10
        parts.append(snapshots.WindowMatrix(ids=np.arange(start, start + rows), matrix=rng.random((rows, 2)),
                                            orders=None, excluded=pd.DataFrame(), counts=count_space(counts, columns)))
    joined = snapshots._joined(parts, 2)
    assert joined.counts.shape == (90, 3) and joined.counts.columns == tuple(columns)
    assert (joined.counts != sp.vstack([sp.csr_matrix(p.counts) for p in parts])).nnz == 0
    assert np.array_equal(joined.ids, np.arange(90))
