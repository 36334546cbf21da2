"""Next-best classes (core/profile_export/recommendations.py): hand-worked scores, reasons, metrics, honesty, bad input.

The tiny catalog has three merchandise classes, A, B (Ladies Clothing) and C (Home),
and the till's other lines (bag levy, gift cards) and data-quality classes.

Co-occurrence, worked by hand. Customers 0 and 1 bought {A, B}, customer 2 {A, C}:
the class-by-class co-purchase counts are A 3, B 2, C 1, A&B 2, A&C 1, B&C 0, so
the cosine similarities are A-B 2 / sqrt(3 x 2) = 0.8165, A-C 1 / sqrt(3 x 1) = 0.5774,
B-C 0. A customer whose own (recency) scores are B 1, C 0.5 gets co-occurrence
A = 1 x 0.8165 + 0.5 x 0.5774 = 1.1052, B = 0.5 x 0 = 0, C = 1 x 0 = 0; scaled to its
maximum: A 1, B 0, C 0. B contributes most to A (0.8165 against 0.2887): "often bought with B".

Blend, worked by hand. Segment 0 is customers 0-2 (A bought by 3 of 3, B by 2, C by 1:
popularity 1, 2/3, 1/3 of the maximum); customer 0's own scores are A 1, B 0.5, C 0.
With weights own 0.6, segment 0.4: A = 0.6 + 0.4 = 1.0 (own 0.6 > segment 0.4: "buys
again"), B = 0.6 x 0.5 + 0.4 x 2/3 = 0.5667 (own 0.30 > segment 0.2667: "buys again"),
C = 0.4 x 1/3 = 0.1333 ("popular in segment"). A tie between components goes to the first
of own, segment, co-occurrence, season.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.sparse as sp

from core.config import load_config
from core.domain.hierarchy import load_hierarchy, parse_hierarchy
from core.framework import paths
from core.framework.schema import ConfigError
from core.framework.stage import StageContext
from core.profile_export import recommendations as rec
from core.profile_export.recommendation_outputs import Stopped, fit_recommendations, write_recommendations
from core.profile_export.settings import RecommendationsConfig
from core.profile_export.stage import STAGE
from conftest import small_config_document, write_config
from test_pipeline import pipeline_run  # noqa: F401 - a fixture

ANALYSIS = pd.Timestamp("2024-12-31")
WINDOW = 182
EVALUATION_CUT = ANALYSIS - pd.Timedelta(days=WINDOW)
VALIDATION_CUT = EVALUATION_CUT - pd.Timedelta(days=WINDOW)
SQRT6, SQRT3 = math.sqrt(6), math.sqrt(3)


def tiny_hierarchy():
    return parse_hierarchy({"departments": {
        "Ladies Clothing": {"kind": "merchandise", "classes": ["A", "B"], "data_quality_classes": ["DUMMY", "Unknown"]},
        "Home": {"kind": "merchandise", "classes": ["C"], "data_quality_classes": ["UNASSIGNED D11"]},
        "Bag Levy": {"kind": "bag_levy", "classes": ["Paper Bags"]},
        "Gift Cards": {"kind": "gift_card", "classes": ["Gift Cards"]},
        "Dummy": {"kind": "data_quality", "classes": ["Dummy"]},
    }}, "test")


def lines(rows) -> pd.DataFrame:
    """Order lines from (customer, date, department, class[, is_return]) tuples, 10.0 each."""
    frame = pd.DataFrame([r if len(r) == 5 else (*r, False) for r in rows],
                         columns=["customer_id", "order_date", "department", "class", "is_return"])
    return frame.assign(order_date=pd.to_datetime(frame["order_date"]), line_amount=10.0)


def history_of(frame: pd.DataFrame, customers, level: str = "class") -> rec.PurchaseHistory:
    history = rec.PurchaseHistory(customers, rec.recommendable_items(tiny_hierarchy(), level),
                                  [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS], WINDOW)
    history.add(frame)
    return history


def interactions(counts, recency=None, season=None) -> rec.Interactions:
    counts = sp.csr_matrix(np.asarray(counts, dtype=float))
    recency = counts if recency is None else sp.csr_matrix(np.asarray(recency, dtype=float))
    season = np.zeros(counts.shape[1]) if season is None else np.asarray(season, dtype=float)
    return rec.Interactions(counts=counts, recency=recency, spend=counts * 10.0, season=season)


# --- what may be recommended ------------------------------------------------------------------


def test_only_sellable_merchandise_classes_can_be_recommended():
    shipped = load_hierarchy(paths.REPO_ROOT / "config" / "hierarchy.yml")
    items = rec.recommendable_items(shipped)
    kinds = {name: d.kind for name, d in shipped.departments.items()}
    assert len(items) == 332 and {kinds[d] for d in items["department"]} == {"merchandise"}
    for department, name in zip(items["department"], items["class"]):
        assert name in shipped.departments[department].classes
        assert name not in shipped.departments[department].data_quality_classes
    assert not items["class"].isin(["Unknown", "DUMMY", "Dummy"]).any()
    # A name two departments share is told apart in reasons.
    assert "Kids (Sports Shop)" in set(items["label"]) and "Kids (Accessories)" in set(items["label"])


def test_till_lines_data_quality_and_unknown_classes_map_to_no_item():
    frame = lines([(1, "2024-01-01", "Ladies Clothing", "B"), (1, "2024-01-01", "Bag Levy", "Paper Bags"),
                   (1, "2024-01-01", "Gift Cards", "Gift Cards"), (1, "2024-01-01", "Ladies Clothing", "DUMMY"),
                   (1, "2024-01-01", "Ladies Clothing", "Unknown"), (1, "2024-01-01", "Unknown", "Unknown"),
                   (1, "2024-01-01", "Home", "Not in the hierarchy"), (1, "2024-01-01", "Dummy", "Dummy"),
                   (1, "2024-01-01", "Home", "C")])
    codes = rec.item_codes(frame, rec.recommendable_items(tiny_hierarchy()))
    assert codes.tolist() == [1, -1, -1, -1, -1, -1, -1, -1, 2]


def test_an_unknown_class_bought_most_is_never_recommended():
    frame = lines([(1, "2024-01-05", "Ladies Clothing", "Unknown")] * 20
                  + [(1, "2024-01-05", "Ladies Clothing", "A"), (2, "2024-01-05", "Home", "C")])
    history = history_of(frame, [1, 2])
    fit = history.interactions(2)
    model = rec.NextBestClasses(weights={"own": 1.0}, top_k=3).fit(fit, np.array([0, 0]))
    table = rec.recommendation_table(model.recommend(fit, np.array([0, 0])), [1, 2], history.items)
    assert set(table["class"]) <= {"A", "B", "C"} and "Unknown" not in set(table["class"])
    assert history.lines == 2


# --- scores and reasons, worked by hand -------------------------------------------------------


def test_cooccurrence_scores_and_reason_match_the_hand_computation():
    fit = interactions([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1]], recency=[[1, 1, 0], [1, 1, 0], [1, 0, 1],
                                                                                 [0, 1, 0.5]])
    segments = np.array([0, 0, 0, 1])
    # Similarity from customers 0-2 only (customer 3 would add B&C): fit on them, score customer 3's history.
    model = rec.NextBestClasses(weights={"cooccurrence": 1.0}, top_k=1).fit(
        interactions([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]]), segments)
    assert model.similarity_ == pytest.approx(np.array([[0, 2 / SQRT6, 1 / SQRT3], [2 / SQRT6, 0, 0],
                                                        [1 / SQRT3, 0, 0]]))
    comps = model.components(fit, segments, np.array([3]))
    assert comps["cooccurrence"][0] == pytest.approx([1.0, 0.0, 0.0])
    recommended = model.recommend(fit, segments, np.array([3]))
    assert recommended.items.tolist() == [[0]] and recommended.scores[0, 0] == pytest.approx(1.0)
    items = rec.recommendable_items(tiny_hierarchy())
    assert rec.reason_texts(recommended, items).tolist() == [["often bought with B"]]


def test_blend_scores_and_reasons_match_the_hand_computation():
    fit = interactions([[2, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 1]], recency=[[1, 0.5, 0], [1, 1, 0], [1, 0, 1],
                                                                                 [0, 0, 1]])
    segments = np.array([0, 0, 0, 1])
    model = rec.NextBestClasses(weights={"own": 0.6, "segment": 0.4}, top_k=3).fit(fit, segments)
    assert model.segment_popularity_ == pytest.approx(np.array([[1, 2 / 3, 1 / 3], [0, 0, 1]]))
    recommended = model.recommend(fit, segments, np.array([0]))
    assert recommended.items.tolist() == [[0, 1, 2]]
    assert recommended.scores[0] == pytest.approx([1.0, 0.3 + 0.4 * 2 / 3, 0.4 / 3], abs=1e-6)
    items = rec.recommendable_items(tiny_hierarchy())
    assert rec.reason_texts(recommended, items).tolist() == [["buys again", "buys again", "popular in segment"]]


def test_season_reason_and_the_popularity_filler():
    fit = interactions([[1, 0, 0], [1, 1, 0]], season=[0, 0, 4])
    model = rec.NextBestClasses(weights={"season": 1.0}, top_k=3).fit(fit, np.array([0, 0]))
    recommended = model.recommend(fit, np.array([0, 0]), np.array([0]))
    # C is in season; A and B score 0 and fill by how many bought them (A 2, B 1), shown as such.
    assert recommended.items.tolist() == [[2, 0, 1]]
    assert recommended.scores[0].tolist() == [1.0, 0.0, 0.0]
    assert rec.reason_texts(recommended, rec.recommendable_items(tiny_hierarchy())).tolist() == [
        ["in season", rec.FALLBACK_REASON, rec.FALLBACK_REASON]]


def test_top_k_keeps_positive_scores_best_first():
    items, scores = rec.top_k(np.array([[0.2, 0.0, 0.5], [0.0, 0.0, 0.0]]), 3)
    assert items.tolist() == [[2, 0, -1], [-1, -1, -1]]
    assert scores.tolist() == [[0.5, 0.2, 0.0], [0.0, 0.0, 0.0]]


def test_top_k_picks_the_set_argpartition_picks_ties_nan_and_infinities_included():
    """top_k finds the top k by arg-max passes; rows tied at the k-th place or holding a NaN go to argpartition
    itself. Whatever the scores, the lists are those of argpartition's top k ordered by score, then item."""
    def reference(scores, k):
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        picked = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -picked), axis=1)
        items, best = np.take_along_axis(part, order, axis=1), np.take_along_axis(picked, order, axis=1)
        return np.where(best > 0, items, -1), np.where(best > 0, best, 0.0)

    rng = np.random.default_rng(3)
    for trial in range(120):
        n, m = int(rng.integers(0, 60)), int(rng.integers(6, 40))
        scores = [rng.random((n, m)).astype(np.float32), rng.integers(0, 3, (n, m)).astype(np.float64),
                  np.where(rng.random((n, m)) < 0.05, np.nan, rng.random((n, m))),
                  np.where(rng.random((n, m)) < 0.5, -np.inf, rng.integers(0, 3, (n, m))).astype(np.float32),
                  np.where(rng.random((n, m)) < 0.3, np.inf, rng.integers(0, 3, (n, m))),
                  np.broadcast_to(rng.random(m), (n, m))][trial % 6]
        for k in (1, 3, 5):
            items, best = rec.top_k(scores, k)
            want_items, want_best = reference(scores, k)
            np.testing.assert_array_equal(items, want_items)
            np.testing.assert_array_equal(best, want_best)


