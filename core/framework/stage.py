"""What a stage is, and the context its ``run`` function works through.

Each stage package (``core/<stage>/stage.py``) declares one :class:`Stage`:
its name, the config sections and upstream files it reads, and its ``run``
function. ``run(ctx)`` reads its inputs through the :class:`StageContext`,
calls the stage's code and writes its outputs through the context, which
makes every write atomic and records it for the manifest. Every file read
or written is one the artifact catalog (:mod:`core.framework.catalog`)
declares, and is read or written by its declared format.
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

import pandas as pd

from core.framework import artifacts, catalog, paths
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
    atomically, and are recorded for the manifest. A file the artifact
    catalog does not declare for this stage, or declares in another format,
    is never written (a bug in the stage code).
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

    def read(self, stage: str, file: str, **options: Any) -> Any:
        """Read a declared input with the reader of its catalog format.

        A verified format (joblib) is hashed as it is read and compared with
        the hash the runner recorded for this input when the stage started
        (the upstream manifest's), and those same bytes are loaded: the
        object loaded is the file that was checked.

        Parameters
        ----------
        stage, file : str
            The upstream stage and one of its files this stage declares as an input.
        **options
            Passed to the format's reader (``columns=`` for Parquet).

        Raises
        ------
        PipelineError
            When the input is not declared, the catalog has no generic reader
            for its format (Keras), or a verified file is not the one recorded.
        """
        return self._read(stage, file, None, **options)

    def _read(self, stage: str, file: str, format: str | None, **options: Any) -> Any:
        path = self.input_path(stage, file)
        entry = catalog.find(stage, file)
        if entry is None or entry.stage != stage:
            raise PipelineError(f"{self.stage.name} reads {stage}/{file}, which the artifact catalog does not "
                                f"declare as an output of {stage} (a bug in the stage code)")
        if format is not None and entry.format != format:
            raise PipelineError(f"{self.stage.name} reads {stage}/{file} as {format}, but the artifact catalog "
                                f"declares it as {entry.format} (a bug in the stage code)")
        record = next((r for r in self.inputs if r["stage"] == stage and r["file"] == file), None)
        return catalog.read_file(path, entry.format, sha256=record["sha256"] if record else None, stage=stage,
                                 **options)

    def read_parquet(self, stage: str, file: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a declared Parquet input."""
        return self._read(stage, file, "parquet", columns=columns)

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
        """Load a declared joblib input (a fitted estimator), verified before it is unpickled (see :meth:`read`).

        Raises
        ------
        PipelineError
            When the file is not the one the upstream stage recorded.
        """
        return self._read(stage, file, "joblib")

    def read_previous(self, file: str, loader: Callable[[Any], Any] | None = None) -> Any | None:
        """Load ``file`` as this stage's previous run left it, if that run's manifest vouches for it.

        For what a stage carries over from its own last run (stage 04's
        segment ids). The file is read only when the previous manifest lists
        it, and its bytes are checked against the recorded SHA-256 before
        ``loader(binary file object)`` (default: the reader of the file's
        catalog format) sees them; each file read is recorded in the new
        manifest under ``previous_run_inputs``.

        Returns
        -------
        The loaded value, or None when there was no completed previous run,
        its manifest does not list the file, or the file is gone.

        Raises
        ------
        PipelineError
            When the file is not the one the previous run recorded.
        """
        entry = catalog.find(self.stage.name, file)
        if entry is None or entry.stage != self.stage.name:
            raise PipelineError(f"{self.stage.name} reads its previous run's {file}, which the artifact catalog "
                                f"does not declare as one of its outputs (a bug in the stage code)")
        if loader is None:
            loader = catalog.FORMATS[entry.format].read
            if loader is None:
                raise PipelineError(f"{file} ({entry.format}) has no generic reader; pass the stage's loader")
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
        return self._read(stage, file, "json")

    def write_with(self, file: str, writer: Callable[[Path], None]) -> Path:
        """Write an output by calling ``writer(tmp_path)``; renamed into place when done.

        For files the stage's own code writes (a Keras model, a chart, Parquet
        written batch by batch); the file must still be one the catalog
        declares for this stage.

        Raises
        ------
        PipelineError
            When the catalog does not declare ``file`` for this stage.
        """
        catalog.stage_output(self.stage.name, file)
        return self._write(file, writer)

    def _write(self, file: str, writer: Callable[[Path], None]) -> Path:
        target = self.output_dir / file
        artifacts.write_atomic(target, writer)
        self.outputs[file] = artifacts.file_sha256(target)
        return target

    def write(self, file: str, value: Any) -> Path:
        """Write ``value`` with the writer of ``file``'s catalog format (a DataFrame, a dict, an estimator, text).

        Raises
        ------
        PipelineError
            When the catalog does not declare ``file`` for this stage, or its
            format has no generic writer (Keras, PNG: use :meth:`write_with`).
        """
        return self._write_as(file, None, value)

    def _write_as(self, file: str, format: str | None, value: Any) -> Path:
        entry = catalog.stage_output(self.stage.name, file, format)
        write = catalog.FORMATS[entry.format if format is None else format].write
        if write is None:
            raise PipelineError(f"{file} ({entry.format}) has no generic writer: the stage's code writes it "
                                f"with write_with (a bug in the stage code)")
        return self._write(file, lambda tmp: write(value, tmp))

    def write_parquet(self, file: str, frame: pd.DataFrame) -> Path:
        """Write a table as Parquet (no index)."""
        return self._write_as(file, "parquet", frame)

    def parquet_bytes(self, file: str, frame: pd.DataFrame, dictionary: list[str] | None = None,
                      statistics: list[str] | None = None) -> bytes:
        """The bytes :meth:`write_parquet` would write for ``frame``, encoded now, to write later with
        :meth:`write_bytes`: a stage encodes a large table in a thread while it checks what it writes first.
        Touches nothing of the context but the catalog, so any thread may call it.

        ``dictionary`` and ``statistics`` (optional): the only columns dictionary-encoded and given min/max
        statistics (default: every column, as :meth:`write_parquet`; an empty list: none). Other bytes, the same
        values read back: on a table of millions of rows whose ids and scores rarely repeat, trying a
        dictionary and keeping statistics for those columns is about half of the encoding and helps no reader.
        """
        catalog.stage_output(self.stage.name, file, "parquet")
        options = {} if dictionary is None else {"use_dictionary": dictionary or False}
        options.update({} if statistics is None else {"write_statistics": statistics or False})
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, **options)
        return buffer.getvalue()

    def write_bytes(self, file: str, data: bytes) -> Path:
        """Write ``data`` (from :meth:`parquet_bytes`) as ``file``, atomically, recorded like any output."""
        catalog.stage_output(self.stage.name, file)
        return self._write(file, lambda tmp: tmp.write_bytes(data))

    def write_csv(self, file: str, frame: pd.DataFrame) -> Path:
        """Write a table as UTF-8 CSV (no index)."""
        return self._write_as(file, "csv", frame)

    def write_joblib(self, file: str, value: Any) -> Path:
        """Pickle a fitted estimator with joblib."""
        return self._write_as(file, "joblib", value)

    def write_text(self, file: str, text: str) -> Path:
        """Write UTF-8 text the stage rendered itself, to a file of a text format (YAML, HTML, text)."""
        return self._write_as(file, "text", text)

    def write_json(self, file: str, value: Any) -> Path:
        """Write indented UTF-8 JSON."""
        return self._write_as(file, "json", value)

