"""Unit tests of the HTML report (core/report.py) and its charts (core/plots.py).

The report is built from a small hand-made ``ReportData`` whose images are real
PNGs drawn by the plots functions, so the tests check what a marketer would
get: a page with no outside address, every chart embedded, data-derived text
escaped, small segments shown without a description.
"""

from __future__ import annotations

import base64
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.profile_export import plots
from core.profile_export.report import PNG_SIGNATURE, ReportData, project_2d, render_report

# A name as hostile as data can make it: markup and an ampersand must come out as text.
TRICKY_NAME = "Steady Shoppers - Home <b>& Garden"
CHART_KEYS = ("segment_sizes", "department_heatmap", "projection", "loss_curve")
MAX_PNG_BYTES = 300_000  # the PNGs travel inside the page


def make_segments() -> list[dict]:
    """Four described segments (one with a tricky name, one for noise) and one suppressed."""
    def segment(segment_id, name, size, share, revenue, departments, classes, rule, channel):
        return {
            "segment_id": segment_id, "name": name, "suppressed": False,
            "description": f"{name}: {size:,} customers who buy mostly {departments[0][0]}.",
            "size": size, "share_of_customers": share, "revenue_share": revenue,
            "net_revenue": {"mean": 410.5, "median": 1234.5}, "average_order_value": {"mean": 42.5, "median": 39.9},
            "orders_per_month": {"mean": 1.3, "median": 1.1}, "recency_days": {"mean": 30.0, "median": 21.0},
            "top_departments": [{"department": d, "spend_share": s, "lift": lift} for d, s, lift in departments],
            "top_classes": [{"department": d, "class": c, "spend_share": s, "lift": lift}
                            for d, c, s, lift in classes],
            "strategy": {"rule": rule, "channel": channel, "offer": "10% off the next basket over £50",
                         "tone": "warm, family-first", "timing": "Thursday evenings before payday weekends",
                         "cross_sell": ["Home", "Ladies Clothing"],
                         "retention_actions": ["Birthday voucher", "Early access to the summer sale"]},
            "explanation": {"summary": f"They spend {departments[0][2]:.1f}x the usual share on "
                                       f"{departments[0][0]} and order more often than most.",
                            "features": [{"feature": "dept_share__kids_clothing", "segment_mean": 0.3,
                                          "population_mean": 0.1, "smd": 2.1}]},
        }

    return [
        segment(0, "VIP Champions - Ladies Clothing Shoppers", 1234, 0.1234, 0.35,
                [("Ladies Clothing", 0.52, 2.4), ("Accessories", 0.18, 1.6), ("Health & Beauty", 0.1, 1.2)],
                [("Ladies Clothing", "Dresses", 0.21, 3.1), ("Accessories", "Bags", 0.09, 2.2)],
                "vip_retain", ["email", "app"]),
        segment(1, "Loyal Regulars - Kids Clothing Shoppers", 4321, 0.4321, 0.4,
                [("Kids Clothing", 0.34, 2.1), ("Home", 0.2, 1.1)],
                [("Kids Clothing", "Babywear", 0.1, 3.0)],
                "loyal_growth", ["email"]),
        segment(2, TRICKY_NAME, 3000, 0.3, 0.2,
                [("Home", 0.61, 2.8)], [("Home", "Candles", 0.2, 4.2)], "cross_sell", ["sms", "post"]),
        {"segment_id": 3, "name": "Promising Newcomers - Beauty Shoppers", "suppressed": True, "size": 4,
         "share_of_customers": 0.0004, "reason": "Fewer than 25 customers.",
         # Not in the export format; here to prove a suppressed card never shows a description.
         "description": "SECRET DESCRIPTION OF FOUR PEOPLE"},
        segment(-1, "Unassigned (noise)", 1441, 0.1441, 0.05,
                [("Home", 0.3, 1.0)], [], "reactivate", ["email"]),
    ]


