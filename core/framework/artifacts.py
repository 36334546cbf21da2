"""Writing artifacts atomically, hashing them, and reading and writing manifests.

A stage never writes in place: each file goes to a hidden temporary name in
the same folder and is renamed over the target only once complete, so a
killed stage leaves either the old file or the new one, never half of one.
The manifest is written last and removed first, which makes it the marker
of a completed stage.

Nothing is deserialised before it is verified: :func:`load_verified` reads a
file's bytes, compares their SHA-256 with the one a manifest recorded, and
only then hands those same bytes to the loader (a pickle runs code when it
is loaded; see docs/decisions.md, "Hardening").
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

import pyarrow.parquet as pq

from core.framework import paths
from core.framework.errors import PipelineError

T = TypeVar("T")

#: Files whose loading runs code (pickles) or rebuilds objects from a stored config (Keras): hashed in
#: full whenever they are checked, never vouched for by an unchanged size and modification time.
LOADABLE_SUFFIXES = (".pkl", ".joblib", ".keras")

# Errors that mean "this place cannot be written" (not a bug): reported as a PipelineError naming it.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR,
               getattr(errno, "EDQUOT", errno.ENOSPC)}  # EDQUOT: not in every platform's errno

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
    ensure_folder(target.parent)
    tmp = temporary_path(target)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            raise PipelineError(f"cannot write {target}: {exc.strerror or exc}"
                                f"{f' ({exc.filename})' if exc.filename else ''}; {_WRITABLE_FIX}") from exc
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
    """Hash of ``path``, reusing ``recorded`` when size and mtime are unchanged.

    Except for files that will be loaded (:data:`LOADABLE_SUFFIXES`): those
    are always hashed in full, because a replacement of the same size with
    its modification time set back (``touch -r``, ``os.utime``) would pass
    the shortcut. Tables keep it: ``status`` on a large run stays fast, and
    a table is only ever read as data.
    """
    path = Path(path)
    if path.suffix.lower() not in LOADABLE_SUFFIXES:
        stat = path.stat()
        if recorded and recorded.get("bytes") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
            return recorded["sha256"]
    return file_sha256(path)


# ---------------------------------------------------------------------------
# Verified loading


def rerun_hint(stage: str) -> str:
    """How to rerun ``stage`` (the caller's --config and --artifacts still apply)."""
    number = stage[:2]
    return (f"rerun stage {stage}: `run.bat run --from {number} --force` (`./run.sh run --from {number} --force` "
            f"on Linux and macOS), with the same --config and --artifacts")


def read_verified(path: Path, expected_sha256: str | None, *, stage: str, fix: str | None = None) -> bytes:
    """The bytes of ``path``, once their SHA-256 is the one ``stage``'s manifest recorded.

    Parameters
    ----------
    path : Path
        The file to read.
    expected_sha256 : str or None
        The hash the manifest of ``stage`` recorded for it; None when the
        manifest does not list the file (nothing vouches for it).
    stage : str
        The stage that wrote the file, named in the error and its fix.
    fix : str, optional
        What to do when the file is not the one recorded (default: rerun ``stage``).

    Raises
    ------
    PipelineError
        When the file is missing, unreadable, not in the manifest, or not the
        bytes the manifest recorded. Nothing has been deserialised then.
    """
    path = Path(path)
    if expected_sha256 is None:
        raise PipelineError(f"{path} is not listed in the manifest of stage {stage}, so nothing vouches for its "
                            f"content; it was not loaded. {rerun_hint(stage)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path} is missing although stage {stage}'s manifest lists it; "
                            f"{rerun_hint(stage)}") from None
    except OSError as exc:
        raise PipelineError(f"cannot read {path} ({exc.strerror or exc}); check its permissions, or "
                            f"{rerun_hint(stage)}") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise PipelineError(f"{path} is not the file stage {stage} wrote (its SHA-256 differs from the one in "
                            f"{stage}/{paths.MANIFEST}): it was replaced or edited after the run, and was not "
                            f"loaded. {fix or rerun_hint(stage)}")
    return data


def load_verified(path: Path, expected_sha256: str | None, loader: Callable[[Any], T], *, stage: str,
                  as_file: bool = False) -> T:
    """Verify ``path`` against the hash its manifest recorded, then load those same bytes.

    The whole file is read and hashed first (no size-and-mtime shortcut),
    and the loader gets the bytes that were hashed, never the path: a file
    swapped between the check and the load is never the one loaded.

    Parameters
    ----------
    path, expected_sha256, stage
        As for :func:`read_verified`.
    loader : callable
        ``loader(binary file object)``, e.g. ``joblib.load``; with
        ``as_file``, ``loader(path of a private copy)`` for libraries that
        insist on a file name (Keras).
    as_file : bool
        Write the verified bytes to a private temporary folder (same file
        name) and pass that path.

    Returns
    -------
    Whatever ``loader`` returns.
    """
    data = read_verified(path, expected_sha256, stage=stage)
    if not as_file:
        handle: BinaryIO = io.BytesIO(data)
        return loader(handle)
    with tempfile.TemporaryDirectory(prefix="verified-", ignore_cleanup_errors=True) as private:
        copy = Path(private) / Path(path).name
        copy.write_bytes(data)
        return loader(copy)


def recorded_output(manifest: dict[str, Any] | None, file: str) -> dict[str, Any] | None:
    """The manifest's record of output ``file``, or None when the manifest (or the record) is absent."""
    if manifest is None:
        return None
    return next((r for r in manifest.get("outputs", []) if r.get("file") == file), None)


def load_output(artifacts_dir: Path, stage: str, file: str, loader: Callable[[Any], T], *,
                as_file: bool = False) -> T:
    """Load output ``file`` of a completed ``stage``, verified against that stage's manifest.

    Raises
    ------
    PipelineError
        When the stage has not completed, the manifest does not list the
        file, or the file is not the one recorded.
    """
    folder = paths.stage_dir(artifacts_dir, stage)
    manifest = read_manifest(folder)
    if manifest is None:
        raise PipelineError(f"stage {stage} has not completed in {artifacts_dir} (no {paths.MANIFEST}), so "
                            f"nothing vouches for {folder / file}; it was not loaded. Run stage {stage} first")
    record = recorded_output(manifest, file)
    return load_verified(folder / file, record["sha256"] if record else None, loader, stage=stage,
                         as_file=as_file)


# ---------------------------------------------------------------------------
# Folders that must be writable

_WRITABLE_FIX = ("make the folder writable (its permissions; a read-only or full disk), or give another "
                 "artifacts folder with --artifacts")


def _file_in_the_way(folder: Path) -> Path | None:
    """The file (not folder) standing at ``folder`` or at one of its parents, if any."""
    for candidate in (folder, *folder.parents):
        try:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        except OSError:
            return None
    return None


def ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) if needed; stop with a clear message when it cannot be made.

    Raises
    ------
    PipelineError
        Naming the folder, and the file in the way when a path component is
        a file (``--artifacts report.txt/sub``).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _file_in_the_way(folder)
        if blocker is not None:
            raise PipelineError(f"cannot use {folder} as a folder: {blocker} is a file. Give a folder path "
                                f"(with --artifacts; it is created if missing), or move that file") from None
        raise PipelineError(f"cannot create {folder}: {exc.strerror or exc}; {_WRITABLE_FIX}") from None
    return folder


def ensure_writable_folder(folder: Path) -> Path:
    """:func:`ensure_folder`, then prove a file can be created in it (a read-only folder stops here).

    A probe file is created and removed: permission bits alone do not say
    (a read-only mount, ACLs on Windows, root ignoring them).
    """
    folder = ensure_folder(folder)
    probe = folder / f".write-test.tmp{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as exc:
        raise PipelineError(f"cannot write in {folder}: {exc.strerror or exc}; {_WRITABLE_FIX}") from None
    return folder


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
