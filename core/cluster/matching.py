"""Keep segment ids across retraining: Hungarian matching of new clusters to the previous run's.

A refit (new data, a new seed, a library upgrade) numbers its clusters in
whatever order the algorithm found them, so "segment 3" would mean
something else after every retraining: the "cluster explosion" of seed
004_a0d834cc72b149e2.txt. Here each new cluster inherits the id of the old
segment it overlaps most, chosen jointly for all clusters by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) on the table of
customers in each (old segment, new cluster) pair. New clusters that match
no old segment get fresh ids above every old one, so a retired id is never
reused for something else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from core.cluster.clustering import NOISE

MIGRATION_COLUMNS = ["method", "space", "previous_segment", "segment", "customers"]


def match_cluster_ids(previous: np.ndarray, current: np.ndarray, current_ids: np.ndarray) -> np.ndarray:
    """Segment ids for the current clusters that keep the previous run's ids where they overlap.

    Parameters
    ----------
    previous : ndarray of int, shape (n,)
        Each customer's previous segment id (``-1`` noise or unknown).
    current : ndarray of int, shape (n,)
        The same customers' current segment ids, as the model numbers them now.
    current_ids : ndarray of int, shape (k,)
        Every current segment id (also those without any of these customers).

    Returns
    -------
    ndarray of int64, shape (k,)
        New id for each entry of ``current_ids``: the matched previous id,
        or a fresh id above all previous ones (larger clusters first).
    """
    previous = np.asarray(previous, dtype=np.int64)
    current = np.asarray(current, dtype=np.int64)
    current_ids = np.asarray(current_ids, dtype=np.int64)
    both = (previous != NOISE) & (current != NOISE)
    old_ids = np.unique(previous[previous != NOISE])
    new_ids = np.full(len(current_ids), NOISE, dtype=np.int64)
    if len(old_ids) and both.any():
        table = pd.crosstab(previous[both], current[both]).reindex(index=old_ids, columns=current_ids, fill_value=0)
        overlap = table.to_numpy()
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols):
            if overlap[r, c] > 0:  # a pair sharing nobody is no match
                new_ids[c] = old_ids[r]
    sizes = pd.Series(current).value_counts().reindex(current_ids, fill_value=0).to_numpy()
    next_id = int(max(old_ids.max() if len(old_ids) else -1, -1)) + 1
    for c in sorted(np.flatnonzero(new_ids == NOISE), key=lambda i: (-sizes[i], current_ids[i])):
        new_ids[c] = next_id
        next_id += 1
    return new_ids


def migration_table(method: str, space: str, previous: np.ndarray, current: np.ndarray) -> pd.DataFrame:
    """Customers moving from each previous segment to each current one (``-1``: noise), long format."""
    counts = (pd.DataFrame({"previous_segment": np.asarray(previous, dtype=np.int64),
                            "segment": np.asarray(current, dtype=np.int64)})
              .value_counts().rename("customers").reset_index()
              .sort_values(["previous_segment", "segment"], kind="stable"))
    counts.insert(0, "space", space)
    counts.insert(0, "method", method)
    return counts[MIGRATION_COLUMNS].reset_index(drop=True)


def kept_share(previous: np.ndarray, current: np.ndarray) -> float:
    """Share of customers whose segment id is the same as before (NaN with no customers)."""
    previous, current = np.asarray(previous), np.asarray(current)
    return float(np.mean(previous == current)) if len(previous) else float("nan")
