"""Measure the next-best-class recommendations (issue 15): quality against baselines, the data's signals, speed.

    python benchmarks/bench_recommendations.py [--artifacts DIR] [--k 5] [--window-days 182]
                                               [--customers 1000000] [--skip-speed] [--skip-ltr] [--record]

a. Quality: reads a finished run's ``01_generate_data/transactions.parquet``,
   ``02_prepare_features/enriched_department.parquet`` (the analysis date) and
   ``04_cluster/assignments.parquet`` (each customer's segment), and runs
   what stage 05 runs (``core.profile_export.recommendations.evaluate_history``):
   blend weights chosen on a validation split inside the fit period, then a
   temporal holdout (fit on the lines up to the analysis date minus the window,
   score the merchandise classes each customer bought in the window, returns
   excluded), on the customers who bought before and in the window. Prints
   recall@k, hit rate@k, NDCG@k, discovery and coverage of the model, the
   three baselines, the single-component candidates, the validation's best
   blend and the fallback weights. Target: recall@k at least 1.2 x the best
   baseline.
b. Signals: what makes a next purchase predictable beyond popularity in real
   retail, measured in the same lines: repeat purchase of a class (against the
   customer's segment, allowing for how many classes they buy) and its
   rhythm, co-purchase in one order against co-purchase by the same customers,
   children's size bands and classes over the years, seasonal classes.
d. Learning to rank, a challenger: a gradient-boosted classifier over every
   (customer, class) pair, trained on the validation split and scored on the
   evaluation window like the other models (``--skip-ltr`` leaves it out).
e. Challengers from issue 15's untried ideas: companions of the classes in the
   customer's recent orders (co-occurrence within orders, weighted by the
   order's recency), time-decayed own history, a replenishment clock (days
   since the last purchase over the customer's own interval), the class's
   season lift, each added to the profile with a weight chosen on the
   validation split; and a logistic blend of all of them trained there. Then the ideas of the fourth round:
   cross-period succession (how much more often class j is bought in a period after class i was bought in the
   period before, learned from period pairs before the cut: children's next classes, life events) and the
   customer's own classes of the same calendar days one year before; and the ceiling: an oracle that knows
   the window (any k of the classes bought in it) and the best ranking of the customer's own past classes.
c. Speed: ``NextBestClasses`` fit + top-k with reasons for ``--customers``
   customers x 332 classes, a seeded synthetic sparse matrix with about 15
   classes per customer in 12 segments, in a child process (wall time, peak
   memory). Target: 1,000,000 customers in at most 2 minutes and 4 GB on 2 cores.

``--record`` appends the tables to ``benchmarks/RESULTS.md`` with the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import command_line, load_average, load_span, machine, mib, record, run_child, seconds  # noqa: E402
from core.domain.hierarchy import load_hierarchy  # noqa: E402
from core.framework import paths  # noqa: E402
from core.profile_export import recommendations as rec  # noqa: E402
from core.profile_export.recommendation_outputs import LINE_COLUMNS, analysis_date  # noqa: E402

TARGET_LIFT = 1.2
SPEED_CLASSES = 332
SPEED_SEGMENTS = 12
SPEED_CLASSES_PER_CUSTOMER = 15
SPEED_WEIGHTS = {"own": 0.2, "segment": 0.4, "cooccurrence": 0.2, "season": 0.1, "repeat": 0.1}  # every reason
KIDS_BANDS = ["Baby 0-12m", "Toddler 1-3", "Child 4-6", "Child 7-8", "Child 9-11", "Teen 12-14"]
BABY_CLASSES = {"Babywear", "Baby Basics", "Baby Boy", "Baby Girl", "Newborn Boy", "Newborn Girl"}
TODDLER_CLASSES = {"2-7 Boyswear", "2-7 Girlswear"}


def _table(header: list[str], rows: list[list]) -> list[str]:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _weights_text(weights: dict) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in weights.items() if value) or "none"


# ---------------------------------------------------------------------------------------------
# a. Quality


def load_history(artifacts: Path, k: int, window: int) -> tuple[rec.PurchaseHistory, np.ndarray, pd.Timestamp]:
    """The purchase history stage 05 would build from the run in ``artifacts``, and the segments."""
    customers = pd.read_parquet(paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT,
                                columns=["customer_id", "last_order_date", "recency_days"])
    assignments = pd.read_parquet(paths.stage_dir(artifacts, paths.CLUSTER) / paths.ASSIGNMENTS,
                                  columns=["customer_id", "segment"])
    end = analysis_date(customers)
    cuts = [end - pd.Timedelta(days=2 * window), end - pd.Timedelta(days=window), end]
    hierarchy = load_hierarchy(paths.REPO_ROOT / "config" / "hierarchy.yml")
    history = rec.PurchaseHistory(assignments["customer_id"].to_numpy(), rec.recommendable_items(hierarchy),
                                  cuts, window)
    source = pq.ParquetFile(paths.stage_dir(artifacts, paths.GENERATE_DATA) / paths.TRANSACTIONS)
    for batch in source.iter_batches(batch_size=2_000_000, columns=LINE_COLUMNS):
        history.add(batch.to_pandas())
    return history, assignments["segment"].to_numpy(), end


def quality_section(history: rec.PurchaseHistory, segments: np.ndarray, k: int, seed: int) -> tuple[list[str], dict]:
    started = time.perf_counter()
    result = rec.evaluate_history(history, segments, k, seed)
    seconds_taken = time.perf_counter() - started
    chosen = result["weights_chosen_on"]
    fit, relevant = history.interactions(1), history.bought(2)
    rows = rec.evaluable_rows(fit, relevant)["evaluated"]
    model = rec.NextBestClasses(weights=result["weights"], top_k=k).fit(fit, segments)
    extra = {}
    if "best_weights" in chosen:
        extra[f"validation's best blend ({_weights_text(chosen['best_weights'])})"] = chosen["best_weights"]
    extra[f"fallback weights ({_weights_text(rec.DEFAULT_WEIGHTS)})"] = rec.DEFAULT_WEIGHTS
    models = {**result["models"], **rec.measure(model, fit, segments, rows, relevant, k, models=extra)}
    best = result["best_baseline"]
    lines = [f"### a. Quality: temporal holdout, k = {k}", "",
             f"Fit on the lines up to {history.cuts[1].date()}, scored on the merchandise classes bought "
             f"{(history.cuts[1] + pd.Timedelta(days=1)).date()} to {history.cuts[2].date()} (returns excluded) by the "
             f"{result['customers']['evaluated']:,} segmented customers who bought before and in the window "
             f"({result['customers']['new_in_window_not_evaluated']:,} who only bought in the window are not scored). "
             f"Weights chosen on a validation split (fit to {chosen['fit_to']}, scored to {chosen['scored_to']}, "
             f"{chosen.get('customers', 0):,} customers, {chosen.get('grid', 0)} blends scored): {chosen['how']}: "
             f"**{_weights_text(result['weights'])}** "
             f"(validation recall {chosen.get('recall')}, grid best {chosen.get('best_recall')}, "
             f"standard error {chosen.get('standard_error')}). Evaluation took {seconds_taken:.1f} s.", ""]
    rows_out = []
    for name, m in models.items():
        kind = "baseline" if name in rec.BASELINES else "chosen" if name == "model" else "candidate"
        label = f"model ({_weights_text(result['weights'])})" if name == "model" else name.replace("_", " ")
        rows_out.append([label, kind, f"{m['recall']:.3f}", f"{m['hit_rate']:.3f}", f"{m['ndcg']:.3f}",
                         f"{m['discovery']:.3f}", m["coverage"],
                         f"{m['recall'] / models[best]['recall']:.2f}"])
    lines += _table(["model", "kind", f"recall@{k}", f"hit@{k}", f"NDCG@{k}", "discovery", "coverage",
                     f"x best baseline ({best.replace('_', ' ')})"], rows_out)
    lift = result["lift_over_best_baseline"]
    lines += ["", f"Target recall@{k} >= {TARGET_LIFT} x best baseline: model {lift:.2f} x, "
              f"**{'met' if lift >= TARGET_LIFT else 'not met'}**.", ""]
    return lines, result


# ---------------------------------------------------------------------------------------------
# b. Signals


def _read_lines(artifacts: Path, items: pd.DataFrame) -> pd.DataFrame:
    """Merchandise purchase lines (known classes), with an item index."""
    table = pd.read_parquet(paths.stage_dir(artifacts, paths.GENERATE_DATA) / paths.TRANSACTIONS,
                            columns=["customer_id", "order_id", "order_date", "department", "class", "size",
                                     "is_return"])
    table = table[~table["is_return"].to_numpy(bool)]
    table = table.assign(item=rec.item_codes(table, items))
    return table[table["item"] >= 0]


def repeat_signals(history: rec.PurchaseHistory, segments: np.ndarray, lines: pd.DataFrame,
                   items: pd.DataFrame) -> list[str]:
    """Does a customer's own past predict a class beyond their segment? And on what rhythm?"""
    fit, relevant = history.interactions(1), history.bought(2)
    rows = rec.evaluable_rows(fit, relevant)["evaluated"]
    before = (fit.counts[rows] > 0).toarray()
    after = relevant[rows].toarray() > 0
    labels = segments[rows]
    expected = np.zeros(after.shape)
    for label in np.unique(labels):
        inside = labels == label
        share = after[inside].mean(axis=0)
        # The segment's chance of each class, scaled to the customer's own number of classes in the window.
        expected[inside] = share[None, :] * (after[inside].sum(axis=1, keepdims=True) / max(share.sum(), 1e-12))
    expected = np.minimum(expected, 1.0)
    lift_all = after[before].sum() / expected[before].sum()
    lift_new = after[~before].sum() / expected[~before].sum()
    per_class = after.sum(axis=0, where=before) / np.maximum(expected.sum(axis=0, where=before), 1e-12)
    enough = before.sum(axis=0) >= 50
    ranked = np.argsort(-np.where(enough, per_class, -1))[:3]
    labels_text = items["label"].to_numpy(object)
    # Rhythm: gaps between a customer's purchase days of one class, against the gaps between their visits.
    days = lines.assign(day=lines["order_date"].dt.normalize()).drop_duplicates(["customer_id", "item", "day"])
    class_cv = _gap_cv(days, ["customer_id", "item"])
    visit_cv = _gap_cv(days.drop_duplicates(["customer_id", "day"]), ["customer_id"])
    return [
        f"- **Repeat purchase.** Of the classes a scored customer bought before the window, "
        f"{after[before].mean():.1%} were bought again in it, against {after[~before].mean():.1%} of the others. "
        f"Against the customer's segment (its share buying each class, scaled to how many classes the customer "
        f"bought in the window): {lift_all:.2f} x expected for classes bought before, {lift_new:.2f} x for the "
        f"others. By class (at least 50 prior buyers): median {np.median(per_class[enough]):.2f} x, 90th "
        f"percentile {np.quantile(per_class[enough], 0.9):.2f} x; highest "
        + ", ".join(f"{labels_text[i]} {per_class[i]:.2f} x" for i in ranked) + ".",
        f"- **Rhythm.** Coefficient of variation of the days between a customer's purchases of one class "
        f"(3+ gaps): median {class_cv:.2f}; of the days between their visits: {visit_cv:.2f}. A replenishment "
        f"cycle would make the first clearly smaller than the second.",
    ]