def test_threads_change_nothing_in_the_history_the_scores_or_the_department_order(monkeypatch):
    """Batches summed and scored side by side give what one thread gives, sum for sum."""
    frame = lines([(c, day, "Ladies Clothing" if (c + i) % 3 else "Home", "AB"[(c * i) % 2] if (c + i) % 3 else "C")
                   for c in range(1, 40) for i, day in enumerate(["2023-05-01", "2024-01-10", "2024-08-01",
                                                                  "2024-12-01"][:1 + c % 4])])
    segments = np.arange(1, 40) % 3

    def run():
        history = rec.PurchaseHistory(np.arange(1, 40), rec.recommendable_items(tiny_hierarchy()),
                                      [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS], WINDOW)
        for start in range(0, len(frame), 7):
            history.add(frame.iloc[start:start + 7])
        fit = history.interactions(2)
        model = rec.NextBestClasses(top_k=2, batch_size=4).fit(fit, segments)
        totals = rec.DepartmentTotals(segments, rec.recommendable_items(tiny_hierarchy()))
        return fit, model.recommend(fit, segments, departments=totals), totals.totals

    monkeypatch.setattr(rec, "SCORE_THREADS", 1)
    one = run()
    monkeypatch.setattr(rec, "SCORE_THREADS", 3)
    three = run()
    for name in ("counts", "recency", "spend", "days", "last", "first"):
        assert (getattr(one[0], name) != getattr(three[0], name)).nnz == 0
    for field in ("rows", "items", "scores", "reason", "because"):
        np.testing.assert_array_equal(getattr(one[1], field), getattr(three[1], field))
    np.testing.assert_array_equal(one[2], three[2])


def test_two_threads_may_cut_a_history_whose_batches_are_still_being_summed(monkeypatch):
    """Stage 05 cuts the holdout and the final cut side by side as soon as the lines are read. Both first calls
    wait for the batches' sums; they wait one after the other (two waits at once cancelled each other's sums:
    CancelledError, and two threads joining the last batches into a block at once lost them), and both cuts are
    the whole history's."""
    monkeypatch.setattr(rec, "SCORE_THREADS", 2)
    monkeypatch.setattr(rec, "BLOCK_ENTRIES", 50)
    frame = sample_frame(59)
    whole = history_of(frame, np.arange(1, 63))
    history = rec.PurchaseHistory(np.arange(1, 63), rec.recommendable_items(tiny_hierarchy()),
                                  [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS], WINDOW)
    for start in range(0, len(frame), 20):
        history.add(frame.iloc[start:start + 20])
    waiting, most, wait = [0], [0], history._summing.wait

    def watched_wait():
        waiting[0] += 1
        most[0] = max(most[0], waiting[0])
        time.sleep(0.2)  # long enough for the other thread to arrive
        try:
            wait()
        finally:
            waiting[0] -= 1

    monkeypatch.setattr(history._summing, "wait", watched_wait)
    got, errors = {}, []

    def cut(which):
        try:
            got[which] = history.interactions(which)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=cut, args=(which,)) for which in (2, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and most[0] == 1
    for which in (2, 1):
        assert (got[which].counts != whole.interactions(which).counts).nnz == 0


def test_the_weight_grid_covers_every_blend_summing_to_one():
    grid = rec.weight_grid()
    assert len(grid) == 3003  # multiples of 0.1 over six components: C(15, 5)
    assert len(rec.weight_grid(0.2)) == 252  # the coarse grid: C(10, 5)
    assert all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert {"own": 0.0, "segment": 1.0, "cooccurrence": 0.0, "season": 0.0, "repeat": 0.0, "profile": 0.0} in grid
    searched = rec.weight_grid(0.2, rec.SEARCHED_COMPONENTS)
    assert len(searched) == 126  # the coarse grid the weight search scores: five components, C(9, 4)
    assert all(w["own"] == 0.0 and sum(w.values()) == pytest.approx(1.0) for w in searched)


def test_the_simplest_blend_within_noise_of_the_best_is_chosen():
    # Customers buy again exactly what they bought: own history is right, segment popularity is not.
    rng = np.random.default_rng(0)
    bought = (rng.random((400, 12)) < 0.25).astype(float)
    bought[bought.sum(axis=1) == 0, 0] = 1.0
    fit = interactions(bought)
    chosen = rec.choose_weights(fit, np.zeros(400, int), sp.csr_matrix(bought), np.arange(400), 3, seed=0)
    # Own history alone, or smoothed by a segment that is everyone (the profile): one component either way.
    assert max(chosen["weights"]["own"], chosen["weights"]["profile"]) == 1.0
    assert chosen["recall"] == pytest.approx(chosen["best_recall"], abs=0.02)
    assert chosen["recall"] > 0.8  # they buy what they bought (up to k = 3 of it)


# --- metrics ---------------------------------------------------------------------------------


def test_ranking_metrics_match_the_hand_computation():
    # Customer 0: recommended 0, 1, 2; bought 1 and 4 (had bought 1 before). Customer 1: 3 only; bought 3.
    recommended = np.array([[0, 1, 2], [3, -1, -1]])
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [0, 0, 0, 1, 0]]))
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]))
    metrics = rec.ranking_metrics(recommended, relevant, seen)
    ndcg_0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # hit at rank 2; ideal: 2 hits at ranks 1-2
    assert metrics["recall"].tolist() == [0.5, 1.0]
    assert metrics["hit_rate"].tolist() == [1.0, 1.0]
    assert metrics["ndcg"] == pytest.approx([ndcg_0, 1.0])
    assert metrics["discovery"].tolist() == [0.0, 1.0]  # customer 0's hit was a class bought before
    summary = rec.summarise([(metrics, recommended)], n_items=5)
    assert summary == {"recall": 0.75, "hit_rate": 1.0, "ndcg": round((ndcg_0 + 1) / 2, 4), "discovery": 0.5,
                       "coverage": 4}


