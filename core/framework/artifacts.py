"""Writing artifacts atomically, hashing them, and reading and writing manifests.

A stage never writes in place: each file goes to a hidden temporary name in
the same folder and is renamed over the target only once complete, so a
killed stage leaves either the old file or the new one, never half of one.
The manifest is written last and removed first, which makes it the marker
of a completed stage.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from core.framework import paths
from core.framework.errors import PipelineError

LIBRARIES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "scikit-fuzzy", "hdbscan",
             "keras", "tensorflow-cpu", "tensorflow", "pyyaml", "joblib", "matplotlib", "pandera", "duckdb")


def temporary_path(target: Path) -> Path:
    """Hidden sibling of ``target`` keeping its suffix (Keras insists on ``.keras``)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {target}")
        try:
            os.replace(tmp, target)
        except PermissionError:
            # Windows refuses to replace a file another program holds open.
            raise PipelineError(f"cannot replace {target}: another program has it open (a spreadsheet, "
                                f"an editor, a virus scanner?); close it and run the stage again") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(target: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def code_hash() -> str:
    """Hash of the pipeline's code: every numbered script and every module under ``core/``.

    A code change makes every stage stale, which is coarse but never wrong.
    """
    digest = hashlib.sha256()
    files = sorted(paths.REPO_ROOT.glob("0[0-9]_*.py")) + sorted((paths.REPO_ROOT / "core").rglob("*.py"))
    for path in files:
        digest.update(path.relative_to(paths.REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()


def describe_file(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """Name, size, modification time, hash and (for tables) row count of a file."""
    path = Path(path)
    stat = path.stat()
    return {
        "file": path.name,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256 or file_sha256(path),
        "rows": count_rows(path),
    }


def describe_source(role: str, path: Path) -> dict[str, Any]:
    """A data file from outside the artifacts folder (a retailer's log): role, path, size, mtime and hash.

    Rows are not counted: the file may be large, and may not even be readable text.
    """
    stat = Path(path).stat()
    return {"role": role, "file": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": file_sha256(path)}


def count_rows(path: Path) -> int | None:
    """Rows of a Parquet or CSV file; ``None`` for other files."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".csv":
        # csv.reader, not line counting: a quoted field may hold a line break.
        with open(path, newline="", encoding="utf-8") as handle:
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    return None


def current_sha256(path: Path, recorded: dict[str, Any] | None) -> str:
    """Hash of ``path``, reusing ``recorded`` when size and mtime are unchanged."""
    stat = Path(path).stat()
    if recorded and recorded.get("bytes") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
        return recorded["sha256"]
    return file_sha256(path)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the pipeline uses (no imports needed)."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_manifest(stage_folder: Path) -> dict[str, Any] | None:
    """The manifest of a completed stage, or ``None`` if it has none (never ran or did not finish)."""
    path = Path(stage_folder) / paths.MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # only possible if edited by hand: treat the stage as not completed
    return manifest if _well_formed(manifest) else None


_FILE_RECORD_KEYS = {"file", "bytes", "mtime_ns", "sha256"}


def _well_formed(manifest: Any) -> bool:
    """A manifest the runner can trust the shape of (a hand-edited one may not be)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stage"), str):
        return False
    for key, required in (("outputs", _FILE_RECORD_KEYS), ("inputs", _FILE_RECORD_KEYS | {"stage"})):
        records = manifest.get(key)
        if not isinstance(records, list) or not all(isinstance(r, dict) and required <= set(r) for r in records):
            return False
    return True


def json_text(value: Any) -> str:
    """Indented JSON text (numpy scalars, dates and paths written as plain values)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def write_json(target: Path, value: Any) -> Path:
    """Write JSON (UTF-8, indented) atomically."""
    text = json_text(value)
    # newline="\n": the same bytes, and so the same hash, on Windows as elsewhere.
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
