"""Unit tests of core/framework/artifacts.py: atomic writes, hashing, verified loading, manifests."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pandas as pd
import pytest

from core.framework import artifacts, paths
from core.framework.errors import PipelineError


def leftovers(folder):
    """Hidden temporary files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


# --- atomic writes -----------------------------------------------------------------------------

def test_write_atomic_replaces_the_target_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "table.csv"  # the folder is created
    artifacts.write_atomic(target, lambda tmp: tmp.write_text("old\n"))
    result = artifacts.write_atomic(target, lambda tmp: tmp.write_text("new\n"))

    assert result == target
    assert target.read_text() == "new\n"
    assert leftovers(target.parent) == []
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_failed_writer_leaves_the_old_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def half_a_file(tmp):
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        artifacts.write_atomic(target, half_a_file)
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_failed_writer_creates_no_target(tmp_path):
    target = tmp_path / "model.pkl"
    with pytest.raises(ValueError, match="boom"):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"12")
            raise ValueError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "table.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer produced no file for .*table.parquet"):
        artifacts.write_atomic(target, lambda tmp: None)
    assert target.read_text() == "old"


def test_atomic_path_yields_a_hidden_sibling_keeping_the_suffix(tmp_path):
    target = tmp_path / "autoencoder-model.keras"
    with artifacts.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".") and tmp.name != target.name
        assert tmp.suffix == ".keras"
        assert not target.exists()  # nothing at the target until the block succeeds
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    assert artifacts.temporary_path(tmp_path / "a.tar.gz").name.endswith(".gz")


def test_write_json_round_trips_through_read_manifest(tmp_path):
    manifest = {"stage": "x", "currency": "£", "inputs": [], "outputs": [
        {"file": "a.csv", "bytes": 3, "mtime_ns": 1, "sha256": "0" * 64, "rows": 1}]}
    artifacts.write_json(tmp_path / paths.MANIFEST, manifest)
    assert artifacts.read_manifest(tmp_path) == manifest
    assert b"\r\n" not in (tmp_path / paths.MANIFEST).read_bytes()


@pytest.mark.parametrize("manifest", [
    {"stage": "x", "inputs": [], "outputs": [{"file": "basic.parquet"}]},
    {"stage": "x", "outputs": []},
    {"inputs": [], "outputs": []},
    [],
])
def test_read_manifest_of_a_hand_edited_manifest_missing_keys_is_none(tmp_path, manifest):
    """A manifest whose records lack hashes cannot vouch for anything: the stage counts as not completed."""
    artifacts.write_json(tmp_path / paths.MANIFEST, manifest)
    assert artifacts.read_manifest(tmp_path) is None


# --- hashing -----------------------------------------------------------------------------------

def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3000)
    path.write_bytes(data)
    assert artifacts.file_sha256(path) == hashlib.sha256(data).hexdigest()
    # Reading in small chunks gives the same digest.
    assert artifacts.file_sha256(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest()


def test_current_sha256_reuses_the_recorded_hash_when_size_and_mtime_match(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,2\n")  # bytes: write_text would write CRLF on Windows
    stat = path.stat()
    recorded = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "recorded-hash"}
    # A recorded hash that is not the file's: returned as is, so the file was not read.
    assert artifacts.current_sha256(path, recorded) == "recorded-hash"


def test_current_sha256_rehashes_a_changed_file(tmp_path):
    # Bytes, not text, wherever a hash is compared: write_text writes CRLF on Windows.
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,2\n")
    stat = path.stat()
    recorded = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "recorded-hash"}

    path.write_bytes(b"a,b\n1,3\n")  # same size, new content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert artifacts.current_sha256(path, recorded) == hashlib.sha256(b"a,b\n1,3\n").hexdigest()

    path.write_bytes(b"a,b\n1,3\n4,5\n")  # another size
    assert artifacts.current_sha256(path, recorded) == hashlib.sha256(b"a,b\n1,3\n4,5\n").hexdigest()
    assert artifacts.current_sha256(path, None) == hashlib.sha256(b"a,b\n1,3\n4,5\n").hexdigest()


def test_current_sha256_never_trusts_size_and_mtime_for_a_file_that_will_be_loaded(tmp_path):
    """A pickle or .keras file replaced with the same size and its mtime put back is still seen as changed."""
    for name in ("kmeans-raw.pkl", "model.joblib", "autoencoder-model.keras"):
        path = tmp_path / name
        path.write_bytes(b"original bytes")
        stat = path.stat()
        recorded = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": artifacts.file_sha256(path)}
        path.write_bytes(b"replaced bytes")  # same size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert artifacts.current_sha256(path, recorded) == hashlib.sha256(b"replaced bytes").hexdigest(), name