def test_metrics_refuse_a_customer_who_bought_nothing_in_the_window():
    with pytest.raises(ValueError, match="at least one item bought"):
        rec.ranking_metrics(np.array([[0]]), sp.csr_matrix((1, 2)), sp.csr_matrix((1, 2)))


# --- the evaluation never sees the window -----------------------------------------------------


def test_a_class_bought_only_in_the_window_never_reaches_the_evaluation_fit():
    # Customer 1 buys A before the cut and C (which nobody else ever buys) only in the window.
    frame = lines([(1, "2024-03-01", "Ladies Clothing", "A"), (2, "2024-03-01", "Ladies Clothing", "B"),
                   (2, "2024-03-02", "Ladies Clothing", "A"),
                   (1, "2024-10-01", "Home", "C"), (1, "2024-10-01", "Home", "C"),
                   (2, "2024-10-01", "Ladies Clothing", "B")])
    history = history_of(frame, [1, 2])
    segments = np.array([0, 0])
    fit, window = history.interactions(1), history.bought(2)
    assert fit.counts.toarray().tolist() == [[1, 0, 0], [1, 1, 0]]
    assert window.toarray().tolist() == [[0, 0, 1], [0, 1, 0]]
    for weights in rec.weight_grid(0.5):
        model = rec.NextBestClasses(weights=weights, top_k=3).fit(fit, segments)
        assert model.global_popularity_[2] == 0 and model.segment_popularity_[0, 2] == 0
        assert 2 not in model.recommend(fit, segments).items[0]
    evaluation = rec.evaluate_history(history, segments, 3, seed=0)
    assert evaluation["models"]["own_top_classes"]["discovery"] == 0.0
    assert evaluation["models"]["model"]["recall"] == pytest.approx((0 + 1) / 2)  # customer 1 cannot get C
    # The recommendations made at the analysis date do know it: customer 1 buys C again.
    final = rec.NextBestClasses(weights={"own": 1.0}, top_k=1).fit(history.interactions(2), segments)
    recommended = final.recommend(history.interactions(2), segments)
    assert recommended.items[0, 0] == 2 and rec.reason_texts(recommended, history.items)[0, 0] == "buys again"


def test_returns_and_lines_after_the_analysis_date_are_not_purchases():
    frame = lines([(1, "2024-03-01", "Ladies Clothing", "A"), (1, "2024-03-05", "Ladies Clothing", "B", True),
                   (1, "2025-01-02", "Home", "C")])
    history = history_of(frame, [1])
    assert history.interactions(2).counts.toarray().tolist() == [[1, 0, 0]]


