"""The marketer's report: one self-contained HTML page describing the segments.

``render_report`` turns a ``ReportData`` (segment profiles as exported by stage
05, the clustering comparison, an optional persona cross-table and the charts
as PNG bytes) into a single HTML5 page: inline CSS, images embedded as
``data:`` URIs, no script and no external address of any kind, so the file can
be mailed or opened from a shared drive and looks the same offline.

Every piece of text that comes from data (segment names, descriptions,
strategies, persona names) is HTML-escaped. Drawing the charts is left to
``core.profile_export.plots``; the stage saves each PNG and passes its bytes in.
"""

from __future__ import annotations

import base64
import dataclasses
import html
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from core.cluster.clustering import NOISE, sample_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Friendly names for the codes used in config and artifacts; an unknown code is shown as it is.
METHOD_NAMES = {"hdbscan": "HDBSCAN", "gmm": "Gaussian mixture", "fcm": "Fuzzy c-means", "kmeans": "k-means",
                "sharpkmeans": "k-means on sharpened customers"}
SPACE_NAMES = {"latent": "autoencoder latent space", "raw": "raw feature space"}

# The charts, in page order: image key, heading, caption (what the marketer should read from it).
CHARTS = (
    ("segment_sizes", "Segment size and value",
     "Share of customers beside share of net revenue. A segment whose dark bar is longer than its "
     "light bar brings more than its headcount's worth of revenue."),
    ("department_heatmap", "Where each segment spends",
     "Each row is one segment's spend split across departments; darker cells are a larger share."),
    ("projection", "Customers by segment",
     "A sample of customers projected to two dimensions (principal components of the space the "
     "segments were found in). Well-separated colours mean distinct segments; overlap means "
     "customers who sit between segments."),
)
CALIBRATION = ("calibration", "Predicted against actual orders",
               "The customer-value models refitted with the analysis date moved back by the horizon: each pair "
               "of bars is one tenth of the customers, ranked by the orders the models expected; the dark bar is "
               "what they really bought. Bars of equal height mean the predictions can be taken at face value.")
OVER_TIME = (("sizes_over_time", "Segment sizes over time",
              "Customers in each segment at every snapshot date, each segmented by the trained models from their "
              "own recent behaviour alone."),
             ("segment_flows", "Moves between segments",
              "Each column is a snapshot, each block a segment; a band is the customers who went from one segment "
              "to another by the next snapshot (pale bands: those who stayed). Customers not active at both dates "
              "are the parts of a block no band touches."))
LOSS_CURVE = ("loss_curve", "Autoencoder training",
              "Reconstruction error per training epoch. Training and validation curves that flatten "
              "together show the network learned the customers' patterns without memorising them.")

# The comparison.csv columns the report shows (the file has more): display heading and format.
COMPARISON_COLUMNS = {
    "method": ("Method", "method"),
    "space": ("Space", "space"),
    "clusters": ("Segments", "int"),
    "noise_ratio": ("Noise before reassignment", "pct"),
    "silhouette": ("Silhouette", "float3"),
    "stability_reseed": ("Stability (reseeds)", "float3"),
    "stability_bootstrap": ("Stability (subsamples)", "float3"),
    "ari": ("Agreement with personas (ARI)", "float3"),
    "smallest_cluster": ("Smallest", "int"),
    "largest_cluster": ("Largest", "int"),
}


