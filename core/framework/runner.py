"""The runner: drives a chain of stages, skips the ones that are up to date, reports status.

A stage is *up to date* when it has a manifest (it completed), its outputs
are the files the manifest lists, and the config sections it reads, the
code and its inputs are those recorded there. Otherwise it is *stale* (and
the reason is given) or *missing*. :func:`run_pipeline` reruns stale and
missing stages and every stage after the first one it reruns.

The chain itself (which stages, in which order) is the caller's: the
runner knows stages only through their :class:`~core.framework.stage.Stage`
declarations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa

from core.framework import artifacts, catalog, paths
from core.framework.errors import PipelineError
from core.framework.stage import Stage, StageContext, config_hash, stage_config, stage_source_files

log = logging.getLogger(__name__)


def resolve_stage_name(text: str, names: Sequence[str] = paths.STAGE_NAMES) -> str:
    """Accept ``2``, ``02``, ``02_prepare_features`` or ``prepare_features``."""
    text = text.strip()
    for name in names:
        number, _, word = name.partition("_")
        if text in (name, word) or (text.isdigit() and int(text) == int(number)):
            return name
    raise PipelineError(f"unknown stage '{text}'; use one of {', '.join(names)} "
                        f"(or its number)")


# ---------------------------------------------------------------------------
# Status


@dataclasses.dataclass(frozen=True)
class StageStatus:
    """Whether a stage's outputs can be trusted, and why not."""

    stage: str
    state: str  # "up to date" | "stale" | "missing"
    reasons: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        """True when the stage's outputs can be used as they are."""
        return self.state == "up to date"


def stage_status(stage: Stage, config: Any, artifacts_dir: Path,
                 code: str | None = None) -> StageStatus:
    """Compare a stage's manifest with its outputs, config, code and inputs now."""
    folder = paths.stage_dir(artifacts_dir, stage.name)
    manifest = artifacts.read_manifest(folder)
    if manifest is None:
        return StageStatus(stage.name, "missing", ("no manifest: never run, or its last run did not finish",))
    reasons: list[str] = []
    for record in manifest.get("outputs", []):
        path = folder / record["file"]
        if not path.exists():
            reasons.append(f"output {record['file']} is missing")
        elif artifacts.current_sha256(path, record) != record["sha256"]:
            reasons.append(f"output {record['file']} was changed after the run")
    recorded_sections = manifest.get("config_section_hashes", {})
    for section, values in stage_config(config, stage).items():
        if recorded_sections.get(section) != config_hash({section: values}):
            reasons.append(f"config section '{section}' changed")
    if manifest.get("code_hash") != (code or artifacts.code_hash()):
        reasons.append("pipeline code changed")
    recorded_sources = {r.get("role"): r for r in manifest.get("source_files", []) if isinstance(r, dict)}
    for role, path in stage_source_files(config, stage).items():
        record = recorded_sources.get(role)
        if record is None or record.get("file") != str(path):
            reasons.append(f"{role} file {path} was not the one read")
        elif not Path(path).exists():
            reasons.append(f"{role} file {path} is missing")
        elif artifacts.current_sha256(path, record) != record.get("sha256"):
            reasons.append(f"{role} file {path} changed")
    upstream_manifests: dict[str, dict | None] = {}
    for record in manifest.get("inputs", []):
        upstream = record["stage"]
        if upstream not in upstream_manifests:
            upstream_manifests[upstream] = artifacts.read_manifest(paths.stage_dir(artifacts_dir, upstream))
            if upstream_manifests[upstream] is None:
                reasons.append(f"upstream stage {upstream} has not completed")
        path = paths.stage_dir(artifacts_dir, upstream) / record["file"]
        if not path.exists():
            reasons.append(f"input {record['stage']}/{record['file']} is missing")
        elif artifacts.current_sha256(path, _written(upstream_manifests[upstream], record["file"]) or record) \
                != record["sha256"]:
            reasons.append(f"input {record['stage']}/{record['file']} changed")
    return StageStatus(stage.name, "stale" if reasons else "up to date", tuple(reasons))