def _gap_cv(days: pd.DataFrame, keys: list[str]) -> float:
    ordered = days.sort_values([*keys, "day"])
    gaps = ordered.groupby(keys)["day"].diff().dt.days.dropna()
    stats = gaps.groupby([ordered.loc[gaps.index, k] for k in keys]).agg(["mean", "std", "count"])
    stats = stats[stats["count"] >= 3]
    return float((stats["std"] / stats["mean"]).median()) if len(stats) else float("nan")


def copurchase_signals(lines: pd.DataFrame, items: pd.DataFrame) -> list[str]:
    """Lift of class pairs in one order, against the lift of the same pairs among the same customers."""
    def lift(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        frame = pd.DataFrame({"key": keys, "item": lines["item"].to_numpy()}).drop_duplicates()
        code = pd.factorize(frame["key"])[0]
        matrix = sp.csr_matrix((np.ones(len(frame)), (code, frame["item"])), shape=(code.max() + 1, len(items)))
        co = (matrix.T @ matrix).toarray()
        share = np.diag(co) / matrix.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return co / matrix.shape[0] / np.outer(share, share), co

    in_order, support = lift(lines["order_id"].reset_index(drop=True))
    by_customer, _ = lift(lines["customer_id"].reset_index(drop=True))
    upper = np.triu_indices(len(items), 1)
    department = items["department"].to_numpy(object)
    same = (department[:, None] == department[None, :])[upper]
    enough = support[upper] >= 30
    with np.errstate(divide="ignore", invalid="ignore"):
        order_lift, ratio = in_order[upper], in_order[upper] / by_customer[upper]
    best = np.argmax(np.where(enough & ~same, order_lift, -1))
    labels = items["label"].to_numpy(object)
    return [
        f"- **Co-purchase.** Class pairs bought together in at least 30 orders: lift in one order (P(both) / "
        f"P(one) P(other)) median {np.median(order_lift[enough & same]):.2f} within a department, "
        f"{np.median(order_lift[enough & ~same]):.2f} across departments (highest: "
        f"{labels[upper[0][best]]} + {labels[upper[1][best]]}, {order_lift[best]:.1f}). Against the lift of the "
        f"same pairs among customers (bought both, ever): {np.median(ratio[enough & same]):.2f} x within a "
        f"department, {np.median(ratio[enough & ~same]):.2f} x across. A complementary mission (suit and shirt, "
        f"uniform and school shoes) would put cross-department pairs in one order more often than the same "
        f"customers buy them apart (a ratio well above 1).",
    ]


def kids_signals(lines: pd.DataFrame) -> list[str]:
    """Children's size bands and classes from one year to the next."""
    kids = lines[lines["size"].isin(KIDS_BANDS)].assign(
        band=lambda f: f["size"].map({b: i for i, b in enumerate(KIDS_BANDS)}), year=lambda f: f["order_date"].dt.year)
    years = sorted(kids["year"].unique())
    if len(years) < 2 or not kids["class"].isin(BABY_CLASSES).any():
        return ["- **Children.** n/a: no kids' size bands or baby classes over two years in these lines."]
    first, second = years[0], years[1]
    band = kids.groupby(["customer_id", "year"])["band"].mean().unstack()[[first, second]].dropna()
    has = kids.assign(baby=kids["class"].isin(BABY_CLASSES), toddler=kids["class"].isin(TODDLER_CLASSES))
    flags = has.groupby(["customer_id", "year"])[["baby", "toddler"]].any().unstack()
    both = flags.dropna()
    baby_only = both[("baby", first)].astype(bool) & ~both[("toddler", first)].astype(bool)
    baby_sizes = kids[kids["class"].isin(BABY_CLASSES)].groupby("year")["band"].mean()
    return [
        f"- **Children.** Size bands grow: customers buying kids' sizes in {first} and {second} moved "
        f"{(band[second] - band[first]).mean():+.2f} bands on average ({len(band):,} customers). Classes do not "
        f"follow: baby classes were bought in band {baby_sizes.get(first, float('nan')):.2f} in {first} and "
        f"{baby_sizes.get(second, float('nan')):.2f} in {second} (0 = Baby 0-12m, 2 = Child 4-6), and of the "
        f"{int(baby_only.sum()):,} customers who bought baby classes but no 2-7 classes in {first}, "
        f"{both[('toddler', second)][baby_only].astype(bool).mean():.1%} bought 2-7 classes in {second}, "
        f"against {both[('toddler', second)].astype(bool).mean():.1%} of all kids' buyers.",
    ]


def season_signals(lines: pd.DataFrame, items: pd.DataFrame, result: dict) -> list[str]:
    """Do classes have a season that recurs from one year to the next?"""
    frame = lines.assign(late=lines["order_date"].dt.month >= 7, year=lines["order_date"].dt.year)
    counts = frame.groupby(["year", "item", "late"]).size().unstack(fill_value=0)
    years = sorted(frame["year"].unique())
    if len(years) < 2:
        return ["- **Season.** n/a: fewer than two calendar years of lines."]
    overall = frame.groupby("year")["late"].mean()
    lifts = {y: (counts.loc[y][True] / counts.loc[y].sum(axis=1)) / overall[y] for y in years[:2]}
    common = lifts[years[0]].index.intersection(lifts[years[1]].index)
    a, b = lifts[years[0]][common], lifts[years[1]][common]
    top = b.sort_values(ascending=False).head(3)
    labels = items["label"].to_numpy(object)
    models = result.get("models", {})
    return [
        f"- **Season.** A class's share of its lines in July-December, over all lines' share: correlation "
        f"{np.corrcoef(a, b)[0, 1]:.2f} between {years[0]} and {years[1]} (a recurring season); highest in "
        f"{years[1]}: " + ", ".join(f"{labels[i]} {v:.2f} x" for i, v in top.items())
        + (f". Season popularity alone scored recall {models['season_popularity']['recall']:.3f}, against "
           f"{models['global_popularity']['recall']:.3f} for all-year popularity." if models else "."),
    ]


def signals_section(artifacts: Path, history: rec.PurchaseHistory, segments: np.ndarray, result: dict) -> list[str]:
    items = history.items
    lines = _read_lines(artifacts, items)
    lines = lines[lines["order_date"].dt.normalize() <= history.cuts[-1]]
    out = ["### b. What the data offers beyond popularity", ""]
    out += repeat_signals(history, segments, lines, items)
    out += copurchase_signals(lines, items)
    out += kids_signals(lines)
    out += season_signals(lines, items, result)
    return out + [""]


# ---------------------------------------------------------------------------------------------
# d. Learning to rank (a challenger, measured here, not in stage 05)

LTR_CUSTOMERS = 5_000
LTR_CAP_DAYS = 2_000.0


def ltr_features(model: rec.NextBestClasses, fit: rec.Interactions, segments: np.ndarray,
                 rows: np.ndarray) -> np.ndarray:
    """Per (customer, class) of ``rows``: the component scores, the customer's purchase days of the
    class, days since the last, their own interval (capped), classes they bought, segment and global
    popularity; shape (len(rows) * classes, components + 6)."""
    comps = model.components(fit, segments, rows)
    days = fit.days[rows].toarray()
    last = fit.last[rows].toarray()
    first = np.where(days > 0, rec.FIRST_BASE - fit.first[rows].toarray(), 0.0)
    since = np.where(days > 0, np.minimum(fit.as_of - last, LTR_CAP_DAYS), LTR_CAP_DAYS)
    interval = np.where(days >= 2, np.minimum((last - first) / np.maximum(days - 1, 1), LTR_CAP_DAYS), LTR_CAP_DAYS)
    breadth = np.broadcast_to((days > 0).sum(axis=1, keepdims=True), days.shape)
    table = np.vstack([model.segment_popularity_, model.global_popularity_[None, :]])
    popularity = table[model._segment_rows(segments[rows])]
    everyone = np.broadcast_to(model.global_popularity_[None, :], days.shape)
    columns = [comps[c] for c in rec.COMPONENTS] + [days, since, interval, breadth, popularity, everyone]
    return np.stack([np.asarray(c, dtype=np.float32).ravel() for c in columns], axis=1)


def ltr_section(history: rec.PurchaseHistory, segments: np.ndarray, k: int, seed: int, result: dict) -> list[str]:
    """A gradient-boosted ranker over the blend's candidates: trained on the validation split (features at
    its cut, label: bought in the period after), scored on the evaluation window like every model."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    started = time.perf_counter()
    fit0, bought0 = history.interactions(0), history.bought(1)
    train = rec.evaluable_rows(fit0, bought0)["evaluated"]
    if len(train) > LTR_CUSTOMERS:
        train = np.sort(np.random.default_rng(seed).choice(train, LTR_CUSTOMERS, replace=False))
    model0 = rec.NextBestClasses(top_k=k).fit(fit0, segments)
    ranker = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True,
                                            random_state=seed)
    ranker.fit(ltr_features(model0, fit0, segments, train), (bought0[train].toarray() > 0).ravel())
    fit1, bought1 = history.interactions(1), history.bought(2)
    rows = rec.evaluable_rows(fit1, bought1)["evaluated"]
    model1 = rec.NextBestClasses(top_k=k).fit(fit1, segments)
    n_items = fit1.shape[1]
    parts = []
    for start in range(0, len(rows), 2_000):
        batch = rows[start:start + 2_000]
        scores = ranker.predict_proba(ltr_features(model1, fit1, segments, batch))[:, 1].reshape(len(batch), n_items)
        items, _ = rec.top_k(scores, k)
        parts.append((rec.ranking_metrics(items, bought1[batch], fit1.counts[batch]), items))
    m = rec.summarise(parts, n_items)
    best = result["best_baseline"]
    base = result["models"][best]["recall"]
    return ["### d. Learning to rank (challenger)", "",
            f"HistGradientBoostingClassifier over every (customer, class) pair: the {len(rec.COMPONENTS)} component "
            f"scores, purchase "
            f"days of the class, days since the last, the customer's own interval, classes bought, segment and "
            f"global popularity. Trained on {len(train):,} validation customers (features at "
            f"{history.cuts[0].date()}, label: bought by {history.cuts[1].date()}), scored on the evaluation window "
            f"({len(rows):,} customers); {time.perf_counter() - started:.0f} s.", "",
            *_table(["model", f"recall@{k}", f"hit@{k}", f"NDCG@{k}", "discovery", "coverage",
                     f"x best baseline ({best.replace('_', ' ')})"],
                    [["gradient-boosted ranker", f"{m['recall']:.3f}", f"{m['hit_rate']:.3f}", f"{m['ndcg']:.3f}",
                      f"{m['discovery']:.3f}", m["coverage"], f"{m['recall'] / base:.2f}"]]), ""]


# ---------------------------------------------------------------------------------------------
# e. Challengers: basket companions, time-decayed history and replenishment clock, season, a logistic blend

CHALLENGER_HALF_LIFE = 30.0
CHALLENGER_WEIGHTS = (0.05, 0.1, 0.2, 0.4, 0.8)
LOGISTIC_CUSTOMERS = 5_000
RATIO_CAP = 2.0
# Fourth round (chosen on seed 42's validation split among 1 or 2 period pairs, priors 5 or 50, the class
# itself in or out, summed or averaged over the customer's classes; own season: priors 4, 16, 64).
SUCCESSION_PAIRS = 2
SUCCESSION_PRIOR = 5.0
OWN_SEASON_PRIOR = 16.0


def order_items(artifacts: Path, items: pd.DataFrame) -> pd.DataFrame:
    """Each purchase order's merchandise classes: ``customer_id``, ``order_id``, ``day``, ``item`` (once per order)."""
    lines = _read_lines(artifacts, items)
    lines = lines.assign(day=lines["order_date"].dt.normalize())
    return lines[["customer_id", "order_id", "day", "item"]].drop_duplicates(["order_id", "item"])


def basket_companions(orders: pd.DataFrame, history: rec.PurchaseHistory, cut: int, rows: np.ndarray) -> np.ndarray:
    """Idea (a): the classes bought in one order with the classes of the customer's recent orders.

    ``P(class j in an order | class i in it)`` over the orders up to ``cuts[cut]``, summed over the classes
    of the customer's orders weighted by ``0.5 ** (days ago / 30)`` (the last orders count most).
    """
    day = history.cuts[cut]
    before = orders[orders["day"] <= day]
    n_items = len(history.items)
    code = pd.factorize(before["order_id"])[0]
    in_order = sp.csr_matrix((np.ones(len(before)), (code, before["item"].to_numpy())),
                             shape=(code.max() + 1, n_items))
    co = (in_order.T @ in_order).toarray()
    given = co / np.maximum(np.diag(co)[:, None], 1.0)
    np.fill_diagonal(given, 0.0)
    row = history.customer_index.get_indexer(before["customer_id"])
    weight = 0.5 ** ((day - before["day"]).dt.days.to_numpy() / CHALLENGER_HALF_LIFE)
    recent = sp.csr_matrix((weight, (row, before["item"].to_numpy())), shape=(len(history.customer_index), n_items))
    return np.asarray(recent[rows] @ given, dtype=np.float32)


def order_counts(orders: pd.DataFrame, history: rec.PurchaseHistory, start: pd.Timestamp,
                 end: pd.Timestamp) -> sp.csr_matrix:
    """Customers x classes: the customer's orders of the days ``(start, end]`` holding the class."""
    inside = orders[(orders["day"] > start) & (orders["day"] <= end)]
    row = history.customer_index.get_indexer(inside["customer_id"])
    inside, row = inside[row >= 0], row[row >= 0]
    matrix = sp.csr_matrix((np.ones(len(row)), (row, inside["item"].to_numpy())), shape=history.shape)
    matrix.sum_duplicates()
    return matrix


def span_bought(orders: pd.DataFrame, history: rec.PurchaseHistory, start: pd.Timestamp,
                end: pd.Timestamp) -> sp.csr_matrix:
    """Customers x classes: 1 where the customer bought the class in the days ``(start, end]``."""
    matrix = order_counts(orders, history, start, end)
    matrix.data[:] = 1.0
    return matrix


def succession_lift(orders: pd.DataFrame, history: rec.PurchaseHistory, cut: int) -> np.ndarray:
    """Classes x classes: log of ``P(j bought in a window | i bought in the window before) / P(j bought in a
    window)``, over the customers who bought in both, pooled over :data:`SUCCESSION_PAIRS` pairs of consecutive
    windows ending at ``cuts[cut]`` and one window earlier (every line before the cut); a Dirichlet prior of
    :data:`SUCCESSION_PRIOR` buyers of i at j's base rate; the diagonal (a repeat, the profile's) set to 0."""
    window = pd.Timedelta(days=history.horizon_days)
    n_items = len(history.items)
    together, before, after, customers = np.zeros((n_items, n_items)), np.zeros(n_items), np.zeros(n_items), 0
    for pair in range(SUCCESSION_PAIRS):
        end = history.cuts[cut] - pair * window
        earlier = span_bought(orders, history, end - 2 * window, end - window)
        later = span_bought(orders, history, end - window, end)
        both = (np.diff(earlier.indptr) > 0) & (np.diff(later.indptr) > 0)
        earlier, later = earlier[both], later[both]
        together += (earlier.T @ later).toarray()
        before += np.asarray(earlier.sum(axis=0)).ravel()
        after += np.asarray(later.sum(axis=0)).ravel()
        customers += int(both.sum())
    base = (after + 1.0) / (customers + 2.0)
    lift = np.log((together + SUCCESSION_PRIOR * base) / (before[:, None] + SUCCESSION_PRIOR) / base)
    np.fill_diagonal(lift, 0.0)
    return lift


def succession_scores(orders: pd.DataFrame, history: rec.PurchaseHistory, cut: int, rows: np.ndarray) -> np.ndarray:
    """Idea (f): the succession log-lift (:func:`succession_lift`) of each class, averaged over the classes the
    customer bought in the last window before ``cuts[cut]`` (0 for a customer who bought none then)."""
    window = pd.Timedelta(days=history.horizon_days)
    recent = span_bought(orders, history, history.cuts[cut] - window, history.cuts[cut])[rows]
    scores = np.asarray(recent @ succession_lift(orders, history, cut))
    return scores / np.maximum(np.diff(recent.indptr), 1)[:, None]


def own_season_lift(orders: pd.DataFrame, history: rec.PurchaseHistory, cut: int, rows: np.ndarray,
                    profile: np.ndarray) -> np.ndarray:
    """Idea (g): the customer's own orders of each class in the same calendar days one year before the window
    recommended for, as the log of their profile's shares updated by those orders (a prior worth
    :data:`OWN_SEASON_PRIOR` orders) over the profile's shares: above 0 for a class bought last season."""
    start = history.cuts[cut] - pd.Timedelta(days=rec.YEAR_DAYS)
    season = order_counts(orders, history, start, start + pd.Timedelta(days=history.horizon_days))[rows].toarray()
    share = profile / np.maximum(profile.sum(axis=1, keepdims=True), 1e-12) + 1e-9
    updated = (season + OWN_SEASON_PRIOR * share) / (season.sum(axis=1, keepdims=True) + OWN_SEASON_PRIOR)
    return np.log(updated) - np.log(share)


def ceilings(bought: sp.csr_matrix, seen: sp.csr_matrix, k: int) -> dict[str, float]:
    """Recall@k no ranking can pass: an oracle that knows the window (any k of the classes bought in it,
    ``min(k, n) / n``), and the best ranking of the customer's own past classes (``min(k, n_before) / n``,
    n_before: window classes bought before); and the share of window classes new to the customer."""
    n = np.diff(bought.tocsr().indptr)
    known = np.diff(bought.multiply(seen > 0).tocsr().indptr)
    return {"oracle": float(np.mean(np.minimum(k, n) / n)), "own_history": float(np.mean(np.minimum(k, known) / n)),
            "new_share": float(1.0 - known.sum() / n.sum())}


def challenger_features(history: rec.PurchaseHistory, segments: np.ndarray, orders: pd.DataFrame, cut: int,
                        rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per (customer, class) of ``rows`` at ``cuts[cut]``: the blend's components and the untried ideas'
    features, each (len(rows), classes); nothing after the cut is read."""
    fit = history.interactions(cut)
    model = rec.NextBestClasses(top_k=5).fit(fit, segments)
    comps = model.components(fit, segments, rows)
    days = fit.days[rows].toarray()
    last = fit.last[rows].toarray()
    first = np.where(days > 0, rec.FIRST_BASE - fit.first[rows].toarray(), 0.0)
    since = np.where(days > 0, fit.as_of - last, LTR_CAP_DAYS)
    interval = np.where(days >= 2, (last - first) / np.maximum(days - 1, 1), 0.0)
    counts = fit.counts[rows].toarray()
    everyone = np.asarray(fit.counts.sum(axis=0)).ravel()
    season_share = fit.season / max(fit.season.sum(), 1.0)
    season_lift = np.log((season_share + 1e-5) / (everyone / max(everyone.sum(), 1.0) + 1e-5))
    table = np.vstack([model.segment_popularity_, model.global_popularity_[None, :]])
    features = {
        "log_profile": np.log(comps["profile"] + 1e-6),
        "log_segment_popularity": np.log(table[model._segment_rows(segments[rows])] + 1e-4),
        "cooccurrence": comps["cooccurrence"], "repeat": comps["repeat"], "own": comps["own"],
        "basket_companions": np.log1p(basket_companions(orders, history, cut, rows)),
        "time_decayed_lines": np.log1p(fit.recency[rows].toarray()),
        "replenishment_clock": np.where(interval > 0, np.minimum(since / np.maximum(interval, 1.0), RATIO_CAP), 0.0),
        "log_days_since": np.log1p(since), "log_purchase_days": np.log1p(days), "log_lines": np.log1p(counts),
        "bought": (counts > 0).astype(np.float64),
        "log_customer_lines": np.broadcast_to(np.log1p(counts.sum(axis=1, keepdims=True)), counts.shape),
        "season_lift": np.broadcast_to(season_lift, counts.shape),
    }
    return {name: np.asarray(value, dtype=np.float32) for name, value in features.items()}


def _ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Top k of any real-valued scores (shifted per row to be positive: only the order matters)."""
    scores = np.asarray(scores, dtype=np.float64)
    return rec.top_k(scores - scores.min(axis=1, keepdims=True) + 1.0, k)[0]


def challengers_section(artifacts: Path, history: rec.PurchaseHistory, segments: np.ndarray, k: int, seed: int,
                        result: dict) -> list[str]:
    """Issue 15's untried ideas, each added to the profile with a weight chosen on the validation split (fit to
    ``cuts[0]``, scored to ``cuts[1]``) and a logistic blend of all of them trained there; every one then
    scored on the evaluation window like the other models."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    orders = order_items(artifacts, history.items)
    split = {}
    for cut in (0, 1):
        fit, bought = history.interactions(cut), history.bought(cut + 1)
        rows = rec.evaluable_rows(fit, bought)["evaluated"]
        split[cut] = (rows, challenger_features(history, segments, orders, cut, rows), bought[rows], fit.counts[rows])

    def measured(cut: int, scores: np.ndarray) -> dict:
        rows, _, bought, seen = split[cut]
        items = _ranked(scores, k)
        return rec.summarise([(rec.ranking_metrics(items, bought, seen), items)], len(history.items))

    out_rows = []
    base = result["models"][result["best_baseline"]]["recall"]
    ideas = {"(a) basket companions of the recent orders": "basket_companions",
             "(b) time-decayed own history (half-life 90 days)": "time_decayed_lines",
             "(b) replenishment clock (days since / own interval, capped at 2)": "replenishment_clock",
             "(c) season lift (share a year earlier / share overall)": "season_lift"}
    profile = {cut: split[cut][1]["log_profile"] for cut in (0, 1)}
    out_rows.append(["profile alone", "-", f"{measured(0, profile[0])['recall']:.4f}",
                     *_cells(measured(1, profile[1]), base)])
    fourth = {cut: {"succession": succession_scores(orders, history, cut, split[cut][0]),
                    "own_season": own_season_lift(orders, history, cut, split[cut][0], np.exp(profile[cut]))}
              for cut in (0, 1)}
    ideas.update({"(f) succession: classes bought after the customer's recent classes (log-lift)": "succession",
                  "(g) own classes of the same days a year before (log-lift over the profile)": "own_season"})
    for label, name in ideas.items():
        feature = {cut: split[cut][1][name] if name in split[cut][1] else fourth[cut][name] for cut in (0, 1)}
        tried = {w: measured(0, profile[0] + w * feature[0])["recall"] for w in CHALLENGER_WEIGHTS}
        weight = max(tried, key=tried.get)
        out_rows.append([f"profile + {label}", f"{weight}", f"{tried[weight]:.4f}",
                         *_cells(measured(1, profile[1] + weight * feature[1]), base)])
    rows0, features0, bought0, _ = split[0]
    train = np.arange(len(rows0))
    if len(train) > LOGISTIC_CUSTOMERS:
        train = np.sort(np.random.default_rng(seed).choice(train, LOGISTIC_CUSTOMERS, replace=False))
    names = list(features0)
    stack = lambda features, at: np.stack([features[n][at].ravel() for n in names], axis=1)  # noqa: E731
    scaler = StandardScaler().fit(stack(features0, train))
    logistic = LogisticRegression(max_iter=500).fit(scaler.transform(stack(features0, train)),
                                                    (bought0[train].toarray() > 0).ravel())
    every = np.arange(len(split[1][0]))
    scores = logistic.decision_function(scaler.transform(stack(split[1][1], every))).reshape(len(every), -1)
    out_rows.append([f"(d) logistic blend of all {len(names)} features", "fitted",
                     "-", *_cells(measured(1, scores), base)])
    coefficients = ", ".join(f"{n} {c:+.2f}" for n, c in zip(names, logistic.coef_[0]))
    best = result["best_baseline"].replace("_", " ")
    bounds = {cut: ceilings(split[cut][2], split[cut][3], k) for cut in (0, 1)}
    for label, key in (("ceiling: oracle that knows the window (any k classes bought in it)", "oracle"),
                       ("ceiling: best ranking of the customer's own past classes", "own_history")):
        out_rows.append([label, "-", f"{bounds[0][key]:.4f}", f"{bounds[1][key]:.3f}", "-", "-", "-", "-",
                         f"{bounds[1][key] / base:.2f}" if base else "n/a"])
    return ["### e. Challengers: issue 15's untried ideas", "",
            f"Each idea is added to the log of the profile component with the weight (of {CHALLENGER_WEIGHTS}) that "
            f"scores best on the validation split (fit to {history.cuts[0].date()}, scored to "
            f"{history.cuts[1].date()}, {len(rows0):,} customers), then scored on the evaluation window "
            f"({len(split[1][0]):,} customers). The logistic blend is trained on {len(train):,} validation customers' "
            f"(customer, class) pairs (label: bought in the validation period; standardised features; "
            f"coefficients {coefficients}). Rows (f) and (g) are the fourth round (succession over "
            f"{SUCCESSION_PAIRS} pairs of windows, prior {SUCCESSION_PRIOR:g}; own season prior {OWN_SEASON_PRIOR:g} "
            f"orders); the logistic blend does not use them. The ceilings are recall@{k} no ranking can pass "
            f"(recall = hits / classes bought in the window); "
            f"{bounds[1]['new_share']:.0%} of the window's classes were new to the customer who bought them "
            f"(validation: {bounds[0]['new_share']:.0%}). {time.perf_counter() - started:.0f} s.", "",
            *_table(["model", "weight", f"validation recall@{k}", f"recall@{k}", f"hit@{k}", f"NDCG@{k}",
                     "discovery", "coverage", f"x best baseline ({best})"], out_rows), ""]


def _cells(m: dict, base: float) -> list[str]:
    return [f"{m['recall']:.3f}", f"{m['hit_rate']:.3f}", f"{m['ndcg']:.3f}", f"{m['discovery']:.3f}",
            str(m["coverage"]), f"{m['recall'] / base:.2f}" if base else "n/a"]


# ---------------------------------------------------------------------------------------------
# c. Speed


def synthetic_interactions(n: int, seed: int) -> tuple[rec.Interactions, np.ndarray]:
    """``n`` customers x 332 classes, about 15 classes each, drawn from 12 segments' own class mixes."""
    rng = np.random.default_rng(seed)
    segments = rng.integers(0, SPEED_SEGMENTS, n)
    mixes = rng.dirichlet(np.full(SPEED_CLASSES, 0.3), SPEED_SEGMENTS)
    per_customer = np.maximum(rng.poisson(SPEED_CLASSES_PER_CUSTOMER, n), 1)
    row = np.repeat(np.arange(n), per_customer)
    cumulative = np.cumsum(mixes, axis=1)
    cumulative[:, -1] = 1.0
    draws = rng.random(len(row))
    col = np.empty(len(row), np.int64)
    row_segment = segments[row]
    for label in range(SPEED_SEGMENTS):
        inside = row_segment == label
        col[inside] = np.searchsorted(cumulative[label], draws[inside])
    lines = 1.0 + rng.poisson(1.0, len(row))
    counts = sp.csr_matrix((lines, (row, col)), shape=(n, SPEED_CLASSES))
    counts.sum_duplicates()
    recency = counts.copy()
    recency.data = recency.data * rng.random(len(recency.data))
    spend = counts.copy()
    spend.data = spend.data * rng.uniform(3, 30, len(spend.data))
    season = rng.gamma(1.0, 1.0, SPEED_CLASSES)
    # Purchase days (one per line), the last within two years of the as-of day, an interval of 10-200 days.
    as_of = int(rec.day_number(pd.Timestamp("2024-12-31"))[()])
    days = counts.copy()
    last = counts.copy()
    last.data = as_of - rng.integers(0, 730, len(last.data)).astype(np.float64)
    first = counts.copy()
    first.data = rec.FIRST_BASE - (last.data - (days.data - 1) * rng.uniform(10, 200, len(days.data)))
    return rec.Interactions(counts=counts, recency=recency, spend=spend, season=season, days=days, last=last,
                            first=first, as_of=as_of, horizon_days=182), segments


def speed_child(n: int, seed: int, k: int) -> None:
    """Run in a child process: draw, fit, recommend; print the timings as JSON."""
    started = time.perf_counter()
    interactions, segments = synthetic_interactions(n, seed)
    drawn = time.perf_counter()
    model = rec.NextBestClasses(weights=SPEED_WEIGHTS, top_k=k).fit(interactions, segments)
    fitted = time.perf_counter()
    recommended = model.recommend(interactions, segments)
    done = time.perf_counter()
    reasons = np.bincount(recommended.reason.ravel() + 1, minlength=len(rec.COMPONENTS) + 1)
    relevant = synthetic_interactions(n, seed + 1)[0].counts
    rows = rec.evaluable_rows(interactions, relevant)["evaluated"]
    chose = time.perf_counter()
    choice = rec.choose_weights(interactions, segments, relevant, rows, k, seed)
    chosen = time.perf_counter()
    print(json.dumps({"customers": n, "nonzeros": int(interactions.counts.nnz), "draw_s": drawn - started,
                      "fit_s": fitted - drawn, "recommend_s": done - fitted,
                      "rows": int((recommended.items >= 0).sum()),
                      "reasons": {("fallback" if i == 0 else rec.COMPONENTS[i - 1]): int(c)
                                  for i, c in enumerate(reasons)},
                      "choose_weights_s": chosen - chose, "choose_weights_customers": choice["customers"],
                      "choose_weights_blends": choice["grid"]}))


def speed_section(n: int, seed: int, k: int) -> list[str]:
    run = run_child([sys.executable, str(Path(__file__).resolve()), "--speed-child", str(n), "--seed", str(seed),
                     "--k", str(k)], capture=True)
    if run.exit_code != 0:
        return [f"### c. Speed: the child process failed (exit {run.exit_code}): {run.stderr[-2000:]}", ""]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    total = found["fit_s"] + found["recommend_s"]
    return [f"### c. Speed: {n:,} customers x {SPEED_CLASSES} classes, top {k} with reasons", "",
            f"Synthetic customer-by-class matrix (seed {seed}): {found['nonzeros']:,} non-zero cells (about "
            f"{found['nonzeros'] / n:.1f} classes per customer) in {SPEED_SEGMENTS} segments; weights "
            f"{_weights_text(SPEED_WEIGHTS)} (every component and reason exercised); scored in batches of "
            f"{rec.NextBestClasses().batch_size:,} customers.", "",
            *_table(["phase", "seconds"], [
                ["draw the matrices (not part of the target)", f"{found['draw_s']:.1f}"],
                ["fit (popularity, segment popularity, co-purchase cosine, season)", f"{found['fit_s']:.1f}"],
                [f"recommend: components, blend, top {k} (argpartition), reasons", f"{found['recommend_s']:.1f}"],
                [f"**fit + top {k} (target <= 120)**", f"**{total:.1f}**"],
                [f"choose_weights: {found['choose_weights_blends']} blends on {found['choose_weights_customers']:,} "
                 f"validation customers (stage 05 also runs this)", f"{found['choose_weights_s']:.1f}"]]),
            "", f"Whole child process: wall {seconds(run.wall_seconds)}, CPU {seconds(run.cpu_seconds)}, peak "
            f"resident memory {mib(run.peak_rss_mib)} (target 4,096 MiB, data and imports included). "
            f"{found['rows']:,} recommendations; reasons {found['reasons']}.", ""]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=paths.DEFAULT_ARTIFACTS,
                        help="artifacts folder of a run finished up to stage 04")
    parser.add_argument("--k", type=int, default=5, help="classes recommended per customer")
    parser.add_argument("--window-days", type=int, default=182, help="evaluation window, days")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers for the speed check")
    parser.add_argument("--seed", type=int, default=42, help="seed of the validation sample and the speed data")
    parser.add_argument("--skip-speed", action="store_true", help="leave out the speed check")
    parser.add_argument("--skip-ltr", action="store_true", help="leave out the learning-to-rank challenger")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--speed-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.speed_child:
        speed_child(args.speed_child, args.seed, args.k)
        return 0

    started = time.perf_counter()
    load_before = load_average()
    history, segments, end = load_history(args.artifacts, args.k, args.window_days)
    report = [f"Input: {args.artifacts}: {history.lines:,} merchandise purchase lines up to {end.date()} of "
              f"{len(segments):,} segmented customers, {len(history.items)} recommendable classes.", ""]
    quality, result = quality_section(history, segments, args.k, args.seed)
    print("\n".join(report + quality), flush=True)
    signals = signals_section(args.artifacts, history, segments, result)
    print("\n".join(signals), flush=True)
    ranked = [] if args.skip_ltr else ltr_section(history, segments, args.k, args.seed, result)
    print("\n".join(ranked), flush=True)
    challenged = challengers_section(args.artifacts, history, segments, args.k, args.seed, result)
    print("\n".join(challenged), flush=True)
    signals += ranked + challenged
    speed = [] if args.skip_speed else speed_section(args.customers, args.seed, args.k)
    print("\n".join(speed), flush=True)
    report += quality + signals + speed
    elapsed = time.perf_counter() - started
    print(f"benchmark took {elapsed:.0f} s")
    if args.record:
        command, loads = command_line("bench_recommendations.py", argv), load_span(load_before)
        header = [f"\n## Next-best classes (issue 15), {dt.date.today().isoformat()}\n",
                  f"- Machine: {machine()}", f"- Command: `{command.strip()}`",
                  f"- Benchmark wall time {elapsed:.0f} s; load average (1, 5, 15 min) {loads} (a shared machine: "
                  f"times are indicative)", ""]
        record("\n".join(header + report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
