"""The whole pipeline on the CDNOW sample read as a retailer's log with text customer ids (issue 13).

    python benchmarks/bench_real_log.py [--out DIR] [--ids text|number] [--matrix default|seasons|quarters]

Writes ``tests/data/cdnow/CDNOW_sample.txt`` as a CSV a retailer could hand
over (customer id, date ``YYYYMMDD``, quantity, amount; ids rewritten as
``C00001`` with ``--ids text``, the sample's own numbers with ``number``),
a config beside it (``data.source: file``, the shipped settings otherwise, no
ground truth), runs the five stages through ``core.pipeline`` and prints
the stage times, the primary segmentation's stability and silhouette, and
every segment's name and explanation, with what the names say:

* ``numbered``: names that end in ``#n`` (a clash nothing else resolved);
* ``unconfigured seasons``: names or explanations citing holiday or back to
  school when the run did not configure them for this data;
* ``ids as written``: whether ``customers_with_segments.parquet`` holds
  exactly the ids of the CSV.

``--matrix`` picks what the model matrix may hold: ``default`` (the shipped
config: no season the retailer did not configure), ``seasons`` (the
synthetic retailer's holiday and back-to-school windows claimed for this
log, ``seasons_for_file_data: true``) or ``quarters`` (default plus each
customer's spend share per calendar quarter).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import load_config  # noqa: E402
from core.framework import paths  # noqa: E402
from core.pipeline import run_pipeline  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "cdnow" / "CDNOW_sample.txt"
SEASON_WORDS = re.compile(r"holiday|back to school", re.IGNORECASE)


def write_log(folder: Path, ids: str) -> pd.DataFrame:
    """The CDNOW sample as a CSV with a header; the sample's customer numbers or ``C00001``-style text."""
    raw = pd.read_csv(SAMPLE, sep=r"\s+", header=None, dtype=str, names=["full", "sample", "date", "qty", "amount"])
    customer = "C" + raw["sample"].str.zfill(5) if ids == "text" else raw["sample"].astype(int).astype(str)
    log = pd.DataFrame({"CustomerNo": customer, "OrderDate": raw["date"], "Qty": raw["qty"], "Amount": raw["amount"]})
    log.to_csv(folder / "cdnow.csv", index=False)
    return log


def write_config(folder: Path, matrix: str) -> Path:
    """The shipped config reading cdnow.csv, with the chosen model matrix."""
    doc = yaml.safe_load((paths.DEFAULT_CONFIG).read_text(encoding="utf-8"))
    for name in ("hierarchy_file", "personas_file", "strategies_file"):
        doc[name] = str(paths.DEFAULT_CONFIG.parent / doc[name])
    doc["data"]["source"] = "file"
    doc["ingest"]["transactions"].update(file="cdnow.csv", columns={"CustomerNo": "customer_id", "OrderDate": "order_date",
                                                                    "Qty": "quantity", "Amount": "line_amount"})
    doc["ingest"].update(date_format="%Y%m%d", latest_date="1998-06-30")
    doc["cluster"]["evaluation"]["ground_truth"] = None
    if matrix == "seasons":
        doc["prepare_features"]["seasons_for_file_data"] = True
    elif matrix == "quarters":
        doc["prepare_features"]["model_features"].append("spend_share_q*")
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("cdnow_run"), help="folder for the log, config and artifacts")
    parser.add_argument("--ids", choices=("text", "number"), default="text")
    parser.add_argument("--matrix", choices=("default", "seasons", "quarters"), default="default")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = write_log(args.out, args.ids)
    config = load_config(write_config(args.out, args.matrix))
    artifacts = args.out / "artifacts"
    started = time.perf_counter()
    run_pipeline(config, artifacts, force=True)
    wall = time.perf_counter() - started
    stage_seconds = {}
    for stage in (paths.GENERATE_DATA, paths.PREPARE_FEATURES, paths.TRAIN_AUTOENCODER, paths.CLUSTER,
                  paths.PROFILE_EXPORT):
        manifest = json.loads((paths.stage_dir(artifacts, stage) / paths.MANIFEST).read_text(encoding="utf-8"))
        stage_seconds[stage] = manifest["duration_seconds"]
    comparison = json.loads((paths.stage_dir(artifacts, paths.CLUSTER) / paths.COMPARISON_JSON).read_text())
    primary = comparison["primary"]
    row = next(m for m in comparison["methods"] if (m["method"], m["space"]) == (primary["method"], primary["space"]))
    stage_02 = json.loads((paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.MANIFEST).read_text())
    profiles = json.loads((paths.stage_dir(artifacts, paths.PROFILE_EXPORT) / paths.SEGMENT_PROFILES_JSON).read_text())
    segmented = pd.read_parquet(paths.stage_dir(artifacts, paths.PROFILE_EXPORT) / paths.CUSTOMERS_WITH_SEGMENTS)
    excluded = pd.read_parquet(paths.stage_dir(artifacts, paths.PREPARE_FEATURES) / paths.EXCLUDED_CUSTOMERS)
    written = set(log["CustomerNo"] if args.ids == "text" else log["CustomerNo"].astype(int))
    names = [s["name"] for s in profiles["segments"]]
    seasons_configured = args.matrix == "seasons"
    cited = [s["name"] for s in profiles["segments"]
             if SEASON_WORDS.search(s["name"] + " " + json.dumps(s.get("explanation", {})))]
    print(f"ids {args.ids}, matrix {args.matrix}: {len(log):,} rows, {len(written):,} customers; wall {wall:.1f} s")
    print("stage seconds:", {k: v for k, v in stage_seconds.items()})
    print("model matrix:", stage_02["details"]["model_matrix"]["columns"])
    print(f"primary {primary['method']} {primary['space']}: {row['clusters']} segments, stability reseed "
          f"{row['stability_reseed']:.3f} bootstrap {row['stability_bootstrap']:.3f}, silhouette {row['silhouette']:.3f}")
    print(f"  ({primary['reason']})")
    for s in profiles["segments"]:
        print(f"- {s['name']} ({s['size']:,}): {s.get('explanation', {}).get('summary', '')}")
    numbered = sum(bool(re.search(r" #\d+$", n)) for n in names)
    print(f"numbered names: {numbered} of {len(names)}; distinct "
          f"{len(set(names))}; citing an unconfigured season: {0 if seasons_configured else len(cited)}")
    print(f"ids as written: {set(segmented['customer_id']) | set(excluded['customer_id']) == written} "
          f"(customer_id dtype {segmented['customer_id'].dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
