"""Stage 05's next-best classes: read the order lines, measure, recommend, write (issue 15).

Writes ``recommendations.parquet`` (customer_id, rank 1..top_k, department,
class, score, reason; every segmented customer) and
``recommendation_evaluation.json`` (the temporal holdout of the model against
three baselines), and adds a summary to the manifest. The model and its
measurement are in :mod:`core.profile_export.recommendations`.

Honesty of the evaluation: the segment label is a customer attribute from
stage 04, which fitted the segmentation on all history up to the analysis
date, the evaluation window included. Everything the evaluation *learns*
(segment popularity, co-purchase similarity, season, weights) comes from the
lines before the window only, so what a segment bought in the window never
reaches a score; only the labels themselves saw it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import pandas as pd

from core.domain.customer_ids import with_source_ids
from core.framework import paths
from core.framework.stage import StageContext
from core.framework.threads import in_thread
from core.profile_export import profiling
from core.profile_export import recommendations as rec

LINE_COLUMNS = ["customer_id", "order_date", "department", "class", "line_amount", "is_return"]
BATCH_ROWS = 2_000_000
# A segment with fewer scored customers keeps the lift heuristic: a difference of one or two customers is no
# measurement (on the default data a segment of 8 customers "won" by one customer).
MIN_CROSS_SELL_CUSTOMERS = 30
SAMPLE_NOTE = ("the holdout and the cross-sell comparison score every evaluable customer, or a seeded sample of "
               "{n:,} when there are more (profile_export.recommendations.evaluation_customers); the weights are "
               "chosen on at most {v:,} validation customers")
FIT_SAMPLE_NOTE = ("the weights' validation fit, the holdout and the cross-sell comparison are fitted on a seeded "
                   "sample of {n:,} of the {m:,} segmented customers (profile_export.recommendations."
                   "evaluation_fit_customers: every customer up to it); the recommendations come from every "
                   "customer's history")
SEGMENT_NOTE = ("the segment label comes from stage 04, fitted on all history up to the analysis date (the window "
                "included); segment popularity, co-purchase similarity, season and weights in this evaluation are "
                "computed from the lines before the window only")


def analysis_date(customers: pd.DataFrame) -> pd.Timestamp:
    """Stage 02's analysis date: each customer's last order date plus their recency in days."""
    return (customers["last_order_date"] + pd.to_timedelta(customers["recency_days"], unit="D")).max().normalize()


@dataclasses.dataclass(frozen=True)
class RecommendationRun:
    """What :func:`fit_recommendations` computed, written by :func:`write_recommendations`.

    Attributes
    ----------
    document : dict
        ``recommendation_evaluation.json``.
    table : DataFrame
        ``recommendations.parquet``.
    saved : SavedRecommender
        ``recommendation-model.pkl``.
    cross_sell : dict of int to list of str
        The model's ranked departments of the segments whose cross-sell list
        comes from it (it beat the lift heuristic on the holdout).
    """

    document: dict
    table: pd.DataFrame
    saved: rec.SavedRecommender
    cross_sell: dict[int, list[str]]


class Stopped(Exception):
    """:func:`fit_recommendations` gave up: its caller set ``stop`` (the stage failed meanwhile)."""


def fit_recommendations(ctx: StageContext, customers: pd.DataFrame, assignments: pd.DataFrame,
                        stop=None, lines=None) -> RecommendationRun:
    """Recommend and evaluate for the segmented customers (``assignments``' order); nothing written yet.

    A log whose lines have no merchandise class the hierarchy knows falls
    back to departments; one with neither gets an empty table and an
    evaluation document whose ``explanation`` says why. ``stop`` (an Event,
    optional) makes it raise :class:`Stopped` at its next check (every batch
    of lines, and between its steps): stage 05 runs it in a thread beside
    its other parts, and does not wait a minute for it when one of those failed.
    ``lines`` (optional): the order lines' batches for the first pass, with at
    least :data:`LINE_COLUMNS` (:func:`line_batches`), read through to the end;
    by default it reads its own. Stage 05 gives it a read shared with the
    segments' spend totals; the fall-back to departments reads its own.
    """
    def check() -> None:
        if stop is not None and stop.is_set():
            raise Stopped("the next-best classes were stopped: the stage failed meanwhile")

    settings = ctx.config.profile_export.recommendations
    k, window, seed = settings.top_k, settings.evaluation_window_days, ctx.config.seed
    end = analysis_date(customers)
    cuts = [end - pd.Timedelta(days=2 * window), end - pd.Timedelta(days=window), end]
    ids = assignments["customer_id"].to_numpy()
    segments = assignments["segment"].to_numpy()
    seen_lines, history, items, level = {}, None, None, None
    for level in ("class", "department"):
        items = rec.recommendable_items(ctx.config.hierarchy, level)
        history = rec.PurchaseHistory(ids, items, cuts, window)
        for batch in line_batches(ctx) if lines is None else lines:
            check()
            history.add(batch)
        lines = None  # read through: a second pass reads its own
        seen_lines[level] = history.lines
        if history.lines:
            break
    level, why = rec.choose_level(seen_lines)
    document = {"level": level, "level_reason": why, "analysis_date": str(end.date()),
                "evaluation_window_days": window, "k": k,
                "periods": {"weights_fit_to": str(cuts[0].date()), "evaluation_fit_to": str(cuts[1].date()),
                            "evaluation_window": [str((cuts[1] + pd.Timedelta(days=1)).date()), str(end.date())]},
                "customers": {"segmented": int(len(ids))}, "segment_popularity_note": SEGMENT_NOTE}
    model, cross_sell = None, {}
    if level is None:
        document.update(models={}, explanation=f"no recommendations: {why}")
        table = rec.empty_recommendations()
    else:
        check()
        # At scale the evaluation's fits come from a sample of customers (its labels alongside); None: everyone.
        sample = rec.evaluation_fit_rows(len(ids), settings.evaluation_fit_customers, seed)
        sampled_segments = segments if sample is None else segments[sample]
        # Everyone's purchases to the analysis date and what the final model counts whatever its weights, made
        # beside the holdout's cut and the evaluation (which leave a core idle in stretches at a million
        # customers); the cut is made again with the purchase days when the weights chosen need them (the rhythm
        # or co-occurrence).
        final_ahead = _final_ahead(history, segments, k)
        try:
            holdout = rec.Holdout.of(history, seed, settings.evaluation_customers, rows=sample)
            evaluation = rec.evaluate_history(history, sampled_segments, k, seed, holdout, rows=sample)
        except BaseException:
            concurrent.futures.wait([final_ahead])  # nothing runs on behind a failed evaluation
            raise
        final, counted = final_ahead.result()
        document["customers"].update(evaluation.pop("customers"))
        document["evaluation_sample"] = SAMPLE_NOTE.format(n=settings.evaluation_customers, v=rec.VALIDATION_CUSTOMERS)
        if sample is not None:
            document["customers"]["evaluation_fit_sample"] = int(len(sample))
            document["evaluation_fit_sample"] = FIT_SAMPLE_NOTE.format(n=len(sample), m=len(ids))
        document.update(evaluation)
        check()
        if document["models"]:
            document["cross_sell"] = compare_cross_sell(holdout, sampled_segments, evaluation["weights"], k,
                                                        ctx.config.profile_export.top_departments,
                                                        ctx.config.strategies, items, seed)
        del holdout
        check()
        # The final fit and top k never read spend, nor the purchase days unless the blend weights the purchase
        # rhythm or co-occurrence (whose count from an earlier cut reads the first days): three of the cut's five
        # matrices, about 2 CPU-s at a million customers (docs/decisions.md, "sixth round").
        weights = evaluation["weights"]
        if weights.get("repeat") or weights.get("cooccurrence"):
            # Made again with the days (the cut ahead dropped first: one cut in memory); its counts and season are
            # the same, so the counts made ahead stay right.
            final = None
            final = history.interactions(2, spend=False, timing=True)
        del history
        # Its similarity only when the blend weights co-occurrence: nothing else reads the final model's.
        model = rec.NextBestClasses(weights=weights, top_k=k).fit(final, segments, similarity=False, counted=counted)
        # The segments' cross-sell order comes from the same pass as everyone's top k (it scored them all again).
        departments = rec.DepartmentTotals(segments, items)
        recommended = model.recommend(final, segments, departments=departments)
        table = rec.recommendation_table(recommended, ids, items)
        document["top_reasons"] = rec.reason_shares(recommended, items)
        chosen = [s for s, v in document.get("cross_sell", {}).get("segments", {}).items()
                  if v["chosen"] == "recommendations"]
        if chosen:
            ranked = departments.ranked()
            cross_sell = {int(s): ranked.get(int(s), []) for s in chosen}
    saved = rec.SavedRecommender(model=model, items=items, level=level,
                                 explanation=document.get("explanation") or why,
                                 analysis_date=str(end.date()), horizon_days=window)
    return RecommendationRun(document=document, table=table, saved=saved, cross_sell=cross_sell)


def _final_ahead(history: rec.PurchaseHistory, segments: np.ndarray, k: int) -> concurrent.futures.Future:
    """In a thread: the final cut without the purchase days, and a model fitted on it (its counts, for
    ``NextBestClasses.fit``'s ``counted``); the history's reads are done (its sums are only read now)."""
    def made():
        final = history.interactions(2, spend=False, timing=False)
        # Weights that blend no co-occurrence: nothing here reads the purchase days this cut leaves out.
        return final, rec.NextBestClasses(weights={"profile": 1.0}, top_k=k).fit(final, segments, similarity=False)

    return in_thread(made, name="final-cut")


def line_batches(ctx: StageContext, columns=(), dictionary=()):
    """The order lines as Arrow record batches of :data:`LINE_COLUMNS` and ``columns``, department and class
    (and ``dictionary``) dictionary-encoded: the purchase history looks each distinct name up once per batch
    instead of making a Python string of every line's."""
    import pyarrow.parquet as pq

    # Memory-mapped: the compressed pages are read straight from the page cache instead of copied into buffers
    # allocated (and faulted in) afresh for every row group; about 1.2 CPU-s of system time at a million customers.
    with pq.ParquetFile(ctx.input_path(paths.GENERATE_DATA, paths.TRANSACTIONS),
                        read_dictionary=list(dict.fromkeys(["department", "class", *dictionary])),
                        memory_map=True) as source:
        yield from source.iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys([*LINE_COLUMNS, *columns])))