def test_replenishment_scores_follow_each_customers_own_rhythm():
    frame = lines([(1, d, "Ladies Clothing", "A") for d in ("2024-10-01", "2024-11-01", "2024-12-01", "2024-12-01")]
                  + [(1, d, "Ladies Clothing", "B") for d in ("2023-01-01", "2023-02-01")]
                  + [(1, "2024-06-01", "Home", "C")]
                  + [(2, d, "Ladies Clothing", "A") for d in ("2024-01-01", "2024-12-01")])
    history = history_of(frame, [1, 2])
    at_end = history.interactions(2)
    assert at_end.days.toarray().tolist() == [[3, 2, 1], [2, 0, 0]]  # two lines on one day are one day
    # Customer 1, A: interval 61 / 2 = 30.5 days, 30 days since, horizon 182: due, not lapsed: 1.
    # B: interval 31 days, 699 days since: 699 - 2 x 31 days past two intervals, exp(-637 / 31).
    # C: one day, no rhythm: 0. Customer 2, A: interval 335 days, 30 days since: (30 + 182) / 335.
    expected = [[1.0, math.exp(-637 / 31), 0.0], [212 / 335, 0.0, 0.0]]
    np.testing.assert_allclose(rec.replenishment_scores(at_end, np.array([0, 1])), expected, rtol=1e-6)
    # At the evaluation cut (2024-07-02) customer 2 had bought A once and customer 1's B is 517 days old.
    np.testing.assert_allclose(rec.replenishment_scores(history.interactions(1), np.array([0, 1])),
                               [[0.0, math.exp(-455 / 31), 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    model = rec.NextBestClasses(weights={"repeat": 1.0}, top_k=1).fit(at_end, np.array([0, 0]))
    table = rec.recommendation_table(model.recommend(at_end, np.array([0, 0])), [1, 2], history.items)
    assert table[["customer_id", "class", "reason"]].values.tolist() == [[1, "A", "due again"],
                                                                         [2, "A", "due again"]]


@pytest.mark.parametrize("block_entries", [1, 3, rec.BLOCK_ENTRIES])
def test_the_purchase_history_is_the_same_whatever_the_batches(monkeypatch, block_entries):
    """The same sums however the log is cut into batches and the batches' sums joined into blocks (one per
    batch, a few batches each, all in one)."""
    monkeypatch.setattr(rec, "BLOCK_ENTRIES", block_entries)
    # Customer 2 buys A twice on 2024-10-01: one day, however the batches split the log between those lines.
    frame = lines([(1, "2023-05-01", "Ladies Clothing", "A"), (1, "2024-03-01", "Ladies Clothing", "A"),
                   (1, "2024-03-01", "Home", "C"), (2, "2024-01-02", "Ladies Clothing", "B"),
                   (2, "2024-10-01", "Ladies Clothing", "A"), (2, "2024-10-01", "Ladies Clothing", "A"),
                   (2, "2024-11-01", "Ladies Clothing", "A", True), (3, "2024-12-30", "Home", "C")])
    whole = history_of(frame, [1, 2, 3])
    assert whole.interactions(2).days.toarray().tolist() == [[2, 0, 1], [1, 1, 0], [0, 0, 1]]
    for size in (1, 2, 3, 5):
        batched = rec.PurchaseHistory([1, 2, 3], rec.recommendable_items(tiny_hierarchy()),
                                      [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS], WINDOW)
        for start in range(0, len(frame), size):
            # Arrow batches with dictionary-encoded names, as stage 05 reads them, and DataFrames alike.
            part = frame.iloc[start:start + size]
            batched.add(pa.Table.from_pandas(part, preserve_index=False).combine_chunks().to_batches()[0]
                        if size % 2 else part)
        for cut in range(3):
            got, want = batched.interactions(cut), whole.interactions(cut)
            for name in ("counts", "days", "last", "first", "spend"):
                assert (getattr(got, name) != getattr(want, name)).nnz == 0, (size, cut, name)
            np.testing.assert_allclose(got.recency.toarray(), want.recency.toarray(), rtol=1e-12)
            np.testing.assert_array_equal(got.season, want.season)
        for period in (1, 2):
            assert (batched.bought(period) != whole.bought(period)).nnz == 0
        blocks = len(batched._sums.blocks)
        assert (blocks == 1) if block_entries > len(frame) else (blocks > 1), (size, blocks)
    assert batched.lines == whole.lines == 7


def test_each_cuts_cooccurrence_from_the_earlier_one_is_the_full_product():
    """The history counts a cut's co-purchases from the earlier cut's plus its new pairs: the same whole numbers
    as the product over every customer, whichever cuts were counted before (and the same similarity)."""
    frame = lines([(c, day, "Ladies Clothing" if (c + i) % 3 else "Home", "AB"[(c * i) % 2] if (c + i) % 3 else "C")
                   for c in range(1, 60) for i, day in enumerate(["2023-05-01", "2024-01-10", "2024-02-01",
                                                                  "2024-08-01", "2024-12-01"][:1 + c % 5])])
    customers = np.arange(1, 63)  # the last three never bought: empty rows at the end
    for order in ([0, 1, 2], [1, 2], [0, 2], [2]):
        history = history_of(frame, customers)
        for cut in order:
            fit = history.interactions(cut)
            counted = fit.cooccurrence()  # first: the full product below also sees whether it left fit intact
            np.testing.assert_array_equal(counted, rec._cooccurrence(rec._binary(fit.counts)))
            model = rec.NextBestClasses().fit(fit, customers % 3)
            plain = rec.NextBestClasses().fit(dataclasses.replace(fit, counted=None), customers % 3)
            np.testing.assert_array_equal(model.similarity_, plain.similarity_)
    assert history_of(frame, customers).interactions(2).cooccurrence()[0, 0] > 0


def test_a_log_not_grouped_by_customer_sums_the_same_lines():
    """Lines in another order than customer by customer: batches are joined and merged by key instead of kept as
    slices; every line counts once (distinct days are exact only for a grouped log: a day split between two
    batches counts in each)."""
    frame = lines([(c, day, "Ladies Clothing" if (c + i) % 3 else "Home", "AB"[(c * i) % 2] if (c + i) % 3 else "C")
                   for c in range(1, 30) for i, day in enumerate(["2023-05-01", "2024-01-10", "2024-08-01",
                                                                  "2024-12-01"][:1 + c % 4])])
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    whole = history_of(frame, np.arange(1, 30))
    for size in (4, 9, 1000):
        batched = rec.PurchaseHistory(np.arange(1, 30), rec.recommendable_items(tiny_hierarchy()),
                                      [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS], WINDOW)
        for start in range(0, len(shuffled), size):
            batched.add(shuffled.iloc[start:start + size])
        for cut in range(3):
            got, want = batched.interactions(cut), whole.interactions(cut)
            for name in ("counts", "spend", "last", "first"):
                assert (getattr(got, name) != getattr(want, name)).nnz == 0, (size, cut, name)
            np.testing.assert_allclose(got.recency.toarray(), want.recency.toarray(), rtol=1e-12)
            assert (got.days.toarray() >= want.days.toarray()).all()
        assert (batched.bought(2) != whole.bought(2)).nnz == 0


def test_dictionary_encoded_names_map_to_the_same_items():
    frame = lines([(1, "2024-01-01", "Ladies Clothing", "B"), (1, "2024-01-01", "Bag Levy", "Paper Bags"),
                   (1, "2024-01-01", "Ladies Clothing", "DUMMY"), (1, "2024-01-01", "Home", "A"),
                   (1, "2024-01-01", "Home", "C"), (1, "2024-01-01", None, "C")])
    items = rec.recommendable_items(tiny_hierarchy())
    table = pa.Table.from_pandas(frame, preserve_index=False)
    encoded = table.set_column(2, "department", pc.dictionary_encode(table["department"]))
    lookup = rec._ItemLookup(items)
    expected = [1, -1, -1, -1, 2, -1]  # Home has no class A; a line without a department is no item
    assert lookup(table["department"], table["class"]).tolist() == expected
    assert lookup(encoded["department"], encoded["class"]).tolist() == expected
    departments = rec._ItemLookup(rec.recommendable_items(tiny_hierarchy(), "department"))
    assert departments(encoded["department"], encoded["class"]).tolist() == [0, -1, 0, 1, 1, -1]


def test_the_holdout_scores_a_seeded_sample_once_there_are_more_evaluable_customers():
    rows = np.arange(5000) * 3
    assert np.array_equal(rec.sample_rows(rows, 5000, seed=1), rows)  # no more than the most: everyone
    sample = rec.sample_rows(rows, 1000, seed=1)
    assert len(sample) == 1000 and len(np.unique(sample)) == 1000 and np.isin(sample, rows).all()
    assert (np.diff(sample) > 0).all()
    assert np.array_equal(sample, rec.sample_rows(rows, 1000, seed=1))
    assert not np.array_equal(sample, rec.sample_rows(rows, 1000, seed=2))
    # 40 customers bought before and in the window: 25 of them are scored, all 40 are counted.
    frame = lines([(c, "2024-03-01", "Ladies Clothing", "A") for c in range(40)]
                  + [(c, "2024-10-01", "Ladies Clothing", "AB"[c % 2]) for c in range(40)]
                  + [(40, "2024-10-01", "Home", "C")])
    history = history_of(frame, list(range(41)))
    holdout = rec.Holdout.of(history, seed=0, max_customers=25)
    assert holdout.customers() == {"evaluated": 25, "evaluable": 40, "new_in_window_not_evaluated": 1,
                                   "evaluated_at_most": 25}
    evaluation = rec.evaluate_history(history, np.zeros(41, int), 1, seed=0, holdout=holdout)
    assert evaluation["customers"]["evaluated"] == 25
    # Each scored customer bought A or B in the window; recall@1 of "A for everyone" is the share who bought A.
    bought_a = np.isin(holdout.scored, np.arange(0, 40, 2)).mean()
    assert evaluation["models"]["global_popularity"]["recall"] == pytest.approx(round(bought_a, 4))


def sample_frame(customers: int) -> pd.DataFrame:
    """Lines of ``customers`` customers (ids 1..), bought before each cut and in the window, varied by customer."""
    return lines([(c, day, "Ladies Clothing" if (c + i) % 3 else "Home", "AB"[(c * i) % 2] if (c + i) % 3 else "C")
                  for c in range(1, customers + 1)
                  for i, day in enumerate(["2023-05-01", "2023-11-10", "2024-02-01", "2024-08-01", "2024-12-01",
                                           "2024-12-20"][:2 + c % 5])])


def test_a_history_cut_for_some_customers_is_the_whole_history_at_their_rows():
    """The evaluation's sampled fits: every matrix of the rows asked for is the whole cut's at those rows, the
    co-occurrence is counted on them alone, and the season stays everyone's."""
    customers = np.arange(1, 63)  # the last three never bought
    whole = history_of(sample_frame(59), customers)
    rows = np.array([0, 3, 4, 10, 20, 33, 58, 60])
    for cut in range(3):
        full, some = whole.interactions(cut), history_of(sample_frame(59), customers).interactions(cut, rows=rows)
        assert some.shape == (len(rows), full.shape[1])
        for name in ("counts", "recency", "spend", "days", "last", "first"):
            assert (getattr(some, name) != getattr(full, name)[rows]).nnz == 0, (cut, name)
        np.testing.assert_array_equal(some.cooccurrence(), rec._cooccurrence(rec._binary(full.counts[rows])))
        np.testing.assert_array_equal(some.season, full.season)
    for period in (1, 2):
        assert (whole.bought(period, rows=rows) != whole.bought(period)[rows]).nnz == 0
    # The sampled cuts leave the whole cuts' co-occurrence counted from the earlier ones intact.
    np.testing.assert_array_equal(whole.interactions(2).cooccurrence(),
                                  rec._cooccurrence(rec._binary(whole.interactions(2).counts)))
    with pytest.raises(ValueError, match="ascending"):
        whole.interactions(0, rows=np.array([3, 1]))


def _fit_on(tmp_path, customers: int, fit_customers: int):
    frame = sample_frame(customers)
    folder = paths.stage_dir(tmp_path, paths.GENERATE_DATA)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / paths.TRANSACTIONS, index=False)
    strategies = load_config(write_config(tmp_path / "config", small_config_document())).strategies
    config = SimpleNamespace(seed=7, hierarchy=tiny_hierarchy(), strategies=strategies, profile_export=SimpleNamespace(
        top_departments=1, recommendations=RecommendationsConfig(
            top_k=2, evaluation_window_days=WINDOW, evaluation_customers=1000, evaluation_fit_customers=fit_customers)))
    ctx = StageContext(stage=STAGE, config=config, artifacts_dir=tmp_path)
    ids = np.arange(1, customers + 1)
    profile = pd.DataFrame({"customer_id": ids, "last_order_date": pd.to_datetime(["2024-12-20"] * customers),
                            "recency_days": 11})
    return fit_recommendations(ctx, profile, pd.DataFrame({"customer_id": ids, "segment": ids % 3}))


def test_the_evaluation_fits_on_a_sample_only_above_evaluation_fit_customers(tmp_path):
    """Up to the key every customer makes the evaluation's fits (the same document as a key far above); above
    it a seeded sample does (the same sample, document and table every time), and the final model still
    learns from every customer."""
    assert rec.evaluation_fit_rows(120, 120, seed=7) is None
    sample = rec.evaluation_fit_rows(120, 40, seed=7)
    assert len(sample) == 40 and (np.diff(sample) > 0).all() and sample[-1] < 120
    assert np.array_equal(sample, rec.evaluation_fit_rows(120, 40, seed=7))
    assert not np.array_equal(sample, rec.evaluation_fit_rows(120, 40, seed=8))
    everyone, far_above = _fit_on(tmp_path / "a", 120, 120), _fit_on(tmp_path / "b", 120, 10_000)
    assert everyone.document == far_above.document and "evaluation_fit_sample" not in everyone.document
    sampled, again = _fit_on(tmp_path / "c", 120, 40), _fit_on(tmp_path / "d", 120, 40)
    assert sampled.document == again.document
    pd.testing.assert_frame_equal(sampled.table, again.table)
    assert sampled.document["customers"]["evaluation_fit_sample"] == 40
    assert "sample of 40 of the 120 segmented customers" in sampled.document["evaluation_fit_sample"]
    # The evaluable customers are those of the sample who bought before and in the window.
    whole = history_of(sample_frame(120), np.arange(1, 121))
    fit, window = whole.interactions(1), whole.bought(2)
    bought = (np.diff(fit.counts.indptr) > 0) & (np.diff(window.indptr) > 0)
    assert sampled.document["customers"]["evaluable"] == int(bought[sample].sum()) < int(bought.sum())
    assert everyone.document["customers"]["evaluable"] == int(bought.sum())
    # The final fit is everyone's: popularity and similarity as with no sample.
    for name in ("global_popularity_", "segment_popularity_", "similarity_"):
        np.testing.assert_array_equal(getattr(sampled.saved.model, name), getattr(everyone.saved.model, name))
    assert len(sampled.table) == len(everyone.table) == 120 * 2


@pytest.mark.parametrize("weights", [{"segment": 0.3, "profile": 0.7}, {"cooccurrence": 0.5, "repeat": 0.5},
                                     {"season": 0.2, "own": 0.8}, dict(zip(rec.COMPONENTS, [1] * 6))])
def test_components_weighted_zero_are_left_out_of_the_recommend_pass_with_the_same_results(weights):
    """recommend() computes only the weighted components: the same top k, scores, reasons and department totals
    as with every component computed (a weight of 0 adds exactly 0)."""
    fit = history_of(sample_frame(59), np.arange(1, 63)).interactions(2)
    segments = np.arange(62) % 3
    model = rec.NextBestClasses(weights=weights, top_k=2, batch_size=16).fit(fit, segments)
    items = rec.recommendable_items(tiny_hierarchy())
    lean_totals, full_totals = rec.DepartmentTotals(segments, items), rec.DepartmentTotals(segments, items)
    lean = model.recommend(fit, segments, departments=lean_totals)
    model.weighted = lambda: rec.COMPONENTS  # every component, as before
    full = model.recommend(fit, segments, departments=full_totals)
    for field in ("rows", "items", "scores", "reason", "because"):
        np.testing.assert_array_equal(getattr(lean, field), getattr(full, field))
    np.testing.assert_array_equal(lean_totals.totals, full_totals.totals)
    assert set(lean.reason.ravel()) - {-1} <= {rec.COMPONENTS.index(c) for c in ("own", "segment", *weights)}


def test_too_few_evaluation_fit_customers_is_a_config_error(tmp_path):
    document = small_config_document()
    document["profile_export"]["recommendations"]["evaluation_fit_customers"] = 500
    with pytest.raises(ConfigError, match=r"profile_export\.recommendations\.evaluation_fit_customers"):
        load_config(write_config(tmp_path / "config", document))


def test_the_cross_sell_order_from_the_recommend_pass_is_the_separate_passs():
    fit = interactions([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 1, 1]])
    segments = np.array([0, 0, 0, 0, 1])
    items = rec.recommendable_items(tiny_hierarchy())
    for weights in ({"segment": 1.0}, {"own": 0.5, "cooccurrence": 0.5}):
        model = rec.NextBestClasses(weights=weights, batch_size=2).fit(fit, segments)
        totals = rec.DepartmentTotals(segments, items)
        model.recommend(fit, segments, departments=totals)
        assert totals.ranked() == rec.ranked_departments(model, fit, segments, items, batch_size=2)
    assert rec.ranked_departments(model, fit, segments, items, rows=np.array([4])) == {0: [], 1: []}


# --- segment cross-sell ----------------------------------------------------------------------


def test_cross_sell_hits_count_only_a_new_department_on_the_segment_list():
    items = rec.recommendable_items(tiny_hierarchy())  # A, B (Ladies Clothing), C (Home)
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=float))
    bought = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float))
    lists = {0: ["Home"], 1: ["Ladies Clothing"]}
    # 0: Home is new and listed; 1: Home bought before; 2: Ladies bought before; 3: Ladies new and listed.
    hits = rec.cross_sell_hits(lists, np.array([0, 0, 1, 1]), np.arange(4), seen, bought, items)
    assert hits.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert rec.cross_sell_hits({0: [], 1: []}, np.array([0, 0, 1, 1]), np.arange(4), seen, bought,
                               items).tolist() == [0.0] * 4


