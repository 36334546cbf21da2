"""Time stage 02 (features, eligibility, the three datasets, the model matrix) on a large input.

    python benchmarks/bench_features.py [--customers 1000000] [--data DIR] [--engine duckdb|pandas|both]
                                        [--record]

Makes (once, cached in ``--data``) a transactions table in the shape of
``core/domain/tables.py``: every column, including channel, brand, brand tier,
style, colour, size and discounts, about 40 order lines per customer with 6%
of lines returned, a little bag-levy and ``Unknown``-department noise. The
maker is vectorised NumPy, independent of the generator, so the benchmark
does not move when the generator does.

Each engine runs in its own child process, so its peak resident memory and
CPU seconds are its own (maker and parent excluded; Linux and macOS, not
measured on Windows: see benchmarks/common.py):

- ``duckdb``: what stage 02 runs, ``core.prepare_features.prepare.prepare_features_from_config``
  on the Parquet file, then every output written as the stage writes it.
- ``pandas``: the pandas implementation stage 02 had before
  (``benchmarks/pandas_baseline.py``: fewer features, same input), reading
  the needed columns into a DataFrame, aggregating, and building the wide
  class table. Its numbers are a lower bound for pandas.

Targets (issue 4): a million customers with tens of millions of lines in
under 2 minutes and under 8 GB peak memory on the 2-core machine.
``--record`` appends the result to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from common import load_average, machine, mib, record, run_child, seconds  # noqa: E402
from core.framework import paths  # noqa: E402
from core.config import load_config  # noqa: E402
from core.domain.hierarchy import Hierarchy  # noqa: E402
from core.domain.tables import CUSTOMER_SCHEMA, TRANSACTION_SCHEMA  # noqa: E402

HISTORY_START = np.datetime64("2023-01-01", "D")
HISTORY_DAYS = 731
KIDS_SIZES = ["Baby 0-12m", "Toddler 1-3", "Child 4-6", "Child 7-8", "Child 9-11", "Teen 12-14"]
ADULT_SIZES = ["XS", "S", "M", "L", "XL", "XXL"]
SHOE_SIZES = [f"UK {s}" for s in range(3, 12)]
CHANNELS = ["store", "online"]
TIERS = ["value", "mid", "premium"]
STYLES = ["casual", "formal", "sport", "trend", "classic"]
COLORS = ["black", "white", "navy", "grey", "red", "blue", "green", "pink", "beige", "brown", "yellow", "purple"]
BRANDS = [f"Brand {i:02d}" for i in range(40)]


def load_averages() -> str:
    """The 1, 5 and 15 minute load averages (other work on a shared machine)."""
    load = load_average()
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


# ---------------------------------------------------------------------------
# The input maker


def _catalog(hierarchy: Hierarchy, rng: np.random.Generator) -> dict:
    """Every (department, class) the maker draws from, with its price and size scale."""
    merch = hierarchy.merchandise_departments
    rows = []  # (department, class, merch index or -1, data-quality?)
    for i, d in enumerate(merch):
        dept = hierarchy.departments[d]
        rows += [(d, c, i, False) for c in dept.classes] + [(d, c, i, True) for c in dept.data_quality_classes]
    rows += [("Bag Levy", "Paper Bags", -1, False), ("Unknown", "Unknown", -1, False)]
    dept_names = sorted({r[0] for r in rows})
    class_names = sorted({r[1] for r in rows})
    first = {}
    for k, r in enumerate(rows):
        first.setdefault((r[2], r[3]), []).append(k)
    scale = np.array([0 if "Kids" in r[0] else 1 if "Footwear" in r[0] else
                      2 if ("Clothing" in r[0] or "Uwear" in r[0] or "Sports" in r[0]) else 3 for r in rows])
    return {
        "rows": rows, "merch": merch,
        "dept_names": dept_names, "dept_code": np.array([dept_names.index(r[0]) for r in rows]),
        "class_names": class_names, "class_code": np.array([class_names.index(r[1]) for r in rows]),
        "price": np.round(rng.lognormal(np.log(12), 0.5, len(rows)), 2),
        "scale": scale,  # 0 kids sizes, 1 shoes, 2 adult sizes, 3 no size
        "sellable": [np.array(first[(i, False)]) for i in range(len(merch))],
        "dq": [np.array(first.get((i, True), first[(i, False)])) for i in range(len(merch))],
        "bag": first[(-1, False)][0], "unknown": first[(-1, False)][1],
    }


def _strings(codes: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> pa.Array:
    """A string column from integer codes into ``names`` (null where ``mask``)."""
    indices = pa.array(codes.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string())).cast(pa.string())


def make_chunk(ids: np.ndarray, first_order_id: int, catalog: dict, rng: np.random.Generator) -> pa.Table:
    """Order lines of the customers ``ids``: purchases, then their returns, per core/tables.py."""
    n = len(ids)
    n_merch = len(catalog["merch"])
    start = np.where(rng.random(n) < 0.4, 0, rng.integers(0, HISTORY_DAYS, n))
    n_orders = 1 + rng.negative_binomial(2, 2 / (2 + 10.5), n)
    order_customer = np.repeat(np.arange(n), n_orders)
    span = HISTORY_DAYS - start[order_customer]
    order_day = start[order_customer] + (rng.random(len(order_customer)) * span).astype(np.int64)
    n_lines = 1 + rng.poisson(2.4, len(order_customer))
    line_order = np.repeat(np.arange(len(order_customer)), n_lines)
    c = order_customer[line_order]
    m = len(line_order)
    # Departments: three favourites per customer take 75% of lines; 1% bag levy, 0.3% Unknown.
    favourites = rng.integers(0, n_merch, (n, 3))
    dept = np.where(rng.random(m) < 0.75, favourites[c, rng.integers(0, 3, m)], rng.integers(0, n_merch, m))
    key = np.empty(m, np.int64)
    dq = rng.random(m) < 0.02
    for d in range(n_merch):
        mine = dept == d
        pool = np.where(dq[mine], 1, 0)
        sell, dqk = catalog["sellable"][d], catalog["dq"][d]
        key[mine] = np.where(pool, dqk[rng.integers(0, len(dqk), mine.sum())],
                             sell[rng.integers(0, len(sell), mine.sum())])
    noise = rng.random(m)
    key[noise < 0.01] = catalog["bag"]
    key[(noise >= 0.01) & (noise < 0.013)] = catalog["unknown"]
    quantity = rng.choice(np.array([1, 2, 3], np.int32), m, p=[0.86, 0.11, 0.03])
    regular = np.round(catalog["price"][key] * rng.lognormal(0, 0.15, m), 2)
    discounted = rng.random(m) < 0.3
    unit_price = np.where(discounted, np.round(regular * (1 - rng.uniform(0.1, 0.5, m)), 2), regular)
    discount = np.round(quantity * (regular - unit_price), 2)
    amount = np.round(quantity * unit_price, 2)
    scale = catalog["scale"][key]
    size_names = KIDS_SIZES + SHOE_SIZES + ADULT_SIZES
    size = np.select([scale == 0, scale == 1, scale == 2],
                     [rng.integers(0, len(KIDS_SIZES), m),
                      len(KIDS_SIZES) + rng.integers(0, len(SHOE_SIZES), m),
                      len(KIDS_SIZES) + len(SHOE_SIZES) + rng.integers(0, len(ADULT_SIZES), m)], 0)
    online = rng.random(n) < rng.beta(2, 3, n)
    order_online = online[order_customer] ^ (rng.random(len(order_customer)) < 0.2)
    tier = np.minimum(rng.integers(0, 3, n)[c] + (rng.random(m) < 0.3), 2)
    sku_item = rng.integers(0, 10, m)
    sku_names = [f"SKU-{k}-{i}" for k in range(len(catalog["rows"])) for i in range(10)]
    order_id = first_order_id + line_order
    purchases = {
        "customer_id": ids[c], "order_id": order_id, "day": order_day[line_order], "channel": order_online[line_order],
        "key": key, "sku": key * 10 + sku_item, "brand": rng.integers(0, len(BRANDS), m), "tier": tier,
        "style": rng.integers(0, len(STYLES), m), "color": rng.integers(0, len(COLORS), m), "size": size,
        "size_null": scale == 3, "quantity": quantity, "unit_price": unit_price, "discount": discount,
        "amount": amount, "is_return": np.zeros(m, bool), "original": np.full(m, -1, np.int64)}
    # 6% of lines come back 1-28 days later, one return transaction per original order.
    back = np.flatnonzero((rng.random(m) < 0.06) & (key != catalog["bag"]))
    back_day = purchases["day"][back] + rng.integers(1, 29, len(back))
    ok = back_day < HISTORY_DAYS
    back, back_day = back[ok], back_day[ok]
    originals, return_order = np.unique(order_id[back], return_inverse=True)
    returns = {k: v[back] for k, v in purchases.items()}
    returns.update(order_id=first_order_id + len(order_customer) + return_order, day=back_day,
                   quantity=-returns["quantity"], discount=-returns["discount"], amount=-returns["amount"],
                   is_return=np.ones(len(back), bool), original=order_id[back])
    both = {k: np.concatenate([purchases[k], returns[k]]) for k in purchases}
    dates = (HISTORY_START + both["day"].astype("timedelta64[D]")).astype("datetime64[us]")
    columns = {
        "customer_id": pa.array(both["customer_id"], pa.int64()),
        "order_id": pa.array(both["order_id"], pa.int64()),
        "order_date": pa.array(dates, pa.timestamp("us")),
        "channel": _strings(both["channel"].astype(np.int64), CHANNELS),
        "department": _strings(catalog["dept_code"][both["key"]], catalog["dept_names"]),
        "class": _strings(catalog["class_code"][both["key"]], catalog["class_names"]),
        "sku": _strings(both["sku"], sku_names),
        "brand": _strings(both["brand"], BRANDS),
        "brand_tier": _strings(both["tier"], TIERS),
        "style": _strings(both["style"], STYLES),
        "color": _strings(both["color"], COLORS),
        "size": _strings(both["size"], size_names, mask=both["size_null"]),
        "quantity": pa.array(both["quantity"], pa.int32()),
        "unit_price": pa.array(both["unit_price"], pa.float64()),
        "discount_amount": pa.array(both["discount"], pa.float64()),
        "line_amount": pa.array(both["amount"], pa.float64()),
        "is_return": pa.array(both["is_return"], pa.bool_()),
        "original_order_id": pa.array(both["original"], pa.int64(), mask=both["original"] < 0),
    }
    return pa.Table.from_pydict(columns, schema=TRANSACTION_SCHEMA)


def make_input(folder: Path, n_customers: int, hierarchy: Hierarchy, seed: int = 0,
               chunk: int = 100_000) -> dict:
    """Write transactions.parquet and customers.parquet into ``folder`` (kept if already made)."""
    stamp = folder / "made.json"
    wanted = {"customers": n_customers, "seed": seed, "maker": 1}
    if stamp.exists() and json.loads(stamp.read_text())["wanted"] == wanted:
        return json.loads(stamp.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    catalog = _catalog(hierarchy, rng)
    started = time.perf_counter()
    rows = 0
    next_order = 1
    with pq.ParquetWriter(folder / paths.TRANSACTIONS, TRANSACTION_SCHEMA) as writer:
        for first in range(0, n_customers, chunk):
            ids = np.arange(first + 1, min(first + chunk, n_customers) + 1, dtype=np.int64)
            table = make_chunk(ids, next_order, catalog, rng)
            next_order = int(pa.compute.max(table["order_id"]).as_py()) + 1
            rows += table.num_rows
            writer.write_table(table)
    ids = np.arange(1, n_customers + 1, dtype=np.int64)
    customers = pd.DataFrame({
        "customer_id": ids, "persona": pd.Series(rng.choice(["a", "b", "c"], n_customers), dtype=str),
        "age": rng.integers(18, 80, n_customers).astype(np.int16),
        "gender": pd.Series(rng.choice(["Female", "Male"], n_customers), dtype=str),
        "has_children": rng.random(n_customers) < 0.4, "lifestyle": "busy", "region": "London",
        "signup_date": pd.Timestamp("2023-01-01"), "dropout_date": pd.NaT,
        "first_name": "Ann", "last_name": "Example", "email": "ann@example.com", "phone": "0",
        "street_address": "1 High St", "postcode": "AB1 2CD"})
    pq.write_table(pa.Table.from_pandas(customers, schema=CUSTOMER_SCHEMA, preserve_index=False),
                   folder / paths.CUSTOMERS)
    made = {"wanted": wanted, "lines": rows, "seconds": round(time.perf_counter() - started, 1),
            "bytes": (folder / paths.TRANSACTIONS).stat().st_size}
    stamp.write_text(json.dumps(made))
    return made


# ---------------------------------------------------------------------------
# The engines, each run in a child process


def run_duckdb(folder: Path, out: Path) -> dict:
    """Stage 02's own function on the file, then every output written as the stage writes it."""
    from core.prepare_features.prepare import prepare_features_from_config

    stage = _load_stage()
    config = load_config(paths.DEFAULT_CONFIG)
    started = time.perf_counter()
    cpu = time.process_time()
    customers = pd.read_parquet(folder / paths.CUSTOMERS)
    prepared = prepare_features_from_config(folder / paths.TRANSACTIONS, customers, config.hierarchy,
                                            config.prepare_features)
    computed = time.perf_counter()
    compute_cpu = time.process_time() - cpu
    stage.write_outputs(prepared, lambda file, writer: writer(out / file))  # exactly as the stage writes
    written = time.perf_counter()
    return {"compute_seconds": round(computed - started, 1), "compute_cpu_seconds": round(compute_cpu, 1),
            "write_seconds": round(written - computed, 1),
            "customers": len(prepared.basic), "excluded": len(prepared.excluded),
            "model_features": len(prepared.feature_model.columns),
            "enriched_class_columns": prepared.enriched_department.shape[1] + len(prepared.class_columns),
            "class_long_rows": len(prepared.class_long)}


