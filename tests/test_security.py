"""Hardening (issue 12), each test written from the attack it stops.

- A replaced model is never deserialised: the tampered pickles here would
  create a marker file when unpickled, and every test asserts that the file
  never appears and that the command stops with exit code 2 naming the file.
- One run per artifacts folder: a second run stops naming the holder; a
  lock left by a dead process is taken over.
- An artifacts folder that cannot be written, or is not a folder, and a
  damaged table are clear stops (exit code 2), not tracebacks.

Tests that need a finished run copy the session's run (``pipeline_run`` of
tests/test_pipeline.py) instead of running the pipeline again.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pytest

from core.cluster.settings import fitted_pairs
from core.config import load_config
from core.framework import artifacts, cli, lock, paths
from core.framework.errors import PipelineError
from core.framework.processes import process_alive
from core.framework.stage import Stage, StageContext
from core.pipeline import main, run_pipeline
from test_pipeline import copy_run, pipeline_run, rerun_with  # noqa: F401 - pipeline_run is a fixture

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: the file appearing proves the pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(path: Path, marker: Path) -> None:
    """Replace ``path`` by the payload, padded to the same size, with its modification time put back."""
    before = path.stat()
    payload = pickle.dumps(CreatesFile(marker), protocol=2)
    assert len(payload) < before.st_size
    path.write_bytes(payload + b"\0" * (before.st_size - len(payload)))  # unpickling stops at STOP
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def cli_args(config_path: Path, artifacts_dir: Path) -> list[str]:
    return ["--config", str(config_path), "--artifacts", str(artifacts_dir)]


def test_the_payload_runs_code_when_unpickled_unverified(tmp_path):
    """The attack is real: joblib.load of the planted file creates the marker (so the tests below can fail)."""
    path, marker = tmp_path / "model.pkl", tmp_path / "pwned"
    joblib.dump(list(range(1000)), path)
    plant_payload(path, marker)
    joblib.load(path)
    assert marker.exists()


# --- verified loading ----------------------------------------------------------------------------


def test_load_verified_refuses_other_bytes_before_unpickling(tmp_path):
    path, marker = tmp_path / "model.pkl", tmp_path / "pwned"
    model = {"weights": list(range(100))}
    joblib.dump(model, path)
    recorded = artifacts.file_sha256(path)
    assert artifacts.load_verified(path, recorded, joblib.load, stage="04_cluster") == model
    plant_payload(path, marker)
    with pytest.raises(PipelineError, match=r"model.pkl is not the file stage 04_cluster wrote .*was not loaded"
                                            r".*rerun stage 04_cluster"):
        artifacts.load_verified(path, recorded, joblib.load, stage="04_cluster")
    with pytest.raises(PipelineError, match=r"model.pkl is not listed in the manifest of stage 04_cluster"):
        artifacts.load_verified(path, None, joblib.load, stage="04_cluster")
    assert not marker.exists()


def test_current_sha256_hashes_model_files_in_full_even_with_the_recorded_size_and_mtime(tmp_path):
    path, marker = tmp_path / "kmeans-raw.pkl", tmp_path / "pwned"
    joblib.dump(list(range(1000)), path)
    original = path.stat()
    recorded = {"bytes": original.st_size, "mtime_ns": original.st_mtime_ns, "sha256": artifacts.file_sha256(path)}
    plant_payload(path, marker)
    assert artifacts.current_sha256(path, recorded) == artifacts.file_sha256(path) != recorded["sha256"]


def test_read_joblib_checks_the_bytes_it_unpickles_against_the_hash_taken_when_the_stage_started(tmp_path):
    """A scaler swapped after the runner checked the stage's inputs (and before the stage reads it) is refused."""
    upstream = paths.stage_dir(tmp_path, paths.PREPARE_FEATURES)
    upstream.mkdir(parents=True)
    scaler, marker = upstream / paths.FEATURE_SCALER, tmp_path / "pwned"
    fitted = {"columns": [f"feature_{i}" for i in range(40)]}
    joblib.dump(fitted, scaler)
    stage = Stage(name=paths.PROFILE_EXPORT, inputs={paths.PREPARE_FEATURES: (paths.FEATURE_SCALER,)},
                  description="test")
    ctx = StageContext(stage=stage, config=None, artifacts_dir=tmp_path,
                       inputs=[{"stage": paths.PREPARE_FEATURES, **artifacts.describe_file(scaler)}])
    assert ctx.read_joblib(paths.PREPARE_FEATURES, paths.FEATURE_SCALER) == fitted
    plant_payload(scaler, marker)
    with pytest.raises(PipelineError, match=r"feature-scaler.pkl is not the file stage 02_prepare_features wrote"):
        ctx.read_joblib(paths.PREPARE_FEATURES, paths.FEATURE_SCALER)
    assert not marker.exists()