def test_the_model_ranks_a_segments_departments_by_its_scores_on_classes_not_yet_bought():
    # Segment 0 popularity: A 4/4, B 2/4, C 1/4 (scaled 1, 0.5, 0.25). Classes not yet bought score:
    # customer 0 {A, B}: C 0.25; 1 {A, B}: C 0.25; 2 {A, C}: B 0.5; 3 {A}: B 0.5, C 0.25.
    # Ladies Clothing 1.0, Home 0.75. Segment 1's only customer bought everything: nothing to rank.
    fit = interactions([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 1, 1]])
    segments = np.array([0, 0, 0, 0, 1])
    model = rec.NextBestClasses(weights={"segment": 1.0}).fit(fit, segments)
    ranked = rec.ranked_departments(model, fit, segments, rec.recommendable_items(tiny_hierarchy()), batch_size=2)
    assert ranked == {0: ["Ladies Clothing", "Home"], 1: []}


def test_a_segments_cross_sell_comes_from_the_model_only_where_it_won_on_the_holdout(pipeline_run):
    _, artifacts_dir = pipeline_run
    out = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    compared = json.loads((out / paths.RECOMMENDATION_EVALUATION).read_text())["cross_sell"]
    profiles = json.loads((out / paths.SEGMENT_PROFILES_JSON).read_text())["segments"]
    sources = {p["segment_id"]: p["strategy"]["cross_sell_source"] for p in profiles if "strategy" in p}
    assert sources and set(sources.values()) <= {"lift", "recommendations"}
    for segment, result in compared["segments"].items():
        if int(segment) in sources:
            assert sources[int(segment)] == result["chosen"]
        if result["chosen"] == "recommendations":
            assert result["model_hit_rate_same_length"] > result["lift_hit_rate"]
            assert result["customers"] >= 30


# --- score ---------------------------------------------------------------------------------


