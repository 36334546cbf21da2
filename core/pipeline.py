"""The runner: drives the five stages, skips the ones that are up to date, reports status.

Usage (from the repository root)::

    python -m core.pipeline [run] [--from STAGE | --only STAGE] [--force]
    python -m core.pipeline status
    python -m core.pipeline show STAGE [--rows N]
    python -m core.pipeline score INPUT [--output FILE] [--analysis-date YYYY-MM-DD]

Every command takes ``--config PATH`` and ``--artifacts DIR``. A stage is
named by its number (``2``, ``02``), its script name (``02_prepare_features``)
or its config section (``prepare_features``).

A stage is *up to date* when it has a manifest (it completed), its outputs
are the files the manifest lists, and the config sections it reads, the
code and its inputs are those recorded there. Otherwise it is *stale* (and
the reason is given) or *missing*. ``run`` reruns stale and missing stages
and every stage after the first one it reruns.

Each numbered script defines a :class:`Stage` (its name and the files it
reads) and a ``run(ctx)`` function that reads its inputs through the
:class:`StageContext`, calls one function in ``core`` and writes its outputs
through the context, which makes every write atomic and records it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import io
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import joblib
import pandas as pd

from core import artifacts, paths
from core.config import ConfigError, PipelineConfig, config_hash, load_config, stage_config, stage_source_files
from core.errors import PipelineError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """What a numbered script declares about itself.

    Attributes
    ----------
    name : str
        Script name without ``.py``; also the output folder.
    inputs : dict of str to tuple of str
        Upstream stage name -> files of that stage this stage reads.
    description : str
        One line for ``--help`` and ``status``.
    """

    name: str
    inputs: dict[str, tuple[str, ...]]
    description: str


@dataclasses.dataclass
class StageContext:
    """Everything a stage's ``run`` may touch: its config, its inputs, its outputs.

    Reads are limited to the declared inputs; writes go to the stage's
    folder, atomically, and are recorded for the manifest.
    """

    stage: Stage
    config: PipelineConfig
    artifacts_dir: Path
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    config_hash: str = ""
    started_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: str = ""

    @property
    def output_dir(self) -> Path:
        """This stage's folder under the artifacts folder."""
        return paths.stage_dir(self.artifacts_dir, self.stage.name)

    def input_path(self, stage: str, file: str) -> Path:
        """Path of a declared input file."""
        if file not in self.stage.inputs.get(stage, ()):
            raise PipelineError(f"{self.stage.name} reads {stage}/{file}, which it does not declare "
                                f"as an input (a bug in the stage script)")
        return paths.stage_dir(self.artifacts_dir, stage) / file

    def read_parquet(self, stage: str, file: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a declared Parquet input."""
        return pd.read_parquet(self.input_path(stage, file), columns=columns)

    def iter_parquet(self, stage: str, file: str, columns: list[str], batch_rows: int = 100_000):
        """Yield a declared Parquet input as DataFrames of at most ``batch_rows`` rows (bounded memory)."""
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(self.input_path(stage, file)).iter_batches(batch_size=batch_rows,
                                                                              columns=columns):
            yield batch.to_pandas()

    @property
    def run_id(self) -> str:
        """16 hex digits identifying this stage's config and inputs: the same inputs give the same id."""
        import hashlib

        material = self.config_hash + "".join(sorted(r["sha256"] for r in self.inputs))
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def read_joblib(self, stage: str, file: str) -> Any:
        """Load a declared joblib input (a fitted estimator)."""
        return joblib.load(self.input_path(stage, file))

    def read_json(self, stage: str, file: str) -> Any:
        """Read a declared JSON input."""
        return json.loads(self.input_path(stage, file).read_text(encoding="utf-8"))

    def write_with(self, file: str, writer: Callable[[Path], None]) -> Path:
        """Write an output by calling ``writer(tmp_path)``; renamed into place when done."""
        target = self.output_dir / file
        artifacts.write_atomic(target, writer)
        self.outputs[file] = artifacts.file_sha256(target)
        return target

    def write_parquet(self, file: str, frame: pd.DataFrame) -> Path:
        """Write a table as Parquet (no index)."""
        return self.write_with(file, lambda tmp: frame.to_parquet(tmp, index=False))

    def write_csv(self, file: str, frame: pd.DataFrame) -> Path:
        """Write a table as UTF-8 CSV (no index)."""
        return self.write_with(file, lambda tmp: frame.to_csv(tmp, index=False, encoding="utf-8",
                                                              lineterminator="\n"))

    def write_joblib(self, file: str, value: Any) -> Path:
        """Pickle a fitted estimator with joblib."""
        return self.write_with(file, lambda tmp: joblib.dump(value, tmp))

    def write_text(self, file: str, text: str) -> Path:
        """Write UTF-8 text."""
        return self.write_with(file, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))

    def write_json(self, file: str, value: Any) -> Path:
        """Write indented UTF-8 JSON."""
        return self.write_text(file, artifacts.json_text(value))


