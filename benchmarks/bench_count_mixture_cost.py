"""CPU seconds of the count mixture (``countmix``) as stage 04 runs it, on a run already built.

Reads ``<run>/config/config.yml`` and ``<run>/artifacts`` (stage 02's ``features.parquet`` and
``class_spend_long.parquet``), builds the counts space as stage 04 does, and calls stage 04's own
``segmentation._fit_and_evaluate`` for ``countmix`` (count scan on the selection sample, final fit on the fit
sample, everyone scored, stability refits, separation measures), single-threaded. Prints the CPU seconds of
reading the counts and of the method, its wall seconds per step, the segments chosen and the counts scanned.
A config without a ``cluster.countmix`` section uses the defaults of ``core/cluster/settings.py``.

Example::

    python benchmarks/bench_count_mixture_cost.py /tmp/b10k/scale-10000 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cluster import segmentation  # noqa: E402
from core.cluster.clustering import sample_rows  # noqa: E402
from core.cluster.count_mixture import count_columns, count_space, counts_matrix, sellable_index  # noqa: E402
from core.config import load_config  # noqa: E402
from core.prepare_features.columns import sellable_classes  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="folder with config/config.yml and artifacts/")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    cfg = load_config(args.run / "config" / "config.yml")
    art = args.run / "artifacts" / "02_prepare_features"
    ids = pd.read_parquet(art / "features.parquet", columns=["customer_id"])["customer_id"].to_numpy()
    clock = time.process_time()
    long = pd.read_parquet(art / "class_spend_long.parquet", columns=["customer_id", "department", "class", "units"])
    keys = sellable_classes(cfg.hierarchy)
    index = sellable_index(long["department"], long["class"], keys)
    X = count_space(counts_matrix(ids, long["customer_id"].to_numpy(), index, long["units"].to_numpy(), len(keys)),
                    count_columns(keys))
    print(f"counts read in {time.process_time() - clock:.2f} CPU-s: {X.shape[0]:,} customers, {X.shape[1]} classes, "
          f"{X.nnz:,} nonzeros")
    fit_rows = sample_rows(len(X), cfg.cluster.fit_sample_size, cfg.seed)
    for _ in range(args.repeat):
        clock = time.process_time()
        model, _, row, seconds = segmentation._fit_and_evaluate("countmix", "counts", X, fit_rows, cfg.cluster,
                                                                cfg.seed)
        print(f"countmix: {time.process_time() - clock:.2f} CPU-s (wall {seconds}), {model.n_clusters_} segments, "
              f"stability {min(row['stability_reseed'], row['stability_bootstrap']):.3f}, counts scanned "
              f"{sorted(model.bic_)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
