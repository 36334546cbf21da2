"""The stage-05 report's figures, saved as PNG files (matplotlib, without a display)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.train_autoencoder.plots import pyplot as _pyplot
from core.train_autoencoder.plots import save_loss_plot  # noqa: F401 - the report redraws the loss curve

if TYPE_CHECKING:  # pandas only for annotations
    import pandas as pd


# Charts for the stage-05 report. Each sizes its figure from the number of rows so 15 long
# segment names stay legible, draws at a modest DPI (the PNGs are embedded in one HTML page,
# so every kilobyte is carried by the page) and closes its figure (a batch run draws many).
_DPI = 100
_NAME_WIDTH = 34  # characters per line of a wrapped segment name on an axis
_NOISE_LABEL = -1
_NOISE_NAME = "Unassigned (noise)"
_NOISE_COLOUR = "#b0b0b0"
_CUSTOMER_COLOUR = "#9bb7d4"
_REVENUE_COLOUR = "#1f4e79"


def _wrap(text: str, width: int = _NAME_WIDTH) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width=width)) or str(text)


def _segment_colours(plt) -> list:
    """Distinct colours for segments: tab10's strong colours, then tab20's light ones.

    Grey is left out (it marks noise), and the light variants come only after all the strong
    ones, because tab20's natural order puts each light shade beside its strong twin.
    """
    tab20 = plt.get_cmap("tab20").colors
    strong, light = tab20[0::2], tab20[1::2]
    grey = 7  # tab10's grey, at the same position in both halves of tab20
    return [c for i, c in enumerate(strong) if i != grey] + [c for i, c in enumerate(light) if i != grey]


def _save(plt, fig, path: Path) -> None:
    # format is explicit because stages write to a temporary name without the .png suffix.
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)


def save_segment_sizes_plot(names: list[str], customer_share: list[float], revenue_share: list[float],
                            path: Path) -> None:
    """Share of customers beside share of revenue per segment, as grouped horizontal bars (PNG).

    Parameters
    ----------
    names : list of str
        Segment names, drawn top to bottom in this order (wrapped when long).
    customer_share, revenue_share : list of float
        Fractions (0..1), one per name; each bar is labelled with its percentage.
    path : Path
        PNG file to write.
    """
    if not len(names) == len(customer_share) == len(revenue_share):
        raise ValueError(f"names, customer_share and revenue_share differ in length: "
                         f"{len(names)}, {len(customer_share)}, {len(revenue_share)}")
    plt = _pyplot()
    n = len(names)
    customers = np.asarray(customer_share, dtype=float)
    revenue = np.asarray(revenue_share, dtype=float)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.62 * max(n, 2)))
    y = np.arange(n)
    height = 0.38
    bars = [ax.barh(y - height / 2, customers, height, color=_CUSTOMER_COLOUR, label="share of customers"),
            ax.barh(y + height / 2, revenue, height, color=_REVENUE_COLOUR, label="share of net revenue")]
    for group in bars:
        ax.bar_label(group, labels=[f"{100 * v:.1f}%" for v in group.datavalues], padding=3, fontsize=8)
    ax.set_yticks(y, [_wrap(name) for name in names], fontsize=9)
    ax.invert_yaxis()  # first segment at the top, as in the report's cards
    top = max(float(np.nanmax(customers, initial=0)), float(np.nanmax(revenue, initial=0)), 0.01)
    ax.set_xlim(min(0.0, float(np.nanmin(revenue, initial=0)) * 1.15), top * 1.18)  # room for the labels
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Segment size and value", loc="left", fontsize=12, fontweight="bold")
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=2, frameon=False, fontsize=9)
    _save(plt, fig, path)


def save_department_heatmap(shares: pd.DataFrame, path: Path) -> None:
    """Each segment's spend split across departments, as an annotated heatmap (PNG).

    Parameters
    ----------
    shares : DataFrame
        Index: segment names (rows, top to bottom); columns: departments;
        values: the department's share of the segment's spend, 0..1 (a row
        sums to at most 1). Each cell is annotated with its percentage.
    path : Path
        PNG file to write.
    """
    plt = _pyplot()
    values = shares.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(2.6 + 0.62 * max(n_cols, 2), 1.6 + 0.42 * max(n_rows, 2)))
    # The colour scale stops at the largest share rather than 100%: shares are spread over many
    # departments, and on a 0-100% scale most cells would look the same pale colour.
    vmax = max(float(np.nanmax(values, initial=0)), 0.01)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, f"{100 * value:.0f}%", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 * vmax else "#1a1a1a")
    ax.set_xticks(range(n_cols), [_wrap(c, 18) for c in shares.columns], rotation=45, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_rows), [_wrap(i) for i in shares.index], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    colour_bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    colour_bar.ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    colour_bar.set_label("share of the segment's spend", fontsize=8)
    colour_bar.ax.tick_params(labelsize=7)
    ax.set_title("Where each segment spends", loc="left", fontsize=12, fontweight="bold")
    _save(plt, fig, path)


def save_projection_plot(coords: np.ndarray, labels: np.ndarray, names: dict[int, str], path: Path) -> None:
    """Customers in two dimensions, coloured by segment, with a legend of segment names (PNG).

    Parameters
    ----------
    coords : ndarray of shape (n, 2)
        Plot positions, e.g. from ``core.profile_export.report.project_2d``.
    labels : ndarray of shape (n,)
        Segment id per point; ``-1`` (noise) is drawn grey, underneath the segments.
    names : dict of int to str
        Segment id to name for the legend (an id without a name shows as "Segment <id>").
    path : Path
        PNG file to write.
    """
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise ValueError(f"coords must be (n, 2) and labels (n,); got {coords.shape} and {labels.shape}")
    plt = _pyplot()
    segment_ids = [s for s in np.unique(labels) if s != _NOISE_LABEL]
    palette = _segment_colours(plt)
    fig, ax = plt.subplots(figsize=(10, 6.5))
    # Smaller, fainter points as the sample grows, so dense regions still show their mix of colours.
    size = 10 if len(coords) < 2000 else 5
    if np.any(labels == _NOISE_LABEL):
        noise = labels == _NOISE_LABEL
        ax.scatter(coords[noise, 0], coords[noise, 1], s=size, c=_NOISE_COLOUR, alpha=0.4, linewidths=0,
                   label=_wrap(names.get(_NOISE_LABEL, _NOISE_NAME)))
    for i, segment in enumerate(segment_ids):
        member = labels == segment
        ax.scatter(coords[member, 0], coords[member, 1], s=size, color=palette[i % len(palette)], alpha=0.6,
                   linewidths=0, label=_wrap(names.get(int(segment), f"Segment {segment}")))
    # Frame the bulk of customers: a handful of extreme ones would otherwise squeeze everyone into a corner.
    low, high = np.percentile(coords, [1, 99], axis=0)
    pad = (high - low) * 0.08 + 1e-9
    low, high = low - pad, high + pad
    outside = int(np.sum(np.any((coords < low) | (coords > high), axis=1)))
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel("first principal component"
                  + (f"  ({outside:,} outlying customers lie outside the frame)" if outside else ""), fontsize=9)
    ax.set_ylabel("second principal component", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Customers by segment (2-D projection)", loc="left", fontsize=12, fontweight="bold")
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8,
                       markerscale=2.5 if size < 10 else 1.8)
    for handle in legend.legend_handles:
        handle.set_alpha(1)  # legend swatches at full colour, whatever the points' transparency
    _save(plt, fig, path)


def save_calibration_plot(deciles: list[dict], path: Path, subtitle: str = "") -> None:
    """Mean predicted against mean actual orders per decile of predicted orders, as paired bars (PNG).

    Parameters
    ----------
    deciles : list of dict
        ``decile`` (1 = lowest predicted), ``predicted_orders`` and
        ``actual_orders`` (means per customer), as in
        ``customer_value_evaluation.json``.
    path : Path
        PNG file to write.
    subtitle : str
        A line under the title (the holdout period).
    """
    plt = _pyplot()
    groups = [int(d["decile"]) for d in deciles]
    predicted = np.asarray([d["predicted_orders"] for d in deciles], dtype=float)
    actual = np.asarray([d["actual_orders"] for d in deciles], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    x = np.arange(len(groups))
    width = 0.4
    ax.bar(x - width / 2, predicted, width, color=_CUSTOMER_COLOUR, label="predicted (mean per customer)")
    ax.bar(x + width / 2, actual, width, color=_REVENUE_COLOUR, label="actual (mean per customer)")
    ax.set_xticks(x, [str(g) for g in groups], fontsize=9)
    ax.set_xlabel("decile of predicted orders (1 = fewest)", fontsize=9)
    ax.set_ylabel("purchase days in the holdout period", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Predicted against actual orders" + (f"\n{subtitle}" if subtitle else ""), loc="left",
                 fontsize=12, fontweight="bold")
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    _save(plt, fig, path)
