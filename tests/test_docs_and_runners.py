"""The docs and entry points stay true to the code."""

from __future__ import annotations

import subprocess
import sys

from core.framework import paths

ROOT = paths.REPO_ROOT


def test_configuration_reference_is_generated_from_the_current_schema():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_data_dictionary_is_generated_from_the_table_contract():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "data_dictionary.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "`./run.sh test`" in readme and "`run.bat test`" in readme
    assert "exec ./run.sh test" in ci


def test_run_bat_keeps_windows_line_endings():
    data = (ROOT / "run.bat").read_bytes()
    lines = data.split(b"\n")[:-1]
    assert lines and all(line.endswith(b"\r") for line in lines)
    assert "*.bat text eol=crlf" in (ROOT / ".gitattributes").read_text(encoding="utf-8")


def test_env_stamp_detects_a_dependency_change(tmp_path, monkeypatch):
    """The runners reinstall exactly when pyproject.toml changes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("env_stamp", ROOT / "scripts" / "env_stamp.py")
    env_stamp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(env_stamp)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    monkeypatch.setattr(env_stamp, "ROOT", tmp_path)
    monkeypatch.setattr(env_stamp.sys, "prefix", str(tmp_path))
    assert env_stamp.main(["check"]) == 1
    assert env_stamp.main(["write"]) == 0
    assert env_stamp.main(["check"]) == 0
    assert env_stamp.main(["check", "test"]) == 1, "a plain install lacks the test extra"
    assert env_stamp.main(["write", "test"]) == 0
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n", encoding="utf-8")
    assert env_stamp.main(["check", "test"]) == 1
    assert env_stamp.main(["check"]) == 1
    assert env_stamp.main(["write", "test"]) == 0
    assert env_stamp.main(["check"]) == 0, "the test extra includes the plain install"