def _written(manifest: dict | None, file: str) -> dict | None:
    """The upstream manifest's record of ``file``: when the file is still as its stage wrote it (size and mtime),
    its hash is the one recorded there, and an input rewritten by a rerun upstream is not hashed again to find it
    changed (at a million customers stage 05's inputs are 3.3 GB, 3-5 s of hashing before each run of a chain).
    Loadable files are hashed in full whatever the record (:func:`artifacts.current_sha256`)."""
    return next((r for r in (manifest or {}).get("outputs", []) if r.get("file") == file), None)


def pipeline_status(stages: Sequence[Stage], config: Any, artifacts_dir: Path) -> list[StageStatus]:
    """Status of every stage; a stage after a stale or missing one is stale too."""
    code = artifacts.code_hash()
    result: list[StageStatus] = []
    upstream_problem: str | None = None
    for stage in stages:
        status = stage_status(stage, config, artifacts_dir, code)
        if upstream_problem and status.state != "missing":
            status = StageStatus(stage.name, "stale",
                                 status.reasons + (f"upstream stage {upstream_problem} will rerun",))
        if not status.up_to_date and upstream_problem is None:
            upstream_problem = stage.name
        result.append(status)
    return result


# ---------------------------------------------------------------------------
# Running


def _check_inputs(stage: Stage, config: Any, artifacts_dir: Path) -> list[dict[str, Any]]:
    """Describe each declared input, or stop naming the stage to run first."""
    records = []
    flags = ""
    if Path(config.path).resolve() != paths.DEFAULT_CONFIG.resolve():
        flags += f" --config {config.path}"
    if Path(artifacts_dir).resolve() != paths.DEFAULT_ARTIFACTS.resolve():
        flags += f" --artifacts {artifacts_dir}"
    for upstream, files in stage.inputs.items():
        folder = paths.stage_dir(artifacts_dir, upstream)
        manifest = artifacts.read_manifest(folder)
        hint = (f"run stage {upstream} first: `run.bat run --from {upstream[:2]}{flags}` "
                f"(`./run.sh run --from {upstream[:2]}{flags}` on Linux and macOS)")
        if manifest is None:
            raise PipelineError(f"stage {stage.name} needs the outputs of stage {upstream}, which has not "
                                f"completed in {folder} (no {paths.MANIFEST}); {hint}")
        recorded = {r["file"]: r for r in manifest.get("outputs", [])}
        for file in files:
            path = folder / file
            if not path.exists() or file not in recorded:
                raise PipelineError(f"stage {stage.name} needs {path}, which stage {upstream} did not "
                                    f"produce; {hint}")
            sha = artifacts.current_sha256(path, recorded[file])
            if sha != recorded[file]["sha256"]:
                raise PipelineError(f"{path} differs from what stage {upstream} wrote (its manifest "
                                    f"records another hash): it was edited or partly copied; {hint}")
            records.append({"stage": upstream, **artifacts.describe_file(path, sha)})
    return records


