"""How much customers of one persona differ: the figure behind generate_data.customer_variation.

    python benchmarks/persona_spread.py [--customers 5000]

Generates the shipped config (two years) with department_concentration and households.share
varied, and prints, for customers with at least 30 merchandise lines: the share of the variance
of customers' department shares that their persona explains (R^2), and how often the nearest
configured department mix (personas.yml) names a customer's persona. Recorded in docs/decisions.md
("Customers who differ within their kind").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import small_config_document, write_config  # noqa: E402
from core.config import load_config  # noqa: E402
from core.generate_data import generator  # noqa: E402


def measure(n_customers: int, concentration: float, household_share: float) -> tuple[float, float, int]:
    """(R^2 of persona on department shares, nearest-mix accuracy, customers measured)."""
    doc = small_config_document()
    doc["data"].update(n_customers=n_customers, history_start="2023-01-01", history_end="2024-12-31")
    doc["generate_data"]["chunk_size"] = 1000
    doc["generate_data"]["identity"]["enabled"] = False
    doc["generate_data"]["customer_variation"]["department_concentration"] = concentration
    doc["generate_data"]["households"]["share"] = household_share
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_config(Path(tmp), doc))
    plan = generator.build_plan(config.personas, config.scenarios, config.hierarchy, config.data,
                                config.generate_data, config.seed)
    customers, tx = generator.generate_all(plan, config.seed)
    tx = tx[~tx["is_return"] & tx["department"].isin(set(config.hierarchy.merchandise_departments))]
    counts = pd.crosstab(tx["customer_id"], tx["department"])
    counts = counts[counts.sum(axis=1) >= 30]
    share = counts.div(counts.sum(axis=1), axis=0)
    persona = np.asarray(customers.set_index("customer_id")["persona"].loc[share.index], dtype=object)
    total = ((share - share.mean()) ** 2).sum().sum()
    within = ((share - share.groupby(persona).transform("mean")) ** 2).sum().sum()
    names = list(config.personas)
    centres = np.array([[config.personas[p].department_preferences.get(d, 0.0) for d in share.columns] for p in names])
    nearest = np.asarray(names, dtype=object)[((share.to_numpy()[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)]
    return 1 - within / total, float(np.mean(nearest == persona)), len(share)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args(argv)
    print("| department_concentration | households share | persona explains (R^2) | nearest mix right | customers |")
    print("|---:|---:|---:|---:|---:|")
    for concentration, share in ((1e6, 0.0), (8.0, 0.0), (8.0, 0.2)):
        r2, accuracy, n = measure(args.customers, concentration, share)
        print(f"| {concentration:g} | {share} | {r2:.3f} | {accuracy:.3f} | {n:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
