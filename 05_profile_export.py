"""Stage 05: name, describe and explain each segment; export profiles for AI agents and a report for people.

Reads the order lines and catalog (stage 01), the enriched datasets and the
fitted feature transform (stage 02), the latent space and training history
(stage 03), the assignments and method comparison (stage 04). Writes to
``artifacts/05_profile_export/``: ``segment_profiles.json`` and
``segment_profiles.yaml`` (same content, validated against
``schemas/segment_profiles.schema.json``), ``cluster_insights.csv``,
``customers_with_segments.parquet``, ``report.html`` and its charts as PNG
(``segment-sizes.png``, ``department-heatmap.png``, ``projection.png``,
``loss-curve.png``). Run ``python 05_profile_export.py --help``; the code is in ``core/profile_export/``.
"""

from __future__ import annotations

import sys

from core.pipeline import stage_main


def main(argv: list[str] | None = None) -> int:
    """Command line: run this stage alone (skipped if up to date unless --force)."""
    return stage_main("05_profile_export", argv)


if __name__ == "__main__":
    sys.exit(main())