def run_pandas(folder: Path, out: Path) -> dict:
    """The previous pandas implementation: read the columns it needs, aggregate, build the class table."""
    from pandas_baseline import COLUMNS, build_customer_features, class_wide

    config = load_config(paths.DEFAULT_CONFIG)
    started = time.perf_counter()
    lines = pd.read_parquet(folder / paths.TRANSACTIONS, columns=COLUMNS)
    read = time.perf_counter()
    analysis_date = pd.Timestamp(lines["order_date"].max())
    features, class_totals = build_customer_features(lines, config.hierarchy, analysis_date)
    wide = class_wide(class_totals, config.hierarchy, features["customer_id"])
    computed = time.perf_counter()
    return {"read_seconds": round(read - started, 1), "compute_seconds": round(computed - started, 1),
            "customers": len(features), "class_columns": wide.shape[1]}


def _load_stage():
    from core.prepare_features import stage

    return stage


def child(engine: str, folder: Path) -> None:
    """Run one engine; print its result as JSON on the last line (the parent measures memory and CPU)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        result = (run_duckdb if engine == "duckdb" else run_pandas)(folder, Path(tmp))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-features-data",
                        help="folder for the generated input (reused when it matches)")
    parser.add_argument("--engine", choices=("duckdb", "pandas", "both"), default="duckdb")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--child", choices=("duckdb", "pandas"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.data / f"{args.customers}"
    if args.child:
        child(args.child, folder)
        return 0

    load_before = load_averages()
    made = make_input(folder, args.customers, load_config(paths.DEFAULT_CONFIG).hierarchy)
    print(f"input: {args.customers:,} customers, {made['lines']:,} lines, "
          f"{made['bytes'] / 2 ** 20:,.0f} MiB Parquet ({folder})", flush=True)
    results = {}
    for engine in (("duckdb", "pandas") if args.engine == "both" else (args.engine,)):
        run = run_child([sys.executable, __file__, "--customers", str(args.customers), "--data", str(args.data),
                         "--child", engine], capture=True)
        if run.exit_code != 0:
            results[engine] = {"failed": run.stderr.strip().splitlines()[-1:]}
        else:
            results[engine] = json.loads(run.stdout.strip().splitlines()[-1])
            # CPU seconds (all threads) say how much work was done even when other jobs share the machine.
            results[engine].update(cpu_seconds=run.cpu_seconds, peak_rss_mib=run.peak_rss_mib)
        print(f"{engine}: {json.dumps(results[engine])}", flush=True)
    load_after = load_averages()
    print(f"load average before {load_before}, after {load_after}")
    if args.record:
        _record(args, made, results, load_before, load_after)
    return 0


def _record(args, made: dict, results: dict, load_before: str, load_after: str) -> None:
    lines = [f"## Stage 02 features, {dt.date.today().isoformat()}\n",
             f"- Machine: {machine()}",
             f"- Command: `python benchmarks/bench_features.py --customers {args.customers} --engine {args.engine}`",
             f"- Input: {args.customers:,} customers, {made['lines']:,} order lines, "
             f"{made['bytes'] / 2 ** 20:,.0f} MiB Parquet (made by the script's own maker)",
             f"- Load average (1, 5, 15 min) before {load_before}, after {load_after}", "",
             "| engine | compute s | write s | total s | CPU s | peak RSS MiB | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for engine, r in results.items():
        if "failed" in r:
            lines.append(f"| {engine} | | | | | | failed: {r['failed']} |")
            continue
        note = (f"{r['customers']:,} customers, {r['excluded']:,} excluded, {r['model_features']} model features, "
                f"{r['enriched_class_columns']} enriched_class columns" if engine == "duckdb"
                else f"previous implementation, fewer features; read {r['read_seconds']} s")
        lines.append(f"| {engine} | {r['compute_seconds']} | {r.get('write_seconds', '')} | {r['total_seconds']} | "
                     f"{seconds(r['cpu_seconds'], '')} | {mib(r['peak_rss_mib'], '')} | {note} |")
    record("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