def test_score_recommends_what_stage_05_recommended_for_the_same_lines(pipeline_run):
    from core.scoring import load_saved_run, score_customers

    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    table = pd.read_parquet(paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT) / paths.RECOMMENDATIONS)
    document = json.loads((paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
                           / paths.RECOMMENDATION_EVALUATION).read_text())
    transactions = pd.read_parquet(paths.stage_dir(artifacts_dir, paths.GENERATE_DATA) / paths.TRANSACTIONS)
    chosen = table["customer_id"].drop_duplicates().iloc[:40]
    # The same customers under new ids: score knows nothing of them but their lines.
    new = transactions[transactions["customer_id"].isin(chosen)].assign(
        customer_id=lambda f: f["customer_id"] + 10_000_000)
    scored = score_customers(new, load_saved_run(artifacts_dir, config),
                             analysis_date=pd.Timestamp(document["analysis_date"]))
    k = config.profile_export.recommendations.top_k
    assert [c for c in scored.columns if c.startswith("next_best_")] == [
        f"next_best_{r}_{p}" for r in range(1, k + 1) for p in ("department", "class", "reason")]
    scored = scored[scored["excluded_reason"] == ""].assign(customer_id=lambda f: f["customer_id"] - 10_000_000)
    assert len(scored) == len(chosen) and (scored["recommendation_note"] == "").all()
    expected = table[table["customer_id"].isin(chosen)].pivot(index="customer_id", columns="rank")
    for rank in range(1, k + 1):
        for part in ("department", "class", "reason"):
            got = scored.set_index("customer_id")[f"next_best_{rank}_{part}"]
            assert got.to_dict() == expected[(part, rank)].loc[got.index].to_dict()


def test_a_new_customer_without_a_segment_is_told_popular_overall_not_popular_in_segment():
    frame = lines([(1, "2024-03-01", "Ladies Clothing", "A"), (1, "2024-03-02", "Ladies Clothing", "B"),
                   (2, "2024-03-01", "Ladies Clothing", "A"), (3, "2024-03-01", "Home", "C")])
    history = history_of(frame, [1, 2, 3])
    fit, segments = history.interactions(2), np.array([0, 0, 1])
    saved = rec.SavedRecommender(model=rec.NextBestClasses(weights={"own": 0.5, "segment": 0.5}, top_k=3).fit(
        fit, segments), items=history.items, level="class", explanation="", analysis_date="2024-12-31",
        horizon_days=WINDOW)
    # Customer 9 bought C once and has no segment (missing): everyone's popularity fills, its own C leads.
    new = lines([(9, "2024-05-01", "Home", "C")])
    table = saved.recommend_lines(new, [9], pd.Series([None], dtype="Int64"), ANALYSIS)
    assert table[["class", "reason"]].values.tolist() == [["C", "buys again"], ["A", rec.FALLBACK_REASON],
                                                          ["B", rec.FALLBACK_REASON]]
    # The same customer in segment 1 (who bought C only): C from its own and the segment's, then nothing else.
    in_segment = saved.recommend_lines(new, [9], [1], ANALYSIS)
    assert in_segment[["class", "reason"]].values.tolist()[0] == ["C", "buys again"]
    assert set(in_segment["reason"][1:]) <= {rec.FALLBACK_REASON}


# --- bad input -------------------------------------------------------------------------------


def test_a_single_line_customer_and_one_who_bought_everything_get_top_k():
    frame = lines([(1, "2024-03-01", "Ladies Clothing", "A")]
                  + [(2, "2024-02-01", d, c) for d, c in (("Ladies Clothing", "A"), ("Ladies Clothing", "B"),
                                                          ("Home", "C"))]
                  + [(3, "2024-02-01", "Home", "C")])
    history = history_of(frame, [1, 2, 3])
    fit, segments = history.interactions(2), np.array([0, 0, 0])
    model = rec.NextBestClasses(weights={"own": 0.5, "segment": 0.5}, top_k=3).fit(fit, segments)
    table = rec.recommendation_table(model.recommend(fit, segments), [1, 2, 3], history.items)
    assert table.groupby("customer_id")["rank"].apply(list).to_dict() == {1: [1, 2, 3], 2: [1, 2, 3],
                                                                          3: [1, 2, 3]}
    assert set(table.loc[table["customer_id"] == 2, "reason"]) == {"buys again"}
    assert table.loc[table["customer_id"] == 1].iloc[0][["class", "reason"]].tolist() == ["A", "buys again"]


def test_a_log_without_classes_falls_back_to_departments():
    frame = lines([(1, "2024-03-01", "Ladies Clothing", "Unknown"), (2, "2024-03-01", "Home", "Unknown"),
                   (2, "2024-03-02", "Bag Levy", "Paper Bags")])
    assert history_of(frame, [1, 2]).lines == 0
    history = history_of(frame, [1, 2], level="department")
    assert history.lines == 2
    assert rec.choose_level({"class": 0, "department": history.lines})[0] == "department"
    fit, segments = history.interactions(2), np.array([0, 0])
    model = rec.NextBestClasses(top_k=5).fit(fit, segments)
    table = rec.recommendation_table(model.recommend(fit, segments), [1, 2], history.items)
    assert set(table["department"]) == {"Ladies Clothing", "Home"} and table["class"].isna().all()
    assert len(table) == 4  # two merchandise departments each


def test_a_log_without_departments_or_classes_writes_an_explained_empty_file(tmp_path):
    frame = lines([(1, "2024-03-01", "Unknown", "Unknown"), (2, "2024-03-01", "Unknown", "Unknown")])
    folder = paths.stage_dir(tmp_path, paths.GENERATE_DATA)
    folder.mkdir(parents=True)
    frame.to_parquet(folder / paths.TRANSACTIONS, index=False)
    config = SimpleNamespace(seed=0, hierarchy=tiny_hierarchy(), profile_export=SimpleNamespace(
        recommendations=RecommendationsConfig(top_k=5, evaluation_window_days=WINDOW)))
    ctx = StageContext(stage=STAGE, config=config, artifacts_dir=tmp_path)
    customers = pd.DataFrame({"customer_id": [1, 2], "last_order_date": pd.to_datetime(["2024-03-01"] * 2),
                              "recency_days": [305, 305]})
    stopped = threading.Event()
    stopped.set()  # the stage failed meanwhile: the thread gives up at its first check
    with pytest.raises(Stopped):
        fit_recommendations(ctx, customers, pd.DataFrame({"customer_id": [1, 2], "segment": [0, 0]}), stopped)
    run = fit_recommendations(ctx, customers, pd.DataFrame({"customer_id": [1, 2], "segment": [0, 0]}))
    assert run.cross_sell == {} and run.saved.model is None
    write_recommendations(ctx, run)
    out = paths.stage_dir(tmp_path, paths.PROFILE_EXPORT)
    table = pd.read_parquet(out / paths.RECOMMENDATIONS)
    document = json.loads((out / paths.RECOMMENDATION_EVALUATION).read_text())
    assert list(table.columns) == rec.RECOMMENDATION_COLUMNS and table.empty
    assert document["level"] is None and document["models"] == {}
    assert "merchandise department or class the hierarchy knows" in document["explanation"]
    assert ctx.details["recommendations"]["explanation"] == document["explanation"]
    assert "no recommendations" in ctx.summary
    # score says the same, from the saved recommender, for customers it is handed.
    assert run.saved.recommend_lines(frame, [1, 2], [0, 0], None).empty
    assert "merchandise department or class the hierarchy knows" in run.saved.explanation


def test_a_bad_top_k_is_a_config_error(tmp_path):
    document = small_config_document()
    document["profile_export"]["recommendations"]["top_k"] = 0
    with pytest.raises(ConfigError, match=r"profile_export\.recommendations\.top_k"):
        load_config(write_config(tmp_path / "config", document))


def test_too_few_evaluation_customers_is_a_config_error(tmp_path):
    document = small_config_document()
    document["profile_export"]["recommendations"]["evaluation_customers"] = 10
    with pytest.raises(ConfigError, match=r"profile_export\.recommendations\.evaluation_customers"):
        load_config(write_config(tmp_path / "config", document))


# --- end to end ------------------------------------------------------------------------------