def compare_cross_sell(holdout: rec.Holdout, segments, weights: dict, k: int, top_departments: int,
                       strategies, items: pd.DataFrame, seed: int) -> dict:
    """Each segment's cross-sell list from the lift heuristic and from the model, measured on the holdout.

    Both lists are made from the lines before the evaluation window (the
    heuristic from the segments' spend per department, purchases only; the
    model's from its blended scores on the classes each customer had not
    bought, :func:`~core.profile_export.recommendations.ranked_departments`,
    summed over every customer or over a seeded sample of
    ``holdout.max_customers``), the same length (``cross_sell.max_categories``)
    and without the segment's top departments. A customer scores 1 when they
    bought in the window in a listed department they had never bought; the
    customers scored are the holdout's (``holdout.scored``). The model's list
    is chosen for a segment when its mean is higher than the heuristic's by
    more than one paired standard error (else the heuristic stays: a
    difference within noise does not justify a change), and the segment has
    at least :data:`MIN_CROSS_SELL_CUSTOMERS` scored customers.
    """
    fit, relevant, rows = holdout.fit, holdout.relevant, holdout.scored
    to_department, departments = rec.department_matrix(items)
    spend = pd.DataFrame((fit.spend @ to_department).toarray(), columns=departments).groupby(segments).sum()
    lift = profiling.lift_cross_sell(spend, top_departments, strategies)
    model = holdout.fitted(weights, k, segments)
    ranked = rec.ranked_departments(model, fit, segments, items,
                                    rows=rec.sample_rows(np.arange(fit.shape[0]), holdout.max_customers, seed))
    n = strategies.cross_sell.max_categories
    model_lists = {s: profiling.pick_cross_sell(ranked.get(s, []), top, n) for s, (_, top) in lift.items()}
    lists = {"lift": {s: names for s, (names, _) in lift.items()}, "recommendations": model_lists,
             # As long as the heuristic's list (all of it where the heuristic has none): better, not just longer.
             "same_length": {s: model_lists[s][:len(names) or n] for s, (names, _) in lift.items()}}
    hits = {name: rec.cross_sell_hits(chosen, segments, rows, fit.counts, relevant, items)
            for name, chosen in lists.items()}
    labels = np.asarray(segments)[rows]
    out = {}
    for segment in sorted(lift):
        at = labels == segment
        diff = hits["same_length"][at] - hits["lift"][at]
        error = float(diff.std() / np.sqrt(at.sum())) if at.sum() > 1 else float("inf")
        better = at.sum() >= MIN_CROSS_SELL_CUSTOMERS and diff.mean() > error
        out[str(segment)] = {"customers": int(at.sum()), "lift": lists["lift"][segment],
                             "recommendations": model_lists[segment],
                             "lift_hit_rate": _mean(hits["lift"][at]),
                             "model_hit_rate": _mean(hits["recommendations"][at]),
                             "model_hit_rate_same_length": _mean(hits["same_length"][at]),
                             "chosen": "recommendations" if better else "lift"}
    return {"how": ("share of the segment's customers who bought in the window in a listed department new to "
                    "them; the model's list is used where, cut to the heuristic's length, it beats lift by more "
                    "than one paired standard error"),
            "customers": int(len(rows)), "lift_hit_rate": _mean(hits["lift"]),
            "model_hit_rate": _mean(hits["recommendations"]),
            "model_hit_rate_same_length": _mean(hits["same_length"]), "segments": out}


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def encode_recommendations(ctx: StageContext, run: RecommendationRun, mapping: pd.DataFrame | None = None) -> bytes:
    """``recommendations.parquet``'s bytes, for :func:`write_recommendations` (any thread may call it).

    ``mapping`` (stage 01's ``customer_ids.parquet``) gives the table the ids as the source wrote them.
    """
    table = run.table if mapping is None else with_source_ids(run.table, mapping)
    # Dictionary pages for the few names and reasons only, statistics for what a reader filters on (a customer,
    # a rank): 4.8 M rows at a million customers encoded in 0.35 s instead of 0.7.
    return ctx.parquet_bytes(paths.RECOMMENDATIONS, table, dictionary=["department", "class", "reason"],
                             statistics=["customer_id", "rank"])


