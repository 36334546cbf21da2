"""Stage 04: cluster customers in the raw (scaled features) and latent spaces; evaluate; choose the primary.

Reads ``features.parquet`` from stage 02, ``latent.parquet`` from stage 03
and, for evaluation only, the ground-truth column (``persona``) of
``customers.parquet`` from stage 01. Writes to ``artifacts/04_cluster/``:

- ``assignments.parquet``: one row per customer: ``segment``,
  ``segment_strength``, ``segment_runner_up`` of the primary segmentation,
  ``reconstruction_error`` (stage 03's outlier signal), then
  ``<method>_<space>_label``/``_strength`` (and ``_uncertainty``, ``_noise``
  where they apply) for every method and space;
- ``comparison.csv`` and ``comparison.json``: every method and space's
  metrics (sizes, separation, stability, agreement with the ground truth
  and the supervised reference); the JSON adds the primary choice and its
  reason, the reference and each model's selection;
- ``membership-<method>-<space>.parquet`` for the soft methods;
- ``migration.csv``: customers moving between the previous run's segments
  and this run's (segment ids are matched to the previous run's);
- one fitted model per method and space (``<method>-<space>.pkl``).

Run ``python 04_cluster.py --help``; the code is in ``core/cluster/``.
"""

from __future__ import annotations

import sys

from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("04_cluster", argv)


if __name__ == "__main__":
    sys.exit(main())