def make_comparison() -> pd.DataFrame:
    rows = []
    for i, method in enumerate(("hdbscan", "gmm", "fcm", "kmeans")):
        for space in ("raw", "latent"):
            rows.append({"method": method, "space": space, "clusters": 4 + i,
                         "noise_ratio": 0.1441 if method == "hdbscan" else 0.0,
                         "silhouette": 0.21 + 0.05 * i, "smallest_cluster": 120 + i, "largest_cluster": 4321})
    return pd.DataFrame(rows)


def make_persona_table(segments: list[dict]) -> pd.DataFrame:
    names = [s["name"] for s in segments]
    personas = ["young_woman_fashion", "woman_with_baby", "budget_shopper", "professional_man"]
    counts = np.random.default_rng(0).integers(0, 900, size=(len(personas), len(names)))
    return pd.DataFrame(counts, index=pd.Index(personas, name="persona"), columns=names)


def make_images(folder: Path, segments: list[dict]) -> dict[str, bytes]:
    """Real PNGs from the plots functions, keyed as ``ReportData.images`` expects."""
    folder.mkdir(parents=True, exist_ok=True)
    described = [s for s in segments if not s.get("suppressed")]
    names = [s["name"] for s in described]
    plots.save_segment_sizes_plot(names, [s["share_of_customers"] for s in described],
                                  [s["revenue_share"] for s in described], folder / "segment_sizes.png")
    departments = sorted({d["department"] for s in described for d in s["top_departments"]})
    shares = pd.DataFrame([[next((d["spend_share"] for d in s["top_departments"] if d["department"] == dept), 0.0)
                            for dept in departments] for s in described], index=names, columns=departments)
    plots.save_department_heatmap(shares, folder / "department_heatmap.png")
    latent, labels = blobs([s["segment_id"] for s in described], n_per_segment=150, dims=6)
    coords, sampled = project_2d(latent, labels, sample_size=500, seed=0)
    plots.save_projection_plot(coords, sampled, {s["segment_id"]: s["name"] for s in described},
                               folder / "projection.png")
    plots.save_loss_plot({"loss": [1.0, 0.5, 0.3, 0.25], "val_loss": [1.1, 0.6, 0.35, 0.3]},
                         folder / "loss_curve.png")
    return {key: (folder / f"{key}.png").read_bytes() for key in CHART_KEYS}


