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

import pandas as pd

from core.domain.customer_ids import with_source_ids
from core.framework import paths
from core.framework.stage import StageContext
from core.profile_export import recommendations as rec

LINE_COLUMNS = ["customer_id", "order_date", "department", "class", "line_amount", "is_return"]
BATCH_ROWS = 2_000_000
SEGMENT_NOTE = ("the segment label comes from stage 04, fitted on all history up to the analysis date (the window "
                "included); segment popularity, co-purchase similarity, season and weights in this evaluation are "
                "computed from the lines before the window only")


def analysis_date(customers: pd.DataFrame) -> pd.Timestamp:
    """Stage 02's analysis date: each customer's last order date plus their recency in days."""
    return (customers["last_order_date"] + pd.to_timedelta(customers["recency_days"], unit="D")).max().normalize()


def write_recommendations(ctx: StageContext, customers: pd.DataFrame, assignments: pd.DataFrame,
                          mapping: pd.DataFrame | None = None) -> None:
    """Recommend, evaluate and write both files for the segmented customers (``assignments``' order).

    ``mapping`` (stage 01's ``customer_ids.parquet``) gives the table the ids as the source wrote them.

    A log whose lines have no merchandise class the hierarchy knows falls
    back to departments; one with neither writes an empty table and an
    evaluation document whose ``explanation`` says why.
    """
    settings = ctx.config.profile_export.recommendations
    k, window = settings.top_k, settings.evaluation_window_days
    end = analysis_date(customers)
    cuts = [end - pd.Timedelta(days=2 * window), end - pd.Timedelta(days=window), end]
    ids = assignments["customer_id"].to_numpy()
    segments = assignments["segment"].to_numpy()
    seen_lines, history, items, level = {}, None, None, None
    for level in ("class", "department"):
        items = rec.recommendable_items(ctx.config.hierarchy, level)
        history = rec.PurchaseHistory(ids, items, cuts, window)
        for lines in ctx.iter_parquet(paths.GENERATE_DATA, paths.TRANSACTIONS, LINE_COLUMNS, BATCH_ROWS):
            history.add(lines)
        seen_lines[level] = history.lines
        if history.lines:
            break
    level, why = rec.choose_level(seen_lines)
    document = {"level": level, "level_reason": why, "analysis_date": str(end.date()),
                "evaluation_window_days": window, "k": k,
                "periods": {"weights_fit_to": str(cuts[0].date()), "evaluation_fit_to": str(cuts[1].date()),
                            "evaluation_window": [str((cuts[1] + pd.Timedelta(days=1)).date()), str(end.date())]},
                "customers": {"segmented": int(len(ids))}, "segment_popularity_note": SEGMENT_NOTE}
    if level is None:
        document.update(models={}, explanation=f"no recommendations: {why}")
        table = rec.empty_recommendations()
    else:
        evaluation = rec.evaluate_history(history, segments, k, ctx.config.seed)
        document["customers"].update(evaluation.pop("customers"))
        document.update(evaluation)
        model = rec.NextBestClasses(weights=evaluation["weights"], top_k=k).fit(history.interactions(2), segments)
        table = rec.recommendation_table(model.recommend(history.interactions(2), segments), ids, items)
    if mapping is not None:
        table = with_source_ids(table, mapping)
    ctx.write_parquet(paths.RECOMMENDATIONS, table)
    ctx.write_json(paths.RECOMMENDATION_EVALUATION, document)
    ctx.details["recommendations"] = _details(document, table)
    ctx.summary += f"; {_summary(document, table)}"


def _details(document: dict, table: pd.DataFrame) -> dict:
    models = document.get("models") or {}
    out = {"level": document["level"], "rows": int(len(table)), "customers": int(table["customer_id"].nunique()),
           "weights": document.get("weights"), "reasons": table["reason"].value_counts().to_dict()}
    if models:
        best = document["best_baseline"]
        out[f"recall@{document['k']}"] = {"model": models["model"]["recall"], best: models[best]["recall"]}
        out["lift_over_best_baseline"] = document["lift_over_best_baseline"]
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