def test_every_segmented_customer_gets_top_k_ranked_merchandise_classes(pipeline_run):
    config_path, artifacts_dir = pipeline_run
    config = load_config(config_path)
    k = config.profile_export.recommendations.top_k
    out = paths.stage_dir(artifacts_dir, paths.PROFILE_EXPORT)
    table = pd.read_parquet(out / paths.RECOMMENDATIONS)
    assignments = pd.read_parquet(paths.stage_dir(artifacts_dir, paths.CLUSTER) / paths.ASSIGNMENTS)
    assert list(table.columns) == rec.RECOMMENDATION_COLUMNS
    assert set(table["customer_id"]) == set(assignments["customer_id"])
    ranks = table.groupby("customer_id")["rank"].apply(list)
    assert (ranks.apply(lambda r: r == list(range(1, k + 1)))).all()
    allowed = set(zip(*rec.recommendable_items(config.hierarchy)[["department", "class"]].to_numpy().T))
    assert set(zip(table["department"], table["class"])) <= allowed
    assert table["score"].between(0, 1).all()
    assert set(table["reason"]) <= {"buys again", "due again", "popular in segment", "in season",
                                    rec.FALLBACK_REASON} | {
        r for r in table["reason"] if r.startswith("often bought with ")}
    assert table.groupby("customer_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    document = json.loads((out / paths.RECOMMENDATION_EVALUATION).read_text())
    assert document["level"] == "class" and document["k"] == k
    assert set(document["models"]) >= {"model", *rec.BASELINES}
    for metrics in document["models"].values():
        assert set(metrics) == {"recall", "hit_rate", "ndcg", "discovery", "coverage"}
    manifest = json.loads((out / paths.MANIFEST).read_text())
    assert manifest["details"]["recommendations"]["customers"] == len(assignments)
    assert {r["file"] for r in manifest["outputs"]} >= {paths.RECOMMENDATIONS, paths.RECOMMENDATION_EVALUATION}


def test_fit_recommendations_on_batches_given_is_the_fit_on_its_own_read(tmp_path):
    """Stage 05 hands the first pass a read of the order lines shared with its spend totals (more columns, its
    own batches): the same document and table as the fit's own read, and every batch is read through."""
    frame = sample_frame(40).assign(sku="S1")
    folder = paths.stage_dir(tmp_path, paths.GENERATE_DATA)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / paths.TRANSACTIONS, index=False)
    strategies = load_config(write_config(tmp_path / "config", small_config_document())).strategies
    config = SimpleNamespace(seed=7, hierarchy=tiny_hierarchy(), strategies=strategies, profile_export=SimpleNamespace(
        top_departments=1, recommendations=RecommendationsConfig(top_k=2, evaluation_window_days=WINDOW)))
    ctx = StageContext(stage=STAGE, config=config, artifacts_dir=tmp_path)
    ids = np.arange(1, 41)
    profile = pd.DataFrame({"customer_id": ids, "last_order_date": pd.to_datetime(["2024-12-20"] * 40),
                            "recency_days": 11})
    segments = pd.DataFrame({"customer_id": ids, "segment": ids % 3})
    own = fit_recommendations(ctx, profile, segments)
    read = []

    def batches():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        for batch in table.to_batches(max_chunksize=17):
            read.append(batch.num_rows)
            yield batch

    given = fit_recommendations(ctx, profile, segments, lines=batches())
    assert sum(read) == len(frame)
    assert given.document == own.document
    assert given.table.equals(own.table)


def random_recommendations(items: pd.DataFrame, n: int, k: int, seed: int) -> "rec.Recommended":
    """``n`` customers' ``k`` recommendations of random items (some padding), scores and reasons of every kind."""
    rng = np.random.default_rng(seed)
    recommended = rec.Recommended(rows=np.arange(n), items=rng.integers(-1, len(items), (n, k)),
                                  scores=rng.random((n, k)).astype(np.float32), reason=rng.integers(-1, 6, (n, k)),
                                  because=rng.integers(0, len(items), (n, k)))
    recommended.reason[recommended.items < 0] = -1
    return recommended


def test_the_table_s_text_columns_are_those_python_strings_give():
    """The department, class and reason columns are taken in Arrow from each item's and reason's text: the
    same table (dtypes included) as one built from a Python string per row, every reason kind and padding."""
    items = rec.recommendable_items(tiny_hierarchy())
    n, k = 200, 3
    recommended = random_recommendations(items, n, k, seed=3)
    table = rec.recommendation_table(recommended, np.arange(n) + 100, items)
    valid = recommended.items >= 0
    expected = pd.DataFrame({
        "customer_id": np.repeat(np.arange(n) + 100, k).reshape(-1, k)[valid].astype(np.int64),
        "rank": np.tile(np.arange(1, k + 1), (n, 1))[valid].astype(np.int16),
        "department": items["department"].to_numpy(object)[recommended.items[valid]],
        "class": items["class"].to_numpy(object)[recommended.items[valid]],
        "score": np.round(recommended.scores[valid].astype(np.float64), 6),
        "reason": rec.reason_texts(recommended, items)[valid]})
    assert table.equals(expected)
    assert set(table["reason"].dropna()) >= {"buys again", "popular overall", "in season"}


def test_reason_shares_are_those_of_the_table_s_reason_column():
    """Counted per reason code, the shares (and their order) are those the written table's reason column gives,
    every ``often bought with <class>`` one kind; padding counts for nothing."""
    items = rec.recommendable_items(tiny_hierarchy())
    n, k = 300, 3
    recommended = random_recommendations(items, n, k, seed=5)
    table = rec.recommendation_table(recommended, np.arange(n), items)
    kinds = table["reason"].str.replace(r"^often bought with .*", "often bought with ...", regex=True)
    expected = {str(r): round(float(v), 4) for r, v in kinds.value_counts(normalize=True).items()}
    shares = rec.reason_shares(recommended, items)
    assert shares == expected and list(shares) == list(expected)
    assert "often bought with ..." in shares and len(shares) >= 4
    empty = rec.Recommended(rows=np.arange(2), items=np.full((2, k), -1), scores=np.zeros((2, k)),
                            reason=np.full((2, k), -1), because=np.full((2, k), -1))
    assert rec.reason_shares(empty, items) == {}


@pytest.mark.parametrize("horizon", [WINDOW, WINDOW + 40])
def test_seasons_counted_in_one_pass_are_each_cuts_own_count(horizon):
    """The cuts' season lines counted in one pass (seasons a horizon apart or more, as the evaluation's) or one
    pass per cut (seasons that overlap: the horizon longer than the cuts' spacing) are each cut's lines in the
    horizon's days one year before it, counted on their own; days on both edges of each season included."""
    cuts = [VALIDATION_CUT, EVALUATION_CUT, ANALYSIS]
    starts = [c - pd.Timedelta(days=365) for c in cuts]
    edges = [d for s in starts for d in (s, s + pd.Timedelta(days=1), s + pd.Timedelta(days=horizon),
                                          s + pd.Timedelta(days=horizon + 1))]
    rng = np.random.default_rng(2)
    days = edges + list(pd.Timestamp("2022-06-01") + pd.to_timedelta(rng.integers(0, 940, 400), unit="D"))
    frame = lines([(1 + i % 7, str(d.date()), "Ladies Clothing" if i % 3 else "Home", "AB"[i % 2] if i % 3 else "C")
                   for i, d in enumerate(days)])
    history = rec.PurchaseHistory(np.arange(1, 8), rec.recommendable_items(tiny_hierarchy()), cuts, horizon)
    for start in range(0, len(frame), 90):
        history.add(frame.iloc[start:start + 90])
    code = rec.item_codes(frame, rec.recommendable_items(tiny_hierarchy()))
    for c, start in enumerate(starts):
        inside = (frame["order_date"] > start) & (frame["order_date"] <= start + pd.Timedelta(days=horizon))
        want = np.bincount(code[inside.to_numpy() & (code >= 0)], minlength=3)
        np.testing.assert_array_equal(history.interactions(c).season, want)
    assert history.interactions(2).season.sum() > 0