def test_load_output_reads_only_what_the_manifest_lists_with_its_hash(tmp_path):
    folder = paths.stage_dir(tmp_path, paths.CLUSTER)
    folder.mkdir(parents=True)
    (folder / "kmeans-raw.pkl").write_bytes(b"model bytes")
    (folder / "extra.pkl").write_bytes(b"not in the manifest")
    with pytest.raises(PipelineError, match="stage 04_cluster has not completed"):
        artifacts.load_output(tmp_path, paths.CLUSTER, "kmeans-raw.pkl", lambda handle: handle.read())
    artifacts.write_json(folder / paths.MANIFEST, {"stage": paths.CLUSTER, "inputs": [], "outputs": [
        artifacts.describe_file(folder / "kmeans-raw.pkl")]})
    assert artifacts.load_output(tmp_path, paths.CLUSTER, "kmeans-raw.pkl",
                                 lambda handle: handle.read()) == b"model bytes"
    # A loader that needs a file name gets a private copy of the verified bytes, not the original path.
    copy = artifacts.load_output(tmp_path, paths.CLUSTER, "kmeans-raw.pkl", lambda p: (p, p.read_bytes()),
                                 as_file=True)
    assert copy[1] == b"model bytes" and copy[0].parent != folder and copy[0].name == "kmeans-raw.pkl"
    with pytest.raises(PipelineError, match=r"extra.pkl is not listed in the manifest of stage 04_cluster"):
        artifacts.load_output(tmp_path, paths.CLUSTER, "extra.pkl", lambda handle: handle.read())
    (folder / "kmeans-raw.pkl").write_bytes(b"model bytez")
    with pytest.raises(PipelineError, match=r"kmeans-raw.pkl is not the file stage 04_cluster wrote"):
        artifacts.load_output(tmp_path, paths.CLUSTER, "kmeans-raw.pkl", lambda handle: handle.read())


# --- folders that cannot be written ------------------------------------------------------------

def test_a_path_through_a_file_is_a_clear_stop(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_bytes(b"a file")
    with pytest.raises(PipelineError, match=r"cannot use .*sub as a folder: .*notes.txt is a file"):
        artifacts.ensure_writable_folder(blocker / "sub")
    with pytest.raises(PipelineError, match=r"cannot use .*notes.txt as a folder"):
        artifacts.write_atomic(blocker / "out.csv", lambda tmp: tmp.write_bytes(b"x"))


def test_a_writer_refused_permission_is_a_clear_stop_naming_the_file(tmp_path):
    def refused(tmp):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(PipelineError, match=r"cannot write .*table.parquet: Permission denied"):
        artifacts.write_atomic(tmp_path / "table.parquet", refused)
    assert leftovers(tmp_path) == []


# --- describe_file -----------------------------------------------------------------------------

def test_describe_file_counts_parquet_rows(tmp_path):
    path = tmp_path / "customers.parquet"
    pd.DataFrame({"customer_id": range(17), "x": [0.5] * 17}).to_parquet(path)
    described = artifacts.describe_file(path)
    assert described["file"] == "customers.parquet"
    assert described["rows"] == 17
    assert described["bytes"] == path.stat().st_size
    assert described["mtime_ns"] == path.stat().st_mtime_ns
    assert described["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_describe_file_counts_csv_rows_without_the_header(tmp_path):
    path = tmp_path / "comparison.csv"
    pd.DataFrame({"method": ["gmm", "kmeans", "fcm"], "clusters": [4, 5, 6]}).to_csv(path, index=False)
    assert artifacts.describe_file(path)["rows"] == 3
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert artifacts.describe_file(empty)["rows"] == 0


def test_describe_file_has_no_rows_for_other_files_and_keeps_a_given_hash(tmp_path):
    path = tmp_path / "autoencoder-model.keras"
    path.write_bytes(b"not a table")
    described = artifacts.describe_file(path, sha256="given")
    assert described["rows"] is None
    assert described["sha256"] == "given"


# --- manifests ---------------------------------------------------------------------------------

def test_read_manifest_of_a_stage_that_never_ran_is_none(tmp_path):
    assert artifacts.read_manifest(tmp_path / "04_cluster") is None
    assert artifacts.read_manifest(tmp_path) is None


@pytest.mark.parametrize("text", ['{"stage": "01_generate_data", "outputs": [', "", "not json at all"])
def test_read_manifest_of_a_corrupt_manifest_is_none(tmp_path, text):
    (tmp_path / paths.MANIFEST).write_text(text, encoding="utf-8")
    assert artifacts.read_manifest(tmp_path) is None


def test_read_manifest_of_a_manifest_saved_in_another_encoding_is_none(tmp_path):
    """A manifest hand-edited and saved as cp1252 (the config's currency "£" becomes byte 0xA3).

    The docstring treats a hand-edited, unreadable manifest as "stage not completed";
    the pipeline status and run commands should then rerun the stage, not crash.
    """
    text = json.dumps({"stage": "05_profile_export", "config": {"currency": "£"}}, ensure_ascii=False)
    (tmp_path / paths.MANIFEST).write_bytes(text.encode("cp1252"))
    assert artifacts.read_manifest(tmp_path) is None
