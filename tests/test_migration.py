"""Migration between segments in the profiles and the report (issue 16, stage 05).

The transition table below is small enough to work out by hand; the
expected values in the comments are that arithmetic, not the code's output.
Then the stage's outputs on the small pipeline run of ``tests/test_pipeline.py``.
"""

from __future__ import annotations

import json
from html import unescape

import pandas as pd
import pytest

from test_pipeline import pipeline_run  # noqa: F401 - the session fixture
from core.framework import paths
from core.profile_export import migration

# Two periods. Q1 -> Q2: segment 0 keeps 8, loses 2 to segment 1; segment 1 keeps 5, loses 1 to 0.
# Q2 -> Q3: segment 0 keeps 6, loses 3 to 1 and 1 to 2; segment 1 keeps 9.
MOVES = pd.DataFrame([
    ("2023-03-31", "2023-06-30", 0, 0, 8), ("2023-03-31", "2023-06-30", 0, 1, 2),
    ("2023-03-31", "2023-06-30", 1, 0, 1), ("2023-03-31", "2023-06-30", 1, 1, 5),
    ("2023-06-30", "2023-09-30", 0, 0, 6), ("2023-06-30", "2023-09-30", 0, 1, 3),
    ("2023-06-30", "2023-09-30", 0, 2, 1), ("2023-06-30", "2023-09-30", 1, 1, 9),
], columns=["from_date", "to_date", "from_segment", "to_segment", "customers"])
NAMES = {0: "Zero", 1: "One", 2: "Two"}


def test_the_transition_matrix_pools_every_period():
    matrix = migration.transition_matrix(MOVES)
    # From 0: 8 + 6 = 14 stay, 2 + 3 = 5 to 1, 1 to 2, of 20.  From 1: 1 to 0, 5 + 9 = 14 stay, of 15.
    assert matrix.loc[0].tolist() == pytest.approx([14 / 20, 5 / 20, 1 / 20])
    assert matrix.loc[1].tolist() == pytest.approx([1 / 15, 14 / 15, 0.0])
    assert 2 not in matrix.index  # nobody was seen leaving segment 2


def test_inflow_outflow_and_next_segments_by_hand():
    blocks = migration.segment_migration(MOVES, NAMES, top=2)
    # The last period is Q2 -> Q3.
    assert blocks[0]["last_period"] == {"from": "2023-06-30", "to": "2023-09-30", "stayed": 6, "inflow": 0,
                                        "outflow": 4}
    assert blocks[1]["last_period"] == {"from": "2023-06-30", "to": "2023-09-30", "stayed": 9, "inflow": 3,
                                        "outflow": 0}
    assert blocks[2]["last_period"] == {"from": "2023-06-30", "to": "2023-09-30", "stayed": 0, "inflow": 1,
                                        "outflow": 0}
    assert blocks[0]["next_segments"] == [{"segment_id": 0, "name": "Zero", "probability": 0.7},
                                          {"segment_id": 1, "name": "One", "probability": 0.25}]
    assert blocks[0]["observed"] == 20 and blocks[1]["observed"] == 15
    # Segment 2 was never seen at a snapshot with a next one: no estimate, not a made-up one.
    assert blocks[2]["next_segments"] == [] and blocks[2]["observed"] == 0


def test_no_transition_gives_no_period_and_no_estimate():
    blocks = migration.segment_migration(MOVES.iloc[0:0], NAMES)
    assert blocks[0] == {"last_period": None, "next_segments": [], "observed": 0}


def test_sizes_over_time_count_segmented_customers():
    history = pd.DataFrame({"customer_id": [1, 2, 3, 1, 2, 3],
                            "snapshot_date": pd.to_datetime(["2023-03-31"] * 3 + ["2023-06-30"] * 3),
                            "segment": pd.array([0, 0, None, 0, 1, 1], dtype="Int64")})
    sizes = migration.sizes_over_time(history)
    assert sizes.values.tolist() == [[2, 0], [1, 2]] and list(sizes.columns) == [0, 1]
    assert migration.customers_followed(history) == 3


def test_profiles_and_report_carry_the_migration(pipeline_run):
    _, artifacts_dir = pipeline_run
    folder = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    document = json.loads((folder / paths.SEGMENT_PROFILES_JSON).read_text(encoding="utf-8"))
    moves = pd.read_csv(paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.TRANSITIONS)
    last = moves[moves["to_date"] == moves["to_date"].max()]
    described = [s for s in document["segments"] if not s["suppressed"]]
    assert described and all("migration" in s for s in described)
    for segment in described:
        block, sid = segment["migration"], segment["segment_id"]
        moved = last["from_segment"] != last["to_segment"]
        assert block["last_period"]["outflow"] == last.loc[moved & (last["from_segment"] == sid), "customers"].sum()
        assert block["last_period"]["inflow"] == last.loc[moved & (last["to_segment"] == sid), "customers"].sum()
        probabilities = [n["probability"] for n in block["next_segments"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-3  # rounded to 4 places
    html = unescape((folder / paths.REPORT).read_text(encoding="utf-8"))
    assert "Segments over time" in html and "Moves between segments" in html
    assert (folder / paths.SEGMENT_FLOW_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert (folder / paths.SEGMENT_SIZES_OVER_TIME_PLOT).read_bytes()[:4] == b"\x89PNG"