def blobs(segment_ids: list[int], n_per_segment: int, dims: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian blob per segment id, centres far apart."""
    rng = np.random.default_rng(seed)
    latent = np.vstack([rng.normal(loc=4.0 * i, scale=1.0, size=(n_per_segment, dims))
                        for i in range(len(segment_ids))])
    return latent, np.repeat(np.asarray(segment_ids), n_per_segment)


def make_report_data(folder: Path, with_personas: bool = True) -> ReportData:
    """A complete ``ReportData`` with real charts drawn into ``folder`` (also used by the browser test)."""
    segments = make_segments()
    return ReportData(
        title="Customer segments - test run",
        metadata={"method": "hdbscan", "space": "latent", "customers": 10000, "segments": 4,
                  "data_period": {"first_order": "2023-01-01", "last_order": "2024-12-31"},
                  "generated_at": "2025-01-15T09:30:00+00:00", "run_id": "20250115-093000-abc123"},
        segments=segments,
        comparison=make_comparison(),
        persona_table=make_persona_table(segments) if with_personas else None,
        images=make_images(folder, segments),
        currency="£",
    )


@pytest.fixture(scope="module")
def report_data(tmp_path_factory) -> ReportData:
    return make_report_data(tmp_path_factory.mktemp("charts"))


@pytest.fixture(scope="module")
def page(report_data) -> str:
    return render_report(report_data)


def images_in(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*>", page)


def suppressed_cards(page: str) -> list[str]:
    return re.findall(r'<article class="card suppressed">.*?</article>', page, flags=re.S)


class TagBalance(HTMLParser):
    """Records every non-void tag left open or closed out of order."""

    VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base", "embed"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


# --- the page -------------------------------------------------------------------------------------

def test_page_is_a_self_contained_html5_document(page):
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert "<title>Customer segments - test run</title>" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page), "protocol-relative address"
    assert "<link" not in page.lower() and "<script" not in page.lower() and "@import" not in page
    assert "url(" not in page, "CSS must not fetch anything either"
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs), hrefs
    for anchor in hrefs:
        assert f'id="{anchor[1:]}"' in page, f"link {anchor} goes nowhere"


def test_tags_are_balanced(page):
    checker = TagBalance()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], f"left open: {checker.stack}"


def test_every_image_is_an_embedded_png_with_alt_text(page):
    tags = images_in(page)
    assert len(tags) == len(CHART_KEYS)
    for tag in tags:
        source = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert source, tag[:80]
        png = base64.b64decode(source.group(1), validate=True)
        assert png.startswith(PNG_SIGNATURE)
        alt = re.search(r'alt="([^"]+)"', tag)
        assert alt and alt.group(1).strip()
        width, height = (int(re.search(rf'{d}="(\d+)"', tag).group(1)) for d in ("width", "height"))
        assert (width, height) == (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))


def test_segment_names_and_text_are_escaped(page, report_data):
    assert "<b>&" not in page
    assert "Steady Shoppers - Home &lt;b&gt;&amp; Garden" in page
    for segment in report_data.segments:
        assert segment["name"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert "Health &amp; Beauty" in page


def test_cards_put_actionable_segments_first(page):
    order = [page.index(name) for name in ("VIP Champions - Ladies", "Loyal Regulars - Kids",
                                           "Steady Shoppers - Home", "Unassigned (noise)", "Promising Newcomers")]
    assert order == sorted(order)


def test_cards_show_sizes_shares_strategy_and_why(page):
    assert page.count('<article class="card') == 5
    assert "1,234" in page and "12.3%" in page and "35.0%" in page  # thousands separators, percentages
    assert "£1,234" in page and "£39.90" in page  # median spend and order value with the currency
    assert "Babywear (Kids Clothing)" in page and "3.0×" in page  # top class with its department and lift
    for text in ("Channels", "10% off the next basket over £50", "warm, family-first", "Thursday evenings",
                 "Cross-sell", "Birthday voucher", "playbook: loyal_growth", "Why this segment"):
        assert text in page, text


def test_suppressed_segment_card_shows_no_description(page):
    cards = suppressed_cards(page)
    assert len(cards) == 1
    card = cards[0]
    assert "Promising Newcomers - Beauty Shoppers" in card
    assert "Fewer than 25 customers." in card and card.count("describe") <= 1
    assert "&lt;0.1% of customers" in card, "four customers of 10,000 are not shown as 0.0%"
    assert 'class="desc"' not in card and "strategy" not in card
    assert "SECRET DESCRIPTION" not in page
    assert page.count('class="desc"') == 4, "every other segment keeps its description"


def test_header_shows_run_metadata(page):
    header = page[page.index("<header>"):page.index("</header>")]
    for text in ("HDBSCAN in the autoencoder latent space", "10,000", "1 Jan 2023 – 31 Dec 2024",
                 "15 Jan 2025, 09:30 UTC", "20250115-093000-abc123"):
        assert text in header, text


def test_comparison_table_formats_and_marks_the_primary_method(page):
    table = page[page.index('id="comparison"'):]
    table = table[:table.index("</section>")]
    assert table.count("<tr") == 1 + 8
    primary = re.findall(r'<tr class="primary">.*?</tr>', table, flags=re.S)
    assert len(primary) == 1 and "HDBSCAN" in primary[0] and ">latent<" in primary[0]
    assert "14.4%" in primary[0] and "0.210" in primary[0] and "4,321" in primary[0]


def test_comparison_shows_its_chosen_columns_and_missing_values(report_data):
    comparison = report_data.comparison.assign(runtime_seconds=1.5, stability_reseed=0.987, ari=np.nan)
    comparison.loc[0, "silhouette"] = np.nan
    page = render_report(ReportData(**{**report_data.__dict__, "comparison": comparison}))
    assert "Stability (reseeds)" in page and "0.987" in page and "—" in page
    # comparison.csv's other columns stay in the file; a column empty throughout is left out.
    assert "runtime_seconds" not in page and "Agreement with personas" not in page


def test_persona_table_is_present_only_when_given(page, report_data):
    section = page[page.index('<section id="personas"><h2>Personas by segment</h2>'):]
    section = section[:section.index("</section>")]
    # Columns: the segments by name, escaped; rows: each persona's customers per segment, as given.
    columns = re.findall(r'<th scope="col" class="n">(.*?)</th>', section)
    assert columns[2] == "Steady Shoppers - Home &lt;b&gt;&amp; Garden"
    assert [unescape(c) for c in columns] == list(report_data.persona_table.columns)
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', section)
    assert [persona for persona, _ in rows] == list(report_data.persona_table.index)
    for (persona, cells), expected in zip(rows, report_data.persona_table.to_numpy()):
        counts = [int(c.replace(",", "")) for c in re.findall(r"<td[^>]*>([^<]*)</td>", cells)]
        assert counts == expected.tolist(), persona
    without = render_report(ReportData(**{**report_data.__dict__, "persona_table": None}))
    assert 'id="personas"' not in without and "woman_with_baby" not in without
    assert 'href="#personas"' not in without


def test_a_missing_image_is_simply_not_shown(report_data):
    images = {k: v for k, v in report_data.images.items() if k != "projection"}
    page = render_report(ReportData(**{**report_data.__dict__, "images": images}))
    assert len(images_in(page)) == 3 and "Customers by segment" not in page
    bare = render_report(ReportData(**{**report_data.__dict__, "images": {}}))
    assert images_in(bare) == [] and 'id="charts"' not in bare and 'id="training"' not in bare


def test_an_image_that_is_not_a_png_is_refused(report_data):
    images = {**report_data.images, "projection": b"GIF89a not a png"}
    with pytest.raises(ValueError, match="'projection' is not a PNG"):
        render_report(ReportData(**{**report_data.__dict__, "images": images}))


# --- the charts -----------------------------------------------------------------------------------

def assert_small_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert 1_000 < len(data) < MAX_PNG_BYTES, (path, len(data))


def test_segment_sizes_plot_handles_fifteen_long_names(tmp_path):
    names = [f"Occasional Bargain Hunters - Health & Beauty & Home Shoppers #{i}" for i in range(15)]
    shares = list(np.full(15, 1 / 15))
    plots.save_segment_sizes_plot(names, shares, list(np.linspace(0.01, 0.2, 15)), tmp_path / "sizes.png")
    assert_small_png(tmp_path / "sizes.png")


def test_segment_sizes_plot_refuses_lists_of_different_lengths(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        plots.save_segment_sizes_plot(["a", "b"], [0.5, 0.5], [1.0], tmp_path / "sizes.png")


def test_department_heatmap_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    shares = rng.dirichlet(np.ones(14), size=15)
    frame = pd.DataFrame(shares, index=[f"Segment name number {i} - Kids Clothing Shoppers" for i in range(15)],
                         columns=[f"Department {j}" for j in range(14)])
    plots.save_department_heatmap(frame, tmp_path / "heatmap.png")
    assert_small_png(tmp_path / "heatmap.png")


def test_projection_plot_writes_a_png_with_noise(tmp_path):
    latent, labels = blobs([0, 1, 2], n_per_segment=1000, dims=5)
    labels[::7] = -1
    coords, sampled = project_2d(latent, labels, sample_size=3000, seed=0)
    plots.save_projection_plot(coords, sampled, {0: "A", 1: "B", 2: "C"}, tmp_path / "projection.png")
    assert_small_png(tmp_path / "projection.png")


def test_projection_plot_refuses_coordinates_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"coords must be \(n, 2\)"):
        plots.save_projection_plot(np.zeros((5, 3)), np.zeros(5), {}, tmp_path / "p.png")


def test_plots_close_their_figures(tmp_path):
    plt = plots._pyplot()
    before = len(plt.get_fignums())
    make_images(tmp_path, make_segments())
    assert len(plt.get_fignums()) == before


# --- project_2d -----------------------------------------------------------------------------------

def test_project_2d_is_deterministic_and_samples_at_most_sample_size():
    latent, labels = blobs([0, 1, 2], n_per_segment=400, dims=6)
    coords, sampled = project_2d(latent, labels, sample_size=500, seed=7)
    again, sampled_again = project_2d(latent, labels, sample_size=500, seed=7)
    assert coords.shape == (500, 2) and sampled.shape == (500,)
    np.testing.assert_array_equal(coords, again)
    np.testing.assert_array_equal(sampled, sampled_again)
    other, _ = project_2d(latent, labels, sample_size=500, seed=8)
    assert not np.array_equal(coords, other), "the seed chooses the sample"


def test_project_2d_keeps_every_row_of_a_small_space_and_labels_stay_with_their_rows():
    latent, labels = blobs([5, 9], n_per_segment=20, dims=3)
    coords, sampled = project_2d(latent, labels, sample_size=1000, seed=0)
    assert coords.shape == (40, 2)
    np.testing.assert_array_equal(sampled, labels)
    # The blobs sit 4 apart along every axis, so the first component separates them.
    assert np.sign(coords[sampled == 5, 0].mean()) != np.sign(coords[sampled == 9, 0].mean())


def test_project_2d_pads_a_one_dimensional_space():
    coords, _ = project_2d(np.arange(10.0).reshape(-1, 1), np.zeros(10, dtype=int), sample_size=5, seed=0)
    assert coords.shape == (5, 2) and np.all(coords[:, 1] == 0)


def test_project_2d_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="same n"):
        project_2d(np.zeros((5, 3)), np.zeros(4), sample_size=5, seed=0)
    with pytest.raises(ValueError, match="sample_size must be at least 1"):
        project_2d(np.zeros((5, 3)), np.zeros(5), sample_size=0, seed=0)


# --- next-best classes ----------------------------------------------------------------------------

RECOMMENDATION_DOCUMENT = {
    "level": "class", "k": 5, "evaluation_window_days": 182,
    "periods": {"evaluation_fit_to": "2024-07-02"}, "customers": {"evaluated": 3103},
    "weights": {"own": 0.1, "segment": 0.9, "cooccurrence": 0.0, "season": 0.0},
    "models": {name: {"recall": recall, "hit_rate": 0.9, "ndcg": 0.7, "discovery": 0.25, "coverage": 54}
               for name, recall in (("model", 0.2), ("global_popularity", 0.05), ("segment_popularity", 0.16),
                                    ("own_top_classes", 0.15))},
    "best_baseline": "segment_popularity", "lift_over_best_baseline": 1.25,
    "top_reasons": {"popular in segment": 0.8, "buys again": 0.2},
    "cross_sell": {"lift_hit_rate": 0.086, "model_hit_rate": 0.18, "model_hit_rate_same_length": 0.104,
                   "segments": {"0": {"chosen": "recommendations"}, "1": {"chosen": "lift"}}},
}


def test_the_next_best_section_shows_the_model_against_its_baselines(report_data):
    page = render_report(ReportData(**{**report_data.__dict__, "recommendations": RECOMMENDATION_DOCUMENT}))
    section = re.search(r'<section id="next-best">.*?</section>', page, flags=re.S).group(0)
    rows = re.findall(r'<tr[^>]*><th scope="row">(.*?)</th><td class="n">(.*?)</td>', section)
    assert rows == [("This model", "20.0%"), ("Baseline: most popular overall", "5.0%"),
                    ("Baseline: most popular in the segment", "16.0%"),
                    ("Baseline: the customer&#x27;s own top classes", "15.0%")]
    assert "1.25× the recall of the best baseline (segment popularity)" in section
    assert "1 of 2 from this model" in section and 'href="#next-best"' in page
    assert "overall 10.4% at that length, 18.0% with its full list, against 8.6% for the lift" in section
    parser = TagBalance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []


def test_the_next_best_section_says_why_there_are_none(report_data):
    document = {"level": None, "k": 5, "models": {}, "explanation": "no recommendations: a log without classes"}
    page = render_report(ReportData(**{**report_data.__dict__, "recommendations": document}))
    assert "no recommendations: a log without classes" in page
    assert 'id="next-best"' not in render_report(report_data)