def test_score_refuses_a_tampered_cluster_model_with_the_same_size_and_mtime(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    model, marker = paths.stage_dir(artifacts_dir, paths.CLUSTER) / "kmeans-raw.pkl", tmp_path / "pwned"
    plant_payload(model, marker)
    source = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT
    code = main(["score", str(source), "--output", str(tmp_path / "out.parquet"),
                 *cli_args(config_path, artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert f"{model} is not the file stage 04_cluster wrote" in err and "rerun stage 04_cluster" in err
    assert not (tmp_path / "out.parquet").exists() and "Traceback" not in err


def test_status_shows_a_same_size_same_mtime_replacement_as_stale(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    marker = tmp_path / "pwned"
    plant_payload(paths.stage_dir(artifacts_dir, paths.CLUSTER) / "kmeans-raw.pkl", marker)
    plant_payload(paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.FEATURE_SCALER, marker)
    assert main(["status", *cli_args(config_path, artifacts_dir)]) == 0
    out = capsys.readouterr().out
    assert "output kmeans-raw.pkl was changed after the run" in out
    assert "output feature-scaler.pkl was changed after the run" in out
    assert "input 02_prepare_features/feature-scaler.pkl changed" in out  # stage 05 reads it
    assert not marker.exists()


@pytest.mark.parametrize("command", ["score", "run"])
def test_a_tampered_feature_scaler_is_never_unpickled(pipeline_run, tmp_path, capsys, command):
    """Stage 05 (its only stage reader; stages 03 and 04 read features.parquet) and score both refuse it."""
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    scaler, marker = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.FEATURE_SCALER, tmp_path / "pwned"
    plant_payload(scaler, marker)
    if command == "score":
        source = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT
        argv = ["score", str(source), "--output", str(tmp_path / "out.parquet")]
    else:
        argv = ["run", "--only", "5", "--force"]  # past the stale stage 02 warning, straight to its reader
    code = main([*argv, *cli_args(config_path, artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(scaler) in err and "02_prepare_features" in err and "Traceback" not in err


def test_run_refuses_a_tampered_previous_model_used_for_segment_id_matching(pipeline_run, tmp_path, capsys):
    """assignments.parquet deleted, so stage 04 falls back on its previous raw-space models to match ids."""
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    (folder / paths.ASSIGNMENTS).unlink()
    model, marker = folder / "kmeans-raw.pkl", tmp_path / "pwned"
    plant_payload(model, marker)
    code = main(["run", *cli_args(config_path, artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert f"{model} is not the file stage 04_cluster wrote" in err and "rerun stage 04_cluster" in err
    # As the message says, the rerun starts afresh: no manifest vouches for the previous files any more.
    assert main(["run", *cli_args(config_path, artifacts_dir)]) == 0
    assert not marker.exists()
    manifest = artifacts.read_manifest(folder)
    assert manifest["previous_run_inputs"] == []


def test_previous_run_files_used_for_id_matching_are_verified_and_recorded(pipeline_run, tmp_path):
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path,
                                            lambda d: d["cluster"]["kmeans"].update(n_init=2))
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    before = artifacts.read_manifest(folder)
    recorded = {r["file"]: r["sha256"] for r in before["outputs"]}
    run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    used = artifacts.read_manifest(folder)["previous_run_inputs"]
    assert [(r["stage"], r["file"], r["sha256"]) for r in used] == \
        [("04_cluster (previous run)", paths.ASSIGNMENTS, recorded[paths.ASSIGNMENTS])]
    assert used[0]["run_started_at"] == before["started_at"]

    # Without assignments, the raw-space models match the ids: each one read is recorded.
    (folder / paths.ASSIGNMENTS).unlink()
    before = artifacts.read_manifest(folder)
    run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    used = artifacts.read_manifest(folder)["previous_run_inputs"]
    cluster = load_config(config_path).cluster
    # Every method fitted in the raw space (the count mixture is fitted in the counts space only).
    raw_models = {paths.cluster_model_file(m, s) for m, s in fitted_pairs(cluster.methods, cluster.spaces) if s == "raw"}
    assert paths.cluster_model_file("kmeans", "raw") in raw_models
    assert {r["file"] for r in used} == raw_models
    assert all(r["sha256"] == artifacts.recorded_output(before, r["file"])["sha256"] for r in used)


def test_files_left_without_a_manifest_are_not_read(pipeline_run, tmp_path, caplog):
    """A killed stage 04 leaves no manifest: its leftovers are not vouched for, so they are not unpickled."""
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    (folder / paths.MANIFEST).unlink()
    (folder / paths.ASSIGNMENTS).unlink()
    marker = tmp_path / "pwned"
    plant_payload(folder / "kmeans-raw.pkl", marker)
    run_pipeline(load_config(config_path), artifacts_dir, only=paths.CLUSTER)
    assert not marker.exists()
    assert artifacts.read_manifest(folder)["previous_run_inputs"] == []
    assert "kmeans-raw.pkl not used: the previous run did not complete (no manifest)" in caplog.text


def test_keras_models_load_in_safe_mode(tmp_path):
    """A network whose Lambda layer would create a file when rebuilt is refused on load: nothing runs."""
    from core.train_autoencoder.autoencoder import AutoencoderTransformer, _keras

    keras, _ = _keras()
    marker = tmp_path / "pwned"
    # The path as a literal in the function's code (a closure would not be saved with it).
    creates_file = eval(f"lambda x: x + 0 * len(open({str(marker)!r}, 'w').name)")  # noqa: S307
    inputs = keras.Input(shape=(2,))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(creates_file)(inputs)).save(path)
    marker.unlink()  # created while the layer was built
    with pytest.raises(ValueError, match="safe_mode"):
        AutoencoderTransformer.load(path)
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False)  # the attack is real: unsafe loading runs the code
    assert marker.exists()


# --- one run per artifacts folder ------------------------------------------------------------------


def test_process_alive_tells_a_live_process_from_a_finished_one():
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)  # reaped: the pid names no process
    assert not process_alive(0) and not process_alive(-5)


def write_lock(artifacts_dir: Path, **owner) -> Path:
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": 1, "host": socket.gethostname(), "started_at": "2024-05-01T08:00:00+00:00",
              "command": "run --force", "token": "someone-else", **owner}
    path = artifacts_dir / paths.LOCK
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_a_lock_held_by_a_live_process_stops_score_naming_the_holder(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = write_lock(artifacts_dir, pid=holder.pid)
        source = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.ENRICHED_DEPARTMENT
        code = main(["score", str(source), *cli_args(config_path, artifacts_dir)])
        err = capsys.readouterr().err
        assert code == 2
        assert f"in use by another run: pid {holder.pid} on {socket.gethostname()}, started " \
               f"2024-05-01T08:00:00+00:00 (run --force)" in err
        assert f"if that process is gone, delete {path}" in err
        assert path.exists() and not (artifacts_dir / "scores").exists()
        # status and show only read: they do not need the lock.
        assert main(["status", *cli_args(config_path, artifacts_dir)]) == 0
        assert main(["show", "4", *cli_args(config_path, artifacts_dir)]) == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_from_another_host_is_respected(tmp_path):
    write_lock(tmp_path, host="another-machine", pid=os.getpid())
    with pytest.raises(PipelineError, match="pid .* on another-machine"):
        lock.acquire(tmp_path, "run")


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    path = write_lock(artifacts_dir, pid=finished.pid)
    assert main(["run", *cli_args(config_path, artifacts_dir)]) == 0
    err = capsys.readouterr().err
    assert f"took over {path}: it was left by pid {finished.pid}" in err and "no longer running" in err
    assert not path.exists(), "released when the run ended"


def test_a_half_written_lock_is_respected_while_young_and_taken_over_when_old(tmp_path):
    path = tmp_path / paths.LOCK
    path.write_text("")  # created, not yet written: its owner is starting
    with pytest.raises(PipelineError, match="a process that is starting"):
        lock.acquire(tmp_path, "run")
    old = time.time() - 60
    os.utime(path, (old, old))
    owner = lock.acquire(tmp_path, "run")
    assert json.loads(path.read_text())["token"] == owner["token"]
    lock.release(tmp_path, owner)
    assert not path.exists()


def test_the_lock_is_released_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        with lock.folder_lock(tmp_path, "run"):
            assert (tmp_path / paths.LOCK).exists()
            raise RuntimeError("crash")
    assert not (tmp_path / paths.LOCK).exists()


def test_two_runs_on_one_folder_the_second_exits_2_naming_the_first(pipeline_run, tmp_path):
    """Two real processes; the first trains for as long as it takes the second to try, then gets SIGTERM."""
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: d["train_autoencoder"].update(
        epochs=100_000, early_stopping_patience=100_000))
    command = [sys.executable, "-m", "core.pipeline", "run", *cli_args(config_path, artifacts_dir)]
    first_log = tmp_path / "first.err"  # a file, not a pipe: a full pipe would stall the first run
    first = subprocess.Popen(command, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL,
                             stderr=first_log.open("w", encoding="utf-8"))
    path = artifacts_dir / paths.LOCK
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            assert first.poll() is None, first_log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run must still hold the folder"
        assert second.returncode == 2, second.stderr
        assert f"in use by another run: pid {first.pid} on {socket.gethostname()}, started " in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    if sys.platform != "win32":  # Windows ends the process without running Python's handler
        assert first.returncode == 130, first_log.read_text(encoding="utf-8")
        assert not path.exists(), "SIGTERM releases the lock"


@pytest.mark.skipif(sys.platform == "win32", reason="Windows ends the process without running Python's handler")
def test_a_termination_as_stage_03_starts_still_exits_130(pipeline_run, tmp_path):
    """SIGTERM while stage 03 imports TensorFlow. Before: CPython kept its "unhandled KeyboardInterrupt" flag
    and ended the process by SIGINT (exit -2) although the interrupt was handled, or the import swallowed the
    interrupt and the stage ran to its end (exit 0, 2 runs of 6). Now the request comes back at the next
    progress update and the process leaves with 130."""
    config_path, artifacts_dir = rerun_with(pipeline_run, tmp_path, lambda d: None)
    command = [sys.executable, "-m", "core.pipeline", "run", *cli_args(config_path, artifacts_dir), "--only", "3",
               "--force"]
    log = tmp_path / "run.err"
    process = subprocess.Popen(command, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=log.open("w", encoding="utf-8"))
    try:
        deadline = time.monotonic() + 120
        while "03_train_autoencoder: running" not in log.read_text(encoding="utf-8"):
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "stage 03 never started"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert process.returncode == 130, log.read_text(encoding="utf-8")
    assert "interrupted; the stage that was running is left without a manifest" in log.read_text(encoding="utf-8")
    assert not (artifacts_dir / paths.LOCK).exists()


def test_a_normal_exit_still_runs_the_exit_handlers_flushes_and_keeps_its_code(tmp_path):
    """exit_with skips the interpreter's teardown of every module (1 to 2 s after a stage), not what a normal
    exit does: atexit handlers run, the log and the streams are flushed, the code is the one given; a thread
    still running is waited for."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import atexit, logging, sys, threading, time\n"
        "from pathlib import Path\n"
        "from core.framework.cli import exit_with\n"
        f"out = Path({str(tmp_path)!r})\n"
        "logging.basicConfig(filename=out / 'run.log', level=logging.INFO)\n"
        "atexit.register(lambda: (out / 'handler.txt').write_text('ran'))\n"
        "def late(): time.sleep(0.5); (out / 'thread.txt').write_text('done')\n"
        "threading.Thread(target=late).start()\n"
        "logging.info('logged before leaving')\n"
        "print('printed before leaving', end='')\n"
        "exit_with(int(sys.argv[1]))\n")
    for code in (0, 3):
        done = subprocess.run([sys.executable, str(script), str(code)], cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == code, done.stderr
        assert done.stdout == "printed before leaving"
        assert (tmp_path / "handler.txt").read_text() == "ran"
        assert (tmp_path / "thread.txt").read_text() == "done"
        assert "logged before leaving" in (tmp_path / "run.log").read_text()
        for name in ("handler.txt", "thread.txt", "run.log"):
            (tmp_path / name).unlink()


# --- folders that cannot be written, paths that are not folders, damaged tables -------------------------


def test_artifacts_under_a_file_exits_2_and_logs_to_the_console(tmp_path, small_config_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    for command in (["run"], ["status"], ["show", "2"]):
        code = main([*command, *cli_args(small_config_path, blocker / "sub")])
        err = capsys.readouterr().err
        assert code == 2, command
        assert f"--artifacts {blocker / 'sub'} is inside {blocker}, which is a file" in err
        assert f"logging to the console only: cannot write {(blocker / 'sub' / paths.PIPELINE_LOG).absolute()}" in err
        assert "Traceback" not in err


def test_a_stage_folder_that_cannot_be_created_exits_2_naming_it(pipeline_run, tmp_path, capsys):
    """Works as root too: a file where the stage folder goes makes mkdir fail with a real OSError."""
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("in the way")
    code = main(["run", "--only", "4", "--force", *cli_args(config_path, artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot use {folder} as a folder: {folder} is a file" in err
    assert "Traceback" not in err and "unexpected" not in err


@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root ignores permission bits; chmod is POSIX")
def test_a_read_only_artifacts_folder_exits_2_naming_it(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    stage_folder = paths.stage_dir(artifacts_dir, paths.CLUSTER)
    stage_folder.chmod(0o555)
    try:
        code = main(["run", "--only", "4", "--force", *cli_args(config_path, artifacts_dir)])
        err = capsys.readouterr().err
        assert code == 2 and f"cannot write in {stage_folder}" in err and "Traceback" not in err
        assert (stage_folder / paths.MANIFEST).exists(), "nothing removed from a folder that cannot be written"
        (artifacts_dir / paths.PIPELINE_LOG).unlink()  # a log file that exists stays writable
        artifacts_dir.chmod(0o555)
        code = main(["run", "--force", *cli_args(config_path, artifacts_dir)])
        err = capsys.readouterr().err
        assert code == 2 and f"cannot write in {artifacts_dir}" in err
        assert "logging to the console only" in err and "Traceback" not in err
    finally:
        artifacts_dir.chmod(0o755)
        stage_folder.chmod(0o755)


def test_an_unexpected_error_prints_its_traceback_when_there_is_no_log_file(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    cli.configure_logging(blocker / "sub")

    def broken() -> int:
        raise ZeroDivisionError("a bug")

    assert cli.guarded(broken) == 1
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError: a bug" in err and "Traceback (most recent call last)" in err


def test_show_of_a_truncated_parquet_exits_2_naming_it(pipeline_run, tmp_path, capsys):
    config_path, artifacts_dir = copy_run(pipeline_run, tmp_path)
    table = paths.stage_dir(artifacts_dir, paths.PREPARE_FEATURES) / paths.BASIC
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    code = main(["show", "2", *cli_args(config_path, artifacts_dir)])
    err = capsys.readouterr().err
    assert code == 2 and f"{table} cannot be read" in err and "rerun stage 02_prepare_features" in err
    assert "Traceback" not in err
