"""Errors a user can fix, reported by the runner as one clear message (exit code 2)."""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A stage cannot run: a missing or stale input, bad input data, a locked or unwritable file."""