def project_2d(latent: np.ndarray, labels: np.ndarray, sample_size: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-dimensional view of customers for the projection chart.

    Parameters
    ----------
    latent : ndarray of shape (n_customers, n_dims)
        The space the segments were found in (latent or scaled raw features).
    labels : ndarray of shape (n_customers,)
        Segment id per customer (``-1``: noise).
    sample_size : int
        At most this many customers are kept (a seeded sample, in their
        original order), so the scatter stays readable and the PNG small.
    seed : int
        Seeds the sample and the PCA.

    Returns
    -------
    coords : ndarray of shape (m, 2)
        First two principal components of the sample, ``m = min(n_customers,
        sample_size)``. A space with fewer than two dimensions (or a sample of
        one customer) is padded with zeros.
    labels : ndarray of shape (m,)
        The sampled customers' segment ids.
    """
    latent = np.asarray(latent, dtype=np.float64)
    labels = np.asarray(labels)
    if latent.ndim != 2 or labels.ndim != 1 or len(latent) != len(labels):
        raise ValueError(f"latent must be (n, d) and labels (n,) with the same n; "
                         f"got {latent.shape} and {labels.shape}")
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    keep = sample_rows(len(latent), sample_size, seed)
    sample = latent[keep]
    coords = np.zeros((len(sample), 2))
    n_components = min(2, *sample.shape)
    if n_components > 0:
        coords[:, :n_components] = PCA(n_components=n_components, random_state=seed).fit_transform(sample)
    return coords, labels[keep]


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything the report shows.

    Attributes
    ----------
    title : str
        Page title and main heading.
    metadata : dict
        ``method``, ``space``, ``customers``, ``segments``, ``data_period``
        (``first_order``, ``last_order``), ``generated_at``, ``run_id``;
        a missing key shows as a dash.
    segments : list of dict
        Segment profiles in the export format (``segment_id``, ``name``,
        ``size``, ``share_of_customers``, ``revenue_share``, ``description``,
        ``top_departments``, ``top_classes``, ``strategy``, ``explanation``,
        ...); a profile with ``suppressed: True`` is shown as a compact card.
    comparison : DataFrame
        ``comparison.csv``: ``method``, ``space``, ``clusters``,
        ``noise_ratio``, ``silhouette``, ``smallest_cluster``,
        ``largest_cluster``; any further column is shown as it is.
    persona_table : DataFrame or None
        Customers per persona (index) and segment name (columns); ``None``
        when the data has no personas, and the section is left out.
    images : dict of str to bytes
        PNG bytes keyed ``segment_sizes``, ``department_heatmap``,
        ``projection``, ``calibration``, ``loss_curve``; a missing key is not
        shown.
    currency : str
        Symbol put before money amounts.
    customer_value : dict or None
        ``note`` (empty, or ``not estimated: <reason>``), ``horizon_days``
        and ``evaluation`` (``customer_value_evaluation.json``); the
        segments' ``customer_value`` give the churn-risk table. None leaves
        the section out.
    recommendations : dict or None
        ``recommendation_evaluation.json`` (with, under ``top_reasons``,
        the share of recommendations per reason); None leaves the section
        out.
    over_time : dict or None
        ``snapshots`` (dates), ``customers`` (followed) and ``window_days``
        of stage 04's snapshots; with the images ``sizes_over_time`` and
        ``segment_flows`` and the segments' ``migration``, the "Segments
        over time" section. None leaves it out.
    """

    title: str
    metadata: dict
    segments: list[dict]
    comparison: pd.DataFrame
    persona_table: pd.DataFrame | None
    images: dict[str, bytes]
    currency: str = "£"
    customer_value: dict | None = None
    recommendations: dict | None = None
    over_time: dict | None = None


def render_report(data: ReportData) -> str:
    """The report as one self-contained HTML5 page.

    Parameters
    ----------
    data : ReportData

    Returns
    -------
    str
        The page (write it as UTF-8). Sections in order: header with the run's
        metadata, segment cards (described segments in the given order, then
        noise, then suppressed ones), charts, customer value and churn (with
        ``data.customer_value``), method comparison, persona table
        (only when ``data.persona_table`` is given), training curve.

    Raises
    ------
    ValueError
        If an image is not PNG bytes.
    """
    for key, png in data.images.items():
        if bytes(png[:8]) != PNG_SIGNATURE:
            raise ValueError(f"report image {key!r} is not a PNG (it starts {bytes(png[:8])!r})")
    charts = [chart for chart in CHARTS if chart[0] in data.images]
    sections = [_segments_section(data)]
    if charts:
        sections.append(_section("charts", "Charts", "".join(_figure(data.images[key], heading, caption)
                                                             for key, heading, caption in charts)))
    if data.customer_value is not None:
        sections.append(_customer_value_section(data))
    if data.recommendations is not None:
        sections.append(_recommendations_section(data.recommendations))
    if data.over_time is not None:
        sections.append(_over_time_section(data))
    sections.append(_comparison_section(data))
    if data.persona_table is not None:
        sections.append(_persona_section(data.persona_table))
    if LOSS_CURVE[0] in data.images:
        key, heading, caption = LOSS_CURVE
        sections.append(_section("training", "How the customer space was learned",
                                 _figure(data.images[key], heading, caption)))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(data),
        "<main>",
        *sections,
        "</main>",
        f'<footer>Generated {_e(_when(data.metadata.get("generated_at")))} · run '
        f'{_e(data.metadata.get("run_id", "—"))}. Segment names and descriptions are derived from '
        "the data by rules; check them against your own knowledge of the customers.</footer>",
        "</body>",
        "</html>",
        "",
    ])


# --- formatting ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or (np.isscalar(value) and not isinstance(value, str) and bool(pd.isna(value)))


