"""The segment-profile export for AI agents: assembly and validation against the shipped JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.framework import paths


@lru_cache(maxsize=None)
def _validator(schema_path: str):
    import jsonschema

    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_errors(export: dict[str, Any], schema_path: Path = paths.SEGMENT_PROFILES_SCHEMA) -> list[str]:
    """Every way ``export`` breaks the schema, as ``<path>: <message>`` lines (empty when valid)."""
    errors = sorted(_validator(str(schema_path)).iter_errors(export), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


def build_export(segments: list[dict[str, Any]], *, run_id: str, config_hash: str, method: str, space: str,
                 primary: bool, customers: int, first_order: str, last_order: str, generated_at: str,
                 currency: str, min_segment_size: int) -> dict[str, Any]:
    """The exported document: ``metadata`` and the (already suppressed) ``segments``."""
    return {
        "metadata": {
            "run_id": run_id,
            "config_hash": config_hash,
            "method": method,
            "space": space,
            "segmentation": f"{method}_{space}",
            "primary": primary,
            "customers": customers,
            "segments": sum(s["segment_id"] != -1 for s in segments),  # noise is not a segment
            "data_period": {"first_order": first_order, "last_order": last_order},
            "generated_at": generated_at,
            "currency": currency,
            "min_segment_size": min_segment_size,
        },
        "segments": segments,
    }