def write_recommendations(ctx: StageContext, run: RecommendationRun, mapping: pd.DataFrame | None = None,
                          table_bytes: bytes | None = None) -> None:
    """Write ``recommendations.parquet``, ``recommendation_evaluation.json`` and ``recommendation-model.pkl``;
    add the summary to the manifest and the stage's log line.

    ``mapping`` as in :func:`encode_recommendations`; ``table_bytes``: the table already encoded by it (stage 05
    encodes it while it checks its exports).
    """
    ctx.write_bytes(paths.RECOMMENDATIONS, table_bytes if table_bytes is not None
                    else encode_recommendations(ctx, run, mapping))
    ctx.write_json(paths.RECOMMENDATION_EVALUATION, run.document)
    # What score recommends new customers with: the same fitted model, or why there is none.
    ctx.write_joblib(paths.RECOMMENDATION_MODEL, run.saved)
    ctx.details["recommendations"] = _details(run.document, run.table)
    ctx.summary += f"; {_summary(run.document, run.table)}"


def _details(document: dict, table: pd.DataFrame) -> dict:
    models = document.get("models") or {}
    out = {"level": document["level"], "rows": int(len(table)), "customers": int(table["customer_id"].nunique()),
           "weights": document.get("weights"), "reasons": document.get("top_reasons", {})}
    if models:
        best = document["best_baseline"]
        out[f"recall@{document['k']}"] = {"model": models["model"]["recall"], best: models[best]["recall"]}
        out["lift_over_best_baseline"] = document["lift_over_best_baseline"]
        out["discovery"] = models["model"]["discovery"]
    cross = document.get("cross_sell")
    if cross:
        out["cross_sell"] = {"from_model": [int(s) for s, v in cross["segments"].items()
                                            if v["chosen"] == "recommendations"],
                             "model_hit_rate": cross["model_hit_rate"], "lift_hit_rate": cross["lift_hit_rate"]}
    explanation = document.get("explanation")
    return {**out, "explanation": explanation} if explanation else out


def _summary(document: dict, table: pd.DataFrame) -> str:
    if document["level"] is None:
        return "no recommendations (no merchandise departments or classes in the lines)"
    text = f"next-best {document['level']} for {table['customer_id'].nunique():,} customers"
    models = document.get("models")
    if models:
        k, best = document["k"], document["best_baseline"]
        text += (f" (recall@{k} {models['model']['recall']:.3f} vs {models[best]['recall']:.3f} "
                 f"{best.replace('_', ' ')})")
    return text

