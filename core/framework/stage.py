"""What a stage is, and the context its ``run`` function works through.

Each stage package (``core/<stage>/stage.py``) declares one :class:`Stage`:
its name, the config sections and upstream files it reads, and its ``run``
function. ``run(ctx)`` reads its inputs through the :class:`StageContext`,
calls the stage's code and writes its outputs through the context, which
makes every write atomic and records it for the manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable

import joblib
import pandas as pd

from core.framework import artifacts, paths
from core.framework.errors import PipelineError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """What a stage declares about itself.

    Attributes
    ----------
    name : str
        Script name without ``.py``; also the output folder.
    inputs : dict of str to tuple of str
        Upstream stage name -> files of that stage this stage reads.
    description : str
        One line for ``--help`` and ``status``.
    sections : tuple of str
        The config sections (and parsed files: ``hierarchy``, ``personas``,
        ``strategies``) the stage reads; a change to any makes it stale.
    run : callable
        ``run(ctx: StageContext) -> None``: reads, computes, writes.
    reads_source_files : bool
        True when the stage reads the retailer's files named in the config
        (their content is hashed into the manifest, so editing one makes the
        stage stale).
    """

    name: str
    inputs: dict[str, tuple[str, ...]]
    description: str
    sections: tuple[str, ...] = ()
    run: Callable[["StageContext"], None] | None = dataclasses.field(default=None, compare=False, repr=False)
    reads_source_files: bool = False


def config_hash(values: dict[str, Any]) -> str:
    """Stable SHA-256 of JSON-ready config values."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dates and paths as text, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (dt.date, Path)):
        return str(value)
    return value


def stage_config(config: Any, stage: Stage) -> dict[str, Any]:
    """The sections ``stage`` depends on, as JSON-ready plain data (``config.section(name)`` of each)."""
    return {name: plain(config.section(name)) for name in stage.sections}


def stage_source_files(config: Any, stage: Stage) -> dict[str, Path]:
    """Files outside the artifacts folder that ``stage`` reads as data (a retailer's log), by role."""
    return dict(config.source_files) if stage.reads_source_files else {}


@dataclasses.dataclass
class StageContext:
    """Everything a stage's ``run`` may touch: its config, its inputs, its outputs.

    Reads are limited to the declared inputs (and, through
    :meth:`read_previous`, to this stage's previous outputs that its
    previous manifest vouches for); writes go to the stage's folder,
    atomically, and are recorded for the manifest.
    """

    stage: Stage
    config: Any
    artifacts_dir: Path
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    config_hash: str = ""
    started_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: str = ""
    # The manifest of this stage's previous completed run, read before the runner removed it.
    previous_manifest: dict[str, Any] | None = None
    # Files of that run this run read (recorded in the new manifest as ``previous_run_inputs``).
    previous_inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

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
        """Load a declared joblib input (a fitted estimator), verified before it is unpickled.

        The file's bytes are hashed as they are read and compared with the
        hash the runner recorded for this input when the stage started (the
        upstream manifest's), and those same bytes are unpickled: the object
        loaded is the file that was checked.

        Raises
        ------
        PipelineError
            When the file is not the one the upstream stage recorded.
        """
        path = self.input_path(stage, file)
        record = next((r for r in self.inputs if r["stage"] == stage and r["file"] == file), None)
        return artifacts.load_verified(path, record["sha256"] if record else None, joblib.load, stage=stage)

    def read_previous(self, file: str, loader: Callable[[Any], Any]) -> Any | None:
        """Load ``file`` as this stage's previous run left it, if that run's manifest vouches for it.

        For what a stage carries over from its own last run (stage 04's
        segment ids). The file is read only when the previous manifest lists
        it, and its bytes are checked against the recorded SHA-256 before
        ``loader(binary file object)`` sees them; each file read is recorded
        in the new manifest under ``previous_run_inputs``.

        Returns
        -------
        The loaded value, or None when there was no completed previous run,
        its manifest does not list the file, or the file is gone.

        Raises
        ------
        PipelineError
            When the file is not the one the previous run recorded.
        """
        path = self.output_dir / file
        record = artifacts.recorded_output(self.previous_manifest, file)
        if record is None:
            if path.exists():
                log.warning("%s not used: %s", path, "the previous run did not complete (no manifest)"
                            if self.previous_manifest is None else "the previous manifest does not list it")
            return None
        if not path.exists():
            return None
        # The runner removed that manifest before this run started, so a rerun never reads these files again.
        fix = (f"{artifacts.rerun_hint(self.stage.name)}; that run starts afresh: no manifest vouches for "
               f"the previous run's files any more, so they are not read")
        data = artifacts.read_verified(path, record["sha256"], stage=self.stage.name, fix=fix)
        value = loader(io.BytesIO(data))
        self.previous_inputs.append({"stage": f"{self.stage.name} (previous run)", "file": file,
                                     "sha256": record["sha256"], "bytes": len(data), "rows": record.get("rows"),
                                     "run_started_at": self.previous_manifest.get("started_at")})
        return value

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