# ---------------------------------------------------------------------------
# Loading the numbered scripts


def load_stage_module(name: str) -> ModuleType:
    """Import a numbered script (``01_generate_data.py``) by path; it is not a valid module name."""
    path = paths.REPO_ROOT / f"{name}.py"
    module_name = f"stage_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"cannot load stage script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def all_stages() -> list[tuple[Stage, Callable[[StageContext], None]]]:
    """Every stage in run order with its ``run`` function."""
    modules = [load_stage_module(name) for name in paths.STAGE_NAMES]
    return [(m.STAGE, m.run) for m in modules]


def resolve_stage_name(text: str) -> str:
    """Accept ``2``, ``02``, ``02_prepare_features`` or ``prepare_features``."""
    text = text.strip()
    for name in paths.STAGE_NAMES:
        number, _, word = name.partition("_")
        if text in (name, word) or (text.isdigit() and int(text) == int(number)):
            return name
    raise PipelineError(f"unknown stage '{text}'; use one of {', '.join(paths.STAGE_NAMES)} "
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


def stage_status(stage: Stage, config: PipelineConfig, artifacts_dir: Path,
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
    for section, values in stage_config(config, stage.name).items():
        if recorded_sections.get(section) != config_hash({section: values}):
            reasons.append(f"config section '{section}' changed")
    if manifest.get("code_hash") != (code or artifacts.code_hash()):
        reasons.append("pipeline code changed")
    recorded_sources = {r.get("role"): r for r in manifest.get("source_files", []) if isinstance(r, dict)}
    for role, path in stage_source_files(config, stage.name).items():
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
        elif artifacts.current_sha256(path, record) != record["sha256"]:
            reasons.append(f"input {record['stage']}/{record['file']} changed")
    return StageStatus(stage.name, "stale" if reasons else "up to date", tuple(reasons))


def pipeline_status(config: PipelineConfig, artifacts_dir: Path) -> list[StageStatus]:
    """Status of every stage; a stage after a stale or missing one is stale too."""
    code = artifacts.code_hash()
    result: list[StageStatus] = []
    upstream_problem: str | None = None
    for stage, _ in all_stages():
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


def _check_inputs(stage: Stage, config: PipelineConfig, artifacts_dir: Path) -> list[dict[str, Any]]:
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


def run_stage(stage: Stage, run: Callable[[StageContext], None], config: PipelineConfig,
              artifacts_dir: Path, code: str | None = None) -> StageContext:
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
    sources = [artifacts.describe_source(role, path) for role, path in stage_source_files(config, stage.name).items()]
    folder = paths.stage_dir(artifacts_dir, stage.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / paths.MANIFEST).unlink(missing_ok=True)
    sections = stage_config(config, stage.name)
    started = dt.datetime.now(dt.timezone.utc)
    ctx = StageContext(stage=stage, config=config, artifacts_dir=artifacts_dir, inputs=inputs,
                       config_hash=config_hash(sections), started_at=started)
    clock = time.perf_counter()
    log.info("%s: running", stage.name)
    run(ctx)
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
        "source_files": sources,
        "outputs": [artifacts.describe_file(folder / f, sha) for f, sha in ctx.outputs.items()],
        "library_versions": artifacts.library_versions(),
        "summary": ctx.summary,
        "details": ctx.details,
    }
    artifacts.write_json(folder / paths.MANIFEST, manifest)
    log.info("%s: done in %.1f s; %s", stage.name, duration, ctx.summary)
    return ctx


def run_pipeline(config: PipelineConfig, artifacts_dir: Path, *, start: str | None = None,
                 only: str | None = None, force: bool = False) -> dict[str, str]:
    """Run the chain, skipping up-to-date stages unless ``force``.

    Parameters
    ----------
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
    stages = all_stages()
    names = [s.name for s, _ in stages]
    if only is not None:
        selected = [only]
    else:
        selected = names[names.index(start):] if start else names
    code = artifacts.code_hash()
    outcome: dict[str, str] = {}
    cascade = False
    for stage, run in stages:
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
            run_stage(stage, run, config, artifacts_dir, code)
            outcome[stage.name] = "ran"
            cascade = True
        else:
            log.info("%s: up to date, skipped (use --force to rerun)", stage.name)
            outcome[stage.name] = "skipped"
    return outcome


# ---------------------------------------------------------------------------
# Inspecting


def show_stage(stage_name: str, artifacts_dir: Path, rows: int = 5) -> str:
    """A stage's manifest, then the schema and first rows of each of its tables."""
    folder = paths.stage_dir(artifacts_dir, stage_name)
    manifest = artifacts.read_manifest(folder)
    if manifest is None:
        return f"{stage_name}: no manifest in {folder}; the stage has not completed (run it first)"
    out = io.StringIO()
    shown = {k: v for k, v in manifest.items() if k not in ("config", "outputs", "inputs")}
    out.write(f"== {stage_name} manifest ({folder / paths.MANIFEST})\n")
    out.write(json.dumps(shown, indent=2, default=str) + "\n")
    out.write("inputs:\n")
    for rec in manifest.get("inputs", []):
        out.write(f"  {rec['stage']}/{rec['file']}  sha256 {rec['sha256'][:12]}  rows {rec['rows']}\n")
    out.write("outputs:\n")
    for rec in manifest.get("outputs", []):
        out.write(f"  {rec['file']}  {rec['bytes']:,} bytes  sha256 {rec['sha256'][:12]}  rows {rec['rows']}\n")
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        for rec in manifest.get("outputs", []):
            path = folder / rec["file"]
            if path.suffix in (".json", ".yaml", ".yml") and path.exists():
                with open(path, encoding="utf-8") as handle:
                    head = list(itertools.islice(handle, rows * 4))
                out.write(f"\n== {rec['file']}: first {len(head)} lines\n" + "".join(head))
                continue
            if path.suffix not in (".parquet", ".csv") or not path.exists():
                continue
            frame, n_rows = _head(path, rows)
            out.write(f"\n== {rec['file']}: {n_rows:,} rows x {frame.shape[1]} columns\n")
            dtypes = frame.dtypes.astype(str)
            for start in range(0, len(dtypes), 6):
                chunk = dtypes.iloc[start:start + 6]
                out.write("  " + ", ".join(f"{c}: {t}" for c, t in chunk.items()) + "\n")
            out.write(frame.head(rows).to_string(max_cols=12) + "\n")
    return out.getvalue()


def _head(path: Path, rows: int) -> tuple[pd.DataFrame, int]:
    """First ``rows`` rows of a table and its row count, without loading a large file whole."""
    if path.suffix == ".csv":
        return pd.read_csv(path, nrows=rows), artifacts.count_rows(path) or 0
    import pyarrow as pa
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


# ---------------------------------------------------------------------------
# Scoring new customers


def score_file(config: PipelineConfig, artifacts_dir: Path, source: Path, output: Path | None = None,
               analysis_date: str | None = None) -> Path:
    """Score the customers of a transaction log or features file with a finished run's models.

    Reads ``source`` (``.parquet`` or ``.csv``), calls
    :func:`core.scoring.score_customers` and writes the result (``.parquet``
    or ``.csv``, by ``output``'s suffix; default
    ``<artifacts>/scores/<source name>.parquet``). Returns the output path.
    """
    from core import scoring

    source, artifacts_dir = Path(source), Path(artifacts_dir)
    if source.suffix.lower() not in (".parquet", ".csv"):
        raise PipelineError(f"{source}: give a .parquet or .csv file of order lines or customer features")
    if not source.is_file():
        raise PipelineError(f"{source} was not found")
    output = Path(output) if output else artifacts_dir / "scores" / f"{source.stem}.parquet"
    if output.suffix.lower() not in (".parquet", ".csv"):
        raise PipelineError(f"--output {output}: give a .parquet or .csv file name")
    day = None
    if analysis_date:
        try:
            day = pd.Timestamp(dt.date.fromisoformat(analysis_date))
        except ValueError:
            raise PipelineError(f"--analysis-date {analysis_date!r} is not a date; write YYYY-MM-DD") from None
    stale = [s for s in pipeline_status(config, artifacts_dir)[1:4] if s.state == "stale"]
    for status in stale:
        log.warning("%s is stale (%s); scoring uses its saved models as they are", status.stage,
                    "; ".join(status.reasons))
    frame = pd.read_parquet(source) if source.suffix.lower() == ".parquet" else pd.read_csv(source)
    saved = scoring.load_saved_run(artifacts_dir, config)
    scored = scoring.score_customers(frame, saved, analysis_date=day, source=str(source))
    if output.suffix.lower() == ".csv":
        artifacts.write_atomic(output, lambda tmp: scored.to_csv(tmp, index=False, encoding="utf-8",
                                                                 lineterminator="\n"))
    else:
        artifacts.write_atomic(output, lambda tmp: scored.to_parquet(tmp, index=False))
    excluded = int((scored["excluded_reason"] != "").sum())
    log.info("scored %s customers of %s with %s_%s (%s segments used)%s; written to %s",
             f"{len(scored) - excluded:,}", source.name, *saved.primary,
             scored["segment"].nunique(), f", {excluded:,} without features (see excluded_reason)" if excluded
             else "", output)
    return output


# ---------------------------------------------------------------------------
# Command line


def configure_logging(artifacts_dir: Path, verbose: bool = False) -> None:
    """Log to the console and append to ``<artifacts>/pipeline.log`` (tracebacks go to the file only).

    When the log file cannot be opened the console still gets everything
    and one warning says why.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    for noisy in ("matplotlib", "PIL", "absl", "tensorflow", "h5py", "numba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
        logfile = logging.FileHandler(Path(artifacts_dir) / paths.PIPELINE_LOG, encoding="utf-8")
    except OSError as exc:
        log.warning("logging to the console only: cannot write %s (%s)",
                    Path(artifacts_dir) / paths.PIPELINE_LOG, exc.strerror or exc)
        return
    logfile.setLevel(logging.DEBUG)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(logfile)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--artifacts``, shared by the runner and every script."""
    parser.add_argument("--config", type=Path, default=paths.DEFAULT_CONFIG,
                        help="config file (default: config/config.yml); the hierarchy and personas "
                             "files are named in it, relative to it")
    parser.add_argument("--artifacts", type=Path, default=paths.DEFAULT_ARTIFACTS,
                        help="artifacts folder (default: artifacts/)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _guarded(action: Callable[[], int]) -> int:
    """Run a command; turn the errors a user can fix into one clear message and exit code 2.

    Anything unexpected is reported in one line too, with its traceback in
    ``pipeline.log``, and exit code 1. A termination signal is handled like
    Ctrl-C, so temporary files are removed on the way out.
    """
    import signal

    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return action()
    except (ConfigError, PipelineError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; the stage that was running is left without a manifest and will rerun")
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line for the user, the rest in the log
        log.debug("unexpected error", exc_info=True)
        log.error("unexpected %s: %s (traceback in %s; please report it)", type(exc).__name__, exc,
                  paths.PIPELINE_LOG)
        return 1


def stage_main(stage: Stage, run: Callable[[StageContext], None], argv: list[str] | None = None) -> int:
    """Entry point of a numbered script: run that one stage (skipped if up to date)."""
    parser = argparse.ArgumentParser(prog=f"{stage.name}.py", description=stage.description)
    add_common_arguments(parser)
    parser.add_argument("--force", action="store_true", help="rerun even if up to date")
    args = parser.parse_args(argv)
    configure_logging(args.artifacts, args.verbose)

    def action() -> int:
        config = load_config(args.config)
        _check_artifacts_dir(args.artifacts)
        run_pipeline(config, args.artifacts, only=stage.name, force=args.force)
        return 0

    return _guarded(action)


def _check_artifacts_dir(artifacts_dir: Path) -> None:
    if Path(artifacts_dir).exists() and not Path(artifacts_dir).is_dir():
        raise PipelineError(f"--artifacts {artifacts_dir} is a file; give a folder (it is created if missing)")


def main(argv: list[str] | None = None) -> int:
    """``python -m core.pipeline``: run, status, show or score."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(prog="python -m core.pipeline",
                                     description="Run and inspect the segmentation pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser("run", help="run stages that are stale or missing")
    add_common_arguments(run_p)
    which = run_p.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
    which.add_argument("--only", metavar="STAGE", help="run only this stage")
    run_p.add_argument("--force", action="store_true", help="rerun even if up to date")
    status_p = commands.add_parser("status", help="show whether each stage is up to date, and why not")
    add_common_arguments(status_p)
    show_p = commands.add_parser("show", help="show a stage's manifest and the head of its tables")
    add_common_arguments(show_p)
    show_p.add_argument("stage", help="stage number or name")
    show_p.add_argument("--rows", type=int, default=5, help="rows shown per table (default 5)")
    score_p = commands.add_parser("score", help="score customers with the saved transforms and models")
    add_common_arguments(score_p)
    score_p.add_argument("input", type=Path, help="order lines (like transactions.parquet) or customer features "
                                                  "(like enriched_department.parquet), .parquet or .csv")
    score_p.add_argument("--output", type=Path, help="result file, .parquet or .csv (default: "
                                                     "<artifacts>/scores/<input name>.parquet)")
    score_p.add_argument("--analysis-date", help="for order lines: the day features are measured at, "
                                                 "YYYY-MM-DD (default: the last order date in the input)")
    args = parser.parse_args(argv)
    configure_logging(args.artifacts, args.verbose)

    def action() -> int:
        _check_artifacts_dir(args.artifacts)
        if args.command == "show":
            print(show_stage(resolve_stage_name(args.stage), args.artifacts, args.rows))
            return 0
        config = load_config(args.config)
        if args.command == "score":
            score_file(config, args.artifacts, args.input, args.output, args.analysis_date)
            return 0
        if args.command == "status":
            print(format_status(pipeline_status(config, args.artifacts)))
            return 0
        start = resolve_stage_name(args.start) if args.start else None
        only = resolve_stage_name(args.only) if args.only else None
        outcome = run_pipeline(config, args.artifacts, start=start, only=only, force=args.force)
        ran = [k for k, v in outcome.items() if v == "ran"]
        log.info("pipeline: %d stage(s) ran, %d up to date", len(ran), len(outcome) - len(ran))
        return 0

    return _guarded(action)


if __name__ == "__main__":
    sys.exit(main())