def _pct(value: Any, digits: int = 1) -> str:
    if _missing(value):
        return "—"
    smallest = 10.0 ** -digits  # in percent
    if 0 < 100 * float(value) < smallest:
        return f"<{smallest:g}%"  # a handful of customers is not "0.0%"
    return f"{100 * float(value):.{digits}f}%"


def _int(value: Any) -> str:
    return "—" if _missing(value) else f"{int(round(float(value))):,}"


def _money(value: Any, currency: str) -> str:
    if _missing(value):
        return "—"
    value = float(value)
    # Pennies matter on an order value, not on a lifetime spend in the hundreds.
    amount = f"{abs(value):,.0f}" if abs(value) >= 100 else f"{abs(value):,.2f}"
    return f"{'-' if value < 0 else ''}{currency}{amount}"


def _lift(value: Any) -> str:
    return "—" if _missing(value) else f"{float(value):.1f}×"


def _when(value: Any, with_time: bool = True) -> str:
    """A date or timestamp as "1 Mar 2024" (", 14:05 UTC" with the time), whatever type it came as."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return "—"
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return str(value)
    if pd.isna(stamp):
        return "—"
    text = f"{stamp.day} {stamp:%b %Y}"
    is_plain_date = isinstance(value, date) and not isinstance(value, datetime)
    if with_time and not is_plain_date and (stamp.hour, stamp.minute, stamp.second) != (0, 0, 0):
        text += f", {stamp:%H:%M}" + (f" {stamp.tzname()}" if stamp.tzinfo else "")
    return text


def _statistic(value: Any) -> Any:
    """A profile statistic is either a number or ``{"mean": .., "median": ..}``; the median reads better."""
    return value.get("median", value.get("mean")) if isinstance(value, dict) else value


# --- page pieces -----------------------------------------------------------------------------------

def _section(anchor: str, heading: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{anchor}"><h2>{_e(heading)}</h2>{lead_html}{body}</section>'


def _header(data: ReportData) -> str:
    meta = data.metadata
    method = METHOD_NAMES.get(str(meta.get("method")), meta.get("method", "—"))
    space = SPACE_NAMES.get(str(meta.get("space")), meta.get("space", "—"))
    period = meta.get("data_period") or {}
    facts = [
        ("Customers", _int(meta.get("customers"))),
        ("Segments", _int(meta.get("segments", len(data.segments)))),
        ("Data period", f"{_when(period.get('first_order'), False)} – {_when(period.get('last_order'), False)}"),
        ("Method", f"{method} in the {space}"),
        ("Generated", _when(meta.get("generated_at"))),
        ("Run", str(meta.get("run_id", "—"))),
    ]
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    links = [("segments", "Segments")]
    if any(key in data.images for key, _, _ in CHARTS):
        links.append(("charts", "Charts"))
    if data.customer_value is not None:
        links.append(("churn", "Churn risk"))
    if data.recommendations is not None:
        links.append(("next-best", "Next-best classes"))
    if data.over_time is not None:
        links.append(("over-time", "Over time"))
    links.append(("comparison", "Method comparison"))
    if data.persona_table is not None:
        links.append(("personas", "Personas"))
    if LOSS_CURVE[0] in data.images:
        links.append(("training", "Training"))
    nav = " ".join(f'<a href="#{anchor}">{_e(label)}</a>' for anchor, label in links)
    return (f'<header><div class="wrap"><p class="kicker">Customer segmentation report</p>'
            f'<h1>{_e(data.title)}</h1><dl class="facts">{items}</dl><nav>{nav}</nav></div></header>')


def _segments_section(data: ReportData) -> str:
    # Segments a marketer can act on first; then the customers no segment took, then the suppressed.
    ordered = sorted(data.segments, key=lambda s: (bool(s.get("suppressed")), s.get("segment_id") == NOISE))
    cards = "".join(_suppressed_card(s) if s.get("suppressed") else _segment_card(s, data.currency)
                    for s in ordered)
    lead = ("Each card is one group of customers who shop alike: who they are, what they buy, and how "
            "to reach them. Lift compares a segment with the average customer: 2.0× means twice the "
            "usual share of spend.")
    return _section("segments", "Segments", f'<div class="cards">{cards}</div>', lead)


def _card_head(segment: dict) -> str:
    segment_id = segment.get("segment_id")
    tag = "Unassigned" if segment_id == NOISE else f"Segment {segment_id}"
    return f'<p class="tag">{_e(tag)}</p><h3>{_e(segment.get("name", tag))}</h3>'


def _suppressed_card(segment: dict) -> str:
    reason = segment.get("reason") or "Too few customers to describe without identifying individuals."
    return (f'<article class="card suppressed">{_card_head(segment)}'
            f'<p class="sizes">{_e(_int(segment.get("size")))} customers · '
            f'{_e(_pct(segment.get("share_of_customers")))} of customers</p>'
            f'<p class="note">{_e(reason)}</p></article>')


def _segment_card(segment: dict, currency: str) -> str:
    shares = [("Customers", _int(segment.get("size"))),
              ("of customers", _pct(segment.get("share_of_customers"))),
              ("of revenue", _pct(segment.get("revenue_share")))]
    stats = "".join(f'<div><span class="num">{_e(v)}</span><span class="lbl">{_e(k)}</span></div>'
                    for k, v in shares)
    parts = [f'<article class="card">{_card_head(segment)}<div class="stats">{stats}</div>']
    figures = _key_figures(segment, currency)
    if figures:
        parts.append(f'<p class="figures">{figures}</p>')
    if segment.get("description"):
        parts.append(f'<p class="desc">{_e(segment["description"])}</p>')
    summary = (segment.get("explanation") or {}).get("summary")
    if summary:
        parts.append(f'<p class="why"><strong>Why this segment:</strong> {_e(summary)}</p>')
    departments = [(d.get("department", ""), d.get("spend_share"), d.get("lift"))
                   for d in segment.get("top_departments") or []]
    if departments:
        parts.append(_share_table("Top departments", "Department", departments))
    classes = [(f"{c.get('class', '')} ({c.get('department', '')})" if c.get("department") else c.get("class", ""),
                c.get("spend_share"), c.get("lift")) for c in segment.get("top_classes") or []]
    if classes:
        parts.append(_share_table("Top classes", "Class", classes))
    if segment.get("strategy"):
        parts.append(_strategy(segment["strategy"]))
    parts.append("</article>")
    return "".join(parts)


def _key_figures(segment: dict, currency: str) -> str:
    """Medians a marketer scans first, when the profile has them."""
    figures = []
    for key, label, fmt in (("net_revenue", "median spend", lambda v: _money(v, currency)),
                            ("average_order_value", "typical order", lambda v: _money(v, currency)),
                            ("orders_per_month", "orders a month", lambda v: f"{float(v):.1f}"),
                            ("recency_days", "days since last order", lambda v: f"{float(v):,.0f}")):
        value = _statistic(segment.get(key))
        if not _missing(value):
            figures.append(f"<span><b>{_e(fmt(value))}</b> {_e(label)}</span>")
    worth = segment.get("customer_value") or {}
    if not _missing(worth.get("mean_p_alive")):
        figures.append(f"<span><b>{_e(_pct(worth['mean_p_alive'], 0))}</b> mean chance still active</span>")
        figures.append(f"<span><b>{_e(_money(worth['expected_revenue'], currency))}</b> expected in "
                       f"{_e(worth['horizon_days'])} days</span>")
    return " ".join(figures)


def _share_table(caption: str, first_heading: str, rows: list[tuple[str, Any, Any]]) -> str:
    body = []
    for name, share, lift in rows:
        width = 0 if _missing(share) else max(0.0, min(100.0, 100 * float(share)))
        # A small bar beside the share gives the column a shape at a glance (CSS, no script).
        body.append(f'<tr><td>{_e(name)}</td><td class="share"><span class="track"><span class="fill" '
                    f'style="width:{width:.0f}%"></span></span>{_e(_pct(share, 0))}</td>'
                    f'<td class="n">{_e(_lift(lift))}</td></tr>')
    return (f'<table class="mini"><caption>{_e(caption)}</caption><thead><tr><th scope="col">'
            f'{_e(first_heading)}</th><th scope="col">Share of spend</th>'
            f'<th scope="col" class="n">Lift</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def _chips(values: Any) -> str:
    values = [values] if isinstance(values, str) else list(values or [])
    return "".join(f'<span class="chip">{_e(v)}</span>' for v in values)


def _strategy(strategy: dict) -> str:
    rows = []
    for key, label in (("channel", "Channels"), ("offer", "Offer"), ("tone", "Tone"), ("timing", "Timing"),
                       ("cross_sell", "Cross-sell")):
        value = strategy.get(key)
        if value:
            shown = _chips(value) if key in ("channel", "cross_sell") else _e(value)
            rows.append(f"<dt>{_e(label)}</dt><dd>{shown}</dd>")
    actions = strategy.get("retention_actions")
    if actions:
        actions = [actions] if isinstance(actions, str) else actions
        items = "".join(f"<li>{_e(a)}</li>" for a in actions)
        rows.append(f"<dt>Retention</dt><dd><ul>{items}</ul></dd>")
    rule = f'<span class="rule">playbook: {_e(strategy["rule"])}</span>' if strategy.get("rule") else ""
    return f'<div class="strategy"><h4>How to reach them {rule}</h4><dl>{"".join(rows)}</dl></div>'


def _figure(png: bytes, heading: str, caption: str) -> str:
    # PNG's IHDR holds the pixel size; giving it to the browser lets it lay the page out before decoding.
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    source = base64.b64encode(png).decode("ascii")
    # The heading is the alt text only: each PNG carries its own title, so it also reads well on its own.
    return (f'<figure><img src="data:image/png;base64,{source}" alt="{_e(heading)}"'
            f' width="{width}" height="{height}"><figcaption>{_e(caption)}</figcaption></figure>')


def _customer_value_section(data: ReportData) -> str:
    """Segments by churn risk, and the calibration check of the models behind it."""
    info = data.customer_value or {}
    horizon = info.get("horizon_days")
    lead = ("Each customer's chance of still being a customer (p_alive) and the orders and revenue expected from "
            "them over the next " + (f"{horizon} days" if horizon else "horizon") + ", from their own order history "
            "(MBG/NBD and Gamma-Gamma models). Churn risk is high where p_alive is below the first threshold of "
            "customer_value.churn_risk_thresholds, medium below the second, low above. A segment says what kind "
            "of shopper a customer is; churn risk says which of them still needs winning back.")
    if info.get("note"):
        return _section("churn", "Customer value and churn",
                        f'<p class="note">Customer value {_e(info["note"])}.</p>', lead)
    described = [s for s in data.segments if not s.get("suppressed") and s.get("customer_value")]
    numbers = ("Customers", "Mean p_alive", "Low risk", "Medium risk", "High risk",
               f"Expected revenue, {horizon} days")
    head = '<th scope="col">Segment</th>' + "".join(f'<th scope="col" class="n">{_e(h)}</th>' for h in numbers)
    rows = []
    for segment in described:
        worth = segment["customer_value"]
        shares = worth.get("churn_risk_share") or {}
        cells = [_int(segment.get("size")), _pct(worth.get("mean_p_alive"), 0),
                 *(_pct(shares.get(level), 0) for level in ("low", "medium", "high")),
                 _money(worth.get("expected_revenue"), data.currency)]
        rows.append(f'<tr><th scope="row">{_e(segment.get("name", ""))}</th>'
                    + "".join(f'<td class="n">{_e(c)}</td>' for c in cells) + "</tr>")
    body = (f'<div class="scroll"><table class="data"><caption>Segments by churn risk</caption><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    evaluation = info.get("evaluation") or {}
    key, heading, caption = CALIBRATION
    if evaluation.get("status") == "done" and key in data.images:
        orders, revenue = evaluation["orders"], evaluation["revenue"]
        figures = (f" Holdout {_when(evaluation['cut_date'], False)} to {_when(evaluation['analysis_date'], False)}, "
                   f"{evaluation['customers']:,} customers: {orders['predicted']:,.0f} purchase days predicted, "
                   f"{orders['actual']:,.0f} made ({_signed_pct(orders['relative_error'])}); revenue "
                   f"{_signed_pct(revenue['relative_error'])}; mean error per customer {orders['mae_model']:.2f} "
                   f"orders against {orders['mae_naive']:.2f} for repeating each customer's past rate.")
        body += _figure(data.images[key], heading, caption + figures)
    else:
        body += f'<p class="note">Calibration check {_e(evaluation.get("status", "not run"))}.</p>'
    return _section("churn", "Customer value and churn", body, lead)


# Rows of the recommendation table: the model, then the baselines it must beat.
RECOMMENDATION_ROWS = {"model": "This model", "global_popularity": "Baseline: most popular overall",
                       "segment_popularity": "Baseline: most popular in the segment",
                       "own_top_classes": "Baseline: the customer's own top classes"}


def _recommendations_section(document: dict) -> str:
    """The next-best classes: how they were measured against the baselines, why, and the segments' cross-sell."""
    k = document.get("k")
    lead = (f"Each segmented customer gets the {k} {document.get('level') or 'class'}es to show them next "
            "(recommendations.parquet), with a reason a marketer can read. Measured on a temporal holdout: fitted on "
            f"the purchases up to {_when(document.get('periods', {}).get('evaluation_fit_to'), False)}, scored on what "
            f"each customer bought in the {document.get('evaluation_window_days')} days after. Recall is the share of "
            "the classes a customer bought that were recommended; hit rate the share of customers with at least one; "
            "discovery the share who bought a recommended class they had never bought before.")
    models = document.get("models") or {}
    if not models:
        why = document.get("explanation") or "no evaluation"
        return _section("next-best", "Next-best classes", f'<p class="note">{_e(why)}</p>', lead)
    numeric = ' class="n"'
    head = "".join(f'<th scope="col"{numeric if i else ""}>{_e(h)}</th>' for i, h in enumerate(
        ("Model", f"Recall@{k}", f"Hit rate@{k}", f"NDCG@{k}", "Discovery", "Classes shown")))
    rows = []
    for name, label in RECOMMENDATION_ROWS.items():
        m = models.get(name)
        if m is None:
            continue
        cells = [_pct(m["recall"], 1), _pct(m["hit_rate"], 0), f"{m['ndcg']:.3f}", _pct(m["discovery"], 1),
                 _int(m["coverage"])]
        highlight = ' class="primary"' if name == "model" else ""
        rows.append(f'<tr{highlight}><th scope="row">{_e(label)}</th>'
                    + "".join(f'<td class="n">{_e(c)}</td>' for c in cells) + "</tr>")
    lift = document.get("lift_over_best_baseline")
    weights = ", ".join(f"{c} {w:.1f}" for c, w in (document.get("weights") or {}).items() if w)
    best = _e(str(document.get("best_baseline")).replace("_", " "))
    facts = (f"{_int(document.get('customers', {}).get('evaluated'))} customers scored. The model scores "
             f"{lift:.2f}× the recall of the best baseline ({best}). "
             f"Blend chosen on an earlier period: {_e(weights)}.") if lift is not None else ""
    reasons = document.get("top_reasons") or {}
    if reasons:
        facts += " Reasons given: " + ", ".join(f"{_e(r)} {_pct(v, 0)}" for r, v in reasons.items()) + "."
    cross = document.get("cross_sell") or {}
    if cross.get("segments"):
        used = sum(v["chosen"] == "recommendations" for v in cross["segments"].values())
        facts += (f" Segment cross-sell lists: {used} of {len(cross['segments'])} from this model, where, cut to the "
                  f"lift heuristic's length, it found more customers who then bought in a department new to them "
                  f"(overall {_pct(cross.get('model_hit_rate_same_length'), 1)} at that length, "
                  f"{_pct(cross.get('model_hit_rate'), 1)} with its full list, against "
                  f"{_pct(cross.get('lift_hit_rate'), 1)} for the lift heuristic); the others from lift.")
    body = (f'<div class="scroll"><table class="data"><caption>Next-best classes on the holdout</caption><thead>'
            f'<tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div><p>{facts}</p>')
    return _section("next-best", "Next-best classes", body, lead)


