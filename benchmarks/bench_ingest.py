"""Time stage 01 ingesting a retailer-style CSV log, and its peak memory.

    python benchmarks/bench_ingest.py [--customers N] [--record]

Generates the synthetic data for ``--customers`` customers (default 10,000:
about 3.4 million order lines), writes its transactions as one CSV file
with the columns a till export has (customer, order, date, department,
class, SKU, quantity, unit price, amount, return flag), then runs stage 01
on that file with ``data.source: file`` in a child process, exactly as a
user would (``python -m core.pipeline run --only 1``). Peak memory is that
child's maximum resident set size, measured for it alone (Linux and macOS;
not measured on Windows, see benchmarks/common.py).
``--record`` appends the result to ``benchmarks/RESULTS.md``.

What it shows: the log is read in batches, so peak memory stays far below
the size of the file's lines held in memory, and grows with the number of
customers and SKUs (kept for customers.parquet and products.parquet) and
8 bytes a line for the duplicate check, not with the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from common import machine, mib, record, run_child  # noqa: E402
from core.framework import paths  # noqa: E402

COLUMNS = {"customer_id": "CustomerNo", "order_id": "TransactionNo", "order_date": "Date",
           "department": "Department", "class": "Class", "sku": "SKU", "quantity": "Qty",
           "unit_price": "UnitPrice", "line_amount": "Amount", "is_return": "Return"}


def write_log(transactions: Path, target: Path) -> int:
    """The generated lines as a till-style CSV (the retailer's names, dates as text), batch by batch."""
    parquet = pq.ParquetFile(transactions)
    rows = 0
    with pacsv.CSVWriter(target, pa.schema([pa.field(COLUMNS[c], pa.string()) for c in COLUMNS])) as writer:
        for batch in parquet.iter_batches(batch_size=200_000, columns=list(COLUMNS)):
            table = pa.Table.from_batches([batch])
            arrays = [table[c].cast(pa.string()) if c != "order_date"
                      else pa.compute.strftime(table[c], format="%Y-%m-%d") for c in COLUMNS]
            writer.write_table(pa.table(arrays, names=[COLUMNS[c] for c in COLUMNS]))
            rows += batch.num_rows
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        document = yaml.safe_load(paths.DEFAULT_CONFIG.read_text(encoding="utf-8"))
        document["data"]["n_customers"] = args.customers
        for name in ("hierarchy", "personas", "strategies"):
            (folder / f"{name}.yml").write_bytes((paths.DEFAULT_CONFIG.parent / f"{name}.yml").read_bytes())
        synthetic = folder / "synthetic.yml"
        synthetic.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
        code = subprocess.run([sys.executable, "-m", "core.pipeline", "run", "--only", "1", "--config",
                               str(synthetic), "--artifacts", str(folder / "synthetic")], cwd=ROOT).returncode
        if code != 0:
            return code
        log = folder / "till_export.csv"
        lines = write_log(folder / "synthetic" / paths.GENERATE_DATA / paths.TRANSACTIONS, log)
        document["data"]["source"] = "file"
        document["ingest"]["transactions"].update(file=log.name, columns={v: k for k, v in COLUMNS.items()})
        document["ingest"]["latest_date"] = document["data"]["history_end"].isoformat()
        own = folder / "own.yml"
        own.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
        run = run_child([sys.executable, "-m", "core.pipeline", "run", "--only", "1",
                         "--config", str(own), "--artifacts", str(folder / "own")])
        if run.exit_code != 0:
            print(f"ingestion failed with exit code {run.exit_code}", file=sys.stderr)
            return run.exit_code
        manifest = json.loads((folder / "own" / paths.GENERATE_DATA / paths.MANIFEST).read_text(encoding="utf-8"))
        in_memory = pq.read_table(folder / "own" / paths.GENERATE_DATA / paths.TRANSACTIONS).to_pandas()
        frame_mib = in_memory.memory_usage(deep=True).sum() / 1024**2
        size_mib = log.stat().st_size / 1024**2
    report = "\n".join([
        f"### Ingestion (stage 01, data.source: file), {dt.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python benchmarks/bench_ingest.py --customers {args.customers}`",
        f"- Input: CSV of {lines:,} lines, {size_mib:,.0f} MiB, {len(COLUMNS)} columns",
        f"- Stage 01 in a child process (imports included): **{run.wall_seconds:.1f} s** "
        f"({lines / run.wall_seconds:,.0f} lines/s; the stage itself {manifest['duration_seconds']:.1f} s), "
        f"peak memory **{mib(run.peak_rss_mib)}**",
        f"- For comparison, the accepted lines as one pandas DataFrame: {frame_mib:,.0f} MiB",
        f"- Summary: {manifest['summary']}",
    ]) + "\n"
    print(report)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
