"""Migration between segments over time, from stage 04's snapshots (issue 16).

Stage 04 segments every active customer at each snapshot date
(``segment_history.parquet``) and counts the moves between consecutive
snapshots (``transitions.csv``). Here those become, for each segment of the
primary segmentation:

- its inflow and outflow over the last period (customers segmented at both
  of the last two snapshots who arrived from, or left for, another segment);
- its most likely next segments with their probabilities: the row of the
  transition matrix estimated over every period (customers moving from this
  segment to each segment at the next snapshot, pooled over all pairs of
  consecutive snapshots, divided by all who were segmented at both): the
  "next segment move", staying put included;

and, for the report, segment sizes at every snapshot and a flow chart of
the moves between consecutive snapshots. Plain functions on tables; the
charts are saved as PNG like the report's other charts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.domain.columns import ID_COLUMN
from core.profile_export.plots import _pyplot, _save, _segment_colours, _wrap

#: How many next segments a profile lists (most likely first).
NEXT_SEGMENTS = 3


def transition_matrix(transitions: pd.DataFrame) -> pd.DataFrame:
    """P(segment at the next snapshot | segment now), estimated over every period.

    Parameters
    ----------
    transitions : DataFrame
        ``transitions.csv``: ``from_date``, ``to_date``, ``from_segment``,
        ``to_segment``, ``customers``.

    Returns
    -------
    DataFrame
        Rows ``from_segment``, columns ``to_segment``, each row summing to 1
        (the maximum-likelihood estimate of a time-homogeneous Markov
        chain: pooled counts over row totals). Empty without transitions.
    """
    if transitions.empty:
        return pd.DataFrame(dtype=float)
    counts = transitions.pivot_table(index="from_segment", columns="to_segment", values="customers",
                                     aggfunc="sum", fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


def segment_migration(transitions: pd.DataFrame, names: dict[int, str],
                      top: int = NEXT_SEGMENTS) -> dict[int, dict[str, Any]]:
    """Each segment's ``migration`` block for its profile.

    Parameters
    ----------
    transitions : DataFrame
        ``transitions.csv``.
    names : dict of int to str
        Segment id -> the name its profile carries.
    top : int
        Next segments listed per segment.

    Returns
    -------
    dict of int to dict
        Per segment id in ``names``: ``last_period`` (``from``, ``to``,
        ``stayed``, ``inflow``, ``outflow``; None when there are fewer than
        two snapshots), ``next_segments`` (``segment_id``, ``name``,
        ``probability``, most likely first, staying included) and
        ``observed`` (customers seen leaving this segment for any segment
        at a next snapshot, over every period: the estimate's weight).
    """
    matrix = transition_matrix(transitions)
    last = None
    if not transitions.empty:
        to_date = transitions["to_date"].max()
        last = transitions[transitions["to_date"] == to_date]
    out = {}
    for segment, name in names.items():
        block: dict[str, Any] = {"last_period": None, "next_segments": [], "observed": 0}
        if last is not None:
            moved = last["from_segment"] != last["to_segment"]
            block["last_period"] = {
                "from": str(last["from_date"].iloc[0]), "to": str(last["to_date"].iloc[0]),
                "stayed": int(last.loc[~moved & (last["from_segment"] == segment), "customers"].sum()),
                "inflow": int(last.loc[moved & (last["to_segment"] == segment), "customers"].sum()),
                "outflow": int(last.loc[moved & (last["from_segment"] == segment), "customers"].sum())}
        if segment in matrix.index:
            row = matrix.loc[segment]
            row = row[row > 0].sort_values(ascending=False, kind="stable").head(top)
            block["next_segments"] = [{"segment_id": int(to), "name": names.get(int(to), f"Segment {int(to)}"),
                                       "probability": round(float(p), 4)} for to, p in row.items()]
            block["observed"] = int(transitions.loc[transitions["from_segment"] == segment, "customers"].sum())
        out[int(segment)] = block
    return out


def sizes_over_time(history: pd.DataFrame) -> pd.DataFrame:
    """Segmented customers per snapshot date (rows) and segment (columns), zeros where none."""
    segmented = history[history["segment"].notna()]
    if segmented.empty:
        return pd.DataFrame(dtype="int64")
    return (segmented.groupby(["snapshot_date", "segment"]).size().unstack(fill_value=0)
            .rename(columns=int).astype("int64"))


def customers_followed(history: pd.DataFrame) -> int:
    """Distinct customers segmented at one snapshot at least."""
    return int(history.loc[history["segment"].notna(), ID_COLUMN].nunique())


# ---------------------------------------------------------------------------
# Charts


def _colour_of(ids: list[int], plt) -> dict[int, Any]:
    colours = _segment_colours(plt)
    return {s: colours[i % len(colours)] for i, s in enumerate(sorted(ids))}


def save_sizes_over_time_plot(sizes: pd.DataFrame, names: dict[int, str], path: Path) -> None:
    """Customers in each segment at every snapshot, one line per segment (PNG).

    Parameters
    ----------
    sizes : DataFrame
        :func:`sizes_over_time`.
    names : dict of int to str
        The segments to draw, by id; the others are left out.
    path : Path
    """
    plt = _pyplot()
    shown = [s for s in sizes.columns if s in names]
    colour = _colour_of(list(names), plt)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for segment in shown:
        ax.plot(sizes.index, sizes[segment], marker="o", markersize=3, color=colour[segment],
                label=_wrap(names[segment], 40))
    ax.set_ylabel("customers segmented")
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Segment sizes at each snapshot", loc="left", fontsize=12, fontweight="bold")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    fig.autofmt_xdate()
    _save(plt, fig, path)


def _bands(transitions: pd.DataFrame, ids: list[int], dates: list, tops: dict, colour: dict):
    """:func:`save_flow_plot`'s bands, one polygon per move between two of ``ids`` (in from-date, from-segment,
    to-segment order, each leaving and reaching its blocks below the bands before it), as one collection: the
    polygons ``fill_between`` would draw, pale for customers staying in their segment."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    t = np.linspace(0, 1, 30)
    ease = 3 * t ** 2 - 2 * t ** 3  # a smooth S between columns
    keys = {str(pd.Timestamp(d).date()): x for x, d in enumerate(dates)}
    out_used, in_used, polygons, faces = {}, {}, [], []
    moves = transitions[transitions["from_segment"].isin(ids) & transitions["to_segment"].isin(ids)]
    for row in moves.sort_values(["from_date", "from_segment", "to_segment"]).itertuples(index=False):
        x0 = keys.get(str(row.from_date))
        x1 = keys.get(str(row.to_date))
        if x0 is None or x1 is None:
            continue
        start = tops[(x0, row.from_segment)] + out_used.get((x0, row.from_segment), 0.0)
        end = tops[(x1, row.to_segment)] + in_used.get((x1, row.to_segment), 0.0)
        out_used[(x0, row.from_segment)] = out_used.get((x0, row.from_segment), 0.0) + row.customers
        in_used[(x1, row.to_segment)] = in_used.get((x1, row.to_segment), 0.0) + row.customers
        xs = x0 + 0.06 + (x1 - x0 - 0.12) * t
        upper = start + (end - start) * ease
        polygons.append(np.column_stack([np.r_[xs, xs[::-1]], np.r_[-upper, -(upper + row.customers)[::-1]]]))
        faces.append(to_rgba(colour[row.from_segment], 0.35 if row.from_segment == row.to_segment else 0.7))
    return PolyCollection(polygons, facecolors=faces, linewidths=0)