def run_stage(stage: Stage, config: Any, artifacts_dir: Path, code: str | None = None) -> StageContext:
    """Run one stage now and write its manifest.

    The old manifest is removed first, so a run that fails or is killed
    leaves the stage marked as not completed; outputs are written
    atomically, and files of earlier runs that this run did not write are
    removed at the end.
    """
    artifacts_dir = Path(artifacts_dir)
    code = code or artifacts.code_hash()  # taken before running: the code that ran is the code recorded
    inputs = _check_inputs(stage, config, artifacts_dir)
    # Hashed before the stage reads them: the content recorded is at worst older than the one read,
    # so a file edited during the run makes the stage stale rather than wrongly up to date.
    sources = [artifacts.describe_source(role, path) for role, path in stage_source_files(config, stage).items()]
    folder = artifacts.ensure_writable_folder(paths.stage_dir(artifacts_dir, stage.name))
    # Kept for the stage (what its previous run wrote, with hashes) before the manifest goes.
    previous = artifacts.read_manifest(folder)
    (folder / paths.MANIFEST).unlink(missing_ok=True)
    sections = stage_config(config, stage)
    started = dt.datetime.now(dt.timezone.utc)
    ctx = StageContext(stage=stage, config=config, artifacts_dir=artifacts_dir, inputs=inputs,
                       config_hash=config_hash(sections), started_at=started, previous_manifest=previous)
    clock = time.perf_counter()
    log.info("%s: running", stage.name)
    stage.run(ctx)
    duration = time.perf_counter() - clock
    for leftover in folder.iterdir():
        # Outputs of earlier runs this run did not write, and temporary files of killed runs.
        if leftover.is_file() and leftover.name not in ctx.outputs:
            try:
                leftover.unlink()
            except PermissionError:
                log.warning("could not remove %s, left by an earlier run (open in another program?)", leftover)
    manifest = {
        "stage": stage.name,
        "description": stage.description,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(duration, 3),
        "seed": config.seed,
        "config_file": str(config.path),
        "config": sections,
        "config_hash": config_hash(sections),
        "config_section_hashes": {k: config_hash({k: v}) for k, v in sections.items()},
        "code_hash": code,
        "inputs": inputs,
        "previous_run_inputs": ctx.previous_inputs,
        "source_files": sources,
        "outputs": [artifacts.describe_file(folder / f, sha) for f, sha in ctx.outputs.items()],
        "library_versions": artifacts.library_versions(),
        "summary": ctx.summary,
        "details": ctx.details,
    }
    artifacts.write_json(folder / paths.MANIFEST, manifest)
    log.info("%s: done in %.1f s; %s", stage.name, duration, ctx.summary)
    return ctx


def run_pipeline(stages: Sequence[Stage], config: Any, artifacts_dir: Path, *, start: str | None = None,
                 only: str | None = None, force: bool = False) -> dict[str, str]:
    """Run the chain, skipping up-to-date stages unless ``force``.

    Parameters
    ----------
    stages : sequence of Stage
        The chain, in run order.
    config : PipelineConfig
        The validated config (``section(name)``, ``seed``, ``path``, ``source_files``).
    artifacts_dir : Path
        Folder holding one sub-folder per stage.
    start : str, optional
        First stage to consider (earlier ones are left as they are).
    only : str, optional
        The one stage to consider.
    force : bool
        Rerun the considered stages even if up to date.

    Returns
    -------
    dict of str to str
        Stage name -> ``"ran"`` or ``"skipped"``, for the stages considered.
    """
    names = [s.name for s in stages]
    if only is not None:
        selected = [only]
    else:
        selected = names[names.index(start):] if start else names
    code = artifacts.code_hash()
    outcome: dict[str, str] = {}
    cascade = False
    for stage in stages:
        if stage.name not in selected:
            if names.index(stage.name) < names.index(selected[0]):
                status = stage_status(stage, config, artifacts_dir, code)
                if status.state == "stale":
                    log.warning("%s is stale (%s); its outputs are used as they are", stage.name,
                                "; ".join(status.reasons))
            continue
        status = stage_status(stage, config, artifacts_dir, code)
        if force or cascade or not status.up_to_date:
            why = ("forced" if force else "an earlier stage reran" if cascade and status.up_to_date
                   else "; ".join(status.reasons))
            log.info("%s: %s (%s)", stage.name, status.state, why)
            run_stage(stage, config, artifacts_dir, code)
            outcome[stage.name] = "ran"
            cascade = True
        else:
            log.info("%s: up to date, skipped (use --force to rerun)", stage.name)
            outcome[stage.name] = "skipped"
    return outcome


# ---------------------------------------------------------------------------
# Inspecting