def _over_time_section(data: ReportData) -> str:
    """Segment sizes at each snapshot, the flows between them, and each segment's inflow, outflow and next move."""
    info = data.over_time or {}
    dates = info.get("snapshots") or []
    lead = (f"The customer base segmented again at {len(dates)} snapshot date(s) "
            f"({_when(dates[0], False) if dates else '—'} to {_when(dates[-1], False) if dates else '—'}), each from "
            f"the last {info.get('window_days', '—')} days of a customer's shopping, by the same trained models: "
            f"{_int(info.get('customers'))} customers followed. A customer whose shopping changed moves segment.")
    body = "".join(_figure(data.images[key], heading, caption) for key, heading, caption in OVER_TIME
                   if key in data.images)
    rows = []
    # A small segment is named on its own card only: never as another segment's next move.
    hidden = {s.get("segment_id") for s in data.segments if s.get("suppressed")}
    for segment in data.segments:
        move = segment.get("migration")
        if segment.get("suppressed") or not move:
            continue
        last = move.get("last_period") or {}
        nexts = ", ".join(f"{n['name']} {_pct(n['probability'], 0)}" for n in move.get("next_segments") or []
                          if n["segment_id"] not in hidden)
        cells = [_int(last.get("stayed")), _int(last.get("inflow")), _int(last.get("outflow"))]
        rows.append(f'<tr><th scope="row">{_e(segment.get("name", ""))}</th>'
                    + "".join(f'<td class="n">{_e(c)}</td>' for c in cells) + f"<td>{_e(nexts or '—')}</td></tr>")
    if rows:
        period = next((s["migration"]["last_period"] for s in data.segments
                       if (s.get("migration") or {}).get("last_period")), None)
        caption = (f"Last period, {_when(period['from'], False)} to {_when(period['to'], False)}; next segments "
                   f"over every period" if period else "Next segments over every period")
        head = "".join(f'<th scope="col" class="n">{h}</th>' for h in ("Stayed", "Inflow", "Outflow"))
        body += (f'<div class="scroll"><table class="data"><caption>{_e(caption)}</caption><thead><tr>'
                 f'<th scope="col">Segment</th>{head}<th scope="col">Most likely next (staying included)</th>'
                 f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    return _section("over-time", "Segments over time", body or '<p class="note">No snapshot.</p>', lead)


def _signed_pct(value: Any) -> str:
    return "—" if _missing(value) else f"{100 * float(value):+.1f}%"


def _comparison_section(data: ReportData) -> str:
    table = data.comparison
    primary = (str(data.metadata.get("method")), str(data.metadata.get("space")))
    # Columns that are empty throughout (no ground truth, say) are left out.
    columns = [c for c in COMPARISON_COLUMNS if c in table.columns and table[c].notna().any()]
    numeric = {c: ' class="n"' if _is_numeric(table, c) else "" for c in columns}
    head = "".join(f'<th scope="col"{numeric[c]}>{_e(COMPARISON_COLUMNS.get(c, (c,))[0])}</th>'
                   for c in columns)
    rows = []
    for record in table.to_dict("records"):
        is_primary = (str(record.get("method")), str(record.get("space"))) == primary
        cells = []
        for column in columns:
            text = _comparison_cell(column, record[column])
            if column == "method" and is_primary:
                text += ' <span class="chip primary">used for the segments</span>'
            cells.append(f"<td{numeric[column]}>{text}</td>")
        row_class = ' class="primary"' if is_primary else ""
        rows.append(f'<tr{row_class}>{"".join(cells)}</tr>')
    lead = ("Each clustering method and space, compared on the same customers; the highlighted row "
            "produced the segments above. "
            "Silhouette runs from -1 to 1: higher means tighter, better-separated segments. "
            "Noise is the share a density-based method first leaves out (each is then given its most likely "
            "segment, with a low strength). Stability is the agreement (adjusted Rand index, 1 = identical) "
            "between refits with other seeds and on subsamples; agreement with personas, where the data has "
            "them, compares the segments with the personas that generated the customers.")
    body = (f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
    return _section("comparison", "Method comparison", body, lead)


def _is_numeric(table: pd.DataFrame, column: str) -> bool:
    kind = COMPARISON_COLUMNS.get(column, (None, None))[1]
    return kind in ("int", "pct", "float3") or (kind is None and pd.api.types.is_numeric_dtype(table[column]))


def _comparison_cell(column: str, value: Any) -> str:
    kind = COMPARISON_COLUMNS.get(column, (None, None))[1]
    if _missing(value):
        return "—"
    if kind == "method":
        return _e(METHOD_NAMES.get(str(value), value))
    if kind == "space":
        return _e(str(value))
    if kind == "int":
        return _e(_int(value))
    if kind == "pct":
        return _e(_pct(value))
    if kind == "float3" or isinstance(value, (float, np.floating)):
        return _e(f"{float(value):.3f}")
    if isinstance(value, (int, np.integer)):
        return _e(f"{int(value):,}")
    return _e(value)


def _persona_section(table: pd.DataFrame) -> str:
    counts = table.fillna(0).to_numpy(dtype=float)
    totals = counts.sum(axis=1)
    head = '<th scope="col">Persona</th>' + "".join(f'<th scope="col" class="n">{_e(c)}</th>'
                                                       for c in table.columns)
    rows = []
    for persona, row, total in zip(table.index, counts, totals):
        cells = []
        for count in row:
            share = count / total if total else 0.0
            # Shade by the persona's share in the segment so where each persona went stands out.
            cells.append(f'<td class="n" style="background:rgba(31,78,121,{0.08 + 0.6 * share:.2f})'
                         f'{";color:#fff" if share > 0.55 else ""}">{_e(_int(count))}</td>')
        rows.append(f'<tr><th scope="row">{_e(persona)}</th>{"".join(cells)}</tr>')
    lead = ("The synthetic data knows which persona generated each customer. Customers per persona "
            "(rows) and segment (columns): a persona concentrated in one segment was recovered by the "
            "segmentation. Shading shows the share of the persona's customers.")
    body = (f'<div class="scroll"><table class="data persona"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
    return _section("personas", "Personas by segment", body, lead)


_CSS = """
:root{--ink:#1d2430;--muted:#5b6576;--line:#e2e6ec;--bg:#f5f7fa;--card:#fff;--accent:#1f4e79;--soft:#e8f0f8}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;-webkit-font-smoothing:antialiased}
header{background:var(--accent);color:#fff;padding:28px 0 18px}
.wrap,main,footer{max-width:1280px;margin:0 auto;padding:0 24px}
.kicker{margin:0;text-transform:uppercase;letter-spacing:.08em;font-size:12px;opacity:.8}
h1{margin:4px 0 16px;font-size:28px;font-weight:650;line-height:1.2}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px 24px;margin:0}
.facts dt{font-size:12px;opacity:.75}.facts dd{margin:0;font-weight:600}
nav{margin-top:18px;display:flex;gap:18px;flex-wrap:wrap;font-size:14px}
nav a{color:#fff;opacity:.85;text-decoration:none;border-bottom:1px solid rgba(255,255,255,.4)}
nav a:hover{opacity:1}
section{margin:36px 0}
h2{font-size:22px;margin:0 0 6px}
.lead{color:var(--muted);margin:0 0 18px;max-width:900px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(360px,100%),1fr));gap:18px;align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
box-shadow:0 1px 2px rgba(16,24,40,.05);break-inside:avoid}
.card h3{margin:2px 0 10px;font-size:18px;line-height:1.3;overflow-wrap:anywhere}
.tag{margin:0;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
.stats{display:flex;gap:22px;margin-bottom:8px}
.stats .num{display:block;font-size:20px;font-weight:650;color:var(--accent)}
.stats .lbl{font-size:12px;color:var(--muted)}
.figures{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;color:var(--muted);margin:6px 0}
.figures b{color:var(--ink)}
.desc{margin:10px 0;font-size:14px}
.why{background:var(--soft);border-left:3px solid var(--accent);padding:8px 12px;margin:10px 0;font-size:14px;
border-radius:0 6px 6px 0}
table{border-collapse:collapse;width:100%}
caption{text-align:left;font-weight:600;font-size:13px;padding:6px 0;color:var(--ink)}
.mini{font-size:13px;margin:8px 0}
.mini th{font-weight:500;color:var(--muted);text-align:left;border-bottom:1px solid var(--line);padding:3px 6px 3px 0}
.mini td{padding:3px 6px 3px 0;border-bottom:1px solid #f0f2f5}
.mini td.share{white-space:nowrap;width:120px}
.track{display:inline-block;width:56px;height:8px;background:#edf1f5;border-radius:2px;margin-right:8px;
vertical-align:middle;overflow:hidden}
.fill{display:block;height:100%;background:#6f97c1}
th.n,td.n{text-align:right;white-space:nowrap}
.strategy h4{margin:14px 0 6px;font-size:14px}
.rule{font-weight:400;font-size:12px;color:var(--muted);margin-left:6px}
.strategy dl{display:grid;grid-template-columns:92px 1fr;gap:4px 10px;margin:0;font-size:13px}
.strategy dt{color:var(--muted)}.strategy dd{margin:0}
.strategy ul{margin:0;padding-left:18px}
.chip{display:inline-block;background:var(--soft);color:var(--accent);border-radius:999px;padding:0 9px;
margin:0 4px 3px 0;font-size:12px;line-height:20px}
.chip.primary{background:var(--accent);color:#fff}
.suppressed{background:#fafbfc;border-style:dashed}
.suppressed h3{color:var(--muted)}
.sizes,.note{font-size:13px;color:var(--muted);margin:4px 0}
figure{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 18px}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{color:var(--muted);font-size:13px;margin-top:8px}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px}
.data{font-size:14px}
.data th,.data td{padding:8px 12px;border-bottom:1px solid var(--line);vertical-align:top}
.data thead th{background:#f0f3f7;text-align:left;font-weight:600;font-size:13px}
.data thead th.n{text-align:right}
.data tbody tr:last-child td,.data tbody tr:last-child th{border-bottom:none}
.data tr.primary td{background:#f3f8fd;font-weight:600}
.persona thead th{min-width:110px;max-width:170px;white-space:normal;font-size:12px;text-align:right}
.persona thead th:first-child{text-align:left}
.persona tbody th{text-align:left;font-weight:500;white-space:nowrap}
footer{color:var(--muted);font-size:12px;padding-bottom:32px}
@media print{body{background:#fff}header{background:#fff;color:var(--ink)}nav{display:none}
.card,figure{box-shadow:none}}
"""