def save_flow_plot(transitions: pd.DataFrame, sizes: pd.DataFrame, names: dict[int, str], path: Path) -> None:
    """Customers flowing between segments from each snapshot to the next, as an alluvial chart (PNG).

    Each column is a snapshot, each block a segment (its height the
    customers segmented then); a band joins a segment at one snapshot to a
    segment at the next, as wide as the customers who made that move.
    Customers not segmented at both dates are the part of a block no band
    leaves or reaches.

    Parameters
    ----------
    transitions : DataFrame
        ``transitions.csv``.
    sizes : DataFrame
        :func:`sizes_over_time`.
    names : dict of int to str
        The segments to draw, by id (moves from or to others are left out).
    path : Path
    """
    plt = _pyplot()
    ids = sorted(s for s in sizes.columns if s in names)
    colour = _colour_of(list(names), plt)
    dates = list(sizes.index)
    gap = 0.02 * float(sizes[ids].sum(axis=1).max() if ids else 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(dates)), 6))
    # Block tops, per date and segment, stacked from the top down in segment order; drawn in one call (a call
    # per block, and per band below, was most of the chart's time: each makes and autoscales its own artist).
    tops, blocks = {}, []
    for x, day in enumerate(dates):
        level = 0.0
        for segment in ids:
            height = float(sizes.loc[day, segment])
            tops[(x, segment)] = level
            blocks.append((x, -height, -level, colour[segment]))
            level += height + gap
    if blocks:
        x, height, bottom, colours = zip(*blocks)
        ax.bar(x, height, bottom=bottom, width=0.12, color=colours, edgecolor="white", linewidth=0.5)
    ax.add_collection(_bands(transitions, ids, dates, tops, colour), autolim=True)
    ax.autoscale_view()
    ax.set_xticks(range(len(dates)), [str(pd.Timestamp(d).date()) for d in dates], fontsize=8)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in ids]
    ax.legend(handles, [_wrap(names[s], 40) for s in ids], loc="upper left", bbox_to_anchor=(1.01, 1),
              frameon=False, fontsize=8)
    ax.set_title("Customers moving between segments from one snapshot to the next (pale: staying)", loc="left",
                 fontsize=12, fontweight="bold")
    _save(plt, fig, path)