def show_stage(stage_name: str, artifacts_dir: Path, rows: int = 5) -> str:
    """A stage's manifest, each output's format and description (from the artifact catalog), then its contents.

    Tables (Parquet, CSV) show their schema and first ``rows`` rows; JSON and
    YAML their first lines; other formats (models, charts, the report) only
    their catalog line.
    """
    folder = paths.stage_dir(artifacts_dir, stage_name)
    manifest = artifacts.read_manifest(folder)
    if manifest is None:
        return f"{stage_name}: no manifest in {folder}; the stage has not completed (run it first)"
    out = io.StringIO()
    shown = {k: v for k, v in manifest.items() if k not in ("config", "outputs", "inputs")}
    out.write(f"== {stage_name} manifest ({folder / paths.MANIFEST})\n")
    out.write(json.dumps(shown, indent=2, default=str) + "\n")
    out.write("inputs:\n")
    for rec in manifest.get("inputs", []) + manifest.get("previous_run_inputs", []):
        out.write(f"  {rec['stage']}/{rec['file']}  sha256 {rec['sha256'][:12]}  rows {rec['rows']}\n")
    out.write("outputs:\n")
    entries = {rec["file"]: catalog.find(stage_name, rec["file"]) for rec in manifest.get("outputs", [])}
    for rec in manifest.get("outputs", []):
        entry = entries[rec["file"]]
        out.write(f"  {rec['file']}  {entry.format if entry else 'unknown format'}  {rec['bytes']:,} bytes  "
                  f"sha256 {rec['sha256'][:12]}  rows {rec['rows']}\n"
                  f"      {entry.description if entry else 'not in the artifact catalog (written by older code?)'}\n")
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        for rec in manifest.get("outputs", []):
            path, entry = folder / rec["file"], entries[rec["file"]]
            shown_as = catalog.FORMATS[entry.format].shown_as if entry else None
            if shown_as is None or not path.exists():
                continue
            if shown_as == "lines":
                with open(path, encoding="utf-8") as handle:
                    head = list(itertools.islice(handle, rows * 4))
                out.write(f"\n== {rec['file']}: first {len(head)} lines\n" + "".join(head))
                continue
            try:
                frame, n_rows = _head(path, entry.format, rows)
            except (pa.ArrowException, ValueError, OSError) as exc:  # ArrowInvalid, a CSV parse error, EOF
                raise PipelineError(f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}): it is damaged "
                                    f"or was cut short after stage {stage_name} wrote it; "
                                    f"{artifacts.rerun_hint(stage_name)}") from None
            out.write(f"\n== {rec['file']}: {n_rows:,} rows x {frame.shape[1]} columns\n")
            dtypes = frame.dtypes.astype(str)
            for start in range(0, len(dtypes), 6):
                chunk = dtypes.iloc[start:start + 6]
                out.write("  " + ", ".join(f"{c}: {t}" for c, t in chunk.items()) + "\n")
            out.write(frame.head(rows).to_string(max_cols=12) + "\n")
    return out.getvalue()


def _head(path: Path, format: str, rows: int) -> tuple[pd.DataFrame, int]:
    """First ``rows`` rows of a table (``format`` csv or parquet) and its row count, without loading a large file whole."""
    if format == "csv":
        return pd.read_csv(path, nrows=rows), artifacts.count_rows(path) or 0
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    batches = list(itertools.islice(parquet.iter_batches(batch_size=max(rows, 1)), 1))
    # The file's schema carries pandas metadata, so nullable integers stay Int64 and not float.
    frame = pa.Table.from_batches(batches, schema=parquet.schema_arrow).to_pandas()
    return frame.head(rows), parquet.metadata.num_rows


def format_status(statuses: list[StageStatus]) -> str:
    """One line per stage, with the reasons a stage is stale."""
    lines = []
    for s in statuses:
        lines.append(f"{s.stage:<22} {s.state}")
        lines.extend(f"{'':<22}   - {r}" for r in s.reasons)
    return "\n".join(lines)