def test_bought_on_shared_index_arrays_is_the_binary_copy():
    """A fit's bought matrix: ones on the counts' own index arrays when every count is positive (a history's),
    else the copy without the zeros; the same matrix either way, and the counts left as they were."""
    positive = sp.csr_matrix(np.array([[2.0, 0, 1], [0, 0, 0], [0, 5, 0]]))
    with_zero = positive.copy()
    with_zero.data[1] = 0.0  # a stored zero
    for counts in (positive, with_zero, sp.csr_matrix((0, 3)), sp.csr_matrix(np.array([[-1.0, 2.0]]))):
        before = counts.copy()
        got, want = rec._bought(counts), rec._binary(counts)
        np.testing.assert_array_equal(got.toarray(), want.toarray())
        assert got.nnz == (want.nnz if counts.nnz == 0 or counts.data.min() > 0 else got.nnz)
        np.testing.assert_array_equal(counts.toarray(), before.toarray())
    assert np.shares_memory(rec._bought(positive).indices, positive.indices)  # shared, not copied


def test_a_final_fit_without_similarity_recommends_the_same_and_keeps_it_when_weighted():
    """fit(similarity=False) leaves the similarity out unless co-occurrence is weighted: recommend gives the same
    table (items, scores, reasons) as the model with it; with co-occurrence weighted it is computed as before."""
    frame = sample_frame(40)
    history = history_of(frame, np.arange(1, 45))
    final, segments = history.interactions(2), np.arange(44) % 3
    items = rec.recommendable_items(tiny_hierarchy())
    for weights in ({"segment": 0.1, "profile": 0.9}, {"cooccurrence": 0.3, "profile": 0.7}):
        full = rec.NextBestClasses(weights=weights, top_k=2).fit(final, segments)
        lean = rec.NextBestClasses(weights=weights, top_k=2).fit(final, segments, similarity=False)
        assert (lean.similarity_ is None) == (weights.get("cooccurrence", 0) == 0)
        if lean.similarity_ is not None:
            np.testing.assert_array_equal(lean.similarity_, full.similarity_)
        ids = np.arange(1, 45)
        pd.testing.assert_frame_equal(rec.recommendation_table(lean.recommend(final, segments), ids, items),
                                      rec.recommendation_table(full.recommend(final, segments), ids, items))


def test_batch_sums_of_lines_in_date_order_are_those_sorted_by_day():
    """A batch whose days run forward within each customer (stage 01's log) is summed after a sort by (pair,
    period) only, with a radix sort: the same entries, values and types, to the bit, as the sort by (pair, day);
    lines in another order, keys spanning more than 32 bits and a missing date take the other path, also the same."""
    rng = np.random.default_rng(5)
    cut_days = np.array([19700, 19800, 19900])
    fast = 0
    for trial in range(120):
        n, customers = int(rng.integers(1, 2000)), int(rng.integers(1, 40))
        n_items = int(rng.choice([3, 332, 70_000, 10**9]))  # 10**9: keys spanning more than 32 bits
        rows = np.sort(rng.integers(0, customers, n)) + int(rng.choice([0, 10**6]))
        day = rng.integers(19_500, 19_901, n)  # up to the last cut, as add() keeps them
        if trial % 3:
            day = day[np.lexsort((day, rows))]  # each customer's lines in date order
        if trial % 17 == 0:
            day[0] = np.iinfo(np.int64).min + 1  # a missing date, as _day_numbers gives it
        pair = rows * n_items + rng.integers(0, min(n_items, 12), n)
        weight, amount = rng.random(n) * 10.0 ** rng.integers(-3, 3, n), rng.random(n) * 100
        got = rec._batch_sums(pair, day, weight, amount, cut_days)
        want = rec._batch_sums_sorted_by_day(pair, day, weight, amount, cut_days)
        fast += rec._batch_sums_in_date_order(pair, day, weight, amount, cut_days) is not None
        assert list(got) == list(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
    assert 40 < fast < 120  # both paths taken
    keys = rng.integers(0, 1 << 40, 5000)
    np.testing.assert_array_equal(rec._stable_order(keys), np.argsort(keys, kind="stable"))
    keys = rng.integers(0, 70_000, 5000)
    np.testing.assert_array_equal(rec._stable_order(keys), np.argsort(keys, kind="stable"))


def test_row_max_scaling_divides_plainly_only_when_every_row_has_a_positive_maximum():
    """The plain division (every row's maximum above 0) gives the masked division's values; rows without a
    positive maximum (zeros, negatives, NaN) keep zeros."""
    rng = np.random.default_rng(8)
    scores = rng.random((50, 7)).astype(np.float32)

    def masked(matrix):
        top = matrix.max(axis=1, keepdims=True)
        return np.divide(matrix, top, out=np.zeros_like(matrix), where=top > 0)

    np.testing.assert_array_equal(rec._row_max_scaled(scores), masked(scores))
    assert rec._row_max_scaled(scores).dtype == np.float32
    scores[3] = 0.0
    scores[4] = -scores[4]
    scores[5, 2] = np.nan
    got = rec._row_max_scaled(scores)
    np.testing.assert_array_equal(got, masked(scores))
    assert not got[3:6].any()


def test_a_final_cut_without_purchase_days_recommends_the_same_when_the_blend_ignores_them():
    """interactions(timing=False) leaves the days, last and first days out (None): a model whose blend weights
    neither the purchase rhythm nor co-occurrence recommends the same table from it; the other matrices are the
    same."""
    history = history_of(sample_frame(40), np.arange(1, 45))
    full, lean = history.interactions(2, spend=False), history.interactions(2, spend=False, timing=False)
    assert lean.days is None and lean.last is None and lean.first is None and lean.spend is None
    for name in ("counts", "recency"):
        np.testing.assert_array_equal(getattr(lean, name).toarray(), getattr(full, name).toarray())
    segments, ids = np.arange(44) % 3, np.arange(1, 45)
    items = rec.recommendable_items(tiny_hierarchy())
    for weights in ({"segment": 0.1, "profile": 0.9}, {"own": 0.5, "season": 0.2, "segment": 0.3}):
        model = rec.NextBestClasses(weights=weights, top_k=2).fit(full, segments)
        pd.testing.assert_frame_equal(rec.recommendation_table(model.recommend(lean, segments), ids, items),
                                      rec.recommendation_table(model.recommend(full, segments), ids, items))
    assert rec.replenishment_scores(lean, np.arange(44)).sum() == 0


def test_a_fit_given_what_another_fit_counted_is_the_fit_that_counts_it_itself():
    """Stage 05 counts the final model's popularity, mixes and season beside the evaluation (with other weights,
    on the cut without purchase days) and hands them to the fit with the chosen weights: the same model and the
    same table as a fit that counts them itself, for blends with and without the purchase days."""
    history = history_of(sample_frame(40), np.arange(1, 45))
    lean, full = history.interactions(2, spend=False, timing=False), history.interactions(2, spend=False)
    segments, ids = np.arange(44) % 3, np.arange(1, 45)
    segments[5] = -1  # noise: no segment
    items = rec.recommendable_items(tiny_hierarchy())
    counted = rec.NextBestClasses(weights={"profile": 1.0}, top_k=2).fit(lean, segments, similarity=False)
    for weights, final in (({"segment": 0.1, "profile": 0.9}, lean), ({"cooccurrence": 0.2, "repeat": 0.1,
                                                                     "profile": 0.7}, full)):
        itself = rec.NextBestClasses(weights=weights, top_k=2).fit(final, segments, similarity=False)
        given = rec.NextBestClasses(weights=weights, top_k=2).fit(final, segments, similarity=False, counted=counted)
        for name in ("segments_", "segment_popularity_", "global_popularity_", "segment_mix_", "season_",
                     "similarity_"):
            np.testing.assert_array_equal(getattr(given, name), getattr(itself, name), err_msg=name)
        assert given.weights_ == itself.weights_
        pd.testing.assert_frame_equal(rec.recommendation_table(given.recommend(final, segments), ids, items),
                                      rec.recommendation_table(itself.recommend(final, segments), ids, items))
    with pytest.raises(ValueError, match="other items or segments"):
        rec.NextBestClasses(top_k=2).fit(lean, np.arange(44) % 4, counted=counted)
